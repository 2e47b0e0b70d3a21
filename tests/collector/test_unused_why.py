"""Why an unused distribution is installed: ``dist`` lines with ``<requested>`` and
``<requires>``, decoded, stored, migrated from schema 2, and answered by ``unused`` (the API
function, ``/api/v1/unused``'s, and ``popcon unused``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from collectors import ingest
from datagrams import use_datagram

from popcon.protocol import MAX_DATAGRAM, MAX_NAME, MAX_REQUIRES, REQUIRES_NONE, REQUIRES_RE
from popcon.protocol.decode import make_decoder
from popcon.protocol.records import DistReason, InventoryPart
from popcon.server.cli import main
from popcon.server.query.connection import connect_readonly
from popcon.server.query.environments import unused
from popcon.server.query.params import iso
from popcon.server.storage.schema import SCHEMA_VERSION, connect_writer, schema_version

ENV = "img:why"

#: An environment as pip leaves it after ``pip install requests pandas`` and a removed
#: package's dependency (``leftover``): (name, version, requested, requires).
INVENTORY = [
    ("certifi", "2024.8.30", "-", "-"),
    ("charset-normalizer", "3.4.0", "-", "-"),
    ("idna", "3.10", "-", "-"),
    ("leftover", "1.0", "-", "-"),
    ("numpy", "2.1.3", "-", "-"),
    ("pandas", "2.2.3", "r", "numpy,python-dateutil,tzdata"),
    ("pip", "24.3.1", "r", "-"),
    ("python-dateutil", "2.9.0", "-", "six"),
    ("requests", "2.32.3", "r", "certifi,charset-normalizer,idna,urllib3"),
    ("setuptools", "75.6.0", "-", "-"),
    ("six", "1.16.0", "-", "-"),
    ("tzdata", "2024.2", "-", "-"),
    ("urllib3", "2.2.3", "-", "-"),
]


def inventory_datagram(
    lines: list[str],
    *,
    env: str = ENV,
    inventory_id: str = "0c0ffee0",
    part: int = 1,
    parts: int = 1,
) -> bytes:
    head = [f"popcon/2 inv {inventory_id} {part} {parts}", f"env {env}", "py 3.12"]
    return ("\n".join(head + lines) + "\n").encode()


def why_lines(inventory: list[tuple[str, str, str, str]]) -> list[str]:
    return [
        f"dist {name} {version} {requested} {requires}"
        for name, version, requested, requires in inventory
    ]


# -- the decoder -------------------------------------------------------------------------------


def test_dist_lines_that_say_why_decode_beside_plain_ones() -> None:
    data = inventory_datagram(
        [
            "dist numpy 2.1.3",
            "dist pandas 2.2.3 r tzdata,numpy",
            "dist tzdata 2024.2 - -",
            "dist legacy 0.1 ? six",
        ]
    )
    part = make_decoder()(data)
    assert isinstance(part, InventoryPart)
    assert part.dists == (
        ("numpy", "2.1.3"),
        ("pandas", "2.2.3"),
        ("tzdata", "2024.2"),
        ("legacy", "0.1"),
    )
    assert part.reasons == (
        DistReason("pandas", True, ("numpy", "tzdata")),
        DistReason("tzdata", False, ()),
        DistReason("legacy", None, ("six",)),
    )


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("dist pandas 2.2.3 r", "malformed"),  # a requested field without its requires
        ("dist pandas 2.2.3 yes numpy", "malformed"),
        ("dist pandas 2.2.3 r Numpy", "malformed"),  # not canonical
        ("dist pandas 2.2.3 r numpy,", "malformed"),
        ("dist pandas 2.2.3 r numpy,,six", "malformed"),
        ("dist pandas 2.2.3 r " + ",".join(f"d{i}" for i in range(MAX_REQUIRES + 1)), "malformed"),
        ("dist pandas 2.2.3 r numpy six", "malformed"),
    ],
)
def test_a_bad_requested_or_requires_field_drops_the_part(line: str, reason: str) -> None:
    assert make_decoder()(inventory_datagram([line])) == reason


def test_the_most_requirements_a_line_holds_fit_in_a_datagram() -> None:
    names = ",".join(f"d{i}" for i in range(MAX_REQUIRES))
    data = inventory_datagram([f"dist pandas 2.2.3 r {names}"])
    assert len(data) <= MAX_DATAGRAM
    part = make_decoder()(data)
    assert isinstance(part, InventoryPart) and len(part.reasons[0].requires) == MAX_REQUIRES


def test_the_requires_pattern_says_what_its_limit_says() -> None:
    longest = "a" * (MAX_NAME - 1) + "z"
    assert REQUIRES_RE.match(",".join([longest] * MAX_REQUIRES))
    assert not REQUIRES_RE.match(",".join([longest] * (MAX_REQUIRES + 1)))
    assert not REQUIRES_RE.match(longest + "z")
    assert REQUIRES_RE.match(REQUIRES_NONE) and not REQUIRES_RE.match("")


# -- stored, and answered ----------------------------------------------------------------------


def _unused(writer, env: str = ENV) -> dict:
    conn = connect_readonly(writer.path)
    try:
        now = writer.clock()
        answer = unused(conn, now - 3600, now + 600, env=env, now=now)
    finally:
        conn.close()
    return answer["environments"][0]


def test_unused_splits_requested_dependencies_orphans_and_tools(store_writer, fake_clock) -> None:
    writer = store_writer()
    now = fake_clock()
    lines = why_lines(INVENTORY)
    # Two parts, so that the reasons of both are put together.
    datagrams = [
        inventory_datagram(lines[:6], part=1, parts=2),
        inventory_datagram(lines[6:], part=2, parts=2),
        use_datagram(ENV, [("pandas", "2.2.3", "direct", "env")]),
    ]
    ingest(writer, [(now, d) for d in datagrams])
    env = _unused(writer)
    assert env["reasons_known"] is True
    found = {lib["name"]: lib for lib in env["libraries"]}
    assert "pandas" not in found  # used
    assert {name: lib["why"] for name, lib in found.items()} == {
        "certifi": "dependency",
        "charset-normalizer": "dependency",
        "idna": "dependency",
        "leftover": "orphan",
        "numpy": "dependency",
        "pip": "requested",
        "python-dateutil": "dependency",
        "requests": "requested",
        "setuptools": "orphan",
        "six": "dependency",
        "tzdata": "dependency",
        "urllib3": "dependency",
    }
    assert [name for name, lib in found.items() if lib["tool"]] == ["pip", "setuptools"]
    assert found["certifi"]["required_by"] == ["requests"]
    assert found["six"]["required_by"] == ["python-dateutil"]
    # pandas is used: what it requires, directly or through python-dateutil, must stay.
    for name in ("numpy", "python-dateutil", "six", "tzdata"):
        assert (found[name]["needed_by"], found[name]["removable"]) == (["pandas"], False), name
    # requests is unused too: it and what it alone requires can go.
    for name in ("requests", "certifi", "charset-normalizer", "idna", "urllib3", "leftover"):
        assert (found[name]["needed_by"], found[name]["removable"]) == ([], True), name


def test_a_dependency_of_a_used_and_an_unused_package_is_needed(store_writer, fake_clock) -> None:
    writer = store_writer()
    now = fake_clock()
    lines = [
        "dist app 1 r shared",
        "dist tool-a 1 r shared",
        "dist shared 1 - -",
    ]
    ingest(
        writer,
        [
            (now, inventory_datagram(lines)),
            (now, use_datagram(ENV, [("app", "1", "direct", "env")])),
        ],
    )
    found = {lib["name"]: lib for lib in _unused(writer)["libraries"]}
    assert found["shared"]["required_by"] == ["app", "tool-a"]
    assert (found["shared"]["needed_by"], found["shared"]["removable"]) == (["app"], False)
    assert (found["tool-a"]["why"], found["tool-a"]["removable"]) == ("requested", True)


def test_an_inventory_of_plain_lines_says_nothing_of_why(store_writer, fake_clock) -> None:
    writer = store_writer()
    now = fake_clock()
    ingest(writer, [(now, inventory_datagram(["dist numpy 2.1.3", "dist six 1.16.0"]))])
    env = _unused(writer)
    assert env["reasons_known"] is False
    assert [(lib["why"], lib["removable"]) for lib in env["libraries"]] == [
        ("unknown", None),
        ("unknown", None),
    ]


def test_without_any_requested_marker_nothing_is_called_an_orphan(store_writer, fake_clock) -> None:
    """An environment another installer made (conda, a system's packages) marks nothing as
    requested: a distribution no other requires is then of unknown cause, not left behind."""
    writer = store_writer()
    now = fake_clock()
    ingest(writer, [(now, inventory_datagram(["dist numpy 2.1.3 - -", "dist scipy 1.14 - numpy"]))])
    found = {lib["name"]: lib for lib in _unused(writer)["libraries"]}
    assert (found["scipy"]["why"], found["numpy"]["why"]) == ("unknown", "dependency")
    assert found["scipy"]["removable"] is True


# -- schema 2 ----------------------------------------------------------------------------------


def _as_schema_2(path: Path) -> None:
    """Make the database at ``path`` what schema 2 stored: an inventory of names and versions."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("ALTER TABLE inventory DROP COLUMN requested")
        conn.execute("ALTER TABLE inventory DROP COLUMN requires")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        conn.commit()
    finally:
        conn.close()


def test_a_database_of_schema_2_keeps_its_inventory_and_learns_why(
    store_writer, fake_clock, tmp_path: Path
) -> None:
    path = tmp_path / "schema2.sqlite"
    writer = store_writer(path=path)
    now = fake_clock()
    ingest(writer, [(now, inventory_datagram(["dist numpy 2.1.3", "dist six 1.16.0"]))])
    writer.stop()
    _as_schema_2(path)
    writer = store_writer(path=path)
    assert [lib["why"] for lib in _unused(writer)["libraries"]] == ["unknown", "unknown"]
    conn = connect_writer(path)
    try:
        assert schema_version(conn) == SCHEMA_VERSION == 3
    finally:
        conn.close()
    lines = ["dist numpy 2.1.3 - -", "dist six 1.16.0 r numpy"]
    ingest(writer, [(now, inventory_datagram(lines, inventory_id="0c0ffee1"))])
    found = {lib["name"]: lib for lib in _unused(writer)["libraries"]}
    assert (found["numpy"]["why"], found["numpy"]["required_by"]) == ("dependency", ["six"])
    assert found["six"]["why"] == "requested"


# -- popcon unused -----------------------------------------------------------------------------


def test_popcon_unused_shows_why_and_puts_packaging_tools_last(
    store_writer, fake_clock, capsys
) -> None:
    writer = store_writer()
    now = fake_clock()
    datagrams = [
        inventory_datagram(why_lines(INVENTORY)),
        use_datagram(ENV, [("pandas", "2.2.3", "direct", "env")]),
    ]
    ingest(writer, [(now, d) for d in datagrams])
    writer.stop()
    window = ["--from", iso(now - 3600), "--until", iso(now + 600)]
    assert main(["unused", "--db", str(writer.path), "--csv", *window]) == 0
    out, _err = capsys.readouterr()
    rows = [line.split(",", 4) for line in out.splitlines()]
    assert rows[0] == ["env", "name", "version", "why", "required_by,needed_by,removable"]
    assert [(row[1], row[3]) for row in rows[1:]] == [
        ("requests", "requested"),
        ("leftover", "orphan"),
        ("certifi", "dependency"),
        ("charset-normalizer", "dependency"),
        ("idna", "dependency"),
        ("numpy", "dependency"),
        ("python-dateutil", "dependency"),
        ("six", "dependency"),
        ("tzdata", "dependency"),
        ("urllib3", "dependency"),
        ("pip", "tool"),
        ("setuptools", "tool"),
    ]
    assert main(["unused", "--db", str(writer.path), *window]) == 0
    out, _err = capsys.readouterr()
    six = next(line for line in out.splitlines() if line.split()[1:2] == ["six"])
    assert six.split()[3:] == ["dependency", "python-dateutil", "pandas", "no"]
