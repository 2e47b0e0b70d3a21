"""What the CLI says when it is pointed at the wrong thing: one line on standard error naming
the option, never a traceback (docs/collector.md promises it): a ``--server`` without a scheme
or host, a ``--db`` that is not a popcon database, a database whose ``tiers`` are corrupt."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from collectors import subprocess_env

from popcon.server.cli import main


def run(capsys, *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1, err
    return status, err.strip()


@pytest.mark.parametrize(
    ("server", "message"),
    [
        (
            "localhost:8138",
            "--server localhost:8138: the URL has no scheme; did you mean http://localhost:8138?",
        ),
        (
            "127.0.0.1:8138",
            "--server 127.0.0.1:8138: the URL has no scheme; did you mean http://127.0.0.1:8138?",
        ),
        ("ftp://localhost:8138", "--server ftp://localhost:8138: expected an http:// or https://"),
        ("http://", "--server http://: expected a host after http://"),
        ("http://localhost:99999", "--server http://localhost:99999: Port out of range"),
    ],
)
def test_a_server_that_is_not_an_http_url(capsys, server, message):
    status, err = run(capsys, "top", "--server", server)
    assert status == 2
    assert err.startswith(f"popcon top: {message}"), err


@pytest.fixture
def other_sqlite(tmp_path: Path) -> Path:
    path = tmp_path / "places.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)")
    conn.commit()
    conn.close()
    return path


def test_a_file_that_is_not_a_popcon_database(capsys, tmp_path, other_sqlite):
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n" * 20)
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    cases = {
        text: "not a popcon database (file is not a database)",
        other_sqlite: "not a popcon database (no popcon tables in it)",
        empty: "not a popcon database (no popcon tables in it)",
        tmp_path: "not a popcon database (a directory)",
    }
    for path, reason in cases.items():
        status, err = run(capsys, "envs", "--db", str(path))
        assert status == 1
        assert err == f"popcon envs: --db {path}: {reason}"
    assert other_sqlite.read_bytes()[:16] == b"SQLite format 3\x00"  # read, not changed


@pytest.mark.parametrize(
    "tiers", ["garbage", "null", "[]", "[[600]]", '[["x", 1]]', "[[0, 1]]", "[[600, 1], [900, 1]]"]
)
def test_corrupt_tiers_name_the_database(capsys, tmp_path, sample_db, tiers):
    db = tmp_path / "popcon.sqlite"
    shutil.copy(sample_db, db)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'tiers'", (tiers,))
    conn.commit()
    conn.close()
    for command in (["top"], ["why", "numpy"], ["versions", "numpy"]):
        status, err = run(capsys, *command, "--db", str(db))
        assert status == 1
        assert err == f"popcon {command[0]}: --db {db}: corrupt meta value 'tiers': {tiers!r}"
    status, err = run(
        capsys, "serve", "--db", str(db), "--udp", "127.0.0.1:0", "--http", "127.0.0.1:0"
    )
    assert status == 1
    assert err == f"popcon serve: --db {db}: corrupt meta value 'tiers': {tiers!r}"


def test_the_popcon_command_prints_no_traceback(tmp_path):
    """The cases of issue 11, through ``python -m popcon`` as a user types them."""
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    for argv, status, message in [
        (["top", "--server", "localhost:8138"], 2, "did you mean http://localhost:8138?"),
        (["top", "--db", str(passwd)], 1, "not a popcon database"),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "popcon", *argv],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (result.returncode, result.stdout) == (status, "")
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert message in result.stderr
