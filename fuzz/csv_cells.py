"""Spreadsheet formulas in stored data must not come out of ``popcon ... --csv`` as formulas.

    python fuzz/csv_cells.py            # every formula of FORMULAS in every place
    python fuzz/csv_cells.py --quick    # the same (it takes a few seconds either way)

A real ``popcon serve`` stores datagrams whose environment labels, versions, label values
and inventory versions are formulas (``=cmd|' /C calc'!A0``, ``+1+cmd…``, ``@SUM(…)``,
``-2+3…``, ``=HYPERLINK(…)``, as far as each field's pattern lets them in); then
``popcon top``, ``versions``, ``envs``, ``unused``, ``why`` and ``user-installed`` with
``--db … --csv`` must write each such cell with a leading ``'`` (OWASP's advice), and the
counts as plain numbers.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import tempfile
from pathlib import Path

from hostile import Checks, parse_args, processes, serve, wait_for

# isort: split
# (hostile, imported first, puts src/ and tests/testlib/ on sys.path)

from collectors import subprocess_env
from datagrams import inventory_datagrams, use_datagram

#: Formulas for the fields that allow spaces (environment labels) and those that do not.
FORMULAS = [
    "=cmd|' /C calc'!A0",
    "+1+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    '=HYPERLINK("http://example.invalid/?leak","click")',
]
VERSIONS = ["=cmd|'/Ccalc'!A0", "+1+cmd|'/Ccalc'!A0", "@SUM(1+1)", "-2+3", '=HYPERLINK("x")']
#: Label values are ``[A-Za-z0-9_.:/@+-]``: no ``=``, but the other three starts fit.
LABEL_VALUES = ["+1+cmd", "@SUM", "-2+3"]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
COMMANDS = [
    ["top"], ["versions", "pandas"], ["envs"], ["unused"], ["why", "pandas"], ["user-installed"],
    ["top", "--env", FORMULAS[0]],
]  # fmt: skip
COPIES = 3


def _store(db: Path) -> None:
    """Formulas in every field, each in ``COPIES`` processes, through a real collector."""
    datagrams = []
    for i, env in enumerate(FORMULAS):
        version = VERSIONS[i % len(VERSIONS)]
        labels = [("hub", LABEL_VALUES[i % len(LABEL_VALUES)])]
        libs = [
            ("pandas", version, "direct", "env"),
            ("numpy", version, "transitive", "env", "pandas"),
            ("attrs", version, "direct", "user"),
        ]
        datagrams += [use_datagram(env, libs, labels=labels) for _ in range(COPIES)]
        dists = [("pandas", version), ("scipy", VERSIONS[(i + 1) % len(VERSIONS)])]
        datagrams += inventory_datagrams(env, dists, inventory_id=f"{i:08x}")
    with serve(db) as server:
        server.send(datagrams)
        wait_for(lambda: processes(server, "pandas") >= COPIES * len(FORMULAS), 15)
        server.stop()


def formulas(directory: Path) -> Checks:
    checks = Checks("csv formulas")
    db = directory / "csv.sqlite"
    _store(db)
    bad: list[str] = []
    broken: list[str] = []
    seen = 0
    numbers_ok = True
    for command in COMMANDS:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "popcon",
                *command,
                "--db",
                str(db),
                "--csv",
                "--min-count",
                "1",
            ],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            broken.append(f"{command[0]}: exit {done.returncode}: {done.stderr[-200:]}")
            continue
        rows = list(csv.reader(io.StringIO(done.stdout)))
        header, body = (rows[0], rows[1:]) if rows else ([], [])
        for row in body:
            for key, cell in zip(header, row):
                if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS):
                    seen += 1
                elif cell.startswith(FORMULA_STARTS) and not _number(cell):
                    bad.append(f"{command[0]} {key}={cell[:40]!r}")
                if key in ("processes", "direct", "transitive") and not (
                    _number(cell) or cell.startswith("fewer than")
                ):
                    numbers_ok = False
    checks.figure("neutralised formula cells", seen)
    checks.figure("formula cells as they came", len(bad))
    checks.check("every command wrote its CSV", not broken, "; ".join(broken[:2]))
    checks.check("no cell begins with a formula character", not bad, "; ".join(bad[:4]))
    checks.check("formulas were there to neutralise", seen >= len(FORMULAS), f"{seen} cells")
    checks.check("counts stay plain numbers", numbers_ok)
    return checks


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parse_args(__doc__ or "", argv)
    with tempfile.TemporaryDirectory(prefix="popcon-csv-") as tmp:
        return formulas(Path(tmp)).exit_status()


if __name__ == "__main__":
    sys.exit(main())
