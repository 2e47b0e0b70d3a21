"""``popcon check``: does a process of this environment reach the collector, end to end?

It runs the environment's own interpreter as this user's processes run (their variables, their
opt-out, their ``sitecustomize``), so recording starts the way it starts for them. That process
asks its recorder for the configured collector, resolves and signs the way every process does,
and sends one *check datagram*: a ``use`` datagram without records, which the collector verifies
like any other (its signature too) and then only counts, as
``popcon_datagrams_total{result="check"}``: no process, no library, no environment is stored.

Given the collector's HTTP address (``--server``, token from ``POPCON_API_TOKEN``), it reads the
collector's ``/metrics`` before and after, and says in one line whether the check arrived or
why not: the recorder does not start, the user opted out, the collector is unreachable, the key
does not match, or nothing arrived.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from popcon.output import write_stdout
from popcon.protocol import CHECK

from .enable import EnableError, status

#: Seconds the check process may take, its look-up of the collector's host included.
PROCESS_TIMEOUT = 60.0
#: Seconds between two reads of /metrics while waiting for the check to be counted.
POLL_INTERVAL = 0.25
API_TOKEN_ENV = "POPCON_API_TOKEN"

# Run by the environment's interpreter, as this user's processes run. Standard library only.
_CANARY = r"""
import errno, json, os, socket, sys, time
out = {"hook": False, "watching": False, "opted_out": False, "sitecustomize": None}
found = sys.modules.get("sitecustomize")
out["sitecustomize"] = getattr(found, "__file__", None)
hook = None
for name in ("sitecustomize", "_popcon_hook"):
    module = sys.modules.get(name)
    if module is not None and callable(getattr(module, "load_beside", None)):
        hook = module
if hook is not None:
    out["hook"] = True
    out["opted_out"] = hook.opted_out(os.environ)
    out["watching"] = any(
        getattr(h, "__name__", "") == "_popcon_path_hook" for h in sys.path_hooks
    )
if hook is not None and out["watching"]:
    core = sys.modules.get("_popcon_recorder") or hook.load_beside("_popcon_recorder")
    config = core.config_of(os.environ)
    out["mode"] = config.mode
    out["collector"] = "%s://%s:%d" % (config.mode, config.host, config.port)
    out["env"] = config.header.split("\n", 1)[0][4:]
    out["signed"] = config.key is not None
    if config.mode == "udp":
        core.emit(config, [])  # finds the address as every process does (a look-up thread)
        deadline = time.monotonic() + 5
        while config.resolving and time.monotonic() < deadline:
            time.sleep(0.01)
        out["address"] = list(config.address) if config.address else None
        if config.address is not None:
            family = socket.AF_INET6 if ":" in config.address[0] else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.connect(config.address)  # so that "port unreachable" comes back to it
            sock.setblocking(False)
            config.socket = sock
            stamp = core.sibling("rare").time_line() if config.key else ""
            text = "%s use 0\n%s%s" % (core.PROTOCOL_VERSION, config.header, stamp)
            core.emit(config, [core.signed(config, text.encode("utf-8"))])
            time.sleep(0.3)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            out["refused"] = code == errno.ECONNREFUSED
            out["error"] = os.strerror(code) if code else None
print("POPCON-CHECK " + json.dumps(out))
"""


class CheckFailed(Exception):
    """One cause of failure, said in one line."""


def _metrics_url(server: str) -> str:
    base = server if server.endswith("/") else server + "/"
    return urllib.parse.urljoin(base, "metrics")


_RESULT_RE = re.compile(r'^popcon_datagrams_total\{result="([a-z_]+)"\} ([0-9.e+]+)$', re.M)


def read_results(server: str) -> dict[str, float]:
    """``popcon_datagrams_total`` by result, from the collector's ``/metrics``."""
    url = _metrics_url(server)
    request = urllib.request.Request(url)
    token = os.environ.get(API_TOKEN_ENV)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            raise CheckFailed(
                f"the collector at {server} refused to show /metrics (HTTP {error.code}): "
                f"set {API_TOKEN_ENV} to its token"
            ) from None
        raise CheckFailed(f"the collector at {server} answered HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise CheckFailed(f"the collector is unreachable: {url}: {reason}") from None
    results = {name: float(value) for name, value in _RESULT_RE.findall(text)}
    if not results:
        raise CheckFailed(f"{url} is not a popcon collector's /metrics")
    return results


def run_canary(python: str) -> dict[str, Any]:
    """Run the environment's interpreter as this user's processes run; what it found."""
    environ = {k: v for k, v in os.environ.items() if k not in ("POPCON_PREVIEW",)}
    try:
        result = subprocess.run(
            [python, "-c", _CANARY],
            env=environ,
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CheckFailed(f"cannot run {python}: {error}") from None
    for line in result.stdout.splitlines():
        if line.startswith("POPCON-CHECK "):
            found: dict[str, Any] = json.loads(line[len("POPCON-CHECK ") :])
            return found
    last = (result.stderr.strip().splitlines() or ["no output"])[-1]
    raise CheckFailed(f"{python} failed: {last}")


def _process_problem(found: Mapping[str, Any]) -> str | None:
    """The one line for what stopped the check process from sending, if anything did."""
    if not found["hook"]:
        shown = found["sitecustomize"]
        hidden = (
            f": their processes import {shown} instead (popcon enable --pth starts recording "
            "from popcon.pth)"
            if shown
            else ""
        )
        return f"the recorder does not start in this user's processes{hidden}"
    if found["opted_out"]:
        return (
            "this user opted out (POPCON_DISABLE or ~/.config/popcon/disable): "
            "their processes send nothing"
        )
    if not found["watching"]:
        return "the recorder is installed but did not start (no path hook of its own)"
    if found["mode"] is None:
        return "POPCON_COLLECTOR is not a udp://HOST:PORT or statsd://HOST:PORT address"
    if found["mode"] != "udp":
        return (
            f"the environment sends statsd lines ({found['collector']}), which carry no check; "
            "nothing was sent"
        )
    if found["address"] is None:
        return f"the collector's host in {found['collector']} cannot be resolved"
    if found["refused"]:
        return f"the collector is unreachable: nothing listens on {found['collector']}"
    return None


#: Seconds between two commits of the collector's counts (it commits at least once a second).
COMMIT_INTERVAL = 1.0


def _settled_results(server: str) -> dict[str, float]:
    """The collector's counts once those a check can change stayed the same for a commit
    interval (at most 5 s): an earlier check, still on its way, is not taken for this one."""
    results = read_results(server)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(COMMIT_INTERVAL + POLL_INTERVAL)
        again = read_results(server)
        if all(again.get(k) == results.get(k) for k in _CHECK_RESULTS):
            return again
        results = again
    return results


def _arrival(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v > before.get(k, 0.0)}


_KEY_PROBLEMS = {
    "bad_signature": "the key does not match: the collector checks signatures with another "
    "POPCON_KEY",
    "unsigned": "the key does not match: the collector has a POPCON_KEY and this "
    "environment's processes sign with none",
    "unstamped": "the key does not match: the collector wants signed datagrams with a time "
    "line (popcon enable again, to update the recorder)",
    "stale": "the clocks differ by more than 5 minutes between this machine and the collector's",
}
#: The results a check datagram can end in.
_CHECK_RESULTS = (CHECK, *_KEY_PROBLEMS)


def _api_get(server: str, path: str) -> Any:
    """The JSON of ``GET <server>/<path>``, or None when it cannot be had."""
    base = server if server.endswith("/") else server + "/"
    request = urllib.request.Request(urllib.parse.urljoin(base, path))
    token = os.environ.get(API_TOKEN_ENV)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read().decode("utf-8"))
    except (OSError, ValueError):
        return None


def last_report(server: str, env: str) -> str:
    """When the collector last stored a use report of environment ``env``, in words."""
    answer = _api_get(server, "api/v1/environments")
    if not isinstance(answer, dict):
        return "its API did not answer (is POPCON_API_TOKEN its token?)"
    for row in answer.get("environments", []):
        if row.get("env") == env:
            inventory = row.get("inventory_at") or "none yet"
            return f"last report {row.get('last_seen')}, inventory {inventory}"
    return "no report stored yet from this environment"


def run_check(python: str | None, server: str | None, wait: float) -> tuple[bool, str]:
    """Whether the collector confirmed the check (only with ``server``), and what
    ``popcon check`` says; :class:`CheckFailed` otherwise."""
    try:
        report = status(python)
    except EnableError as error:
        raise CheckFailed(str(error)) from None
    if not report["enabled"]:
        raise CheckFailed(
            f"recording is not enabled in {report['site']} (run: popcon enable --python "
            f"{report['python']})"
        )
    return check_enabled(report["python"], server, wait)


def check_enabled(python: str, server: str | None, wait: float) -> tuple[bool, str]:
    """:func:`run_check` for an interpreter whose environment is enabled."""
    before = _settled_results(server) if server else None
    found = run_canary(python)
    problem = _process_problem(found)
    if problem:
        raise CheckFailed(problem)
    signed = "signed" if found["signed"] else "unsigned"
    sent = f"sent a check datagram ({signed}, env {found['env']}) to {found['collector']}"
    if server is None or before is None:
        return False, f"{sent}; nothing refused it (give --server URL to confirm it arrived)"
    deadline = time.monotonic() + wait
    while True:
        arrived = _arrival(before, read_results(server))
        for result, text in _KEY_PROBLEMS.items():
            if arrived.get(result):
                raise CheckFailed(text)
        if arrived.get(CHECK):
            return True, (
                f"{sent}, and the collector at {server} counted it; "
                f"{last_report(server, found['env'])}"
            )
        if time.monotonic() >= deadline:
            raise CheckFailed(
                f"nothing arrived: the collector at {server} counted no check within "
                f"{wait:g} s of one sent to {found['collector']} (is that the address it "
                "receives on, its --udp? a firewall between?)"
            )
        time.sleep(POLL_INTERVAL)


def collector_answer(report: Mapping[str, Any], server: str, wait: float) -> dict[str, Any]:
    """For ``popcon status --server``: ``{"ok": bool, "text": one line}``, the check run from
    an enabled environment's interpreter (``ok``: the collector counted it)."""
    try:
        confirmed, text = check_enabled(report["python"], server, wait)
        return {"ok": confirmed, "text": text}
    except CheckFailed as failure:
        return {"ok": False, "text": str(failure)}


def check_main(python: str | None, server: str | None, *, wait: float) -> int:
    try:
        confirmed, text = run_check(python, server, wait)
    except CheckFailed as failure:
        print(f"popcon check: {failure}", file=sys.stderr)
        return 1
    write_stdout(("ok: " if confirmed else "unconfirmed: ") + text + "\n")
    return 0
