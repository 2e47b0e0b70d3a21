"""Datagrams counted by their lines (``receive/known.py``) give the rows that decoding every
datagram gives: the receiving side's :meth:`Ingestor.receive` against :func:`job_of` over
decoded datagrams, on a workload of people, programs and label sets across buckets and jobs,
with the version and importer caps hit, malformed look-alikes of known datagrams, signed,
``popcon/1``, statsd and inventory datagrams mixed in, a bound on the known lines, and an
environment released while its lines are known."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from datagrams import inventory_datagrams, sign, statsd_datagram, use_datagram, use_datagram_2
from timing import T0

from popcon.protocol.decode import make_decoder
from popcon.server.receive import ingest
from popcon.server.receive.ingest import Ingestor, aggregate, job_of
from popcon.server.receive.known import count_known
from popcon.server.storage.rows import Catalog, Pending
from popcon.server.storage.schema import StoreSettings

WIDTH = StoreSettings().bucket_width
START = T0 - T0 % WIDTH
LIBS = [
    ("pandas", ["2.2.2", "2.1.4"]),
    ("numpy", ["1.26.4", "2.0.1", "1.24.0"]),  # three versions: over max_versions_per_library
    ("requests", ["2.32.3"]),
    ("urllib3", ["2.2.2"]),
    ("scipy", ["1.13.1"]),
    ("matplotlib", ["3.9.0"]),
    ("python-dateutil", ["2.9.0"]),
    ("six", ["1.16.0"]),
]
PROGRAMS = [("ipykernel", "6.29.5"), ("pytest", "8.2.2")]
HEADS = [
    ("img:a", ()),
    ("img:a", (("hub", "research"),)),
    ("img:b", (("hub", "teaching"), ("site", "x"))),
]
PEOPLE = [bytes([n]) * 32 for n in range(12)] + [None]  # None: no person field ("-")
SETTINGS = StoreSettings(max_versions_per_library=2, max_importers_per_library=2)


def process(rng: random.Random) -> list[bytes]:
    """The datagrams of one process: up to 3 records each, seq 0, 1, ..."""
    env, labels = rng.choice(HEADS)
    secret = rng.choice(PEOPLE)
    records: list[tuple[str, ...]] = []
    program = rng.choice(PROGRAMS) if rng.random() < 0.4 else None
    if program is not None:
        records.append((program[0], program[1], "program", "env"))
    for name, versions in rng.sample(LIBS, rng.randint(1, 5)):
        version = rng.choice(versions)
        origin = rng.choice(["env", "env", "user"])
        roll = rng.random()
        if roll < 0.4:
            records.append((name, version, "direct", origin))
        elif roll < 0.8:
            importer = rng.choice([n for n, _ in LIBS if n != name])
            records.append((name, version, "transitive", origin, importer))
        elif roll < 0.9 and program is not None:
            records.append((name, version, "program", origin, program[0]))
        else:
            records.append((name, version, rng.choice(["upgrade", "claimed"]), origin))
    out = []
    for seq, first in enumerate(range(0, len(records), 3)):
        prog = (program[0], program[1], "env") if program is not None and seq == 0 else None
        out.append(
            use_datagram_2(
                env, records[first : first + 3], secret, program=prog, seq=seq, labels=labels
            )
        )
    return out


def look_alikes(known: bytes, rng: random.Random) -> list[bytes]:
    """Datagrams made of a known datagram's lines that the decoder takes otherwise, or
    rejects."""
    first, rest = known.split(b"\n", 1)
    body = rest.rsplit(b"\n", 1)[0]
    lines = body.split(b"\n")
    records = [line for line in lines if line.startswith((b"lib ", b"prog "))]
    out = [
        b"popcon/2 use 01\n" + rest,  # a seq with a leading zero
        b"popcon/2 use \n" + rest,
        b"popcon/2 use 12345678901\n" + rest,  # more than 10 digits
        b"popcon/2 use 7 8\n" + rest,
        b"popcon/2 use \xd9\xa1\n" + rest,  # a non-ASCII digit
        first + b"\n" + rest[:-1],  # no final newline
        first + b"\n" + rest + records[-1] + b"\n",  # a record twice: counted twice
        first + b"\n" + rest + b"lib " + b"\n",  # a malformed record line
        first + b"\n" + rest + b"junk\n",
        first + b"\n" + rest + b"\n",  # an empty line
        first + b"\n" + rest + records[-1] + b" \n",  # a known line with a space
        sign(known, b"k" * 16),  # a signed copy, taken without a key
    ]
    prog = next((line for line in records if line.startswith(b"prog ")), None)
    if prog is not None:
        out.append(known + prog + b"\n")  # two prog lines
    return [rng.choice(out) for _ in range(3)]


def workload(seed: int, buckets: int = 3, per_bucket: int = 1500) -> list[tuple[float, bytes]]:
    """(arrival time, datagram) pairs over ``buckets`` buckets: processes that people run
    again, with look-alikes, ``popcon/1``, statsd and inventory datagrams mixed in."""
    rng = random.Random(seed)
    pool = [process(rng) for _ in range(150)]
    timed: list[tuple[float, bytes]] = []
    for bucket in range(buckets):
        moments = sorted(rng.uniform(0, WIDTH - 1) for _ in range(per_bucket))
        stream: list[bytes] = []
        while len(stream) < per_bucket:
            roll = rng.random()
            if roll < 0.85:
                stream.extend(rng.choice(pool[: 40 + bucket * 50]))
            elif roll < 0.93:
                stream.extend(look_alikes(rng.choice(rng.choice(pool)), rng))
            elif roll < 0.96:
                stream.append(use_datagram("img:a", [("six", "1.16.0", "direct", "env")]))
            elif roll < 0.98:
                stream.append(statsd_datagram("numpy", "pandas", reports=True))
            else:
                stream.extend(inventory_datagrams("img:b", [("six", "1.16.0")], parts=2))
        timed += [
            (START + bucket * WIDTH + moment, data)
            for moment, data in zip(moments, stream[:per_bucket])
        ]
    return timed


def received(
    timed: list[tuple[float, bytes]], seed: int, *, limit: int | None = None
) -> tuple[list[Pending], Ingestor]:
    """The jobs of the receiving side's path: intervals of 1-300 datagrams within a bucket,
    a job every few intervals."""
    rng = random.Random(seed)
    ingestor = Ingestor(Catalog(), SETTINGS)
    if limit is not None:
        ingestor.known.limit = limit
    decode = make_decoder()
    jobs = []
    at = 0
    while at < len(timed):
        bucket = int(timed[at][0]) - int(timed[at][0]) % WIDTH
        end = at + rng.randint(1, 300)
        interval = [data for moment, data in timed[at:end] if moment < bucket + WIDTH]
        at += len(interval)
        ingestor.receive(interval, decode, bucket, timed[at - 1][0])
        if rng.random() < 0.3:
            jobs.append(ingestor.take_job())
    jobs.append(ingestor.take_job())
    return [job for job in jobs if job is not None], ingestor


def decoded(timed: list[tuple[float, bytes]]) -> tuple[list[Pending], Ingestor]:
    """The jobs of every datagram decoded, one job per bucket."""
    ingestor = Ingestor(Catalog(), SETTINGS)
    decode = make_decoder()
    jobs = []
    for bucket in sorted({int(t) - int(t) % WIDTH for t, _ in timed}):
        batch = [(t, decode(d)) for t, d in timed if bucket <= t < bucket + WIDTH]
        job = job_of(ingestor, batch)
        assert job is not None
        jobs.append(job)
    return jobs, ingestor


def totals(jobs: list[Pending], catalog: Catalog) -> dict[str, Any]:
    """What the jobs write, by names rather than ids: counts added, sketches merged (the
    highest rank of each register), last and first buckets seen."""
    libs = {lib_id: name for name, lib_id in catalog.libs.items()}
    envs = {env_id: name for name, env_id in catalog.envs.items()}
    sources = {source_id: (envs[e], text) for (e, text), source_id in catalog.sources.items()}
    out: dict[str, Any] = {
        "usage": Counter(),
        "sketches": {},
        "programs": Counter(),
        "edges": Counter(),
        "reports": Counter(),
        "results": Counter(),
        "env_seen": {},
        "env_first": {},
        "source_seen": {},
        "inventories": {},
    }
    for job in jobs:
        for (source, bucket, lib, origin, version), levels in job.usage.items():
            for level, count in enumerate(levels):
                key = (sources[source], bucket, libs[lib], origin, version, level)
                out["usage"][key] += count
        for (source, bucket, lib, version, kind), registers in job.sketches.items():
            merged = out["sketches"].setdefault(
                (sources[source], bucket, libs[lib], version, kind), {}
            )
            for register, rank in registers.items():
                merged[register] = max(rank, merged.get(register, 0))
        for (source, bucket, lib, version), count in job.programs.items():
            out["programs"][(sources[source], bucket, libs[lib], version)] += count
        for (lib, bucket, env, importer), count in job.edges.items():
            out["edges"][(libs[lib], bucket, envs[env], libs[importer])] += count
        for (source, bucket), count in job.reports.items():
            out["reports"][(sources[source], bucket)] += count
        out["results"].update(job.results)
        for env, (bucket, py) in job.env_seen.items():
            if out["env_seen"].get(envs[env], (-1, ""))[0] <= bucket:
                out["env_seen"][envs[env]] = (bucket, py)
        for env, bucket in job.env_first.items():
            out["env_first"][envs[env]] = min(bucket, out["env_first"].get(envs[env], bucket))
        for source, bucket in job.source_seen.items():
            out["source_seen"][sources[source]] = max(
                bucket, out["source_seen"].get(sources[source], bucket)
            )
        for env, (inventory_id, bucket, inventory) in job.inventories.items():
            out["inventories"][envs[env]] = (inventory_id, bucket, inventory)
    out["usage"] = +out["usage"]
    out["results"] = +out["results"]
    return out


@pytest.fixture
def counted_by_lines(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many datagrams the receiving side counted by their lines."""
    tally: Counter[str] = Counter()

    def spy(datagrams: list[bytes], heads: Any) -> tuple[list[bytes], int]:
        rest, counted = count_known(datagrams, heads)
        tally["datagrams"] += counted
        return rest, counted

    monkeypatch.setattr(ingest, "count_known", spy)
    return tally


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rows_counted_by_lines_are_the_rows_of_decoded_datagrams(
    seed: int, counted_by_lines: Counter[str]
) -> None:
    timed = workload(seed)
    jobs, ingestor = received(timed, seed)
    expected_jobs, reference = decoded(timed)
    got, expected = totals(jobs, ingestor.catalog), totals(expected_jobs, reference.catalog)
    for part in expected:
        assert got[part] == expected[part], part
    # The workload is what it claims: people in sketches, programs, caps hit, rejections,
    # and many datagrams counted by their lines.
    results = expected["results"]
    assert sum(results.values()) == len(timed)
    assert results["version_cap"] and results["importer_cap"]
    assert results["malformed"] and results["truncated"]
    assert expected["programs"] and len(expected["sketches"]) > 50
    assert len(ingestor.known.heads) == len(HEADS)
    assert counted_by_lines["datagrams"] > len(timed) / 3


def test_a_bound_on_the_known_lines_changes_no_row() -> None:
    timed = workload(4)
    jobs, ingestor = received(timed, 4, limit=40)
    expected_jobs, reference = decoded(timed)
    assert totals(jobs, ingestor.catalog) == totals(expected_jobs, reference.catalog)
    assert 40 <= ingestor.known.size <= 40 + 1 + 4  # a datagram's lines past the bound at most


def test_people_of_known_lines_count_in_each_bucket() -> None:
    """The same datagrams in a second bucket, every one of known lines: each line's person
    counts in the second bucket's sketches too."""
    rng = random.Random(6)
    pool = [data for _ in range(200) for data in process(rng)]
    timed = [(START + 1 + i * 0.01, data) for i, data in enumerate(pool)]
    timed += [(START + WIDTH + 1 + i * 0.01, data) for i, data in enumerate(pool)]
    jobs, ingestor = received(timed, 6)
    expected_jobs, reference = decoded(timed)
    got, expected = totals(jobs, ingestor.catalog), totals(expected_jobs, reference.catalog)
    assert got == expected
    second = {cell: registers for cell, registers in got["sketches"].items() if cell[1] > START}
    assert sum(map(len, second.values())) > 100


def catalog_state(catalog: Catalog) -> dict[str, Any]:
    """What counts toward the caps, by names."""
    libs = {lib_id: name for name, lib_id in catalog.libs.items()}
    envs = {env_id: name for name, env_id in catalog.envs.items()}
    return {
        "envs": {envs[e]: seen for e, seen in catalog.live_envs.seen.items()},
        "libs": {libs[i]: seen for i, seen in catalog.live_libs.seen.items()},
        "env_libs": {
            envs[e]: {libs[i]: seen for i, seen in known.seen.items()}
            for e, known in catalog.env_libs.items()
        },
        "versions": {
            (envs[e], libs[i]): dict(caps.seen) for (e, i), caps in catalog.versions.pairs.items()
        },
    }


def test_an_environment_released_while_its_lines_are_known() -> None:
    """A full cap's reserve can release an environment seen in the current bucket: its known
    lines then count as decoded records do, asking the caps again."""
    rng = random.Random(5)
    pool = [process(rng) for _ in range(30)]
    stream = [data for _ in range(60) for data in rng.choice(pool)]
    half = len(stream) // 2
    decode = make_decoder()
    # no cap hit: after a release the records meet the caps again in another order (the
    # header's records' at the job, not their arrival's), so a cap could admit others
    by_lines = Ingestor(Catalog(), StoreSettings())
    by_decoding = Ingestor(Catalog(), StoreSettings())
    jobs: dict[str, list[Pending]] = {"lines": [], "decoding": []}
    for first, part in ((True, stream[:half]), (False, stream[half:])):
        for start in range(0, len(part), 50):
            interval = part[start : start + 50]
            by_lines.receive(interval, decode, START, START + 1)
            by_decoding.add(*aggregate(interval, decode, START), START + 1, expand=True)
        if first:
            assert by_lines.known.heads
            for ingestor in (by_lines, by_decoding):
                for env_id in list(ingestor.catalog.counted):
                    # as a full cap's reserve gives way (``Capped.take_reserved_place``)
                    del ingestor.catalog.live_envs.seen[env_id]
                    ingestor.catalog._release_env(env_id)
    for name, ingestor in (("lines", by_lines), ("decoding", by_decoding)):
        job = ingestor.take_job()
        assert job is not None
        jobs[name].append(job)
    assert totals(jobs["lines"], by_lines.catalog) == totals(jobs["decoding"], by_decoding.catalog)
    # the records met the caps again, as decoded ones do
    assert catalog_state(by_lines.catalog) == catalog_state(by_decoding.catalog)
    assert catalog_state(by_lines.catalog)["env_libs"]


def test_when_full_the_lines_of_the_last_bucket_are_kept() -> None:
    """Full at a bucket's start: the lines that came in the last bucket stay known, in their
    records' new places, the others are forgotten, and the rows stay those of decoding."""
    libs = [("pandas", "2.2.2", "direct", "env"), ("numpy", "1.26.4", "direct", "env")]
    kept = [use_datagram_2("img:a", libs, bytes([n]) * 32, seq=1) for n in range(5)]
    gone = [use_datagram_2("img:a", libs[1:], bytes([n]) * 32, seq=1) for n in range(5, 9)]
    intervals = [(0, kept + gone), (1, kept), (2, kept), (2, gone)]
    ingestor = Ingestor(Catalog(), SETTINGS)
    decode = make_decoder()
    jobs = []
    for bucket, interval in intervals:
        moment = START + bucket * WIDTH + 1
        ingestor.receive(interval, decode, moment - 1, moment)
        if bucket == 0:
            ingestor.known.limit = ingestor.known.size  # full from now on
        if bucket == 2 and interval is kept:
            (head,) = ingestor.known.heads.values()
            assert set(head.of_line) == {line for d in kept for line in d.split(b"\n")[3:-1]}
            assert len(head.records) == 2
        jobs.append(ingestor.take_job())
    timed = [(START + bucket * WIDTH + 1, data) for bucket, part in intervals for data in part]
    expected_jobs, reference = decoded(timed)
    got = totals([job for job in jobs if job is not None], ingestor.catalog)
    assert got == totals(expected_jobs, reference.catalog)
