"""Collectors for the tests: datagrams written into a database in-process, the tornado
application served in a thread, a real ``popcon serve`` process, and the bare collector
process of ``collector_process.py``; UDP to send them datagrams, HTTP to ask them.
"""

from __future__ import annotations

import asyncio
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
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from repo import SRC
from timing import NOW, FakeClock

from popcon.protocol.decode import make_decoder
from popcon.server.receive.ingest import Ingestor, job_of
from popcon.server.storage.writer import Writer

COLLECTOR_PROCESS = Path(__file__).with_name("collector_process.py")

# -- in-process: datagrams into a database -----------------------------------------------------

#: One ingestor per writer, as one receiver keeps one (inventory parts wait in it).
_INGESTORS: weakref.WeakKeyDictionary[Writer, Ingestor] = weakref.WeakKeyDictionary()


def ingest(writer: Writer, timed: Iterable[tuple[float, bytes]], **decoder_settings: Any) -> None:
    """Decode and store ``(arrival time, datagram)`` pairs through the receiving side's code
    (:func:`job_of`, the :class:`Ingestor`) and the writer, as received at those times (no
    UDP: the receiver would stamp them with the present)."""
    decode = make_decoder(**decoder_settings)
    ingestor = _INGESTORS.get(writer)
    if ingestor is None or ingestor.catalog is not writer.catalog:
        ingestor = _INGESTORS[writer] = Ingestor(writer.catalog, writer.settings)
    job = job_of(ingestor, [(moment, decode(data)) for moment, data in timed])
    if job is not None:
        assert writer.submit(job, timeout=10)
    assert writer.flush(20), writer.last_error


def store_datagrams(db: Path, timed: Iterable[tuple[float, bytes]], *, now: float = NOW) -> None:
    """Store ``(arrival time, datagram)`` pairs in ``db`` by a writer whose clock stands at
    ``now``, started and stopped for them."""
    writer = Writer(db, clock=FakeClock(now))
    writer.start()
    try:
        ingest(writer, timed)
    finally:
        writer.stop()


# -- UDP and HTTP ------------------------------------------------------------------------------


def send_udp(address: tuple[str, int], datagrams: Iterable[bytes], pause_every: int = 200) -> int:
    """Send datagrams to a collector on loopback; a short pause now and then so a burst does
    not overflow the socket buffer. Returns how many were sent."""
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for data in datagrams:
            sock.sendto(data, address)
            sent += 1
            if sent % pause_every == 0:
                time.sleep(0.01)
    return sent


def http_get(
    url: str, token: str | None = None, headers: Mapping[str, str] | None = None
) -> tuple[int, Any, Any]:
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


def by_name(rows: Sequence[dict[str, Any]], key: str = "name") -> dict[Any, dict[str, Any]]:
    """The rows of an answer by their ``key``."""
    return {row[key]: row for row in rows}


# -- in-process: the HTTP application ----------------------------------------------------------


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

        from popcon.server.serve import make_app

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

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(
        self, path: str, token: str | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Any, Any]:
        return http_get(self.url + path, token, headers)


# -- processes ---------------------------------------------------------------------------------


def subprocess_env(**extra: str) -> dict[str, str]:
    """The test process's environment for a ``popcon`` child: popcon's sources on its path, no
    token or key of the caller's, then ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env.pop("POPCON_API_TOKEN", None)
    env.pop("POPCON_KEY", None)
    env.update(extra)
    return env


class ServeProcess:
    """``python -m popcon serve`` on loopback ports picked by the kernel (``udp``: an address
    chosen before it starts instead, the one recorders were told); parses its start line."""

    def __init__(
        self,
        db: Path,
        *flags: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        udp: str = "127.0.0.1:0",
    ) -> None:
        command = [
            sys.executable, "-m", "popcon", "serve",
            "--udp", udp, "--http", "127.0.0.1:0", "--db", str(db), *flags,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            env=subprocess_env(**(env or {})),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
        )
        self.lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.start_line = self._wait_for_line("listening on", timeout=30)
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

    def _wait_for_line(self, text: str, timeout: float) -> str:
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

    def get(
        self, path: str, token: str | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Any, Any]:
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

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.stop()


def start_collector_process(db: Path) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    """``collector_process.py`` receiving into ``db``: the process and its loopback address,
    once it listens."""
    proc = subprocess.Popen(
        [sys.executable, str(COLLECTOR_PROCESS), str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    assert line.startswith("listening"), (line, proc.stderr.read() if proc.stderr else "")
    return proc, ("127.0.0.1", int(line.split()[1]))
