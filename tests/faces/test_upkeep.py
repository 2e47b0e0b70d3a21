"""``popcon forget`` and ``popcon backup`` on real databases: what a forgotten environment or
library leaves is what a database that never had it holds, answer for answer; a backup taken
while a real ``popcon serve`` receives is a whole, readable database."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from collectors import ServeProcess, store_datagrams, subprocess_env
from datagrams import inventory_datagrams, use_datagram_2
from timing import DAY, HOUR, NOW, wait_until

from popcon.server.query.params import iso
from popcon.server.storage.schema import integrity_check

ALICE, BOB, CAROL = b"alice-secret-0001", b"bob-secret-00002", b"carol-secret-003"
PANDAS = [
    ("pandas", "2.2.2", "direct", "env"),
    ("numpy", "1.26.4", "transitive", "env", "pandas"),
    ("requests", "2.32.3", "direct", "env"),
]
NUMPY = [("numpy", "2.1.0", "direct", "env"), ("requests", "2.31.0", "direct", "env")]
#: Windows over the finest tier, the rolled-up hours and days, and everything.
WINDOWS = [(NOW - 6 * HOUR, NOW), (NOW - 5 * DAY, NOW), (NOW - 30 * DAY, NOW)]


def environment_a(libs: Sequence = PANDAS) -> list[tuple[int, bytes]]:
    out = []
    for when in (NOW - HOUR, NOW - 3 * DAY):
        for secret in (ALICE, BOB, CAROL):
            out.append((when, use_datagram_2("img:a", libs, secret, labels=(("hub", "a"),))))
    (listing,) = inventory_datagrams("img:a", [("pandas", "2.2.2"), ("six", "1.16.0")])
    return [*out, (NOW - HOUR, listing)]


def environment_b(libs: Sequence = NUMPY) -> list[tuple[int, bytes]]:
    out = []
    for when in (NOW - 2 * HOUR, NOW - 3 * DAY, NOW - 10 * DAY):
        for secret in (BOB, CAROL):
            out.append((when, use_datagram_2("img:b", libs, secret, labels=(("hub", "b"),))))
    return out


def database(path: Path, timed: list[tuple[int, bytes]]) -> Path:
    store_datagrams(path, timed)
    return path


def popcon(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "popcon", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
        check=False,
    )


def answers(db: Path, *questions: Sequence[str]) -> list[object]:
    """The JSON answers of ``popcon QUESTION --db db`` over each of :data:`WINDOWS`, nothing
    hidden."""
    out = []
    for question in questions:
        for start, end in WINDOWS:
            window = ["--from", iso(start), "--until", iso(end)]
            if question[0] == "envs":
                window = []
            result = popcon(
                *question, "--db", str(db), "--json", "--min-count", "1", "--min-users", "1",
                *window,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            answer = json.loads(result.stdout)
            out.append({k: v for k, v in answer.items() if k not in ("from", "until")})
    return out


def test_a_forgotten_environment_leaves_what_a_database_without_it_holds(tmp_path):
    both = database(tmp_path / "both.sqlite", environment_a() + environment_b())
    only_b = database(tmp_path / "only-b.sqlite", environment_b())
    result = popcon("forget", "--env", "img:a", "--db", str(both), stdin="y\n")
    assert result.returncode == 0, result.stderr
    assert "Forget environment img:a (6 processes counted, last seen" in result.stdout
    assert result.stdout.rstrip().endswith(f"forgot environment img:a in {both}")
    questions = (["top"], ["why", "numpy"], ["versions", "requests"], ["unused"], ["envs"])
    assert answers(both, *questions) == answers(only_b, *questions)
    gone, never = (popcon("why", "pandas", "--db", str(db)) for db in (both, only_b))
    assert (gone.returncode, gone.stderr) == (never.returncode, never.stderr)
    assert integrity_check(both) == "ok"


def test_a_forgotten_library_is_gone_from_every_answer(tmp_path):
    without = [lib for lib in PANDAS if lib[0] != "numpy"]
    both = database(tmp_path / "both.sqlite", environment_a() + environment_b())
    never = database(
        tmp_path / "never.sqlite",
        environment_a(without) + environment_b([lib for lib in NUMPY if lib[0] != "numpy"]),
    )
    result = popcon("forget", "--library", "NumPy", "--db", str(both), "--yes")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"forgot library numpy in {both}\n"
    questions = (["top"], ["why", "pandas"], ["versions", "requests"])
    assert answers(both, *questions) == answers(never, *questions)
    gone = popcon("why", "numpy", "--db", str(both))
    assert gone.returncode != 0 and "numpy" in gone.stderr


@pytest.mark.parametrize("reply", ["n\n", "", "maybe\n"], ids=["no", "end-of-input", "other"])
def test_forget_deletes_nothing_unless_the_answer_is_yes(tmp_path, reply):
    db = database(tmp_path / "popcon.sqlite", environment_a())
    before = answers(db, ["top"], ["envs"])
    result = popcon("forget", "--env", "img:a", "--db", str(db), stdin=reply)
    assert result.returncode == 1
    assert result.stderr == (
        "popcon forget: not confirmed; nothing was deleted (--yes does not ask)\n"
    )
    assert answers(db, ["top"], ["envs"]) == before


def test_forget_names_what_it_cannot_find_in_one_line(tmp_path):
    db = database(tmp_path / "popcon.sqlite", environment_a())
    for args, message in (
        (["--env", "img:nope"], f"no environment 'img:nope' in {db}"),
        (["--library", "nopelib"], f"no library 'nopelib' in {db}"),
    ):
        result = popcon("forget", *args, "--db", str(db), "--yes")
        assert (result.returncode, result.stderr) == (1, f"popcon forget: {message}\n")
    missing = tmp_path / "missing.sqlite"
    result = popcon("forget", "--env", "img:a", "--db", str(missing), "--yes")
    assert (result.returncode, result.stderr) == (
        1,
        f"popcon forget: no popcon database at {missing}\n",
    )
    result = popcon("forget", "--db", str(db))
    assert result.returncode == 2 and "one of the arguments --env --library" in result.stderr


@pytest.mark.parametrize(
    ("version", "advice"),
    [
        (1, "start popcon serve on it once, which migrates it, then stop it and retry"),
        (99, "use the popcon that wrote it"),
    ],
)
def test_forget_touches_only_the_schema_it_knows(tmp_path, version, advice):
    db = database(tmp_path / "popcon.sqlite", environment_a())
    with sqlite3.connect(db) as conn:
        (known,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    conn.close()
    result = popcon("forget", "--env", "img:a", "--db", str(db), "--yes")
    assert (result.returncode, result.stderr) == (
        1,
        f"popcon forget: {db}: the database has schema {version}, this popcon writes schema "
        f"{known}: {advice}\n",
    )
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM envs").fetchone() == (1,)
    conn.close()


def test_backup_of_a_live_database_while_it_receives(tmp_path):
    db = tmp_path / "live.sqlite"
    with ServeProcess(db, "--open") as serve:
        flowing = threading.Event()
        done = threading.Event()

        def send() -> None:
            seq = 0
            while not done.is_set():
                serve.send([use_datagram_2("img:live", PANDAS, ALICE, seq=seq)])
                seq += 1
                flowing.set()

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            assert flowing.wait(10)
            wait_until(lambda: serve.get("/api/v1/environments")[1]["environments"], 20)
            copies = []
            for n in range(3):
                copy = tmp_path / "backups" / f"copy-{n}.sqlite"
                copy.parent.mkdir(exist_ok=True)
                result = popcon("backup", str(copy), "--db", str(db))
                assert result.returncode == 0, result.stderr
                assert result.stdout.startswith(f"backed up {db} to {copy} (")
                copies.append(copy)
            held = popcon("forget", "--env", "img:live", "--db", str(db), "--yes")
        finally:
            done.set()
            sender.join(10)
    assert held.returncode == 1
    assert "a running collector (pid " in held.stderr and "stop it first" in held.stderr
    for copy in copies:
        assert integrity_check(copy) == "ok"
        assert not Path(f"{copy}-wal").exists()  # one self-contained file
        top = json.loads(popcon("top", "--db", str(copy), "--json", "--since", "1d").stdout)
        assert "pandas" in {row["name"] for row in top["libraries"]}
    assert sorted(p.name for p in copies[0].parent.iterdir()) == [c.name for c in copies]


def test_backup_refuses_what_is_not_a_copy_of_a_popcon_database(tmp_path):
    db = database(tmp_path / "popcon.sqlite", environment_a())
    result = popcon("backup", str(db), "--db", str(db))
    assert (result.returncode, result.stderr) == (
        1,
        f"popcon backup: {db}: that is the database itself\n",
    )
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    target = tmp_path / "copy.sqlite"
    result = popcon("backup", str(target), "--db", str(other))
    assert result.returncode == 1
    assert result.stderr.startswith("popcon backup: ") and "not a popcon database" in result.stderr
    assert not target.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]
