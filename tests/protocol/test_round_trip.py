"""Datagrams built by the recorder's own code, loaded by path as it runs in site-packages, go
through the collector's decoder and come back as the records that went in: ``use`` datagrams
(chunked, signed or not, with their person fields), statsd lines and inventories in parts. The
recorder writes them to a ``POPCON_PREVIEW`` file, read back with ``popcon preview``'s reader."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from datagrams import person_of

from popcon.admin.preview import read_preview_file
from popcon.protocol import (
    CLAIMED,
    DEFAULT_STATSD_PREFIX,
    DIRECT,
    MAX_DATAGRAM,
    PROGRAM,
    TRANSITIVE,
    UNKNOWN,
    UNKNOWN_VERSION,
    UPGRADE,
)
from popcon.protocol.decode import DEFAULT_STATSD_ENV, make_decoder
from popcon.protocol.records import InventoryPart, LibRecord, ProgRecord, UseReport

PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
PANDAS = ("pandas", "2.2.2", "env")
NUMPY = ("numpy", "1.26.4", "env")
DATEUTIL = ("python-dateutil", "2.9.0.post0", "env")
TORNADO = ("tornado", "6.4", "env")
IPYKERNEL = ("ipykernel", "6.29.5", "env")
MANY = [(f"lib-{i:03d}", f"1.{i}" if i % 7 else UNKNOWN_VERSION, "user" if i % 5 else "env")
        for i in range(150)]  # fmt: skip


def _process(core) -> None:
    """A kernel's imports, as the core records them (two sends): its program, what the program
    and people's code import, an upgrade and a claim."""
    core._set_program(IPYKERNEL)
    core._record(TORNADO, IPYKERNEL, False)
    core._record(PANDAS, None, True)
    core._record(NUMPY, PANDAS, True)
    core._record(DATEUTIL, PANDAS, True)
    core._flush()
    for dist in MANY:
        core._record(dist, None, True)
    core._now_direct(NUMPY, UPGRADE)
    core._now_direct(TORNADO, CLAIMED)
    core._flush()


def _expected(secret: Path | None) -> tuple[ProgRecord, list[LibRecord]]:
    """The program and the records :func:`_process` sends, each with its person field from
    the secret (None without one)."""
    key = bytes.fromhex(secret.read_text().strip()) if secret is not None else None

    def person(name: str) -> tuple[int, int] | None:
        if key is None:
            return None
        register, rank = person_of(key, name).split(":")
        return (int(register), int(rank))

    def lib(dist: tuple[str, str, str], level: str, importer: str | None = None) -> LibRecord:
        return LibRecord(dist[0], dist[1], level, dist[2], importer, person(dist[0]))

    return ProgRecord(*IPYKERNEL, person(IPYKERNEL[0])), [
        lib(TORNADO, PROGRAM, "ipykernel"),
        lib(PANDAS, DIRECT),
        lib(NUMPY, TRANSITIVE, "pandas"),
        lib(DATEUTIL, TRANSITIVE, "pandas"),
        *(lib(dist, DIRECT) for dist in MANY),
        lib(NUMPY, UPGRADE),
        lib(TORNADO, CLAIMED),
    ]


@pytest.mark.parametrize("env", ["~/envs/my env", "é" * 200])
@pytest.mark.parametrize("key", [None, "shared secret"])
def test_use_datagrams_come_back_as_the_records_that_went_in(
    recorder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: str, key: str | None
) -> None:
    preview = tmp_path / "preview"
    monkeypatch.setenv("POPCON_PREVIEW", str(preview))
    monkeypatch.setenv("POPCON_ENV", env)
    monkeypatch.setenv("POPCON_LABELS", "zone=b, hub=research")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    if key is not None:
        monkeypatch.setenv("POPCON_KEY", key)
    _process(recorder.core)
    program, expected = _expected(tmp_path / "config" / "popcon" / "secret")
    datagrams = read_preview_file(str(preview))
    assert len(datagrams) >= 3 and all(len(d) <= MAX_DATAGRAM for d in datagrams)
    reports = [make_decoder(key=key)(datagram) for datagram in datagrams]
    assert all(isinstance(report, UseReport) for report in reports), reports
    assert [report.processes for report in reports] == [1] + [0] * (len(reports) - 1)
    assert {(r.env, r.labels, r.py) for r in reports} == {
        (env, (("hub", "research"), ("zone", "b")), PY)
    }
    assert [lib for report in reports for lib in report.libs] == expected
    assert [report.program for report in reports] == [program] + [None] * (len(reports) - 1)
    if key is None:
        assert make_decoder(key="a key")(datagrams[0]) == "unsigned"
    else:
        assert make_decoder()(datagrams[0]) == reports[0]  # no key: the sig line is ignored
        assert make_decoder(key="another key")(datagrams[0]) == "bad_signature"


@pytest.mark.parametrize("prefix", [None, "jupyter.popcon"])
def test_statsd_lines_come_back_as_processes_of_unknown_level(
    recorder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, prefix: str | None
) -> None:
    preview = tmp_path / "preview"
    monkeypatch.setenv("POPCON_PREVIEW", str(preview))
    monkeypatch.setenv("POPCON_COLLECTOR", "statsd://127.0.0.1:9125")
    if prefix is not None:
        monkeypatch.setenv("POPCON_STATSD_PREFIX", prefix)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    _process(recorder.core)
    expected = [lib.name for lib in _expected(None)[1] if lib.level not in (UPGRADE, CLAIMED)]
    datagrams = read_preview_file(str(preview))
    assert len(datagrams) >= 2 and all(len(d) <= MAX_DATAGRAM for d in datagrams)
    prefix = prefix or DEFAULT_STATSD_PREFIX
    decode = make_decoder(statsd_prefix=prefix)
    reports = [decode(datagram) for datagram in datagrams]
    assert all(isinstance(report, UseReport) for report in reports), reports
    assert sum(report.processes for report in reports) == 1
    assert {(r.env, r.labels, r.py) for r in reports} == {(DEFAULT_STATSD_ENV, (), "")}
    libs = [lib for report in reports for lib in report.libs]
    assert libs == [LibRecord(name, UNKNOWN_VERSION, UNKNOWN, UNKNOWN, None) for name in expected]
    signed_only = make_decoder(key="a key", statsd_prefix=prefix)
    assert signed_only(datagrams[0]) == "unsigned"  # statsd lines cannot be signed


@pytest.mark.parametrize("count", [1, 400])
@pytest.mark.parametrize("key", [None, "shared secret"])
def test_an_inventory_comes_back_whole_from_its_parts(
    recorder, tmp_path: Path, count: int, key: str | None
) -> None:
    preview = tmp_path / "preview"
    settings = {"POPCON_ENV": "lab", "POPCON_LABELS": "hub=x", "POPCON_PREVIEW": str(preview)}
    config = recorder.core.config_of({**settings, **({"POPCON_KEY": key} if key else {})})
    dists = [(f"dist-{i:04d}", f"{i}.0" if i % 9 else UNKNOWN_VERSION) for i in range(count)]
    stamp = tmp_path / "stamps" / "inventory-0123456789ab-0a1b2c3d"
    recorder.rare.send_inventory(config, [("0a1b2c3d", dists[::-1])], "0a1b2c3d", str(stamp))
    datagrams = read_preview_file(str(preview))
    parts = [make_decoder(key=key)(datagram) for datagram in datagrams]
    assert all(isinstance(part, InventoryPart) for part in parts), parts
    assert (len(parts) == 1) == (count == 1)
    assert [(p.inventory_id, p.part, p.parts) for p in parts] == [
        ("0a1b2c3d", number, len(parts)) for number in range(1, len(parts) + 1)
    ]
    assert {(p.env, p.labels, p.py) for p in parts} == {("lab", (("hub", "x"),), PY)}
    assert [dist for part in parts for dist in part.dists] == sorted(dists)
