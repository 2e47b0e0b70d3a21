"""Distinct people as HyperLogLog sketches: the registers of one cell, their stored form, the
merge and the estimate.

A record's person field (``docs/protocol.md``) is one HyperLogLog contribution: a register
(0..16383, precision :data:`~popcon.protocol.SKETCH_PRECISION`) and a rank (1..51). A sketch
keeps, per register, the largest rank contributed; merging sketches takes the largest rank of
each register, so the people of any window, under any filter, are the merge of the sketches of
its buckets. Nothing else about a person is kept.

In memory a sketch is a :class:`Registers`: a dict ``{register: rank}`` while few registers are
set, else a ``bytearray`` of one rank per register. Stored (:func:`encode`), it is *sparse*
(``b"S"``, the registers as little-endian 16-bit numbers, then their ranks as bytes: 3 bytes a
register) while that is smaller than *dense* (``b"D"`` and 16,384 bytes, one rank per
register), so no stored sketch exceeds 16,385 bytes. The estimate is HyperLogLog's with linear
counting for small counts: below 50 people, exact or within one in all but about 1 group in 400
(where people's registers collide twice); above, one standard error is 0.8 %, and every count
measured (``tests/collector/test_sketch.py``, up to 100,000) is within 3 %.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections import Counter
from collections.abc import Iterable

from popcon.protocol import MAX_RANK, SKETCH_PRECISION

#: Registers of a sketch.
REGISTERS = 1 << SKETCH_PRECISION
SPARSE = b"S"
DENSE = b"D"
#: Most registers a sparse sketch holds (3 bytes each) before it is stored dense.
MAX_SPARSE = (REGISTERS - 1) // 3
#: Longest stored sketch, in bytes.
MAX_ENCODED = 1 + REGISTERS
_ALPHA = 0.7213 / (1 + 1.079 / REGISTERS)
#: Below this raw estimate (and with an empty register left), linear counting answers. The
#: original HyperLogLog switches at 2.5 registers per person, where the raw estimate still runs
#: about 2 % high with 16,384 registers; linear counting stays within 1 % a little further.
_LINEAR_LIMIT = 3 * REGISTERS
#: ``2 ** (MAX_RANK - rank)`` per rank: the estimate's sum over registers, scaled to integers.
_SCALED = [1 << (MAX_RANK - rank) for rank in range(MAX_RANK + 1)]
_SCALE = 1 << MAX_RANK
#: Most registers a :class:`Tally` keeps in a dict (about this many bytes an entry) before a
#: bytearray of every register is smaller.
_DICT_ENTRY = 80
MAX_TALLY_SPARSE = REGISTERS // _DICT_ENTRY
_BIG_ENDIAN = sys.byteorder == "big"
#: Every byte's high bit (for the bytewise maximum of two dense sketches as integers).
_HIGH = int.from_bytes(b"\x80" * REGISTERS, "little")


class Registers:
    """One sketch being built or merged: ``sparse`` (a dict) until it holds more than
    :data:`MAX_SPARSE` registers, then ``dense`` (a bytearray of :data:`REGISTERS` ranks)."""

    __slots__ = ("dense", "sparse")

    def __init__(self) -> None:
        self.sparse: dict[int, int] | None = {}
        self.dense: bytearray | None = None

    def add(self, register: int, rank: int) -> None:
        sparse = self.sparse
        if sparse is not None:
            if sparse.get(register, 0) < rank:
                sparse[register] = rank
                if len(sparse) > MAX_SPARSE:
                    self._densify()
        else:
            dense = self.dense
            assert dense is not None
            if dense[register] < rank:
                dense[register] = rank

    def merge(self, blob: bytes) -> None:
        """Take the largest rank of each register of a stored sketch."""
        if blob[:1] == DENSE:
            self._merge_dense(blob[1:])
            return
        count = (len(blob) - 1) // 3
        registers = array("H", blob[1 : 1 + 2 * count])
        if _BIG_ENDIAN:
            registers.byteswap()
        incoming = dict(zip(registers, blob[1 + 2 * count :]))
        self.merge_registers(incoming)

    def merge_registers(self, incoming: dict[int, int]) -> None:
        """Take the largest rank of each register of ``{register: rank}``."""
        sparse = self.sparse
        if sparse is None:
            dense = self.dense
            assert dense is not None
            for register, rank in incoming.items():
                if dense[register] < rank:
                    dense[register] = rank
            return
        if len(incoming) > len(sparse):
            incoming, sparse = sparse, dict(incoming)
            self.sparse = sparse
        for register in incoming.keys() & sparse.keys():
            if incoming[register] < sparse[register]:
                incoming[register] = sparse[register]
        sparse.update(incoming)
        if len(sparse) > MAX_SPARSE:
            self._densify()

    def raise_ranks(self, incoming: dict[int, int]) -> bool:
        """:meth:`merge_registers`, for a few registers into a sketch that may hold them
        already: whether any register rose."""
        sparse = self.sparse
        if sparse is None:
            dense = self.dense
            assert dense is not None
            rose = False
            for register, rank in incoming.items():
                if dense[register] < rank:
                    dense[register] = rank
                    rose = True
            return rose
        have = sparse.get
        rising = {register: rank for register, rank in incoming.items() if have(register, 0) < rank}
        if not rising:
            return False
        sparse.update(rising)
        if len(sparse) > MAX_SPARSE:
            self._densify()
        return True

    def size(self) -> int:
        """Roughly the bytes it holds (as :meth:`Tally.size`)."""
        sparse = self.sparse
        return REGISTERS if sparse is None else len(sparse) * _DICT_ENTRY

    def merge_sketch(self, other: Registers) -> None:
        if other.sparse is not None:
            self.merge_registers(dict(other.sparse))
        else:
            assert other.dense is not None
            self._merge_dense(bytes(other.dense))

    def _densify(self) -> None:
        dense = bytearray(REGISTERS)
        for register, rank in (self.sparse or {}).items():
            dense[register] = rank
        self.sparse, self.dense = None, dense

    def _merge_dense(self, ranks: bytes) -> None:
        if self.sparse is not None:
            sparse = self.sparse
            self.sparse, self.dense = None, bytearray(ranks)
            self.merge_registers(sparse)
            return
        assert self.dense is not None
        self.dense = bytearray(bytewise_max(bytes(self.dense), ranks))

    def pairs(self) -> Iterable[tuple[int, int]]:
        """``(register, rank)`` of every register set."""
        if self.sparse is not None:
            return self.sparse.items()
        assert self.dense is not None
        return ((register, rank) for register, rank in enumerate(self.dense) if rank)

    def __len__(self) -> int:
        """Registers set."""
        if self.sparse is not None:
            return len(self.sparse)
        assert self.dense is not None
        return REGISTERS - self.dense.count(0)

    def __bool__(self) -> bool:
        return len(self) > 0

    def estimate(self) -> float:
        """The HyperLogLog estimate of the people contributing (linear counting while
        small)."""
        if self.sparse is not None:
            ranks = Counter(self.sparse.values())
            ranks[0] = REGISTERS - len(self.sparse)
        else:
            assert self.dense is not None
            ranks = Counter()
            left = REGISTERS
            dense = self.dense
            for rank in range(MAX_RANK + 1):
                found = dense.count(rank)
                ranks[rank] = found
                left -= found
                if not left:
                    break
        return estimate_of(ranks)

    def people(self) -> int:
        """:meth:`estimate`, rounded to a whole number of people."""
        return round(self.estimate())


def estimate_of(ranks: Counter[int]) -> float:
    """The estimate from how many registers hold each rank (``ranks[0]``: registers empty)."""
    total = sum(count << (MAX_RANK - rank) for rank, count in ranks.items())
    return estimate_from(ranks.get(0, 0), total)


def estimate_from(zeros: int, total: int) -> float:
    """The estimate from the registers empty and ``total``, the sum over every register of
    ``2 ** (MAX_RANK - rank)`` (an integer, so that sums kept and updated stay exact)."""
    if zeros == REGISTERS:
        return 0.0
    raw = _ALPHA * REGISTERS * REGISTERS * _SCALE / total
    if raw <= _LINEAR_LIMIT and zeros:
        return REGISTERS * math.log(REGISTERS / zeros)
    return raw


class Tally:
    """A sketch kept for answering: its ranks (a dict while few registers are set, else a
    bytearray) with the sums of its estimate, so that the people of it together with a few
    more registers are counted without copying it (:meth:`people_with`). Never changed once
    made; :func:`tally` makes one, :meth:`with_registers` a new one with more."""

    __slots__ = ("ranks", "total", "zeros")

    def __init__(self, ranks: dict[int, int] | bytearray, zeros: int, total: int) -> None:
        self.ranks = ranks
        self.zeros = zeros
        self.total = total

    def people_with(self, more: Registers | None = None) -> int:
        """The people of this sketch merged with ``more``."""
        if not more:
            return round(estimate_from(self.zeros, self.total))
        zeros, total = _folded(self.ranks, more.pairs(), self.zeros, self.total)
        return round(estimate_from(zeros, total))

    def with_registers(self, more: Registers) -> Tally:
        """A new tally of this sketch merged with ``more``."""
        ranks = self.ranks
        if isinstance(ranks, dict):
            merged = Registers()
            merged.merge_registers(dict(ranks))
            merged.merge_sketch(more)
            return tally(merged)
        zeros, total = _folded(ranks, more.pairs(), self.zeros, self.total)
        copy = bytearray(ranks)
        for register, rank in more.pairs():
            if copy[register] < rank:
                copy[register] = rank
        return Tally(copy, zeros, total)

    def size(self) -> int:
        """Roughly the bytes it holds."""
        ranks = self.ranks
        return len(ranks) * _DICT_ENTRY if isinstance(ranks, dict) else REGISTERS


def tally(sketch: Registers) -> Tally:
    """The :class:`Tally` of a sketch (which it may share: leave the sketch unchanged)."""
    sparse = sketch.sparse
    if sparse is not None:
        zeros = REGISTERS - len(sparse)
        total = (zeros << MAX_RANK) + sum(map(_SCALED.__getitem__, sparse.values()))
        if len(sparse) <= MAX_TALLY_SPARSE:
            return Tally(sparse, zeros, total)
        sketch._densify()
        assert sketch.dense is not None
        return Tally(sketch.dense, zeros, total)
    dense = sketch.dense
    assert dense is not None
    zeros = dense.count(0)
    total, left = 0, REGISTERS
    for rank in range(MAX_RANK + 1):
        found = dense.count(rank)
        total += found << (MAX_RANK - rank)
        left -= found
        if not left:
            break
    return Tally(dense, zeros, total)


def _folded(
    ranks: dict[int, int] | bytearray, pairs: Iterable[tuple[int, int]], zeros: int, total: int
) -> tuple[int, int]:
    """The sums of ``ranks`` merged with ``pairs`` (of distinct registers)."""
    scaled = _SCALED
    have: int
    get = ranks.get if isinstance(ranks, dict) else None
    for register, rank in pairs:
        have = get(register, 0) if get is not None else ranks[register]
        if rank > have:
            total += scaled[rank] - scaled[have]
            if not have:
                zeros -= 1
    return zeros, total


def bytewise_max(a: bytes, b: bytes) -> bytes:
    """The larger byte of each position of two dense sketches (ranks below 128), computed on
    whole integers: ``(a | 0x80…) - b`` keeps each byte's high bit where ``a >= b``."""
    x = int.from_bytes(a, "little")
    y = int.from_bytes(b, "little")
    keep = (((x | _HIGH) - y) & _HIGH) >> 7
    mask = keep * 0xFF
    return ((x & mask) | (y & ~mask)).to_bytes(REGISTERS, "little")


def encode(sketch: Registers) -> bytes:
    """The stored form: sparse while it is smaller, else dense."""
    if sketch.sparse is not None:
        registers = sorted(sketch.sparse)
        packed = array("H", registers)
        if _BIG_ENDIAN:
            packed.byteswap()
        return SPARSE + packed.tobytes() + bytes(map(sketch.sparse.__getitem__, registers))
    assert sketch.dense is not None
    return DENSE + bytes(sketch.dense)


def decode(blob: bytes) -> Registers:
    sketch = Registers()
    sketch.merge(blob)
    return sketch


def merged(blobs: Iterable[bytes]) -> Registers:
    """One sketch of stored ones."""
    sketch = Registers()
    for blob in blobs:
        sketch.merge(blob)
    return sketch


def of_pairs(pairs: Iterable[tuple[int, int]]) -> Registers:
    """A sketch of ``(register, rank)`` contributions."""
    sketch = Registers()
    for register, rank in pairs:
        sketch.add(register, rank)
    return sketch
