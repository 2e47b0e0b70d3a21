"""Hold many idle TCP connections to a real ``popcon serve`` whose descriptors are few.

    python fuzz/connections.py            # 1,100 idle connections, RLIMIT_NOFILE 1,024
    python fuzz/connections.py --quick    # 300 idle connections, RLIMIT_NOFILE 256 (for CI)

The collector starts with RLIMIT_NOFILE lowered (soft and hard, so it cannot raise it), then
this script opens more idle connections than that limit and holds them. Meanwhile the API
and ``/metrics`` must answer within 5 s, UDP must still be counted, and the log must stay
small (it was 150 MB of EMFILE tracebacks in 20 s).
"""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from hostile import TOKEN, Checks, parse_args, wait_for

# isort: split
# (hostile, imported first, puts src/ and tests/testlib/ on sys.path)

from collectors import http_get, send_udp, subprocess_env
from datagrams import use_datagram

#: Most bytes the log may grow by while the connections are held.
MAX_LOG_GROWTH = 100_000
#: Bytes of log at which the collector is killed, so a busy loop cannot fill the disk.
LOG_LIMIT = 50_000_000
#: Seconds the connections may take to open, all together.
CONNECT_SECONDS = 20.0
#: Seconds an answer may take while they are held.
MAX_ANSWER_S = 5.0


def start_with_few_descriptors(
    db: Path, log: Path, descriptors: int
) -> tuple[subprocess.Popen[bytes], str, tuple[str, int]]:
    """``popcon serve`` with RLIMIT_NOFILE at ``descriptors`` (soft and hard), logging into
    ``log``: the process, its HTTP URL and its UDP address, once it listens."""

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors, descriptors))

    command = [
        sys.executable, "-m", "popcon", "serve", "--min-count", "1",
        "--udp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--db", str(db),
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            env=subprocess_env(POPCON_API_TOKEN=TOKEN),
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=few_descriptors,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "listening on" in text:
            words = [word.rstrip(",") for word in text.split()]
            http_url = next(w for w in words if w.startswith("http://")).rstrip("/")
            host, port = next(w for w in words if w.startswith("udp://"))[6:].rsplit(":", 1)
            return proc, http_url, (host, int(port))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait(10)
    raise RuntimeError("popcon serve did not start:\n" + log.read_text(errors="replace"))


def _processes(http_url: str, name: str) -> int:
    status, answer, _ = http_get(http_url + "/api/v1/libraries?since=6h", TOKEN)
    rows = {row["name"]: row for row in answer["libraries"]} if status == 200 else {}
    count = rows.get(name, {}).get("processes", 0)
    return count if isinstance(count, int) else 0


def _timed(url: str) -> tuple[int, float]:
    started = time.monotonic()
    try:
        status = http_get(url, TOKEN)[0]
    except OSError:
        status = 0
    return status, time.monotonic() - started


def idle(connections: int, descriptors: int, hold: float) -> Checks:
    """Hold ``connections`` idle connections for ``hold`` seconds; figures and verdicts."""
    checks = Checks("idle connections")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, connections + 200)), hard))
    held: list[socket.socket] = []
    with tempfile.TemporaryDirectory(prefix="popcon-idle-") as tmp:
        log = Path(tmp) / "serve.log"
        proc, http_url, udp = start_with_few_descriptors(
            Path(tmp) / "idle.sqlite", log, descriptors
        )
        done = threading.Event()
        watchdog = threading.Thread(target=_watch, args=(proc, log, done), daemon=True)
        watchdog.start()
        try:
            host, port = http_url.rsplit("//", 1)[1].rsplit(":", 1)
            before = log.stat().st_size
            refused = 0
            deadline = time.monotonic() + CONNECT_SECONDS
            for _ in range(connections):
                if time.monotonic() > deadline:
                    refused += 1
                    continue
                sock = socket.socket()
                sock.settimeout(0.5)
                try:
                    sock.connect((host, int(port)))
                except OSError:
                    refused += 1
                    sock.close()
                    continue
                held.append(sock)
            time.sleep(hold)
            api_status, api_s = _timed(http_url + "/api/v1/libraries?since=6h")
            metrics_status, metrics_s = _timed(http_url + "/metrics")
            send_udp(udp, [use_datagram("img:idle", [("idle", "1.0", "direct", "env")])] * 3)
            counted = wait_for(lambda: _processes(http_url, "idle") >= 3, 15)
            still_open = sum(1 for sock in held if _open(sock))
            growth = log.stat().st_size - before
        finally:
            done.set()
            for sock in held:
                sock.close()
            proc.terminate()
            status = proc.wait(30)
            watchdog.join(5)
        checks.figure("connections opened, refused, still open", (len(held), refused, still_open))
        checks.figure("API status, s", (api_status, round(api_s, 3)))
        checks.figure("/metrics status, s", (metrics_status, round(metrics_s, 3)))
        checks.figure("log growth bytes", growth)
        checks.check("the API answers", api_status == 200 and api_s < MAX_ANSWER_S)
        checks.check("/metrics answers", metrics_status == 200 and metrics_s < MAX_ANSWER_S)
        checks.check("UDP is counted", counted)
        checks.check("the log stays small", growth < MAX_LOG_GROWTH, f"{growth} bytes")
        checks.check("stops with status 0", status == 0, f"status {status}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return checks


def _watch(proc: subprocess.Popen[bytes], log: Path, done: threading.Event) -> None:
    """Kill ``proc`` if its log passes :data:`LOG_LIMIT` before ``done`` is set."""
    while not done.wait(0.2):
        if log.stat().st_size > LOG_LIMIT:
            print(f"  the log passed {LOG_LIMIT:,} bytes: the collector is killed", flush=True)
            proc.kill()
            return


def _open(sock: socket.socket) -> bool:
    """Whether the collector still holds ``sock`` open (no EOF waiting on it)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    quick, _ = parse_args(__doc__ or "", argv)
    checks = idle(300, 256, 2.0) if quick else idle(1_100, 1_024, 20.0)
    return checks.exit_status()


if __name__ == "__main__":
    sys.exit(main())
