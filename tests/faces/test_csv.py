"""CSV that a spreadsheet will not run: ``tables.csv_cell`` and every ``popcon ... --csv`` over
a database whose environment labels, label values, versions and inventory versions are
formulas (what the protocol lets a sender put there)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from collectors import store_datagrams
from datagrams import inventory_datagrams, use_datagram
from timing import HOUR, NOW

from popcon.server.cli import main
from popcon.server.tables import FORMULA_STARTS, csv_cell, render_csv

#: Environment labels may hold any printable text.
ENV_CMD = "=cmd|' /C calc'!A0"
ENV_PLUS = "+1+cmd|' /C calc'!A0"
ENV_AT = "@SUM(1+1)*cmd|' /C calc'!A0"
ENV_MINUS = "-1+1"
#: Versions: printable ASCII without spaces.
VERSION_LINK = '=HYPERLINK("http://evil.example/?x","click")'
VERSION_AT = "@SUM(A1:A9)"
VERSION_MINUS = "-1+1"
INVENTORY_VERSION = "=1+1"
#: Label values: [A-Za-z0-9_.:/@+-].
LABEL_VALUES = ("-1+1", "@SUM", "+1+cmd")


@pytest.fixture(scope="module")
def formula_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("formulas") / "popcon.sqlite"
    at = NOW - HOUR
    timed = [
        (at, use_datagram(ENV_CMD, [("numpy", VERSION_LINK, "direct", "env")])),
        (at, use_datagram(ENV_CMD, [("numpy", VERSION_AT, "direct", "env")])),
        (at, use_datagram(ENV_PLUS, [("numpy", VERSION_MINUS, "direct", "env")])),
        (at, use_datagram(ENV_AT, [("scipy", VERSION_AT, "direct", "user")])),
        *[
            (at, use_datagram(ENV_MINUS, [("pandas", "2.2.2", "direct", "env")], labels=[label]))
            for label in (("hub", value) for value in LABEL_VALUES)
        ],
    ]
    timed += [(at, d) for d in inventory_datagrams(ENV_CMD, [("six", INVENTORY_VERSION)])]
    store_datagrams(path, timed)
    return path


def csv_of(capsys, *argv: str) -> list[list[str]]:
    status = main([*argv, "--csv", "--min-count", "1"])
    out, err = capsys.readouterr()
    assert status == 0, err
    return list(csv.reader(io.StringIO(out)))


def test_a_cell_that_begins_with_a_formula_character_is_text():
    for start in FORMULA_STARTS:
        assert csv_cell(start + "1+1") == "'" + start + "1+1"
    assert csv_cell("numpy") == "numpy"
    assert csv_cell("'=1") == "'=1"  # already text
    assert csv_cell("") == ""
    assert csv_cell([{"hub": "=x"}]) == '[{"hub": "=x"}]'  # JSON begins with a bracket


def test_numbers_stay_numbers_whatever_their_sign():
    assert csv_cell(-3) == -3
    assert csv_cell(-0.5) == -0.5
    assert csv_cell(None) is None
    out = render_csv([("N", "n"), ("TEXT", "text"), ("NONE", "none")], [{"n": -3, "text": "-3"}])
    assert out.splitlines() == ["n,text,none", "-3,'-3,"]


def test_a_tab_at_the_start_is_text_too():
    out = render_csv([("A", "a"), ("B", "b")], [{"a": "\t=1", "b": "x,=2"}])
    assert list(csv.reader(io.StringIO(out))) == [["a", "b"], ["'\t=1", "x,=2"]]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["versions", "numpy"], {"'" + VERSION_LINK, "'" + VERSION_AT, "'" + VERSION_MINUS}),
        (["unused"], {"'" + ENV_CMD, "'" + INVENTORY_VERSION}),
        (["user-installed"], {"'" + ENV_AT}),
        (["envs"], {"'" + ENV_CMD, "'" + ENV_PLUS, "'" + ENV_AT, "'" + ENV_MINUS}),
        (["top", "--label", "hub=-1+1"], {"pandas"}),
    ],
)
def test_cli_csv_neutralises_formulas(capsys, formula_db, argv, expected):
    rows = csv_of(capsys, *argv, "--db", str(formula_db))
    cells = {value for row in rows[1:] for value in row}
    assert expected <= cells
    for row in rows:
        for value in row:
            assert not value.startswith(FORMULA_STARTS), (argv, value)


def test_cli_csv_keeps_counts_and_json_cells(capsys, formula_db):
    rows = csv_of(capsys, "envs", "--db", str(formula_db))
    header, *body = rows
    by_env = {row[0]: dict(zip(header, row)) for row in body}
    minus = by_env["'" + ENV_MINUS]
    assert minus["processes"] == "3"
    assert all(f'"hub": "{value}"' in minus["labels"] for value in LABEL_VALUES)
    rows = csv_of(capsys, "versions", "numpy", "--db", str(formula_db))
    assert sorted(rows[1:]) == sorted(
        [
            ["'" + VERSION_LINK, "unknown", "1"],
            ["'" + VERSION_AT, "unknown", "1"],
            ["'" + VERSION_MINUS, "unknown", "1"],
        ]
    )
