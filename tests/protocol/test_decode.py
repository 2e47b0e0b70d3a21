"""The datagram decoder: docs/protocol.md, every rejection reason, signatures, statsd lines."""

from __future__ import annotations

import pytest
from datagrams import PANDAS_PROCESS, inventory_datagrams, use_datagram

from popcon.protocol import MAX_DATAGRAM, REJECTIONS, canonical_name, sign
from popcon.protocol.decode import make_decoder
from popcon.protocol.records import Decoded, InventoryPart, LibRecord, UseReport

PROTOCOL_EXAMPLE = b"""popcon/1 use 0
env quay.io/jupyter/scipy-notebook:2024-05-27
py 3.11
label hub=research
lib pandas 2.2.2 direct env
lib numpy 1.26.4 transitive env pandas
lib python-dateutil 2.9.0.post0 transitive env pandas
"""


def test_the_protocol_example_decodes_to_typed_records() -> None:
    report = make_decoder()(PROTOCOL_EXAMPLE)
    assert report == UseReport(
        env="quay.io/jupyter/scipy-notebook:2024-05-27",
        labels=(("hub", "research"),),
        py="3.11",
        processes=1,
        libs=(
            LibRecord("pandas", "2.2.2", "direct", "env", None),
            LibRecord("numpy", "1.26.4", "transitive", "env", "pandas"),
            LibRecord("python-dateutil", "2.9.0.post0", "transitive", "env", "pandas"),
        ),
    )


def test_a_later_datagram_of_a_process_announces_no_new_process() -> None:
    decode = make_decoder()
    later = decode(use_datagram("e", [("numpy", "1.0", "upgrade", "user")], seq=3))
    assert isinstance(later, UseReport)
    assert later.processes == 0
    assert later.libs == (LibRecord("numpy", "1.0", "upgrade", "user", None),)


def test_labels_come_out_sorted_and_the_env_label_may_hold_spaces() -> None:
    data = use_datagram("~/envs/my env", PANDAS_PROCESS[:1], labels=[("zone", "b"), ("hub", "a")])
    report = make_decoder()(data)
    assert isinstance(report, UseReport)
    assert report.env == "~/envs/my env"
    assert report.labels == (("hub", "a"), ("zone", "b"))


def test_inventory_parts_decode() -> None:
    first, second = inventory_datagrams(
        "img", [("numpy", "1.26.4"), ("pandas", "2.2.2"), ("scipy", "1.13.0")], parts=2
    )
    decode = make_decoder()
    part = decode(second)
    assert part == InventoryPart("img", (), "3.11", "0badcafe", 2, 2, (("pandas", "2.2.2"),))
    assert decode(first).dists == (("numpy", "1.26.4"), ("scipy", "1.13.0"))  # type: ignore[union-attr]


def test_an_empty_inventory_part_is_valid() -> None:
    assert make_decoder()(b"popcon/1 inv 0badcafe 1 1\nenv e\npy 3.9\n") == InventoryPart(
        "e", (), "3.9", "0badcafe", 1, 1, ()
    )


HEAD = "popcon/1 use 0\nenv e\npy 3.11\n"
LIB = "lib numpy 1.0 direct env\n"

REJECTED = [
    ("too_long", (HEAD + LIB * 60).encode()),
    ("empty", b""),
    ("not_utf8", (HEAD + "lib numpy 1.0 direct env\n").encode().replace(b"1.0", b"\xff\xfe")),
    ("unknown_format", b"GET / HTTP/1.1\r\n\r\n"),
    ("version", b"popcon/3 use 0\nenv e\npy 3.11\n" + LIB.encode()),
    ("kind", b"popcon/1 pet 0\nenv e\npy 3.11\n" + LIB.encode()),
    ("truncated", (HEAD + LIB).encode()[:-1]),
    ("truncated", (HEAD + "lib numpy 1.0 transitive env pand").encode()),
    ("missing_env", b"popcon/1 use 0\npy 3.11\n" + LIB.encode()),
    ("missing_py", b"popcon/1 use 0\nenv e\n" + LIB.encode()),
    ("missing_py", b"popcon/1 use 0\nenv e\nlabel a=b\npy 3.11\n" + LIB.encode()),
    (
        "too_many_labels",
        (
            "popcon/1 use 0\nenv e\npy 3.11\n" + "".join(f"label k{i}=v\n" for i in range(9)) + LIB
        ).encode(),
    ),
    ("bad_label", (HEAD + "label Key=v\n" + LIB).encode()),
    ("bad_label", (HEAD + "label k=v,w\n" + LIB).encode()),
    ("bad_label", (HEAD + "label k=a\nlabel k=b\n" + LIB).encode()),
    ("bad_name", (HEAD + "lib NumPy 1.0 direct env\n").encode()),
    ("bad_name", (HEAD + "lib numpy_ 1.0 direct env\n").encode()),
    ("bad_name", (HEAD + "lib numpy 1.0 transitive env Pandas\n").encode()),
    ("malformed", (HEAD + "lib numpy 1.0 sideways env\n").encode()),
    ("malformed", (HEAD + "lib numpy 1.0 direct site\n").encode()),
    ("malformed", (HEAD + "lib numpy 1.0 direct env pandas\n").encode()),
    ("malformed", (HEAD + "lib numpy 1.0 direct\n").encode()),
    ("malformed", (HEAD + "lib numpy  direct env\n").encode()),
    ("malformed", (HEAD + LIB + "\n").encode()),
    ("malformed", (HEAD + LIB + "dist numpy 1.0\n").encode()),
    ("check", HEAD.encode()),  # a use datagram with no record: popcon check's
    ("malformed", b"popcon/1 use 007\nenv e\npy 3.11\n" + LIB.encode()),
    ("malformed", b"popcon/1 use x\nenv e\npy 3.11\n" + LIB.encode()),
    ("malformed", b"popcon/1 use 0\nenv e\npy three\n" + LIB.encode()),
    ("malformed", b"popcon/1 use 0\nenv e\x01\npy 3.11\n" + LIB.encode()),
    ("malformed", b"popcon/1 use 0\nenv \npy 3.11\n" + LIB.encode()),
    ("malformed", b"popcon/1 inv 0BADCAFE 1 1\nenv e\npy 3.11\n"),
    ("malformed", b"popcon/1 inv 0badcafe 3 2\nenv e\npy 3.11\n"),
    ("malformed", b"popcon/1 inv 0badcafe 1 65\nenv e\npy 3.11\n"),
    ("malformed", b"popcon/1 inv 0badcafe 1 1\nenv e\npy 3.11\ndist numpy\n"),
    ("malformed", (HEAD + LIB + "sig 1234\n").encode()),
    ("statsd_malformed", b"python_popcon.library_used.numpy:1|g"),
    ("statsd_malformed", b"python_popcon.library_used.numpy:1000|c"),
    ("statsd_malformed", b"python_popcon.other:1|c"),
    ("statsd_malformed", b"python_popcon.reports"),
    ("bad_name", b"python_popcon.library_used.-:1|c"),
    ("statsd_cap", b"python_popcon.library_used.numpy:11|c"),
    ("statsd_cap", b"python_popcon.reports:10|c\n" * 11),
    ("malformed", "popcon/1 use 0\nenv e\u202e\npy 3.11\n".encode() + LIB.encode()),
    ("malformed", "popcon/1 use 0\nenv e\x85\npy 3.11\n".encode() + LIB.encode()),
]


@pytest.mark.parametrize(("reason", "data"), REJECTED, ids=[r for r, _ in REJECTED])
def test_a_bad_datagram_is_rejected_with_its_reason(reason: str, data: bytes) -> None:
    assert reason in REJECTIONS
    assert make_decoder()(data) == reason


def test_every_rejection_reason_is_reachable_or_needs_a_key() -> None:
    with_a_key = {"unsigned", "bad_signature", "unstamped", "stale", "replay", "replay_cap"}
    covered = {reason for reason, _ in REJECTED} | with_a_key
    assert covered == set(REJECTIONS)


def test_the_size_limit_is_1400_bytes() -> None:
    padded = (HEAD + "".join(f"lib n{i:03d} 1.0 direct env\n" for i in range(200))).encode()
    at_limit = padded[: padded.rfind(b"\n", 0, MAX_DATAGRAM) + 1]
    assert MAX_DATAGRAM - 30 < len(at_limit) <= MAX_DATAGRAM
    assert isinstance(make_decoder()(at_limit), UseReport)
    over = at_limit[:-1] + b"x" * (MAX_DATAGRAM - len(at_limit) + 1) + b"\n"
    assert len(over) == MAX_DATAGRAM + 1
    assert make_decoder()(over) == "too_long"


def test_a_signed_datagram_is_accepted_only_with_the_right_key() -> None:
    key = b"shared secret"
    signed = use_datagram("e", PANDAS_PROCESS, key=key)
    assert signed.endswith(b"\n") and b"\nsig " in signed

    def with_key(data: bytes) -> Decoded:  # a fresh decoder: one takes a signature once
        return make_decoder(key=key)(data)

    assert isinstance(with_key(signed), UseReport)
    assert make_decoder(key="shared secret")(signed) == with_key(signed)  # str keys work too
    assert with_key(use_datagram("e", PANDAS_PROCESS)) == "unsigned"
    assert with_key(use_datagram("e", PANDAS_PROCESS, key=b"other")) == "bad_signature"
    tampered = signed.replace(b"2.2.2", b"2.2.3")
    assert with_key(tampered) == "bad_signature"
    # Without a key the signature line is accepted and ignored.
    assert make_decoder()(signed) == with_key(signed)


def test_the_signature_covers_every_byte_before_its_line() -> None:
    data = use_datagram("e", PANDAS_PROCESS)
    line = sign(b"k", data)
    assert line.startswith(b"sig ") and len(line) == 4 + 32 + 1
    assert sign(b"k", data + b"x") != line


def test_with_a_key_statsd_lines_are_rejected_as_unsigned() -> None:
    assert make_decoder(key=b"k")(b"python_popcon.reports:1|c") == "unsigned"


def test_statsd_lines_of_popularity_contest_count_as_processes_of_unknown_level() -> None:
    decode = make_decoder(statsd_env="legacy")
    libs = decode(
        b"python_popcon.library_used.numpy:1|c\npython_popcon.library_used.Zope.Interface:1|c\n"
    )
    assert libs == UseReport(
        "legacy",
        (),
        "",
        0,
        (
            LibRecord("numpy", "-", "unknown", "unknown", None),
            LibRecord("zope-interface", "-", "unknown", "unknown", None),
        ),
    )
    assert decode(b"python_popcon.reports:1|c") == UseReport("legacy", (), "", 1, ())
    three = decode(b"python_popcon.library_used.numpy:3|c")
    assert isinstance(three, UseReport) and len(three.libs) == 3


def test_the_statsd_prefix_is_configurable() -> None:
    decode = make_decoder(statsd_prefix="hub.popcon")
    assert isinstance(decode(b"hub.popcon.library_used.numpy:1|c"), UseReport)
    assert decode(b"python_popcon.library_used.numpy:1|c") == "unknown_format"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"statsd_prefix": "bad prefix"}, "statsd prefix"),
        ({"statsd_env": ""}, "statsd environment"),
    ],
)
def test_bad_decoder_settings_name_the_setting(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_decoder(**settings)


def test_canonical_names_follow_pep_503() -> None:
    assert canonical_name("Scikit_Learn") == "scikit-learn"
    assert canonical_name("zope.interface") == "zope-interface"
    assert canonical_name("A__B--C..d") == "a-b-c-d"


def test_the_line_caches_stay_correct_when_they_are_cleared() -> None:
    """A cache of 8 entries is cleared many times over; every answer stays right."""
    decode = make_decoder(cache_size=8)
    for i in range(200):
        name = f"lib{i}"
        report = decode(use_datagram(f"env{i % 13}", [(name, f"{i}.0", "direct", "env")]))
        assert isinstance(report, UseReport)
        assert report.env == f"env{i % 13}"
        assert report.libs == (LibRecord(name, f"{i}.0", "direct", "env", None),)
        assert decode(use_datagram("e", [(name.upper(), "1", "direct", "env")])) == "bad_name"
