"""``popcon top|unused|user-installed|why|versions|envs``, on a database file and on a server
(sample: see test_http.py's docstring)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from collectors import ApiServer, by_name
from timing import NOW

from popcon.server.cli import main
from popcon.server.query.params import iso
from popcon.server.web.auth import TokenAuth

WINDOW = ["--from", iso(NOW - 6 * 3600), "--until", iso(NOW)]


def ok(capsys, *argv) -> str:
    """Standard output of a command that must succeed."""
    status, out, err = run(capsys, *argv)
    assert status == 0, err
    return out


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_top_json_is_the_api_answer(capsys, sample_db, api):
    status, out, err = run(capsys, "top", "--db", str(sample_db), "--json", *WINDOW)
    assert status == 0, err
    from_db = json.loads(out)
    status, out, err = run(capsys, "top", "--server", api.url, "--json", *WINDOW)
    assert status == 0, err
    from_server = json.loads(out)
    _, from_api, _ = api.get(f"/api/v1/libraries?from={WINDOW[1]}&until={WINDOW[3]}")
    assert from_db == from_server == from_api
    assert by_name(from_db["libraries"])["numpy"]["processes"] == 9


def test_top_table(capsys, sample_db):
    out = ok(capsys, "top", "--db", str(sample_db))
    caption, header, *rows = out.splitlines()
    assert "all environments" in caption
    assert 'counts under 3 shown as "fewer than 3"' in caption
    assert header.split() == ["LIBRARY", "USERS", "PROCESSES", "DIRECT", "TRANSITIVE"]
    assert [row.split()[0] for row in rows] == [
        "numpy",
        "pandas",
        "python-dateutil",
        "requests",
        "scipy",
    ]
    assert rows[0].split() == ["numpy", "?", "9", "5", "4"]  # popcon/1 senders: people unknown
    assert "fewer than 3" in rows[3]
    # aligned: numbers end in the same column as their heading
    end = header.index("PROCESSES") + len("PROCESSES")
    assert all(row[:end].endswith(("9", "5", "3")) for row in rows)


def test_top_direct_env_label_limit_csv(capsys, sample_db):
    db = ["--db", str(sample_db)]
    out = ok(capsys, "top", *db, "--direct", "--csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert list(table[0]) == ["name", "users", "processes"]
    assert {row["users"] for row in table} == {"unknown"}
    assert {row["name"]: row["processes"] for row in table} == {
        "numpy": "5",
        "pandas": "5",
        "requests": "fewer than 3",
        "scipy": "fewer than 3",
    }
    out = ok(capsys, "top", *db, "--env", "img:b", "--json")
    assert json.loads(out)["libraries"] == [
        {
            "name": "numpy",
            "users": None,
            "direct_users": None,
            "processes": 4,
            "direct": 4,
            "transitive": 0,
        }
    ]
    out = ok(capsys, "top", *db, "--label", "hub=teaching", "--since", "7d", "--json")
    assert json.loads(out)["libraries"][0]["processes"] == 7
    out = ok(capsys, "top", *db, "--limit", "2", "--csv")
    assert len(out.splitlines()) == 3
    out = ok(capsys, "top", *db, "--origin", "user", "--min-count", "1", "--json")
    assert json.loads(out)["libraries"] == [
        {
            "name": "scipy",
            "users": None,
            "direct_users": None,
            "processes": 1,
            "direct": 1,
            "transitive": 0,
        }
    ]


def test_why_and_versions(capsys, sample_db):
    out = ok(capsys, "why", "numpy", "--db", str(sample_db))
    lines = out.splitlines()
    assert "numpy" in lines[0]
    assert "? users, 12 processes, 8 direct (67%), 4 transitive" in lines[0]
    assert lines[-2:] == ["IMPORTER  USERS  PROCESSES", "pandas        ?          5"]
    out = ok(capsys, "why", "NumPy", "--db", str(sample_db), "--json")
    answer = json.loads(out)
    assert answer["direct_share"] == pytest.approx(8 / 12)
    assert answer["importers"] == [{"importer": "pandas", "users": None, "processes": 5}]
    out = ok(capsys, "versions", "numpy", "--db", str(sample_db), "--csv")
    assert out.splitlines() == [
        "version,users,processes",
        "1.26.4,unknown,5",
        "2.1.0,unknown,4",
        "2.0.0,unknown,3",
    ]


def test_unused_user_installed_envs(capsys, sample_db):
    db = ["--db", str(sample_db)]
    out = ok(capsys, "unused", *db, "--csv")
    assert out.splitlines() == [
        "env,name,version,why,required_by,needed_by,removable",
        "img:a,attrs,24.2.0,unknown,[],[],",
        "img:a,six,1.16.0,unknown,[],[],",
    ]
    out = ok(capsys, "unused", *db, "--env", "img:b")
    assert "(nothing)" in out
    out = ok(capsys, "user-installed", *db, "--min-count", "1")
    assert out.splitlines()[-1].split() == ["scipy", "img:a", "1", "1.14.1", "(1)"]
    out = ok(capsys, "envs", *db)
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["ENVIRONMENT", "PYTHON", "LABELS"]
    assert lines[2].split()[:3] == ["img:a", "3.11", "hub=research"]
    out = ok(capsys, "envs", *db, "--json")
    assert {e["env"] for e in json.loads(out)["environments"]} == {"img:a", "img:b"}


def test_server_with_token(capsys, monkeypatch, sample_db, make_ctx):
    auth = TokenAuth("cli-token")
    with ApiServer(make_ctx(sample_db, api_auth=auth)) as server:
        monkeypatch.delenv("POPCON_API_TOKEN", raising=False)
        status, out, err = run(capsys, "top", "--server", server.url)
        assert status == 1
        assert out == ""
        assert err.startswith("popcon top: a token is required")
        assert "(HTTP 401 from" in err
        assert len(err.splitlines()) == 1
        monkeypatch.setenv("POPCON_API_TOKEN", "cli-token")
        status, out, err = run(capsys, "why", "pandas", "--server", server.url + "/")
        assert status == 0, err
        assert "5 processes, 5 direct (100%), 0 transitive" in out
        status, out, err = run(capsys, "top", "--server", server.url, "--since", "5x")
        assert status == 2
        assert err.startswith("popcon top: since: expected a duration")


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["top", "--since", "5x"], 2, "popcon top: since: expected a duration"),
        (["top", "--label", "nolabel"], 2, "popcon top: --label: expected KEY=VALUE"),
        (["top", "--min-count", "0"], 2, "popcon top: --min-count: expected at least 1"),
        (["why", "not a name!"], 2, "popcon why: library: expected a distribution name"),
        (["why", "never-seen"], 1, "popcon why: library: never seen in this window: never-seen"),
    ],
)
def test_bad_input_is_one_line(capsys, sample_db, argv, status, message):
    got, _, err = run(capsys, *argv, "--db", str(sample_db))
    assert got == status
    assert err.startswith(message), err
    assert len(err.splitlines()) == 1


def test_missing_database_and_unreachable_server(capsys, tmp_path):
    status, _, err = run(capsys, "top", "--db", str(tmp_path / "nope.sqlite"))
    assert status == 1
    assert "no popcon database at" in err
    # a port nobody listens on: bind one, close it, use it
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    status, _, err = run(capsys, "envs", "--server", f"http://127.0.0.1:{port}")
    assert status == 1
    assert err.startswith(f"popcon envs: cannot reach the collector at http://127.0.0.1:{port}")


def test_serve_flags_are_checked(capsys, tmp_path):
    status, _, err = run(capsys, "serve", "--bogus", "1", "--db", str(tmp_path / "x.sqlite"))
    assert status == 2
    assert err.strip() == "popcon serve: --bogus: unknown flag (see popcon serve --help)"
    status, _, err = run(capsys, "serve", "--min-count", "many")
    assert err.strip() == "popcon serve: --min-count: expected an int, not the str 'many'"
    status, _, err = run(capsys, "serve", "--bucket-width", "7")
    assert err.strip() == "popcon serve: --bucket-width: expected 60..86400 seconds dividing a day"
    status, _, err = run(capsys, "serve", "--http", "localhost:http")
    assert err.strip() == "popcon serve: --http: expected a port 0-65535, got 'http'"
    assert not (tmp_path / "x.sqlite").exists()


def test_top_into_a_closed_pipe_is_no_traceback(sample_db, popcon_into_closed_pipe):
    """``popcon top | head -0``: the reader is gone before popcon writes."""
    result = popcon_into_closed_pipe("top", "--db", sample_db)
    assert (result.returncode, result.stderr) == (0, "")


#: What old data may hold, from before the decoder refused it: a right-to-left override that
#: makes "img:exe.gnp" read as "img:png.exe", a C1 control (CSI), a bidi isolate in a label.
SPOOFED_ENV = "img:\u202eexe.gnp\x9b31m"
SPOOFED_LABEL = "hub=\u2066x\u2069"


@pytest.fixture
def spoofed_db(tmp_path, sample_db):
    import shutil
    import sqlite3

    db = tmp_path / "popcon.sqlite"
    shutil.copy(sample_db, db)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE envs SET name = ? WHERE name = 'img:a'", (SPOOFED_ENV,))
    env_b = "(SELECT id FROM envs WHERE name = 'img:b')"
    conn.execute(f"UPDATE sources SET labels = ? WHERE env_id = {env_b}", (SPOOFED_LABEL,))
    conn.commit()
    conn.close()
    return db


def test_display_text_escapes_controls_and_bidi_marks():
    from popcon.server.tables import display_text

    assert display_text("img:\u202eexe.gnp") == "img:\\u202eexe.gnp"
    assert display_text("\x85\x9f\u200e\u200f\u061c\u202a\u2066\u2069\x1b\x7f") == (
        "\\u0085\\u009f\\u200e\\u200f\\u061c\\u202a\\u2066\\u2069\\u001b\\u007f"
    )
    assert display_text("numpy 2.1.0 · café ✓ \u00a0") == "numpy 2.1.0 · café ✓ \u00a0"


def test_tables_show_old_spoofing_characters_escaped(capsys, spoofed_db):
    db = ["--db", str(spoofed_db), "--min-count", "1"]
    escaped_env = "img:\\u202eexe.gnp\\u009b31m"
    for argv in (["envs"], ["unused"], ["user-installed"]):
        out = ok(capsys, *argv, *db)
        assert escaped_env in out, argv
        assert not any(c in out for c in "\u202e\x9b\u2066\u2069"), argv
    assert "hub=\\u2066x\\u2069" in ok(capsys, "envs", *db)
    status, _, err = run(capsys, "top", "--db", str(spoofed_db.with_name("\u202ezz.sqlite")))
    assert status == 1
    assert "no popcon database at" in err and "\\u202ezz.sqlite" in err and "\u202e" not in err
    # JSON and CSV carry the data as stored: they are for programs, not for eyes
    answer = json.loads(ok(capsys, "envs", *db, "--json"))
    assert SPOOFED_ENV in {row["env"] for row in answer["environments"]}
    assert SPOOFED_ENV in ok(capsys, "envs", *db, "--csv")
