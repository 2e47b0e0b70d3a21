"""One database, and what may happen to its writer: a second collector, a full disk, SIGKILL.

    python fuzz/writers.py                       # full: 3 SIGKILLs into 10 s floods
    python fuzz/writers.py --quick               # short floods (for CI)
    python fuzz/writers.py two-collectors        # one part: two-collectors, full-disk, sigkill

- ``two-collectors``: a second ``popcon serve`` on a database another one holds must refuse
  to start, with one line naming the database and the holder's process id; once the holder
  is killed with SIGKILL, a new one starts (no stale lock).
- ``full-disk``: RLIMIT_FSIZE on the collector (Python ignores SIGXFSZ, so writes fail with
  EFBIG) while unique data floods in; its last line must say how many rows were not written,
  its exit status must not be 0, and what it had stored must stay, with
  ``PRAGMA integrity_check`` ok.
- ``sigkill``: 3 rounds of a flood into the same database, the collector killed with SIGKILL
  while it arrives; then ``integrity_check`` ok, and each round loses at most about
  ``MAX_LOSS_SECONDS`` of the flood.
"""

from __future__ import annotations

import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from hostile import TOKEN, Checks, parse_args, processes, send_for, serve, wait_for

# isort: split
# (hostile, imported first, puts src/ and tests/testlib/ on sys.path)

from collectors import subprocess_env
from datagrams import use_datagram

#: Seconds of a flood one SIGKILL may lose: what was received but not yet committed, "the
#: last ~1.5-2 seconds" (docs/collector-storage.md).
MAX_LOSS_SECONDS = 2.0
PARTS = ("two-collectors", "full-disk", "sigkill")


def integrity(db: Path) -> str:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def _lib(name: str, version: str = "1.0") -> tuple[str, str, str, str]:
    return (name, version, "direct", "env")


def two_collectors(directory: Path) -> Checks:
    checks = Checks("two collectors")
    db = directory / "two.sqlite"
    first = serve(db)
    try:
        command = [
            sys.executable, "-m", "popcon", "serve", "--db", str(db),
            "--udp", "127.0.0.1:0", "--http", "127.0.0.1:0",
        ]  # fmt: skip
        second = subprocess.Popen(
            command,
            env=subprocess_env(POPCON_API_TOKEN=TOKEN),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            output = second.communicate(timeout=20)[0].strip()
            status: int | None = second.returncode
        except subprocess.TimeoutExpired:  # it started: stop it
            second.kill()
            output, status = second.communicate(timeout=10)[0].strip(), None
        lines = output.splitlines()
        checks.figure("second collector's status and output", (status, output[-300:]))
        checks.check("the second collector refuses to start", status not in (None, 0))
        checks.check(
            "in one line naming the database and the holder",
            len(lines) == 1 and str(db) in output and str(first.proc.pid) in output,
            output[-200:],
        )
        first.stop(signal.SIGKILL)
        with serve(db) as third:
            checks.check("after a SIGKILL no stale lock: the next one starts", True, third.udp_url)
            third.stop()
    except AssertionError as error:  # ServeProcess could not start the third
        checks.check("after a SIGKILL no stale lock: the next one starts", False, str(error)[-300:])
    finally:
        if first.proc.poll() is None:
            first.stop()
    return checks


def full_disk(directory: Path, quick: bool) -> Checks:
    checks = Checks("full disk")
    db = directory / "full.sqlite"
    with serve(db) as server:
        server.send([use_datagram("img", [_lib("before")]) for _ in range(5)])
        checks.check("stored before the disk filled", wait_for(
            lambda: processes(server, "before") == 5, 15
        ))  # fmt: skip
        full = max(f.stat().st_size for f in (db, db.with_name(db.name + "-wal")) if f.exists())
        hard = resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE)[1]
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (full, hard))
        count = 300 if quick else 3_000
        sent, _ = send_for(
            server.udp,
            (
                use_datagram(f"env{i}", [_lib(f"lib{i}-{j}") for j in range(20)])
                for i in range(count)
            ),
            seconds=30,
            rate=2_000,
        )
        failing = wait_for(lambda: any("could not write" in line for line in server.lines), 30)
        checks.check("the failing write is logged", failing)
        checks.check("what was stored stays readable", processes(server, "before") == 5)
        status = server.stop(signal.SIGTERM, timeout=60)
    last = server.lines[-1] if server.lines else ""
    log = "\n".join(server.lines)
    checks.figure("datagrams sent to the full disk", sent)
    checks.figure("exit status, last line", (status, last[-200:]))
    checks.check("exit status is not 0", status != 0, f"status {status}")
    checks.check("the last line says how many rows were not written", "rows not written" in last)
    checks.check(
        "no false 'everything received was written'", "everything received was written" not in log
    )
    result = integrity(db)
    checks.check("integrity_check ok", result == "ok", result)
    with serve(db) as again:
        checks.check("after a restart the rows from before are there", wait_for(
            lambda: processes(again, "before") == 5, 15
        ))  # fmt: skip
        again.stop()
    return checks


def sigkill(directory: Path, quick: bool, rounds: int = 3) -> Checks:
    checks = Checks("sigkill mid-flood")
    db = directory / "killed.sqlite"
    seconds, rate = (1.5, 2_000) if quick else (5.0, 10_000)
    stored = 0
    for round_ in range(1, rounds + 1):
        server = serve(db)
        # ten versions: fewer than any per-library cap, so every datagram is stored
        datagrams = (
            use_datagram("img:kill", [_lib("killed", f"1.{i % 10}")]) for i in range(10**8)
        )
        sent_before_kill = send_for(server.udp, datagrams, seconds=seconds, rate=rate)[0]
        server.stop(signal.SIGKILL)
        result = integrity(db)
        with serve(db) as again:
            now_stored = processes(again, "killed")
            again.stop()
        gained = now_stored - stored
        stored = now_stored
        lost = max(0, sent_before_kill - gained)
        checks.figure(
            f"round {round_}: sent before the kill, stored, lost, lost s",
            (sent_before_kill, gained, lost, round(lost / rate, 2)),
        )
        checks.check(f"round {round_}: integrity_check ok", result == "ok", result)
        checks.check(
            f"round {round_}: the loss is bounded",
            lost <= rate * MAX_LOSS_SECONDS,
            f"{lost} lost, at most {rate * MAX_LOSS_SECONDS:.0f}",
        )
    return checks


def main(argv: list[str] | None = None) -> int:
    quick, parts = parse_args(__doc__ or "", argv, PARTS)
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="popcon-writers-") as tmp:
        directory = Path(tmp)
        runs = {
            "two-collectors": lambda: two_collectors(directory),
            "full-disk": lambda: full_disk(directory, quick),
            "sigkill": lambda: sigkill(directory, quick),
        }
        for part in parts:
            failed += [f"{part}: {name}" for name in runs[part]().failed]
    print(f"writers: {len(failed)} checks failed" + (": " + "; ".join(failed) if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
