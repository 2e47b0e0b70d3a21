"""The decoder's caches: bounded whatever arrives, valid or rejected, and never a different
answer from a decoder that has seen nothing before."""

from __future__ import annotations

from datagrams import sign

from popcon.protocol.decode import _Cache, make_decoder
from popcon.protocol.records import InventoryPart, UseReport


def _junk(i: int) -> list[bytes]:
    """Distinct datagrams of every kind: valid and rejected lines, headers, blocks."""
    return [
        b"popcon/1 use 0\nenv e%d\npy 3.11\nlib lib%d 1.0 direct env\n" % (i % 50, i),
        b"popcon/1 use 0\nenv e\npy 3.11\nlib Bad%d 1.0 direct env\n" % i,
        b"popcon/1 use 0\nenv e\npy x%d\nlib six 1.0 direct env\n" % i,
        b"popcon/2 use 0\nenv e\npy 3.11\nlib lib%d 1.0 direct env %d:1\n" % (i, i % 16384),
        b"popcon/2 use 0\nenv e\npy 3.11\nlib six 1.0 direct env %d:99\n" % i,
        b"popcon/2 use 0\nenv e\npy 3.11\nprog p%d 1.0 env -\n" % i,
        b"popcon/2 use 0\nenv e\npy 3.11\nprog p%d 1.0 env -\nlib six 1.0 program env -\n" % i,
        b"popcon/1 inv 0badcafe 1 1\nenv e\npy 3.11\ndist d%d 1.0\ndist D%d 1\n" % (i, i),
        b"popcon/1 inv 0badcafe %d 2\nenv e\npy 3.11\n" % (i % 5),
        b"python_popcon.library_used.lib%d:1|c\npython_popcon.library_used.b_%d:0|c" % (i, i),
    ]


def test_no_cache_grows_past_its_bound_under_junk() -> None:
    decode = make_decoder(cache_size=100)
    for i in range(3000):
        for data in _junk(i):
            decode(data)
    decoding = decode.__self__  # make_decoder returns a bound method
    caches = [getattr(decoding, name) for name in decoding.__slots__]
    caches = [cache for cache in caches if isinstance(cache, _Cache)]
    assert len(caches) == 9
    for cache in caches:
        assert len(cache.parsed) <= cache.limit and len(cache.rejected) <= cache.rejected_limit
    assert 0 < len(decoding.use_datagrams) <= decoding.use_datagram_limit == 50


def test_only_unsigned_use_datagrams_are_kept_whole() -> None:
    """A signed datagram must meet the replay check each time it comes, so it is never kept;
    nor is what is rejected, an inventory part or a statsd datagram."""
    key = b"k" * 32
    unsigned = b"popcon/2 use 0\nenv e\npy 3.11\nlib six 1.0 direct env 7:2\n"
    signed = sign(unsigned, key)
    decode = make_decoder()
    first = decode(unsigned)
    assert isinstance(first, UseReport)
    assert decode(unsigned) is first
    assert decode(signed) == first  # without a key, accepted and not kept
    for data in _junk(1)[1:3] + _junk(1)[7:]:
        decode(data)
    assert list(decode.__self__.use_datagrams) == [unsigned]
    keyed = make_decoder(key)
    assert keyed(signed) == first
    assert keyed(signed) == "replay"
    assert not keyed.__self__.use_datagrams


def test_cached_answers_are_the_answers_of_a_fresh_decoder() -> None:
    decode = make_decoder(cache_size=40)
    for i in range(600):
        for data in _junk(i % 97) + _junk(i):
            answer = decode(data)
            assert answer == make_decoder()(data), data
            assert isinstance(answer, (str, UseReport, InventoryPart))


def test_a_rejected_line_is_rejected_for_its_reason_in_any_datagram() -> None:
    decode = make_decoder()
    bad = b"lib Not_Canonical 1.0 direct env\n"
    head = b"popcon/1 use 0\nenv e\npy 3.11\n"
    assert decode(head + bad) == "bad_name"
    assert decode(head + b"lib six 1.0 direct env\n" + bad) == "bad_name"
    assert decode(head + bad + b"lib six 1.0 direct env\n") == "bad_name"
    assert isinstance(decode(head + b"lib six 1.0 direct env\n"), UseReport)
