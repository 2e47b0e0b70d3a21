"""The test suite's own datagram parser must reject what docs/protocol.md forbids; otherwise
the recorder tests that rely on it could not fail."""

from __future__ import annotations

import pytest
from recorder_testlib import (
    Lib,
    Prog,
    ProtocolError,
    final_levels,
    first_records,
    parse_datagram,
    parse_statsd,
    signature,
)

GOOD = (
    "popcon/2 use 0\n"
    "env quay.io/jupyter/scipy-notebook:2024-05-27\n"
    "py 3.11\n"
    "label hub=research\n"
    "prog ipykernel 6.29.5 env 812:2\n"
    "lib ipykernel 6.29.5 program env 812:2\n"
    "lib tornado 6.4 program env 16383:51 ipykernel\n"
    "lib pandas 2.2.2 direct env 0:1\n"
    "lib numpy 1.26.4 transitive env 1203:3 pandas\n"
    "lib python-dateutil 2.9.0.post0 transitive env - pandas\n"
)


def test_protocol_example_parses():
    datagram = parse_datagram(GOOD.encode())
    assert (datagram.kind, datagram.seq, datagram.py) == ("use", 0, "3.11")
    assert datagram.env == "quay.io/jupyter/scipy-notebook:2024-05-27"
    assert datagram.labels == {"hub": "research"}
    assert datagram.libs[3] == Lib("numpy", "1.26.4", "transitive", "env", "pandas")
    assert datagram.libs[3].person == "1203:3" and datagram.libs[4].person == "-"
    assert datagram.libs[1] == Lib("tornado", "6.4", "program", "env", "ipykernel")
    assert datagram.program == Prog("ipykernel", "6.29.5", "env")
    assert datagram.program.person == "812:2"


def test_inventory_and_signature_parse():
    body = "popcon/2 inv 0a1b2c3d 1 2\nenv ~/venvs/x y\npy 3.9\ndist six 1.16.0\n"
    raw = body.encode()
    raw += b"sig " + signature(raw + b"sig ", "key").encode() + b"\n"
    datagram = parse_datagram(raw)
    assert (datagram.inv_id, datagram.part, datagram.parts) == ("0a1b2c3d", 1, 2)
    assert datagram.env == "~/venvs/x y" and datagram.dists == [("six", "1.16.0")]
    assert datagram.sig == signature(raw, "key")


@pytest.mark.parametrize(
    "raw",
    [
        GOOD.replace("popcon/2", "popcon/1"),
        GOOD.replace("popcon/2", "popcon/3"),
        GOOD.replace(" 0:1\n", "\n"),
        GOOD.replace(" 0:1\n", " 16384:1\n"),
        GOOD.replace(" 0:1\n", " 1:0\n"),
        GOOD.replace(" 0:1\n", " 1:52\n"),
        GOOD.replace(" 0:1\n", " 01:1\n"),
        GOOD.replace(" 0:1\n", " 0:1 numpy\n"),
        GOOD.replace("prog ipykernel 6.29.5 env 812:2", "prog ipykernel 6.29.5 env"),
        GOOD + "prog jupyterhub 5 env -\n",
        GOOD.replace("lib tornado 6.4 program", "lib tornado 6.4 claimed"),
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
        GOOD.replace("transitive env 1203:3 pandas", "transitive env 1203:3"),
        GOOD.replace("label hub=research", "label Hub=research"),
        GOOD.replace("label hub=research", "label hub=a b"),
        GOOD.replace("label hub=research\n", "") + "label hub=research\n",
        GOOD + "".join(f"label k{n}=v\n" for n in range(9)),
        GOOD.replace("use 0", "use x"),
        GOOD + "dist six 1.0\n",
        GOOD + "sig 00\n",
        GOOD + "sig " + "0" * 32 + "\nlib six 1 direct env -\n",
        "popcon/2 inv 0A1B2C3D 1 1\nenv e\npy 3.9\n",
        "popcon/2 inv 0a1b2c3d 3 2\nenv e\npy 3.9\n",
        "popcon/2 inv 0a1b2c3d 1 65\nenv e\npy 3.9\n",
        GOOD.replace("env quay", "env \x01quay"),
        "popcon/2 use 0\nenv " + "e" * 201 + "\npy 3.9\n",
        GOOD + "lib six 1.0 direct env -\n" * 60,
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
        Lib("traitlets", "5", "program", "env", "ipykernel"),
        Lib("traitlets", "5", "claimed", "env"),
        Lib("tornado", "6", "program", "env"),
    ]
    assert final_levels(libs) == {
        "pandas": "direct",
        "numpy": "direct",
        "traitlets": "direct",
        "tornado": "program",
    }
    with pytest.raises(AssertionError):
        first_records([*libs, Lib("pandas", "1", "direct", "env")])
    with pytest.raises(AssertionError):
        first_records([Lib("six", "1", "upgrade", "env")])
    with pytest.raises(AssertionError):
        first_records([*libs[:2], Lib("numpy", "2", "claimed", "env")])
    with pytest.raises(AssertionError):
        first_records([libs[0], Lib("pandas", "1", "upgrade", "env")])
    with pytest.raises(AssertionError):  # one process, one person per library
        first_records(
            [
                Lib("numpy", "2", "transitive", "env", "pandas", "1:1"),
                Lib("numpy", "2", "upgrade", "env", None, "2:1"),
            ]
        )


def test_statsd_parser():
    assert parse_statsd(b"python_popcon.reports:1|c\npython_popcon.library_used.six:1|c") == [
        ("python_popcon.reports", 1.0, "c"),
        ("python_popcon.library_used.six", 1.0, "c"),
    ]
    for bad in (b"name 1|c", b"name:1", b"name:x|c", b"na:me:1|c"):
        with pytest.raises(ProtocolError):
            parse_statsd(bad)
