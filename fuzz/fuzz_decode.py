"""Fuzz the collector's decoder and store ingest with hypothesis: nothing may raise.

    python fuzz/fuzz_decode.py                  # 1,000,000 datagrams (several minutes)
    python fuzz/fuzz_decode.py --inputs 50000
    python fuzz/fuzz_decode.py --quick          # a few seconds (also POPCON_FUZZ_QUICK=1)

Each hypothesis example is a few datagrams from hypothesis strategies (valid ``use``/``inv``
datagrams with random names, versions, labels and env labels, signed ones (in and out of
the time window, some repeated, some without a ``t`` line), statsd lines,
raw bytes, valid datagrams mutated: bytes flipped, inserted, deleted, truncated, lines
duplicated or swapped) plus a seed, from which a fast generator makes 300 more of the same
kinds (hypothesis strategies alone manage ~100 datagrams/s; a million needs more). Each
datagram goes through the decoder without and with a key, whose answer must be a typed
record with valid fields or one of the documented reasons; then every batch goes through the
receiving side's ingest (caps, ids) into a real SQLite file, with roll-ups, and the read-only
queries run over what was stored. Any exception fails the run; hypothesis reports the
example (seed included), so a failure can be replayed.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from popcon.protocol import (
    CLAIMED,
    DEFAULT_STATSD_PREFIX,
    DIRECT,
    IMPORTER_LEVELS,
    INVENTORY,
    LEVELS,
    MAX_DATAGRAM,
    MAX_INVENTORY_PARTS,
    MAX_LABELS,
    NAME_RE,
    ORIGINS,
    PROGRAM,
    PROTOCOL_VERSION,
    PROTOCOL_VERSIONS,
    REJECTIONS,
    STATSD_LIBRARY_USED,
    STATSD_REPORTS,
    TRANSITIVE,
    UNKNOWN,
    UPGRADE,
    USE,
    sign,
    time_line,
)
from popcon.protocol.decode import make_decoder
from popcon.protocol.records import InventoryPart, UseReport
from popcon.server.query.connection import connect_readonly
from popcon.server.query.environments import environments, unused, user_installed
from popcon.server.query.libraries import libraries, library_detail
from popcon.server.query.totals import (
    datagram_totals,
    library_process_totals,
    library_version_totals,
    report_totals,
)
from popcon.server.receive.ingest import Ingestor
from popcon.server.storage.persist import load_catalog, read_rolled_until, roll_up, write_job
from popcon.server.storage.schema import StoreSettings, connect_writer

KEY = b"fuzz key"
#: Datagrams the seeded generator adds to each hypothesis example.
PER_EXAMPLE = 300
T0 = 1_793_577_600
#: The keyed decoder's clock stands at T0; signed datagrams are stamped around its minute.
MINUTE = T0 // 60
#: A few nonces, so that signed datagrams repeat (replays) as well as differ.
NONCES = ["0123456789abcdef", "fedcba9876543210", "0000000000000000"]
USE_LINE = f"{PROTOCOL_VERSION} {USE} "  # + <seq>
OLD_USE_LINE = f"{PROTOCOL_VERSIONS[0]} {USE} "  # popcon/1: records without a person
INVENTORY_LINE = f"{PROTOCOL_VERSION} {INVENTORY} "  # + <id> <part> <parts>
REPORTS_METRIC = f"{DEFAULT_STATSD_PREFIX}.{STATSD_REPORTS}"
OTHER_METRIC = f"{DEFAULT_STATSD_PREFIX}.other"
LIBRARY_METRIC = f"{DEFAULT_STATSD_PREFIX}.{STATSD_LIBRARY_USED}."  # + <name>

names = st.one_of(
    st.sampled_from(["numpy", "pandas", "scikit-learn", "a", "x-y", "zope-interface", "0"]),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
    st.text(st.characters(codec="utf-8"), max_size=12),
)
versions = st.one_of(st.sampled_from(["1.0", "-", "2.9.0.post0"]), st.text(max_size=10))
levels = st.sampled_from([*LEVELS, UNKNOWN, "Direct", ""])
persons = st.one_of(
    st.sampled_from(["-", "0:1", "16383:51", "16384:1", "1:0", "1:52", "01:1", ":", "-1:1"]),
    st.text(max_size=8),
)
origins = st.sampled_from([*ORIGINS, "site", ""])
envs = st.one_of(
    st.sampled_from(["img:a", "~/envs/my env", "quay.io/jupyter/scipy-notebook:2024-05-27"]),
    st.text(st.characters(codec="utf-8"), min_size=0, max_size=40),
)
labels = st.lists(
    st.tuples(
        st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True) | st.text(max_size=4),
        st.from_regex(r"[A-Za-z0-9_.:/@+-]{1,8}", fullmatch=True) | st.text(max_size=4),
    ),
    max_size=10,
)


@st.composite
def use_datagrams(draw) -> bytes:
    lines = [USE_LINE + str(draw(st.integers(0, 3) | st.integers(-5, 10**11)))]
    lines.append(f"env {draw(envs)}")
    lines.append(f"py {draw(st.sampled_from(['3.11', '3.9', '4', 'x']))}")
    lines += [f"label {k}={v}" for k, v in draw(labels)]
    for _ in range(draw(st.integers(0, 12))):
        level = draw(levels)
        record = ["lib", draw(names), draw(versions), level, draw(origins), draw(persons)]
        if level in IMPORTER_LEVELS and draw(st.booleans()):
            record.append(draw(names))
        lines.append(" ".join(record))
    if draw(st.booleans()):
        program = ["prog", draw(names), draw(versions), draw(origins), draw(persons)]
        lines.insert(draw(st.integers(3, len(lines))), " ".join(program))
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


@st.composite
def inventory_datagrams(draw) -> bytes:
    parts = draw(st.integers(1, 4) | st.integers(0, 70))
    part = draw(st.integers(0, parts + 1))
    inv_id = draw(st.sampled_from(["0badcafe", "00000001", "ZZ"]))
    lines = [f"{INVENTORY_LINE}{inv_id} {part} {parts}", f"env {draw(envs)}", "py 3.11"]
    lines += [f"dist {draw(names)} {draw(versions)}" for _ in range(draw(st.integers(0, 10)))]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


@st.composite
def statsd_datagrams(draw) -> bytes:
    lines = []
    for _ in range(draw(st.integers(1, 5))):
        metric = draw(
            st.sampled_from([REPORTS_METRIC, OTHER_METRIC])
            | names.map(lambda n: LIBRARY_METRIC + n)
        )
        value = draw(st.sampled_from(["1", "3", "0", "10", "11", "100", "101", "-1", "x"]))
        lines.append(f"{metric}:{value}|{draw(st.sampled_from(['c', 'g', 'ms']))}")
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw, base) -> bytes:
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup", "swap"]))
        at = draw(st.integers(0, max(0, len(data))))
        if kind == "flip" and data:
            data[min(at, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[at:]
        else:
            lines = bytes(data).split(b"\n")
            i = min(at, len(lines) - 1)
            j = draw(st.integers(0, len(lines) - 1))
            if kind == "dup":
                lines.insert(i, lines[j])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


POOL_NAMES = ["numpy", "pandas", "scikit-learn", "python-dateutil", "zope-interface", "a", "x1"]
ODD = ["", " ", "\t", "\x00", "\x7f", "\x85", "é", "😀", "\u2028", "\u202e", "=", ",", "\r", "lib ",
       "sig ", "t "]  # fmt: skip


def _text(rng: random.Random, alphabet: str, low: int, high: int) -> str:
    return "".join(rng.choices(alphabet, k=rng.randint(low, high)))


def _name(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.5:
        return rng.choice(POOL_NAMES)
    if roll < 0.9:
        return _text(rng, "abcdefghijklmnopqrstuvwxyz0123456789-", 1, 12).strip("-") or "z"
    return _text(rng, "abcXYZ_.-09 " + "".join(ODD), 0, 10)


def _env(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.6:
        return rng.choice(["img:a", "img:b", "~/envs/my env", "quay.io/jupyter/base:2024"])
    if roll < 0.9:
        return _text(rng, "abcdefgh:/._-@ 0123", 1, 30)
    return _text(rng, "ab " + "".join(ODD), 0, 220)


def _pick(rng: random.Random, good: list, bad: list, odds: float = 0.02):
    """Mostly a good value; a bad one with probability ``odds``."""
    return rng.choice(bad) if rng.random() < odds else rng.choice(good)


def _good_name(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return rng.choice(POOL_NAMES)
    return _text(rng, "abcdefghijklmnopqrstuvwxyz0123456789-", 1, 12).strip("-") or "z"


def stamp_and_sign(data: bytes, offset: int, nonce: str) -> bytes:
    """``data`` with a ``t`` line ``offset`` minutes from the keyed decoder's clock and its
    ``sig`` line (no ``t`` line when ``nonce`` is empty)."""
    if nonce:
        data += time_line(MINUTE + offset, nonce)
    return data + sign(KEY, data)


def _person(rng: random.Random) -> str:
    good = ["-", f"{rng.randrange(16384)}:{rng.randint(1, 6)}", "16383:51"]
    return _pick(rng, good, ["16384:1", "1:0", "1:52", "01:1", "x"])


def engine_use(rng: random.Random) -> bytes:
    with_people = rng.random() < 0.8  # popcon/2, else popcon/1
    first = USE_LINE if with_people else OLD_USE_LINE
    lines = [f"{first}{_pick(rng, [0, 0, 1, 2, 17], [-1, 10**11, '01'])}"]
    if rng.random() < 0.99:
        env = rng.choice(["img:a", "img:b", "~/envs/my env", "quay.io/jupyter/base:2024"])
        lines.append(f"env {_env(rng) if rng.random() < 0.05 else env}")
    if rng.random() < 0.99:
        lines.append(f"py {_pick(rng, ['3.11', '3.9', '3.13'], ['3', 'x.y'])}")
    for _ in range(rng.choice([0, 0, 0, 1, 2]) if rng.random() < 0.99 else 9):
        key = _pick(rng, ["hub", "zone", "k_1"], ["Bad", ""])
        value = _pick(
            rng, ["research", "a.b:c/d@e+f-g", str(rng.randint(0, 50))], ["x" * 65, "a,b"]
        )
        lines.append(f"label {key}={value}")
    if with_people and rng.random() < 0.3:
        program = _good_name(rng) if rng.random() < 0.97 else _name(rng)
        lines.append(f"prog {program} 1.0 {ORIGINS[0]} {_person(rng)}")
    more_levels = [PROGRAM, PROGRAM, CLAIMED] if with_people else []
    for _ in range(rng.randint(1, 8) if rng.random() < 0.98 else 0):
        level = _pick(rng, [DIRECT, TRANSITIVE, TRANSITIVE, UPGRADE, *more_levels], ["sideways"])
        origin = _pick(rng, [ORIGINS[0], *ORIGINS], ["site"])
        version = _pick(rng, ["1.0", "2.9.0.post0", "-", str(rng.randint(0, 9))], ["", "x" * 70])
        name = _name(rng) if rng.random() < 0.03 else _good_name(rng)
        record = ["lib", name, version, level, origin]
        if with_people:
            record.append(_person(rng))
        if level in IMPORTER_LEVELS and rng.random() < 0.9:
            record.append(_name(rng) if rng.random() < 0.02 else _good_name(rng))
        lines.append(" ".join(record))
    data = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
    if rng.random() < 0.3:
        offset = rng.choice([0, 0, 0, 1, -5, 6, -400])
        nonce = rng.choice([*NONCES, f"{rng.getrandbits(64):016x}", ""])
        return stamp_and_sign(data, offset, nonce)
    return data


def engine_inventory(rng: random.Random) -> bytes:
    parts = rng.choice([1, 1, 2, 3, 64, 65, 0])
    part = rng.randint(0, parts + 1)
    inv_id = rng.choice(["0badcafe", "00000001", "0000000G", "abc"])
    lines = [f"{INVENTORY_LINE}{inv_id} {part} {parts}", f"env {_env(rng)}", "py 3.11"]
    for _ in range(rng.randint(0, 30)):
        lines.append(f"dist {_name(rng)} {rng.choice(['1.0', '2', '', 'a b'])}")
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


def engine_statsd(rng: random.Random) -> bytes:
    lines = []
    for _ in range(rng.randint(1, 6)):
        metric = rng.choice([REPORTS_METRIC, OTHER_METRIC, LIBRARY_METRIC])
        if metric == LIBRARY_METRIC:
            metric += _name(rng)
        value = rng.choice(["1", "1", "3", "0", "10", "11", "100", "101", "-1", "x", ""])
        lines.append(f"{metric}:{value}|{rng.choice(['c', 'c', 'g', 'ms'])}")
    return "\n".join(lines).encode("utf-8", "surrogatepass")


def engine_mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["flip", "insert", "delete", "truncate", "dup", "swap"])
        at = rng.randint(0, len(buf))
        if kind == "flip" and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << rng.randint(0, 7)
        elif kind == "insert":
            buf[at:at] = rng.randbytes(rng.randint(1, 8))
        elif kind == "delete":
            del buf[at : at + rng.randint(1, 8)]
        elif kind == "truncate":
            del buf[at:]
        else:
            lines = bytes(buf).split(b"\n")
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            if kind == "dup":
                lines.insert(i, lines[j])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            buf = bytearray(b"\n".join(lines))
    return bytes(buf)


def engine(seed: int, count: int) -> list[bytes]:
    """``count`` datagrams from ``seed``: 45 % valid-shaped use, 10 % inventory, 10 % statsd,
    25 % mutated, 10 % raw bytes."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.45:
            out.append(engine_use(rng))
        elif roll < 0.55:
            out.append(engine_inventory(rng))
        elif roll < 0.65:
            out.append(engine_statsd(rng))
        elif roll < 0.9:
            maker = rng.choice([engine_use, engine_use, engine_inventory, engine_statsd])
            out.append(engine_mutate(rng, maker(rng)))
        else:
            out.append(rng.randbytes(rng.choice([0, 1, 10, 300, MAX_DATAGRAM, MAX_DATAGRAM + 1])))
    return out


def signed(base):
    offsets = st.integers(-7, 7) | st.sampled_from([0, -(10**6), 10**9])
    return st.tuples(base, offsets, st.sampled_from([*NONCES, ""])).map(
        lambda drawn: stamp_and_sign(*drawn)
    )


datagrams = st.one_of(
    use_datagrams(),
    inventory_datagrams(),
    statsd_datagrams(),
    signed(use_datagrams()),
    mutated(use_datagrams()),
    mutated(signed(use_datagrams())),
    mutated(inventory_datagrams()),
    st.binary(max_size=MAX_DATAGRAM + 100),
    st.binary(min_size=MAX_DATAGRAM - 2, max_size=MAX_DATAGRAM + 2),
)


class Run:
    """Decoders, a store, and what the run has seen."""

    def __init__(self, directory: Path) -> None:
        self.plain = make_decoder()
        self.keyed = make_decoder(key=KEY, clock=lambda: T0, replay_memory=20_000)
        self.small_cache = make_decoder(cache_size=16)
        settings_ = StoreSettings(
            max_environments=50,
            max_label_sets_per_env=4,
            max_libraries_per_env=200,
            max_libraries=2000,
        )
        self.db = directory / "fuzz.sqlite"
        self.conn = connect_writer(self.db, settings_, now=T0)
        self.ingestor = Ingestor(load_catalog(self.conn), settings_)
        self.tiers = settings_.resolved_tiers()
        self.reader = connect_readonly(self.db)
        self.inputs = 0
        self.examples = 0
        self.results: Counter = Counter()
        self.keyed_results: Counter = Counter()
        self.clock = T0

    def check(self, data: bytes) -> None:
        answers = [decode(data) for decode in (self.plain, self.keyed, self.small_cache)]
        for answer in answers:
            if isinstance(answer, str):
                assert answer in REJECTIONS, answer
            elif isinstance(answer, UseReport):
                assert (
                    len(answer.labels) <= MAX_LABELS and answer.processes in (0, 1)
                ) or answer.py == ""
                for lib in answer.libs:
                    assert NAME_RE.match(lib.name), lib
                    assert lib.importer is None or NAME_RE.match(lib.importer), lib
                    assert lib.person is None or (
                        0 <= lib.person[0] < 16384 and 1 <= lib.person[1] <= 51
                    ), lib
                program = answer.program
                assert program is None or NAME_RE.match(program.name), program
            else:
                assert isinstance(answer, InventoryPart), answer
                assert 1 <= answer.part <= answer.parts <= MAX_INVENTORY_PARTS
        assert answers[0] == answers[2]  # a tiny cache gives the same answers
        self.results[answers[0] if isinstance(answers[0], str) else "ok"] += 1
        self.keyed_results[answers[1] if isinstance(answers[1], str) else "ok"] += 1

    def example(self, batch: list[bytes]) -> None:
        for data in batch:
            self.check(data)
        self.inputs += len(batch)
        self.examples += 1
        self.clock += 97  # time passes: buckets close
        bucket = self.clock - self.clock % 600
        self.ingestor.receive(batch, self.plain, bucket, self.clock)
        if self.examples % 5 == 0:
            job = self.ingestor.take_job()
            if job is not None:
                write_job(self.conn, job, self.tiers, read_rolled_until(self.conn) or 0)
            closed = self.clock - 3600
            closed -= closed % 600
            if closed > (read_rolled_until(self.conn) or 0):
                roll_up(self.conn, self.tiers, read_rolled_until(self.conn) or 0, closed)
        if self.examples % 50 == 0:
            self.query()

    def query(self) -> None:
        start, end = self.clock - 6 * 3600, self.clock
        top = libraries(self.reader, start, end, now=self.clock)
        for row in top["libraries"][:5]:
            library_detail(self.reader, row["name"], start, end, now=self.clock)
        libraries(self.reader, self.clock - 30 * 86400, end, now=self.clock)
        unused(self.reader, start, end, now=self.clock)
        user_installed(self.reader, start, end, now=self.clock)
        environments(self.reader, now=self.clock)
        library_process_totals(self.reader)
        library_version_totals(self.reader)
        report_totals(self.reader)
        datagram_totals(self.reader)


def fuzz(inputs: int, *, progress: bool = True) -> Run:
    """Run until ``inputs`` datagrams went through; returns the run (for its counts)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(Path(tmp))

        @settings(
            max_examples=max(1, min(100, inputs // PER_EXAMPLE)),
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.lists(datagrams, max_size=3), st.integers(0, 2**32 - 1))
        def one(drawn: list[bytes], seed: int) -> None:
            run.example(drawn + engine(seed, PER_EXAMPLE))

        started = time.monotonic()
        while run.inputs < inputs:
            one()
            if progress:
                rate = run.inputs / (time.monotonic() - started)
                print(f"{run.inputs:>9,} datagrams, {rate:,.0f}/s", file=sys.stderr)
        job = run.ingestor.take_job()
        if job is not None:
            write_job(run.conn, job, run.tiers, read_rolled_until(run.conn) or 0)
        run.query()
        integrity = run.conn.execute("PRAGMA integrity_check").fetchone()[0]
        assert integrity == "ok", integrity
        run.reader.close()
        run.conn.close()
        return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="datagrams to try")
    parser.add_argument("--quick", action="store_true", help="6,000 datagrams, for CI")
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("POPCON_FUZZ_QUICK") == "1"
    inputs = 6_000 if quick else args.inputs
    started = time.monotonic()
    run = fuzz(inputs, progress=not quick)
    seconds = time.monotonic() - started
    print(
        f"fuzzed {run.inputs:,} datagrams in {run.examples:,} batches, {seconds:.0f} s: nothing "
        f"raised. Decoder answers: {dict(run.results.most_common())}; with a key: "
        f"{dict(run.keyed_results.most_common())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
