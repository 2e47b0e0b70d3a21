"""The test suite's own datagram parser must reject what docs/protocol.md forbids; otherwise
the recorder tests that rely on it could not fail."""

from __future__ import annotations

import pytest
from recorder_testlib import (
    Lib,
    ProtocolError,
    final_levels,
    first_records,
    parse_datagram,
    parse_statsd,
    signature,
)

GOOD = (
    "popcon/1 use 0\n"
    "env quay.io/jupyter/scipy-notebook:2024-05-27\n"
    "py 3.11\n"
    "label hub=research\n"
    "lib pandas 2.2.2 direct env\n"
    "lib numpy 1.26.4 transitive env pandas\n"
    "lib python-dateutil 2.9.0.post0 transitive env pandas\n"
)


def test_protocol_example_parses():
    datagram = parse_datagram(GOOD.encode())
    assert (datagram.kind, datagram.seq, datagram.py) == ("use", 0, "3.11")
    assert datagram.env == "quay.io/jupyter/scipy-notebook:2024-05-27"
    assert datagram.labels == {"hub": "research"}
    assert datagram.libs[1] == Lib("numpy", "1.26.4", "transitive", "env", "pandas")


def test_inventory_and_signature_parse():
    body = "popcon/1 inv 0a1b2c3d 1 2\nenv ~/venvs/x y\npy 3.9\ndist six 1.16.0\n"
    raw = body.encode()
    raw += b"sig " + signature(raw + b"sig ", "key").encode() + b"\n"
    datagram = parse_datagram(raw)
    assert (datagram.inv_id, datagram.part, datagram.parts) == ("0a1b2c3d", 1, 2)
    assert datagram.env == "~/venvs/x y" and datagram.dists == [("six", "1.16.0")]
    assert datagram.sig == signature(raw, "key")


@pytest.mark.parametrize(
    "raw",
    [
        GOOD.replace("popcon/1", "popcon/2"),
        GOOD.rstrip("\n"),
        GOOD.replace("env quay", "envquay"),
        GOOD.replace("py 3.11\n", ""),
        GOOD.replace("py 3.11", "py 3"),
        GOOD.replace("lib pandas", "lib Pandas"),
        GOOD.replace("lib pandas", "lib scikit_learn"),
        GOOD.replace("lib pandas", "lib a--b"),
        GOOD.replace("2.2.2 direct", "2.2 2 direct"),
        GOOD.replace("direct env", "direct site"),
        GOOD.replace("direct env", "used env"),
        GOOD.replace("direct env", "direct env numpy"),
        GOOD.replace("transitive env pandas", "transitive env"),
        GOOD.replace("label hub=research", "label Hub=research"),
        GOOD.replace("label hub=research", "label hub=a b"),
        GOOD.replace("label hub=research\n", "") + "label hub=research\n",
        GOOD + "".join(f"label k{n}=v\n" for n in range(9)),
        GOOD.replace("use 0", "use x"),
        GOOD + "dist six 1.0\n",
        GOOD + "sig 00\n",
        GOOD + "sig " + "0" * 32 + "\nlib six 1 direct env\n",
        "popcon/1 inv 0A1B2C3D 1 1\nenv e\npy 3.9\n",
        "popcon/1 inv 0a1b2c3d 3 2\nenv e\npy 3.9\n",
        "popcon/1 inv 0a1b2c3d 1 65\nenv e\npy 3.9\n",
        GOOD.replace("env quay", "env \x01quay"),
        "popcon/1 use 0\nenv " + "e" * 201 + "\npy 3.9\n",
        GOOD + "lib six 1.0 direct env\n" * 60,
    ],
)
def test_parser_rejects_what_the_protocol_forbids(raw):
    with pytest.raises(ProtocolError):
        parse_datagram(raw.encode())


def test_parser_rejects_bad_utf8():
    with pytest.raises(ProtocolError):
        parse_datagram(GOOD.encode().replace(b"pandas 2", b"pandas \xff"))


def test_levels_of_one_process():
    libs = [
        Lib("pandas", "1", "direct", "env"),
        Lib("numpy", "2", "transitive", "env", "pandas"),
        Lib("numpy", "2", "upgrade", "env"),
    ]
    assert final_levels(libs) == {"pandas": "direct", "numpy": "direct"}
    with pytest.raises(AssertionError):
        first_records([*libs, Lib("pandas", "1", "direct", "env")])
    with pytest.raises(AssertionError):
        first_records([Lib("six", "1", "upgrade", "env")])


def test_statsd_parser():
    assert parse_statsd(b"python_popcon.reports:1|c\npython_popcon.library_used.six:1|c") == [
        ("python_popcon.reports", 1.0, "c"),
        ("python_popcon.library_used.six", 1.0, "c"),
    ]
    for bad in (b"name 1|c", b"name:1", b"name:x|c", b"na:me:1|c"):
        with pytest.raises(ProtocolError):
            parse_statsd(bad)
