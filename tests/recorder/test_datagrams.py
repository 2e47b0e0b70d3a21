"""Datagrams as the recorder builds them: chunking under the 1,400-byte budget, the header, the
signature, and inventories split into parts (docs/protocol.md)."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from recorder_by_path import previewed


def test_chunks_fill_each_text_up_to_the_budget_exactly(recorder) -> None:
    lines = ["a" * 9, "b" * 9, "c" * 9]  # 10 bytes each with its newline
    assert recorder.core.chunks(lines, 20) == ["a" * 9 + "\n" + "b" * 9 + "\n", "c" * 9 + "\n"]
    assert recorder.core.chunks(lines, 19) == [line + "\n" for line in lines]
    assert recorder.core.chunks(lines, 30) == ["".join(line + "\n" for line in lines)]


def test_chunks_count_bytes_not_characters(recorder) -> None:
    lines = ["é" * 4, "x"]  # 8 bytes + newline, then 1 byte + newline
    assert recorder.core.chunks(lines, 11) == ["é" * 4 + "\nx\n"]
    assert recorder.core.chunks(lines, 10) == ["é" * 4 + "\n", "x\n"]
    assert recorder.core.chunks(["€"], 3) == ["€\n"]  # 3 bytes + newline: alone, over budget


def test_chunks_of_nothing_and_of_a_line_over_budget(recorder) -> None:
    assert recorder.core.chunks([], 100) == []
    assert recorder.core.chunks(["x" * 50, "y"], 10) == ["x" * 50 + "\n", "y\n"]


def _config(recorder, **settings: str):
    return recorder.core.config_of({"POPCON_ENV": "lab", **settings})


def test_use_datagrams_stay_within_max_datagram_and_number_in_order(recorder) -> None:
    core = recorder.core
    config = _config(recorder, POPCON_LABELS="hub=one,team=x", POPCON_KEY="k")
    records = [f"lib pkg-{i:04d} 1.0.{i} direct env 1234:5" for i in range(200)]
    datagrams = core._use_datagrams(config, records)
    assert len(datagrams) > 1
    carried = []
    for seq, datagram in enumerate(datagrams):
        assert len(datagram) <= core.MAX_DATAGRAM
        lines = datagram.decode("utf-8").split("\n")
        assert lines[:5] == [
            f"popcon/2 use {seq}",
            "env lab",
            lines[2],
            "label hub=one",
            "label team=x",
        ]
        assert lines[2].startswith("py 3.")
        assert lines[-2].startswith("sig ") and lines[-1] == ""
        assert lines[-3].startswith("t ")
        carried.extend(lines[5:-3])
    assert carried == records


def test_use_datagrams_with_a_long_header_and_multibyte_label(recorder) -> None:
    core = recorder.core
    config = _config(recorder, POPCON_ENV="é" * 200, POPCON_KEY="k")
    records = [f"lib p{i} 1 direct env -" for i in range(300)]
    datagrams = core._use_datagrams(config, records)
    assert all(len(d) <= core.MAX_DATAGRAM for d in datagrams)
    assert max(len(d) for d in datagrams) > core.MAX_DATAGRAM - core.HEAD_ROOM - 20


def test_header_lines(recorder) -> None:
    config = _config(recorder, POPCON_LABELS="b=2,a=1,BAD=x")
    assert config.header.splitlines()[0] == "env lab"
    assert config.header.splitlines()[2:] == ["label b=2", "label a=1"]
    assert config.header.endswith("\n")


def test_signature_line_is_hmac_sha256_of_everything_before_it(recorder) -> None:
    payload = b"popcon/2 use 0\nenv e\npy 3.9\nlib six 1.16.0 direct env 12:1\n"
    signed = recorder.rare.sign(b"secret", payload)
    digest = hmac.new(b"secret", payload, hashlib.sha256).hexdigest()[:32]
    assert signed == payload + f"sig {digest}\n".encode()
    assert recorder.core.signed(_config(recorder, POPCON_KEY="secret"), payload) == signed
    assert recorder.core.signed(_config(recorder), payload) == payload


@pytest.mark.parametrize("count", [1, 150, 5000])
def test_inventory_parts(recorder, tmp_path: Path, count: int) -> None:
    preview = tmp_path / "preview"
    config = _config(recorder, POPCON_PREVIEW=str(preview))
    dists = [(f"dist-{i:05d}", "1.0") for i in range(count)]
    stamp = tmp_path / "stamps" / "inventory-0123456789ab-0a1b2c3d"
    recorder.rare.send_inventory(config, [("0a1b2c3d", dists)], "0a1b2c3d", str(stamp))
    datagrams = previewed(preview) if preview.exists() else []
    parts = len(datagrams)
    if count == 5000:  # more than MAX_INVENTORY_PARTS parts: not sent at all
        assert datagrams == []
        return
    assert stamp.exists()
    assert (parts == 1) == (count == 1) and parts <= recorder.rare.MAX_INVENTORY_PARTS
    sent = []
    for part, datagram in enumerate(datagrams, 1):
        assert len(datagram) <= recorder.core.MAX_DATAGRAM
        lines = datagram.decode().splitlines()
        assert lines[0] == f"popcon/2 inv 0a1b2c3d {part} {parts}"
        assert lines[1] == "env lab"
        sent.extend(lines[3:])
    assert sent == [f"dist {name} {version}" for name, version in dists]


def test_inventory_removes_earlier_stamps_of_the_same_collector(recorder, tmp_path: Path) -> None:
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    (stamps / "inventory-0123456789ab-00000000").write_text("")
    (stamps / "inventory-ffffffffffff-00000000").write_text("")  # another collector's
    config = _config(recorder, POPCON_PREVIEW=str(tmp_path / "preview"))
    stamp = stamps / "inventory-0123456789ab-0a1b2c3d"
    recorder.rare.send_inventory(config, [("0a1b2c3d", [("six", "1")])], "0a1b2c3d", str(stamp))
    assert sorted(p.name for p in stamps.iterdir()) == [
        "inventory-0123456789ab-0a1b2c3d",
        "inventory-ffffffffffff-00000000",
    ]


def test_debug_prints_each_datagram_and_still_queues_it(recorder, capsys) -> None:
    config = _config(recorder, POPCON_DEBUG="1", POPCON_COLLECTOR="udp://collector.invalid:9")
    config.resolving = True  # no look-up in this test
    recorder.core.emit(config, [b"popcon/1 use 0\nenv lab\n"])
    assert capsys.readouterr().err == (
        "popcon: 23 bytes to udp://collector.invalid:9\npopcon/1 use 0\nenv lab\n"
    )
    assert config.queue == [b"popcon/1 use 0\nenv lab\n"]


def test_path_key_is_stable_and_short(recorder) -> None:
    key = recorder.core.path_key("/srv/env/lib/python3.11/site-packages")
    assert key == recorder.core.path_key("/srv/env/lib/python3.11/site-packages")
    assert len(key) == 16 and int(key, 16) < 0xFFFFFFFFFFFFFFC5
    assert key != recorder.core.path_key("/srv/env/lib/python3.12/site-packages")
    assert recorder.core.path_key("") == "0000000000000000"
