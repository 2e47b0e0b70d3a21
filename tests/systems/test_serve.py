"""A real ``popcon serve`` process on loopback, fed real UDP datagrams, stopped by signals."""

from __future__ import annotations

import json
import re
import resource
import signal
import subprocess
import sys

import pytest
from collectors import ServeProcess, by_name, subprocess_env
from datagrams import statsd_datagram, use_datagram
from timing import wait_until

from popcon.server.query.connection import connect_readonly
from popcon.server.query.libraries import libraries
from popcon.server.storage.schema import integrity_check

pytestmark = pytest.mark.slow

TOKEN = "serve-test-token"
KEY = b"shared-key"
PANDAS = [
    ("pandas", "2.2.2", "direct", "env"),
    ("numpy", "1.26.4", "transitive", "env", "pandas"),
]


def processes(server: ServeProcess, name: str, token: str = TOKEN, query: str = "since=6h"):
    status, answer, _ = server.get(f"/api/v1/libraries?{query}", token=token)
    assert status == 200, answer
    return by_name(answer["libraries"]).get(name, {}).get("processes", 0)


def metric(server: ServeProcess, line_start: str, token: str = TOKEN) -> float:
    status, text, _ = server.get("/metrics", token=token)
    assert status == 200, text
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return 0.0


def test_serve_signed_datagrams_api_cli_and_sigterm(tmp_path):
    db = tmp_path / "data" / "popcon.sqlite"
    env = {"POPCON_API_TOKEN": TOKEN, "POPCON_KEY": KEY.decode()}
    with ServeProcess(db, "--min-count", "1", env=env) as server:
        line = server.start_line
        assert f"storing in {db}" in line
        assert "api: token" in line
        assert "signed datagrams only" in line
        assert TOKEN not in "\n".join(server.lines)

        good = [use_datagram("img", PANDAS, key=KEY) for _ in range(3)]
        unsigned = use_datagram("img", PANDAS)
        forged = use_datagram("img", PANDAS, key=b"another key")
        too_long = use_datagram("img", PANDAS, key=KEY) + b"x" * 1400
        server.send([*good, unsigned, forged, too_long])
        wait_until(lambda: processes(server, "pandas") == 3, what="3 pandas processes")
        assert processes(server, "numpy") == 3
        assert metric(server, 'popcon_datagrams_total{result="unsigned"}') == 1
        assert metric(server, 'popcon_datagrams_total{result="bad_signature"}') == 1
        assert metric(server, 'popcon_datagrams_total{result="too_long"}') == 1
        assert server.get("/api/v1/libraries")[0] == 401

        top = subprocess.run(
            [sys.executable, "-m", "popcon", "top", "--server", server.http_url, "--json"],
            env=subprocess_env(POPCON_API_TOKEN=TOKEN),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert top.returncode == 0, top.stderr
        assert by_name(json.loads(top.stdout)["libraries"])["pandas"]["processes"] == 3

        # datagrams still in flight when SIGTERM arrives are written before it exits
        server.send([use_datagram("img", PANDAS, key=KEY) for _ in range(50)])
        assert server.stop(signal.SIGTERM) == 0
        assert "popcon stopped" in server.lines[-1]

    assert integrity_check(db) == "ok"
    conn = connect_readonly(db)
    try:
        import time

        answer = libraries(conn, time.time() - 3600, time.time() + 600)
    finally:
        conn.close()
    assert by_name(answer["libraries"])["pandas"]["processes"] == 53

    # a restart on the same file: the counters go on from where they were
    with ServeProcess(db, "--min-count", "1", env=env) as again:
        assert (
            metric(
                again, 'popcon_library_processes_total{env="img",level="direct",library="pandas"}'
            )
            == 53
        )
        assert metric(again, 'popcon_datagrams_total{result="unsigned"}') == 1
        assert again.stop(signal.SIGINT) == 0


def test_statsd_lines_open_api_and_sigint(tmp_path):
    db = tmp_path / "popcon.sqlite"
    flags = ("--open", "--min-count", "2", "--statsd-prefix", "legacy", "--statsd-env", "old-hub")
    with ServeProcess(db, *flags) as server:
        assert "api: open" in server.start_line
        assert "unsigned datagrams accepted" in server.start_line
        lines = statsd_datagram("numpy", "scipy", reports=True, prefix="legacy")
        server.send([lines] * 3)
        server.send([statsd_datagram("numpy")])  # not our prefix
        server.send([use_datagram("img", [("requests", "2.32.3", "direct", "env")])])  # once
        wait_until(lambda: processes(server, "numpy", token=None) == 3, what="statsd numpy")
        answer = server.get("/api/v1/libraries?since=6h&level=unknown")[1]
        assert [(r["name"], r["processes"]) for r in answer["libraries"]] == [
            ("numpy", 3),
            ("scipy", 3),
        ]
        wait_until(lambda: processes(server, "requests", token=None) == "fewer than 2")
        answer = server.get("/api/v1/environments")[1]
        assert {e["env"] for e in answer["environments"]} == {"old-hub", "img"}
        assert (
            metric(
                server,
                'popcon_library_processes_total{env="old-hub",level="unknown",library="numpy"}',
                token=None,
            )
            == 3
        )
        assert metric(server, 'popcon_datagrams_total{result="unknown_format"}', token=None) == 1
        assert server.stop(signal.SIGINT) == 0


def test_generated_config_file_is_read_from_the_working_directory(tmp_path):
    def generate_config():
        return subprocess.run(
            [sys.executable, "-m", "popcon", "serve", "--generate-config"],
            cwd=tmp_path,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    made = generate_config()
    assert made.returncode == 0, made.stderr
    config = tmp_path / "popcon_config.py"
    text = config.read_text()
    for name in ("udp", "http", "db", "min_count", "open", "bucket_width", "retention_days"):
        assert f"# c.PopconServe.{name} = " in text
    config.write_text(text + "\nc.PopconServe.open = True\nc.PopconServe.min_count = 5\n")
    # a second --generate-config refuses to overwrite
    again = generate_config()
    assert again.returncode == 1
    assert "exists" in again.stderr

    # the file sets open and min_count; the command line still wins over it (--min-count 4)
    with ServeProcess(tmp_path / "db.sqlite", "--min-count", "4", cwd=tmp_path) as server:
        assert "api: open" in server.start_line
        server.send([use_datagram("img", [("attrs", "24.2.0", "direct", "env")])] * 3)
        wait_until(lambda: processes(server, "attrs", token=None) == "fewer than 4")
        assert server.stop() == 0


def serve_command(db, *flags: str) -> list[str]:
    return [
        sys.executable, "-m", "popcon", "serve",
        "--udp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--db", str(db), *flags,
    ]  # fmt: skip


def test_one_serve_per_database_and_no_stale_lock_after_sigkill(tmp_path):
    db = tmp_path / "popcon.sqlite"
    with ServeProcess(db, "--open", "--min-count", "1") as first:
        second = subprocess.run(
            serve_command(db, "--open"),
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1
        assert second.stdout == ""
        assert second.stderr.splitlines() == [
            f"popcon serve: --db {db}: in use by another collector (pid {first.proc.pid}); "
            "one writer per database"
        ]
        # The first goes on receiving and answering; readers of the file are not blocked.
        first.send([use_datagram("img", PANDAS) for _ in range(3)])
        wait_until(lambda: processes(first, "pandas", token=None) == 3, what="3 processes")
        top = subprocess.run(
            [sys.executable, "-m", "popcon", "top", "--db", str(db), "--json"],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert top.returncode == 0, top.stderr
        assert by_name(json.loads(top.stdout)["libraries"])["pandas"]["processes"] == 3
        first.proc.send_signal(signal.SIGKILL)
        assert first.proc.wait(10) == -signal.SIGKILL

    # SIGKILL left no lock behind: the next one starts and counts on.
    with ServeProcess(db, "--open", "--min-count", "1") as again:
        again.send([use_datagram("img", PANDAS) for _ in range(2)])
        wait_until(lambda: processes(again, "pandas", token=None) == 5, what="5 processes")
        assert again.stop() == 0
        assert again.lines[-1].endswith(f"popcon stopped; everything received was written to {db}")


def test_rows_a_full_disk_kept_out_at_stop_are_the_last_line_and_exit_status_1(tmp_path):
    db = tmp_path / "popcon.sqlite"
    with ServeProcess(db, "--open", "--min-count", "1") as server:
        server.send([use_datagram("img", PANDAS) for _ in range(5)])
        wait_until(lambda: processes(server, "pandas", token=None) == 5, what="5 processes")
        # The disk is "full": no file of the collector may grow any more (Python ignores
        # SIGXFSZ, so writes fail with EFBIG instead of killing it).
        full = max(f.stat().st_size for f in (db, db.with_name(db.name + "-wal")) if f.exists())
        hard = resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE)[1]
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (full, hard))
        server.send(
            use_datagram(f"env{i}", [(f"lib{i}-{j}", "1.0", "direct", "env") for j in range(20)])
            for i in range(300)
        )
        wait_until(
            lambda: any("could not write to" in line for line in server.lines),
            what="a write failing on the full disk",
        )
        assert processes(server, "pandas", token=None) == 5
        assert server.stop(signal.SIGTERM, timeout=60) == 1

    log = "\n".join(server.lines)
    assert "everything received was written" not in log
    stopped = re.fullmatch(
        rf"popcon serve: --db {re.escape(str(db))}: stopped with (\d+) rows not written "
        r"\(last error: OperationalError: (database or disk is full|disk I/O error)\)",
        server.lines[-1],
    )
    assert stopped, log
    assert int(stopped[1]) >= 300 * 20  # a usage row per library at least
    assert f"stopped with {stopped[1]} rows not written to {db}" in log  # the writer's line
    assert integrity_check(db) == "ok"
