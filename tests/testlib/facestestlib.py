"""Helpers for the tests of the faces (dashboard, JupyterHub service, Grafana): the real
programs they start (Chromium, Prometheus, JupyterHub with configurable-http-proxy) and the
plain functions that read the Grafana dashboard.

Every process is started here on 127.0.0.1, with its output in a log file, and stopped by
its own process id (its process group, for the Hub and its children), bounded in time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
GRAFANA_DASHBOARD = REPO_ROOT / "grafana" / "popcon-dashboard.json"
HUB_EXAMPLE = REPO_ROOT / "examples" / "jupyterhub_config.py"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_program(name: str, install: str) -> str:
    """The path of a program the test needs. Missing: a failure under CI (which must install
    it), a skip on a developer's machine, with the command that installs it."""
    path = name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed ({install})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_module(name: str, install: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        message = f"the Python package {name} is not installed ({install})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float = 30, interval: float = 0.2, what: str = "condition"):
    """Poll until ``predicate()`` is true (bounded); returns its value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, ValueError) as error:  # not up yet
            last = error
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


def artifact(name: str) -> Path:
    """Where a test keeps something to look at afterwards (``test-artifacts/``, gitignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


# -- background processes ----------------------------------------------------------------------


class Background:
    """A program running in its own process group, output to ``log``; stopped by its id."""

    def __init__(
        self, args: Sequence[str], log: Path, env: Mapping[str, str], cwd: Path | None = None
    ) -> None:
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(a) for a in args],
            env=dict(env),
            cwd=str(cwd) if cwd else None,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM to the process (it stops its own children), then SIGKILL to its group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever is left of its group
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(5)
        self._out.close()
        return self.proc.returncode


# -- HTTP --------------------------------------------------------------------------------------


def get_json(url: str, headers: Mapping[str, str] | None = None, timeout: float = 10) -> Any:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


# -- Prometheus --------------------------------------------------------------------------------


def prometheus_config(targets: Mapping[str, str], token: str) -> str:
    """A ``prometheus.yml`` scraping each ``hub → host:port`` every second with the collectors'
    bearer token, the ``hub`` label given per target as docs/fleet.md says."""
    lines = [
        "global:",
        "  scrape_interval: 1s",
        "  evaluation_interval: 1s",
        "scrape_configs:",
        "  - job_name: popcon",
        "    scrape_interval: 1s",
        "    scrape_timeout: 900ms",
        "    authorization:",
        f"      credentials: {token}",
        "    static_configs:",
    ]
    for hub, address in targets.items():
        lines += [f'      - targets: ["{address}"]', "        labels:", f"          hub: {hub}"]
    return "\n".join(lines) + "\n"


class Prometheus(Background):
    """Debian's ``prometheus`` on 127.0.0.1 with a temporary data directory."""

    def __init__(self, binary: str, config: str, workdir: Path) -> None:
        self.port = free_tcp_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "prometheus.yml").write_text(config)
        super().__init__(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            workdir / "prometheus.log",
            env={"PATH": os.environ.get("PATH", "")},
            cwd=workdir,
        )
        wait_for(self.ready, timeout=30, what="prometheus to start")

    def ready(self) -> bool:
        if not self.alive():
            raise AssertionError("prometheus exited:\n" + self.output())
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?" + urllib.parse.urlencode(params)
        answer = get_json(url)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """An instant query, at ``at`` (default: Prometheus's now)."""
        moment = {} if at is None else {"time": str(at)}
        return self.api("query", query=expr, **moment)["result"]

    def query_range(
        self, expr: str, seconds: int, step: str = "1s", end: float | None = None
    ) -> list[dict]:
        """A range query over the ``seconds`` before ``end`` (default: now)."""
        end = time.time() if end is None else end
        return self.api(
            "query_range", query=expr, start=str(end - seconds), end=str(end), step=step
        )["result"]

    def label_values(self, label: str, match: str) -> list[str]:
        url = f"{self.url}/api/v1/label/{label}/values?" + urllib.parse.urlencode(
            {"match[]": match}
        )
        return get_json(url)["data"]


# -- the Grafana dashboard ---------------------------------------------------------------------


@dataclass(frozen=True)
class GrafanaQuery:
    """One PromQL expression of the dashboard and where it comes from."""

    where: str  # "panel <title> / <refId>" or "variable <name>"
    expr: str
    instant: bool
    panel: str = ""
    ref: str = ""


_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<match>.+),\s*)?(?P<label>\w+)\)$")


def grafana_queries(dashboard: Mapping[str, Any]) -> Iterator[GrafanaQuery]:
    """Every PromQL expression in a Grafana dashboard: panel targets and the queries of the
    template variables (``label_values(<selector>, <label>)``, yielded as the selector)."""
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text.strip())
        assert match, f"variable {variable['name']}: not a label_values() query: {text!r}"
        yield GrafanaQuery(
            f"variable {variable['name']}",
            match.group("match") or "",
            instant=True,
            ref=match.group("label"),
        )
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            yield GrafanaQuery(
                f"panel {panel['title']!r} / {target['refId']}",
                target["expr"],
                instant=bool(target.get("instant")),
                panel=panel["title"],
                ref=target["refId"],
            )


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace Grafana's ``$name`` and ``${name}`` by ``values[name]``; an unknown one fails."""

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"no value for the Grafana variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, expr)
