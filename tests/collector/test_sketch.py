"""The sketches of people (storage/sketch.py), directly: the estimate's accuracy, the merge, the
stored form and its bound, the bytewise maximum of dense sketches."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import pytest
from datagrams import person_of

from popcon.server.storage.sketch import (
    MAX_ENCODED,
    MAX_SPARSE,
    REGISTERS,
    Registers,
    bytewise_max,
    decode,
    encode,
    merged,
    of_pairs,
    tally,
)

#: The library every person's contribution is for (one sketch is one library's).
NAME = "pandas"


def _secrets(seed: int, count: int) -> list[bytes]:
    """``count`` random 32-byte secrets, one per person (seeded, so a failure can be rerun)."""
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(count)]


def _pair(field: str) -> tuple[int, int]:
    register, _colon, rank = field.partition(":")
    return int(register), int(rank)


def _contributions(secrets: Iterable[bytes], name: str = NAME) -> list[tuple[int, int]]:
    """The person fields the recorders of these people send for ``name``, as pairs."""
    return [_pair(person_of(secret, name)) for secret in secrets]


def _ranks(blob: bytes) -> bytes:
    """A stored sketch read as the module's docstring defines the stored form, without its
    code: one rank per register (0 where none was contributed)."""
    if blob[:1] == b"D":
        assert len(blob) == 1 + REGISTERS
        return blob[1:]
    assert blob[:1] == b"S" and (len(blob) - 1) % 3 == 0
    count = (len(blob) - 1) // 3
    ranks = bytearray(REGISTERS)
    for i in range(count):
        register = int.from_bytes(blob[1 + 2 * i : 3 + 2 * i], "little")
        ranks[register] = blob[1 + 2 * count + i]
    return bytes(ranks)


def _expected_ranks(pairs: Iterable[tuple[int, int]]) -> bytes:
    ranks = bytearray(REGISTERS)
    for register, rank in pairs:
        ranks[register] = max(ranks[register], rank)
    return bytes(ranks)


def _random_pairs(rng: random.Random, count: int) -> list[tuple[int, int]]:
    return [(rng.randrange(REGISTERS), rng.randint(1, 51)) for _ in range(count)]


# -- the estimate ------------------------------------------------------------------------------


def test_an_empty_sketch_counts_nobody() -> None:
    assert Registers().people() == 0
    assert decode(encode(Registers())).people() == 0
    assert not Registers()


@pytest.mark.parametrize("seed", range(5))
def test_up_to_60_people_are_counted_exactly_or_within_one(seed: int) -> None:
    sketch = Registers()
    counted = [sketch.people()]
    for register, rank in _contributions(_secrets(seed, 60)):
        sketch.add(register, rank)
        counted.append(sketch.people())
    misses = [(n, got) for n, got in enumerate(counted) if abs(got - n) > 1]
    assert misses == [], f"(people, counted) off by more than one: {misses}"


def test_the_same_people_again_count_once() -> None:
    pairs = _contributions(_secrets(7, 40))
    once, thrice = of_pairs(pairs), of_pairs(pairs * 3)
    assert thrice.people() == once.people()
    assert encode(thrice) == encode(once)


@pytest.mark.parametrize(("people", "seeds"), [(1000, range(5)), (100_000, range(3))])
def test_many_people_are_counted_within_3_percent(people: int, seeds: Sequence[int]) -> None:
    for seed in seeds:
        rng = random.Random(seed)
        sketch = Registers()
        for _ in range(people):
            register, rank = _pair(person_of(rng.randbytes(32), NAME))
            sketch.add(register, rank)
        error = abs(sketch.estimate() - people) / people
        assert error <= 0.03, f"seed {seed}: {sketch.people()} for {people} people"


def test_counts_where_linear_counting_gives_way_stay_within_3_percent() -> None:
    """From about 2.5 times the registers (41,000 people) the raw HyperLogLog estimate takes
    over from linear counting; the module promises about 1 % at any count above 50."""
    misses = []
    for seed in range(6):
        rng = random.Random(seed)
        sketch = Registers()
        for people in range(1, 52_001):
            register, rank = _pair(person_of(rng.randbytes(32), NAME))
            sketch.add(register, rank)
            if people >= 38_000 and people % 1000 == 0:
                error = (sketch.estimate() - people) / people
                if abs(error) > 0.03:
                    misses.append((seed, people, f"{error:+.2%}"))
    assert misses == [], f"(seed, people, error) beyond 3 %: {misses}"


def test_one_persons_contributions_differ_between_libraries() -> None:
    """A person's field is not the same for two libraries (else it would identify them); the
    sketches of two libraries of the same people still count them alike."""
    secrets = _secrets(11, 30)
    pandas, numpy = _contributions(secrets, "pandas"), _contributions(secrets, "numpy")
    assert sum(a == b for a, b in zip(pandas, numpy)) <= 1
    assert abs(of_pairs(pandas).people() - 30) <= 1
    assert abs(of_pairs(numpy).people() - 30) <= 1


# -- the merge ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right"),
    [(30, 50), (3000, 200), (4000, 4000), (9000, 20), (20_000, 12_000)],
    ids=["sparse+sparse", "sparse+sparse-denser", "sparse+sparse=dense", "dense+sparse", "dense"],
)
def test_merge_is_commutative_idempotent_and_the_sketch_of_the_union(left: int, right: int) -> None:
    people = _secrets(left * 7 + right, left + right)
    # A third of the right side are people of the left side too.
    a_people, b_people = people[:left], people[left:] + people[: min(left, right) // 3]
    a, b = _contributions(a_people), _contributions(b_people)
    union = _expected_ranks(a + b)

    def merge(*sketches: Sequence[tuple[int, int]]) -> Registers:
        into = Registers()
        for pairs in sketches:
            into.merge(encode(of_pairs(pairs)))
        return into

    ab, ba = merge(a, b), merge(b, a)
    assert _ranks(encode(ab)) == _ranks(encode(ba)) == union
    assert _ranks(encode(merge(a, b, a, b))) == union
    assert _ranks(encode(of_pairs(a + b))) == union
    assert ab.people() == ba.people() == of_pairs(a + b).people()
    assert _ranks(encode(merged([encode(of_pairs(b)), encode(of_pairs(a))]))) == union
    twice = of_pairs(a)
    twice.merge(encode(of_pairs(a)))
    assert _ranks(encode(twice)) == _expected_ranks(a)
    in_memory = of_pairs(a)
    in_memory.merge_sketch(of_pairs(b))
    in_memory.merge_sketch(of_pairs(b))
    assert _ranks(encode(in_memory)) == union


def test_a_merge_keeps_the_largest_rank_of_each_register() -> None:
    low, high = of_pairs([(5, 2), (9, 7)]), of_pairs([(5, 6), (9, 1), (16383, 51)])
    low.merge(encode(high))
    assert _ranks(encode(low))[5] == 6
    assert _ranks(encode(low))[9] == 7
    assert _ranks(encode(low))[16383] == 51
    assert len(low) == 3


# -- the stored form ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "registers", [0, 1, 50, MAX_SPARSE - 1, MAX_SPARSE, MAX_SPARSE + 1, 9000, REGISTERS]
)
def test_a_stored_sketch_round_trips_and_is_never_longer_than_max_encoded(
    registers: int,
) -> None:
    rng = random.Random(registers)
    pairs = [(r, rng.randint(1, 51)) for r in rng.sample(range(REGISTERS), registers)]
    sketch = of_pairs(pairs)
    blob = encode(sketch)
    assert len(blob) <= MAX_ENCODED == 1 + REGISTERS
    assert blob[:1] == (b"S" if registers <= MAX_SPARSE else b"D")
    assert len(blob) == (1 + 3 * registers if registers <= MAX_SPARSE else 1 + REGISTERS)
    assert _ranks(blob) == _expected_ranks(pairs)
    again = decode(blob)
    assert encode(again) == blob
    assert len(again) == registers
    assert again.estimate() == sketch.estimate()


def test_stored_sketches_of_many_people_stay_bounded() -> None:
    sketch = Registers()
    rng = random.Random(3)
    for step in range(30):
        for register, rank in _random_pairs(rng, 1000):
            sketch.add(register, rank)
        blob = encode(sketch)
        assert len(blob) <= MAX_ENCODED, f"{len(blob)} bytes after {1000 * (step + 1)} adds"
        assert _ranks(encode(decode(blob))) == _ranks(blob)


# -- the bytewise maximum ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_bytewise_max_is_the_larger_byte_of_each_position(seed: int) -> None:
    rng = random.Random(seed)
    a = bytes(rng.randrange(128) for _ in range(REGISTERS))
    b = bytes(rng.randrange(128) for _ in range(REGISTERS))
    assert bytewise_max(a, b) == bytes(map(max, a, b))
    assert bytewise_max(b, a) == bytes(map(max, a, b))
    assert bytewise_max(a, a) == a


def test_bytewise_max_at_the_edges_of_a_rank() -> None:
    zeros, tops = bytes(REGISTERS), bytes([127]) * REGISTERS
    assert bytewise_max(zeros, tops) == tops
    assert bytewise_max(tops, zeros) == tops
    assert bytewise_max(zeros, zeros) == zeros
    alternating = bytes([0, 127] * (REGISTERS // 2))
    other = bytes([127, 0] * (REGISTERS // 2))
    assert bytewise_max(alternating, other) == tops
    ranks = bytes([51, 1] * (REGISTERS // 2))
    assert bytewise_max(ranks, bytes([1, 51] * (REGISTERS // 2))) == bytes([51]) * REGISTERS


@pytest.mark.parametrize(
    ("kept", "more"), [(0, 30), (40, 0), (40, 25), (150, 400), (3000, 60), (3000, 9000)]
)
def test_a_tally_counts_the_people_of_the_merge_without_changing(kept: int, more: int) -> None:
    """A tally (sparse or dense) with more registers counts what the merged sketch counts,
    and stays as it was; a new tally with them is that merge."""
    everyone = _secrets(kept + 11, kept + more)
    shared = everyone[kept // 2 : kept]  # half the kept people are among the more
    base = of_pairs(_contributions(everyone[:kept]))
    extra = of_pairs(_contributions(shared + everyone[kept:]))
    union = merged([encode(base), encode(extra)])
    kept_tally = tally(decode(encode(base)))
    before = kept_tally.people_with()
    assert before == base.people()
    assert kept_tally.people_with(extra) == union.people()
    assert kept_tally.people_with() == before
    grown = kept_tally.with_registers(extra)
    assert grown.people_with() == union.people()
    assert kept_tally.people_with() == before
    assert grown.people_with(extra) == union.people()
