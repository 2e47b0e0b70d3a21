"""Signed datagrams carry a ``t`` line (the minute, a per-process nonce): a collector with a key
takes each signature once, within minutes of its clock, in bounded memory; identical datagrams
of two processes differ by their nonce. docs/protocol.md, "Signature"."""

from __future__ import annotations

import os
import time

import pytest
from collectors import send_udp
from datagrams import PANDAS_PROCESS, sign, use_datagram
from timing import FakeClock

from popcon.protocol import TIME_WINDOW
from popcon.protocol import sign as signature_line
from popcon.protocol.decode import make_decoder
from popcon.protocol.records import UseReport
from popcon.server.receive.ingest import aggregate

KEY = b"shared secret"
T0 = 1_793_577_600.0  # a whole minute
MINUTE = int(T0) // 60


def _signed(minute: int = MINUTE, nonce: str = "0123456789abcdef", **kwargs) -> bytes:
    data = use_datagram("img", PANDAS_PROCESS, **kwargs)
    return sign(data, KEY, minute=minute, nonce=nonce)


def test_a_datagram_replayed_5000_times_is_taken_once() -> None:
    decode = make_decoder(key=KEY, clock=FakeClock(T0))
    data = _signed()
    answers = [decode(data) for _ in range(5000)]
    assert isinstance(answers[0], UseReport)
    assert answers[1:] == ["replay"] * 4999


def test_aggregate_decodes_each_copy_of_a_signed_datagram() -> None:
    decode = make_decoder(key=KEY, clock=FakeClock(T0))
    uses, _inventories, results = aggregate([_signed()] * 5000, decode, int(T0))
    assert results == {"ok": 1, "replay": 4999}
    assert sum(uses.values()) == 1


def test_a_collector_with_a_key_counts_a_replayed_datagram_once(live_collector) -> None:
    """The receiver counts identical datagrams by their bytes, except signed ones."""
    collector = live_collector(key=KEY)
    data = sign(use_datagram("img", PANDAS_PROCESS), KEY)
    assert send_udp(collector.address, [data] * 5000) == 5000
    assert collector.flush(20)
    results = collector.receiver.results
    assert results["ok"] == 1
    assert results["ok"] + results["replay"] > 4000  # loopback may drop a few


@pytest.mark.parametrize("offset", [-TIME_WINDOW - 1, TIME_WINDOW + 1, -600, 10**6])
def test_a_datagram_outside_the_window_is_stale(offset: int) -> None:
    decode = make_decoder(key=KEY, clock=FakeClock(T0 + 30))
    assert decode(_signed(MINUTE + offset)) == "stale"


@pytest.mark.parametrize("offset", [-TIME_WINDOW, 0, TIME_WINDOW])
def test_a_datagram_inside_the_window_is_taken(offset: int) -> None:
    decode = make_decoder(key=KEY, clock=FakeClock(T0 + 30))
    assert isinstance(decode(_signed(MINUTE + offset)), UseReport)


def test_a_replay_stays_dropped_for_as_long_as_it_is_not_stale() -> None:
    clock = FakeClock(T0)
    decode = make_decoder(key=KEY, clock=clock)
    data = _signed()
    assert isinstance(decode(data), UseReport)
    for _ in range(TIME_WINDOW):
        clock.advance(60)
        assert decode(data) == "replay"
    clock.advance(60)
    assert decode(data) == "stale"


def test_identical_datagrams_of_two_processes_are_both_taken() -> None:
    decode = make_decoder(key=KEY, clock=FakeClock(T0))
    first, second = _signed(nonce="0" * 16), _signed(nonce="f" * 16)
    assert first != second
    one, other = decode(first), decode(second)
    assert isinstance(one, UseReport) and one == other


def test_the_recorder_draws_a_nonce_per_process(recorder) -> None:
    line = recorder.rare.time_line()
    assert recorder.rare.time_line() == line  # once per process
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the forked child
        os.write(writing, recorder.rare.time_line().encode())
        os._exit(0)
    os.close(writing)
    os.waitpid(child, 0)
    in_child = os.read(reading, 100).decode()
    os.close(reading)
    assert in_child.split()[2] != line.split()[2]


def test_a_signed_datagram_without_its_time_line_is_unstamped() -> None:
    """Recorders that signed before the ``t`` line existed must be enabled again."""
    data = use_datagram("img", PANDAS_PROCESS)
    old = data + signature_line(KEY, data)
    assert make_decoder(key=KEY)(old) == "unstamped"
    assert isinstance(make_decoder()(old), UseReport)  # without a key: ignored


def test_the_time_line_is_covered_by_the_signature() -> None:
    decode = make_decoder(key=KEY, clock=FakeClock(T0))
    data = _signed()
    moved = data.replace(f"t {MINUTE} ".encode(), f"t {MINUTE + 1} ".encode())
    assert moved != data
    assert decode(moved) == "bad_signature"


def test_the_memory_of_signatures_is_bounded() -> None:
    clock = FakeClock(T0)
    decode = make_decoder(key=KEY, clock=clock, replay_memory=3)
    answers = [decode(_signed(nonce=f"{i:016x}")) for i in range(4)]
    assert [isinstance(a, UseReport) for a in answers[:3]] == [True] * 3
    assert answers[3] == "replay_cap"
    assert decode(_signed(nonce=f"{0:016x}")) == "replay"  # a replay is never taken
    decoding = decode.__self__  # type: ignore[attr-defined]  # make_decoder returns a bound method
    clock.advance(60 * (TIME_WINDOW + 1))  # the minute is stale now: forgotten
    fresh = _signed(MINUTE + TIME_WINDOW + 1, nonce=f"{9:016x}")
    assert isinstance(decode(fresh), UseReport)
    assert decoding.replays.remembered == 1


def test_the_recorders_signed_datagrams_are_taken_by_a_collector_with_its_key(
    recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = recorder.core.config_of({"POPCON_ENV": "lab", "POPCON_KEY": KEY.decode()})
    datagrams = recorder.core._use_datagrams(config, ["lib six 1.16.0 direct env -"] * 3)
    decode = make_decoder(key=KEY)
    assert all(isinstance(decode(d), UseReport) for d in datagrams)
    assert [decode(d) for d in datagrams] == ["replay"] * len(datagrams)
    monkeypatch.setattr(time, "time", lambda: T0 - 3600)  # an hour slow
    late = recorder.core._use_datagrams(config, ["lib six 1.16.0 direct env -"])
    assert decode(late[0]) == "stale"
