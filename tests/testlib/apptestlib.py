"""Helpers for the collector's application tests (HTTP API, CLI, metrics, ``popcon serve``).

Datagrams are built here from ``docs/protocol.md`` alone (not with the collector's own code),
so a test would notice if the decoder drifted from the written protocol.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from hashlib import sha256
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[2] / "src"
#: A whole bucket edge a little in the past: the "now" of the in-process tests.
NOW = (int(time.time()) // 600) * 600
HOUR = 3600
DAY = 86400


def use_datagram(
    env: str,
    libs: Sequence[Sequence[str]],
    *,
    seq: int = 0,
    py: str = "3.11",
    labels: Iterable[tuple] = (),
    key: bytes | None = None,
) -> bytes:
    """A ``popcon/1 use`` datagram; each lib is (name, version, level, origin[, importer])."""
    lines = [f"popcon/1 use {seq}", f"env {env}", f"py {py}"]
    lines += [f"label {k}={v}" for k, v in labels]
    lines += ["lib " + " ".join(lib) for lib in libs]
    return sign("\n".join(lines) + "\n", key)


def inventory_datagram(
    env: str,
    dists: Sequence[tuple],
    *,
    inventory_id: str = "0000beef",
    py: str = "3.11",
    key: bytes | None = None,
) -> bytes:
    """A one-part ``popcon/1 inv`` datagram listing (name, version) pairs."""
    lines = [f"popcon/1 inv {inventory_id} 1 1", f"env {env}", f"py {py}"]
    lines += [f"dist {name} {version}" for name, version in dists]
    return sign("\n".join(lines) + "\n", key)


def sign(text: str, key: bytes | None) -> bytes:
    """Append ``sig <first 32 hex digits of HMAC-SHA256>`` as protocol.md says."""
    data = text.encode()
    if key:
        data += b"sig " + hmac.new(key, data, sha256).hexdigest()[:32].encode() + b"\n"
    return data


def send_udp(address: tuple, datagrams: Iterable[bytes], pause_every: int = 200) -> int:
    """Send datagrams to the collector on loopback; a short pause now and then so a burst does
    not overflow the socket buffer. Returns how many were sent."""
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for data in datagrams:
            sock.sendto(data, address)
            sent += 1
            if sent % pause_every == 0:
                time.sleep(0.01)
    return sent


def store_datagrams(db: Path, timed: Sequence[tuple], *, clock: float = NOW) -> None:
    """Store ``(arrival time, datagram)`` pairs through the real decoder and writer, at the
    arrival times given (no UDP: the receiver would stamp them with the present)."""
    from popcon.protocol.decode import make_decoder
    from popcon.server.storage.writer import Batch, Writer

    writer = Writer(db, clock=lambda: clock)
    writer.start()
    try:
        decode = make_decoder()
        batch = Batch()
        for moment, data in timed:
            decoded = decode(data)
            if isinstance(decoded, str):
                batch.results[decoded] += 1
                continue
            batch.results["ok"] += 1
            if type(decoded).__name__ == "UseReport":
                bucket = int(moment) - int(moment) % writer.bucket_width
                batch.uses[(bucket, decoded)] += 1
            else:
                batch.inventories.append(decoded)
        assert writer.submit(batch)
        assert writer.flush(20)
    finally:
        writer.stop()


def sample_datagrams(now: int = NOW) -> list:
    """The shared sample: two environments, known counts (see tests/server/test_http.py)."""
    a = ("img:a", (("hub", "research"),))
    b = ("img:b", (("hub", "teaching"),))
    recent, old = now - HOUR, now - 3 * DAY
    out = []
    pandas_process = [
        ("pandas", "2.2.2", "direct", "env"),
        ("numpy", "1.26.4", "transitive", "env", "pandas"),
        ("python-dateutil", "2.9.0", "transitive", "env", "pandas"),
    ]
    for _ in range(5):
        out.append((recent, use_datagram(a[0], pandas_process, labels=a[1])))
    # one of those processes later used numpy from user code: an upgrade record
    out.append(
        (recent, use_datagram(a[0], [("numpy", "1.26.4", "upgrade", "env")], seq=1, labels=a[1]))
    )
    for _ in range(2):
        out.append(
            (recent, use_datagram(a[0], [("requests", "2.32.3", "direct", "env")], labels=a[1]))
        )
    out.append((recent, use_datagram(a[0], [("scipy", "1.14.1", "direct", "user")], labels=a[1])))
    for _ in range(4):
        out.append((recent, use_datagram(b[0], [("numpy", "2.1.0", "direct", "env")], labels=b[1])))
    for _ in range(3):
        out.append((old, use_datagram(b[0], [("numpy", "2.0.0", "direct", "env")], labels=b[1])))
    inventory = [
        ("attrs", "24.2.0"),
        ("numpy", "1.26.4"),
        ("pandas", "2.2.2"),
        ("python-dateutil", "2.9.0"),
        ("requests", "2.32.3"),
        ("six", "1.16.0"),
    ]
    out.append((recent, inventory_datagram(a[0], inventory)))
    out.append((recent, b"this is not a datagram"))
    return out


# -- an in-process HTTP server -----------------------------------------------------------------


def http_get(url: str, token: str | None = None, headers: dict | None = None):
    """(status, parsed JSON or text, headers) of a GET; never raises on an HTTP status."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            status, body, got = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, body, got = error.code, error.read(), error.headers
    text = body.decode("utf-8")
    if got.get("Content-Type", "").startswith("application/json"):
        return status, json.loads(text), got
    return status, text, got


class ApiServer:
    """The real tornado application on 127.0.0.1, in a thread of the test process."""

    def __init__(self, ctx: Any, prefix: str = "/") -> None:
        self.ctx = ctx
        self.prefix = prefix
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.port = 0

    async def _main(self) -> None:
        from tornado.httpserver import HTTPServer
        from tornado.netutil import bind_sockets

        from popcon.server.web.api import make_app

        sockets = bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        server = HTTPServer(make_app(self.ctx, self.prefix))
        server.add_sockets(sockets)
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        server.stop()

    def __enter__(self) -> ApiServer:
        self._thread.start()
        assert self._ready.wait(10), "the in-process HTTP server did not start"
        return self

    def __exit__(self, *exc: Any) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, token: str | None = None, headers: dict | None = None):
        return http_get(self.url + path, token, headers)


# -- a real ``popcon serve`` process -----------------------------------------------------------


def subprocess_env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env.pop("POPCON_API_TOKEN", None)
    env.pop("POPCON_KEY", None)
    env.update(extra)
    return env


class ServeProcess:
    """``python -m popcon serve`` on loopback ports picked by the kernel; parses its start line."""

    def __init__(self, db: Path, *flags: str, env: dict | None = None, cwd=None) -> None:
        command = [
            sys.executable, "-m", "popcon", "serve",
            "--udp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--db", str(db), *flags,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            env=subprocess_env(**(env or {})),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
        )
        self.lines: list = []
        self._lines: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.start_line = self.wait_for("listening on", timeout=30)
        words = [word.rstrip(",") for word in self.start_line.split()]
        self.udp_url = next(w for w in words if w.startswith("udp://"))
        self.http_url = next(w for w in words if w.startswith("http://"))
        host, port = self.udp_url[len("udp://") :].rsplit(":", 1)
        self.udp = (host, int(port))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                raise AssertionError("popcon serve exited:\n" + "\n".join(self.lines))
            if text in line:
                return line
        raise AssertionError(f"no {text!r} in popcon serve's log:\n" + "\n".join(self.lines))

    def send(self, datagrams: Iterable[bytes]) -> int:
        return send_udp(self.udp, datagrams)

    def get(self, path: str, token: str | None = None, headers: dict | None = None):
        return http_get(self.http_url.rstrip("/") + path, token, headers)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("popcon serve did not stop:\n" + "\n".join(self.lines)) from None
        finally:
            self._reader.join(5)

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            self.stop()


def wait_until(predicate, timeout: float = 15, interval: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns something true (bounded); returns that value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


def by_name(rows: Sequence[dict], key: str = "name") -> dict:
    return {row[key]: row for row in rows}


def counter_of(rows: Sequence[dict], key: str = "name", value: str = "processes") -> Counter:
    return Counter({row[key]: row[value] for row in rows})
