"""What the hostile-input scripts share: a real ``popcon serve`` on loopback, what to measure
of it (peak RSS, database size, ``/metrics`` size and scrape time, API latency), a bounded UDP
sender, and checks that print one verdict line each.

The scripts beside this module (``floods.py``, ``params.py``, ``connections.py``,
``writers.py``, ``csv_cells.py``) each take ``--quick`` (a few seconds, for CI and
``tests/systems/test_hostile.py``) and otherwise run at full size for the figures. Each
prints its figures, then ``PASS`` or ``FAIL`` and one line per check, and exits 1 when a
check failed. Every process they start is stopped before they return.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
for _path in (REPO_ROOT / "src", REPO_ROOT / "tests" / "testlib"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from collectors import ServeProcess, http_get  # noqa: E402  (tests/testlib, put on the path above)

#: The API token of every collector the scripts start (long enough for ``popcon serve``).
TOKEN = "hostile-suite-token-0123456789ab"
MB = 1024 * 1024


class Checks:
    """Figures and verdicts of one script: ``figure`` prints a measurement, ``check`` a
    ``PASS``/``FAIL`` line; ``failed`` names the checks that failed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.figures: dict[str, Any] = {}
        self.verdicts: dict[str, bool] = {}

    def figure(self, name: str, value: Any) -> None:
        self.figures[name] = value
        print(f"  {self.name}: {name} = {value}", flush=True)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.verdicts[name] = bool(ok)
        print(
            f"{'PASS' if ok else 'FAIL'} {self.name}: {name}" + (f" ({detail})" if detail else "")
        )
        sys.stdout.flush()
        return bool(ok)

    @property
    def failed(self) -> list[str]:
        return [name for name, ok in self.verdicts.items() if not ok]

    def exit_status(self) -> int:
        return 1 if self.failed else 0


def serve(db: Path, *flags: str, env: dict[str, str] | None = None) -> ServeProcess:
    """``popcon serve`` on ``db`` with the suite's token, every count shown (``--min-count 1``)."""
    return ServeProcess(
        db, "--min-count", "1", *flags, env={"POPCON_API_TOKEN": TOKEN, **(env or {})}
    )


def get(server: ServeProcess, path: str, **params: str) -> tuple[int, Any]:
    """(status, answer) of a GET with the suite's token; never raises on an HTTP status."""
    query = ("?" + urllib.parse.urlencode(params)) if params else ""
    status, answer, _ = server.get(path + query, token=TOKEN)
    return status, answer


def processes(server: ServeProcess, library: str, **filters: str) -> int:
    """Processes of ``library`` in the last 6 hours (with ``filters``), 0 when not listed."""
    status, answer = get(server, "/api/v1/libraries", since="6h", **filters)
    if status != 200:
        return 0
    rows = {row["name"]: row for row in answer["libraries"]}
    count = rows.get(library, {}).get("processes", 0)
    return count if isinstance(count, int) else 0


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    """Whether ``predicate`` came true within ``timeout`` seconds (errors count as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return True
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (``VmHWM`` in ``/proc/<pid>/status``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def db_size_mb(db: Path) -> float:
    """The database with its ``-wal`` and ``-shm`` files, in MiB."""
    files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    return sum(f.stat().st_size for f in files if f.exists()) / MB


def scrape(server: ServeProcess) -> tuple[float, float, int, dict[str, float]]:
    """One ``/metrics`` scrape: (seconds, MiB, series, ``popcon_datagrams_total`` by result)."""
    started = time.monotonic()
    status, text, _ = server.get("/metrics", token=TOKEN)
    seconds = time.monotonic() - started
    if status != 200:
        return seconds, 0.0, 0, {}
    series = 0
    results: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series += 1
        if line.startswith('popcon_datagrams_total{result="'):
            result = line.split('"')[1]
            results[result] = float(line.rsplit(" ", 1)[1])
    return seconds, len(text.encode()) / MB, series, results


class LatencyProbe:
    """GETs a path of a collector in a thread, one after another with a short pause, and keeps
    each answer's seconds (a failure or a timeout counts as the time it took)."""

    def __init__(self, server: ServeProcess, path: str = "/api/v1/libraries?since=6h") -> None:
        self.url = server.http_url.rstrip("/") + path
        self.seconds: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status = http_get(self.url, TOKEN)[0]
            except OSError:
                status = 0
            self.seconds.append(time.monotonic() - started)
            if status != 200:
                self.errors += 1
            self._stop.wait(0.2)

    def __enter__(self) -> LatencyProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def spread(self) -> tuple[float, float, int]:
        """(p50 seconds, p95 seconds, how many requests)."""
        return round(self.percentile(50), 3), round(self.percentile(95), 3), len(self.seconds)

    def percentile(self, p: float) -> float:
        if not self.seconds:
            return float("nan")
        if len(self.seconds) == 1:
            return self.seconds[0]
        return statistics.quantiles(self.seconds, n=100, method="inclusive")[int(p) - 1]


def send_for(
    address: tuple[str, int], datagrams: Iterable[bytes], *, seconds: float, rate: float
) -> tuple[int, float]:
    """Send ``datagrams`` to ``address`` at about ``rate`` per second, for ``seconds`` at most:
    (how many were sent, seconds taken)."""
    sent = 0
    started = time.monotonic()
    deadline = started + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MB)
        for data in datagrams:
            try:
                sock.sendto(data, address)
            except OSError:  # ENOBUFS: the kernel's queue is full; the datagram is lost
                pass
            sent += 1
            if sent % 500 == 0:
                now = time.monotonic()
                if now > deadline:
                    break
                ahead = sent / rate - (now - started)
                if ahead > 0:
                    time.sleep(ahead)
    return sent, time.monotonic() - started


def log_size(server: ServeProcess) -> int:
    """Bytes the collector has logged so far."""
    return sum(len(line) + 1 for line in server.lines)


def numbered(make: Callable[[int], bytes], count: int) -> Iterator[bytes]:
    """``make(0)``, ``make(1)``, … ``make(count - 1)``, one at a time."""
    return (make(i) for i in range(count))


def parse_args(
    doc: str, argv: list[str] | None, parts: Iterable[str] = ()
) -> tuple[bool, list[str]]:
    """A script's command line: whether ``--quick`` was given (or ``POPCON_FUZZ_QUICK=1``),
    and which of its ``parts`` to run (all unless some are named)."""
    parts = list(parts)
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for CI")
    if parts:
        parser.add_argument("part", nargs="*", help=f"run only these of: {', '.join(parts)}")
    args = parser.parse_args(argv)
    unknown = [part for part in getattr(args, "part", ()) if part not in parts]
    if unknown:
        parser.error(f"no part {unknown[0]!r}; the parts are {', '.join(parts)}")
    quick = bool(args.quick) or os.environ.get("POPCON_FUZZ_QUICK") == "1"
    return quick, list(getattr(args, "part", None) or parts)
