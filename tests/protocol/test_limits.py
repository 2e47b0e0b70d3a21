"""What one datagram can claim and show: statsd counter values capped per line and per
datagram, and no control or bidirectional-formatting character in an environment label, on the
collector's side and on the recorder's. docs/protocol.md."""

from __future__ import annotations

import pytest

from popcon.protocol import ENV_LABEL_RE, MAX_STATSD_TOTAL, MAX_STATSD_VALUE
from popcon.protocol.decode import make_decoder
from popcon.protocol.records import UseReport

LIBRARY = "python_popcon.library_used.numpy"
REPORTS = "python_popcon.reports"

#: C1 controls, and the bidirectional marks, embeddings, overrides and isolates.
SPOOFING = [chr(code) for code in range(0x80, 0xA0)] + [
    "\u061c", "\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",
    "\u2066", "\u2067", "\u2068", "\u2069",
]  # fmt: skip


def _statsd(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def test_a_statsd_line_counts_at_most_ten_processes() -> None:
    decode = make_decoder()
    ten = decode(_statsd(f"{LIBRARY}:{MAX_STATSD_VALUE}|c"))
    assert isinstance(ten, UseReport) and len(ten.libs) == MAX_STATSD_VALUE == 10
    assert decode(_statsd(f"{LIBRARY}:{MAX_STATSD_VALUE + 1}|c")) == "statsd_cap"
    assert decode(_statsd(f"{REPORTS}:11|c")) == "statsd_cap"
    assert decode(_statsd(f"{REPORTS}:999|c")) == "statsd_cap"


def test_a_statsd_datagram_counts_at_most_100_processes() -> None:
    decode = make_decoder()
    full = _statsd(*[f"{REPORTS}:10|c"] * 51)
    assert len(full) <= 1400
    assert decode(full) == "statsd_cap"
    assert decode(_statsd(*[f"{LIBRARY}:10|c"] * 11)) == "statsd_cap"
    assert decode(_statsd(*[f"{LIBRARY}:10|c"] * 9, f"{REPORTS}:10|c", f"{REPORTS}:1|c")) == (
        "statsd_cap"
    )
    hundred = decode(_statsd(*[f"{LIBRARY}:10|c"] * 9, f"{REPORTS}:10|c"))
    assert isinstance(hundred, UseReport)
    assert len(hundred.libs) + hundred.processes == MAX_STATSD_TOTAL == 100


def test_the_recorders_fullest_statsd_datagram_is_within_the_caps(recorder, monkeypatch) -> None:
    monkeypatch.setenv("POPCON_STATSD_PREFIX", "p")
    records = [(chr(97 + i % 26), "1", "direct", "env", "") for i in range(300)]
    datagrams = recorder.rare.statsd_datagrams(records, True)
    decode = make_decoder(statsd_prefix="p")
    assert all(isinstance(decode(datagram), UseReport) for datagram in datagrams)


@pytest.mark.parametrize("char", SPOOFING, ids=[f"U+{ord(c):04X}" for c in SPOOFING])
def test_an_env_label_with_a_spoofing_character_is_rejected(char: str) -> None:
    assert not ENV_LABEL_RE.match(f"img{char}:latest")
    data = f"popcon/1 use 0\nenv img{char}\npy 3.11\nlib six 1.0 direct env\n".encode()
    assert make_decoder()(data) == "malformed"
    with pytest.raises(ValueError, match="statsd environment"):
        make_decoder(statsd_env=f"statsd{char}")


def test_the_recorder_drops_spoofing_characters_from_its_env_label(recorder) -> None:
    label = "".join(f"{char}x" for char in SPOOFING)
    cleaned = recorder.core.environment_label({"POPCON_ENV": label})
    assert cleaned == "x" * len(SPOOFING)
    assert ENV_LABEL_RE.match(cleaned)


def test_every_character_the_recorder_keeps_in_an_env_label_is_the_protocols(recorder) -> None:
    characters = [chr(code) for code in range(0x3000)] + ["😀", "\U0010ffff"]
    for char in characters:
        kept = recorder.core.environment_label({"POPCON_ENV": f"a{char}b"})
        assert ENV_LABEL_RE.match(kept), repr(char)
