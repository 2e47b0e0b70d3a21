"""Top-query benchmark: a year of data for 2,000 libraries in 20 environments, with the
sketches of people; p95 of the 30-day ``top`` with users (``popcon.server.query.answers.
libraries_answer``, what ``GET /api/v1/libraries`` and ``popcon top`` answer) and the database
size, with the sketches and without them.

    python benchmarks/top_query.py            # build a year (several minutes), then query
    python benchmarks/top_query.py --quick    # 8 days, fewer libraries (a minute)
    python benchmarks/top_query.py --db PATH  # keep the database (reused if it exists)

The year is written through the store's own code (``persist.write_job`` and ``roll_up``, then
``sweep``), at the resolution each tier keeps: one job per day for days older than 60 days,
one per hour back to 2 days, one per 10 minutes for the last 2 days, as a collector that ran
all year would leave it. The sketches of people alone are written straight into each tier,
one row per tier bucket, merged with the store's own ``sketch.Registers`` and stored with
``sketch.encode``: the rows ``roll_up`` would leave, without its merges (which re-read and
re-write a day's sketches at every finer bucket, and would make the build take hours).

Each environment installs 600 of the 2,000 libraries and uses them with Zipf weights, about
2,000 processes a day with ~6 libraries each, busier by day than by night; transitive
libraries have 1-2 fixed importers; a few libraries have a second version or come from the
user site. People: each environment has 150 people (3,000 in all, each with a secret of its
own); the records of a library in a bucket were sent by as many distinct people as that many
draws from the environment's people would give (a slice of them, starting anywhere), and
carry their person fields (``workload.person_field``, as recorders compute them), so every
usage row has its sketches (direct and transitive). The baselines, in the same run: the same
30-day answer computed from the hourly tier (what the daily tier saves), and the answer on
the same data without people (the database copied, its sketches deleted: what the same
records with ``-`` persons would have stored), whose size is given too.

Each figure gives the first answer (the page cache cold), one answered afresh (the values
answers keep between them, ``popcon.server.query.kept``, dropped: what the first answer of a
window costs a running collector, once a day for 30 days), and the median and p95 of the
answers after it, as a running collector gives them until the window moves.
"""

from __future__ import annotations

import argparse
import math
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from workload import environment_names, library_names, person_field, zipf_weights

from popcon.protocol import DIRECT, ORIGINS, TRANSITIVE
from popcon.server.query.answers import libraries_answer
from popcon.server.query.connection import connect_readonly
from popcon.server.query.kept import KEPT, KEPT_BYTES
from popcon.server.query.libraries import libraries
from popcon.server.storage.persist import roll_up, sweep, write_job
from popcon.server.storage.rows import Catalog, Limits, Pending, SketchKey
from popcon.server.storage.schema import DAY, StoreSettings, Tier, connect_writer, sketch_code
from popcon.server.storage.sketch import Registers, encode

HOUR = 3600
#: Processes per environment per day, and libraries imported per process.
PROCESSES_PER_DAY = 2000
LIBS_PER_PROCESS = 6
#: People per environment.
PEOPLE_PER_ENV = 150


def activity(moment: int) -> float:
    """Relative activity: busier in (UTC) working hours and on weekdays; averages about 1."""
    hour = (moment % DAY) / HOUR
    weekday = (moment // DAY + 3) % 7 < 5
    return (0.3 + 1.4 * max(0.0, math.sin(math.pi * (hour - 6) / 14))) * (1.2 if weekday else 0.5)


class Year:
    def __init__(
        self,
        libraries: int,
        environments: int,
        installed: int,
        people: int = PEOPLE_PER_ENV,
        seed: int = 5,
    ) -> None:
        rng = self.rng = random.Random(seed)
        self.libs = library_names(libraries)
        self.envs = environment_names(environments)
        self.installed = {env: rng.sample(self.libs, installed) for env in self.envs}
        weights = zipf_weights(installed, 1.1)
        total = sum(weights)
        self.share = [w / total for w in weights]
        self.cumulative = list(_accumulate(self.share))
        self.direct_share = {lib: rng.random() for lib in self.libs}
        self.importers = {lib: rng.sample(self.libs, rng.randint(1, 2)) for lib in self.libs}
        self.second_version = {lib for lib in self.libs if rng.random() < 0.1}
        self.user_site = {lib for lib in self.libs if rng.random() < 0.02}
        self.catalog = Catalog()
        self.limits = Limits(10_000, 100, 10_000, 100_000)
        self.people = people
        self.secrets = {env: [rng.randbytes(32) for _ in range(people)] for env in self.envs}
        #: (env, library) -> the person fields of the env's people for it, as (register,
        #: rank), twice over (a ring); a person whose register another has already is left
        #: out, so that every slice is a sketch as it is.
        self.rings: dict[tuple[str, str], list[tuple[int, int]]] = {}

    def job(self, start: int, width: int) -> Pending:
        """The rows of one bucket ``[start, start + width)`` for every environment."""
        job = Pending()
        rng = self.rng
        for env in self.envs:
            env_id = self.catalog.env_id(env, self.limits)
            assert env_id is not None
            source = self.catalog.source_id(env_id, f"hub=hub{env_id % 3}", self.limits)
            assert source is not None
            known = self.catalog.env_libs[env_id]
            processes = PROCESSES_PER_DAY * width / DAY * activity(start)
            picks = processes * LIBS_PER_PROCESS
            installed = self.installed[env]
            if width >= DAY:  # expected counts, library by library
                counts = {
                    installed[i]: int(picks * share + rng.random())
                    for i, share in enumerate(self.share)
                }
            else:  # sampled imports
                counts = {}
                for lib in rng.choices(installed, cum_weights=self.cumulative, k=int(picks)):
                    counts[lib] = counts.get(lib, 0) + 1
            for lib, count in counts.items():
                if not count:
                    continue
                lib_id = self.catalog.lib_id(known, lib, self.limits)
                assert lib_id is not None
                direct = int(count * self.direct_share[lib] + rng.random())
                transitive = count - direct
                version = "2.0" if lib in self.second_version and rng.random() < 0.3 else "1.0"
                origin = 1 if lib in self.user_site else 0
                job.usage[(source, start, lib_id, origin, version)] = [
                    direct,
                    transitive,
                    0,
                    0,
                    0,
                    0,
                ]
                if self.people:
                    for level, records in ((DIRECT, direct), (TRANSITIVE, transitive)):
                        if records:
                            code = sketch_code(level, ORIGINS[origin])
                            job.sketches[(source, start, lib_id, version, code)] = (
                                self.contributions(env, lib, records)
                            )
                if transitive:
                    importer = self.catalog.lib_id(known, self.importers[lib][0], self.limits)
                    if importer is not None:
                        job.edges[(lib_id, start, env_id, importer)] = transitive
            job.reports[(source, start)] = max(1, int(processes))
            job.env_seen[env_id] = (start, "3.11")
            job.env_first.setdefault(env_id, start)
            job.source_seen[source] = start
        self.catalog.take_new(job)
        return job

    def contributions(self, env: str, lib: str, records: int) -> dict[int, int]:
        """The sketch of the people who sent ``records`` records of ``lib`` in ``env``: as
        many as ``records`` draws from the env's people give, a slice of its ring."""
        ring = self.rings.get((env, lib))
        if ring is None:
            seen: dict[int, int] = {}
            for secret in self.secrets[env]:
                register, rank = map(int, person_field(secret, lib).split(":"))
                seen.setdefault(register, rank)
            pairs = list(seen.items())
            ring = self.rings[(env, lib)] = pairs + pairs
        size = len(ring) // 2
        people = max(1, round(size * (1 - math.exp(-records / size))))
        first = self.rng.randrange(size)
        return dict(ring[first : first + people])


def _accumulate(values):
    total = 0.0
    for value in values:
        total += value
        yield total


class TierSketches:
    """The sketches of the build, merged per bucket of each tier and written once a bucket is
    complete: ``sketches_by_source`` per (label set, library, version, kind) and
    ``sketches_by_library`` per (library, kind), as rolling every finer bucket up leaves them.
    A job goes to the tiers at least as coarse as its own buckets."""

    def __init__(self, conn: sqlite3.Connection, tiers: Sequence[Tier]) -> None:
        self.conn = conn
        self.tiers = tiers
        self.buckets: list[int | None] = [None] * len(tiers)
        self.by_source: list[dict[tuple[int, int, str, int], Registers]] = [{} for _ in tiers]
        self.by_library: list[dict[tuple[int, int], Registers]] = [{} for _ in tiers]

    def add(self, cells: dict[SketchKey, dict[int, int]], start: int, width: int) -> None:
        for index, tier in enumerate(self.tiers):
            if tier.width < width:
                continue
            bucket = start - start % tier.width
            if self.buckets[index] != bucket:
                self.flush(index)
                self.buckets[index] = bucket
            by_source, by_library = self.by_source[index], self.by_library[index]
            for (source, _bucket, lib, version, kind), registers in cells.items():
                _merge(by_source, (source, lib, version, kind), registers)
                _merge(by_library, (lib, kind), registers)

    def flush(self, index: int) -> None:
        bucket = self.buckets[index]
        if bucket is None:
            return
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO sketches_by_source VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (index, source, bucket, lib, version, kind, encode(sketch))
                for (source, lib, version, kind), sketch in self.by_source[index].items()
            ],
        )
        conn.executemany(
            "INSERT INTO sketches_by_library VALUES (?, ?, ?, ?, ?)",
            [
                (index, lib, bucket, kind, encode(sketch))
                for (lib, kind), sketch in self.by_library[index].items()
            ],
        )
        conn.execute("COMMIT")
        self.by_source[index] = {}
        self.by_library[index] = {}
        self.buckets[index] = None

    def flush_all(self) -> None:
        for index in range(len(self.tiers)):
            self.flush(index)


def _merge(into: dict[Any, Registers], key: Any, registers: dict[int, int]) -> None:
    sketch = into.get(key)
    if sketch is None:
        sketch = into[key] = Registers()
    sketch.merge_registers(dict(registers))  # it may change what it is given


def build(path: Path, now: int, days: int, year: Year, hourly_days: int = 60) -> float:
    """Write ``days`` of data ending at ``now``, in hourly jobs back to ``hourly_days`` (the
    hourly tier's keep: fewer build faster, with fewer hourly rows than a collector keeps);
    returns the seconds it took."""
    started = time.monotonic()
    settings = StoreSettings()
    tiers = settings.resolved_tiers()
    first = (now - days * DAY) - (now - days * DAY) % DAY
    conn = connect_writer(path, settings, now=first)
    conn.execute("PRAGMA synchronous = OFF")  # building test data: no need to survive a crash
    conn.execute("PRAGMA cache_size = -200000")
    sketches = TierSketches(conn, tiers)
    moment = first
    while moment < now - 10 * 60:
        age = now - moment
        width = DAY if age > hourly_days * DAY else HOUR if age > 2 * DAY else 600
        width = min(width, DAY - moment % DAY) if width > 600 else width
        job = year.job(moment, width)
        cells, job.sketches = job.sketches, {}
        write_job(conn, job, tiers, moment)
        roll_up(conn, tiers, moment, moment + width)
        sketches.add(cells, moment, width)
        moment += width
        if moment % (30 * DAY) < width:
            print(f"  … {(moment - first) // DAY} days", file=sys.stderr)
    sketches.flush_all()
    sweep(conn, tiers, now)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.close()
    return time.monotonic() - started


def timed(function, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return times


def p95(times: list[float]) -> float:
    return sorted(times)[max(0, math.ceil(len(times) * 0.95) - 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 days, 200 libraries")
    parser.add_argument("--db", type=Path, help="keep the database here (reused if present)")
    parser.add_argument("--repeat", type=int, default=100, help="queries timed per figure")
    parser.add_argument("--people", type=int, default=PEOPLE_PER_ENV, help="people per environment")
    parser.add_argument(
        "--hourly-days",
        type=int,
        default=60,
        help="days back to which the build writes hourly jobs (default 60, the hourly tier's "
        "keep; fewer build faster, with fewer hourly rows; the 30-day top reads daily ones)",
    )
    args = parser.parse_args(argv)
    days, libs, installed = (8, 200, 60) if args.quick else (365, 2000, 600)
    now = 1_793_577_600 + 400 * DAY + 13 * HOUR + 7 * 60  # a Thursday afternoon
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "year.sqlite"
        if not path.exists():
            year = Year(libs, 20, installed, args.people)
            seconds = build(path, now, days, year, args.hourly_days)
            print(
                f"built {days} days ({args.hourly_days} of them in hourly jobs), {libs:,} "
                f"libraries, 20 environments, {20 * args.people:,} people in {seconds:.0f} s"
            )
        size = database_size(path)
        conn = connect_readonly(path)
        rows = conn.execute("SELECT COUNT(*) FROM usage_by_source").fetchone()[0]
        sketches = conn.execute("SELECT COUNT(*) FROM sketches_by_source").fetchone()[0]
        by_library = conn.execute("SELECT COUNT(*) FROM sketches_by_library").fetchone()[0]
        print(
            f"database: {size / 2**20:,.1f} MiB, {rows:,} usage rows, {sketches:,} sketches "
            f"by label set and {by_library:,} by library"
        )
        bare = Path(tmp) / "without-people.sqlite"
        bare_size = without_people(path, bare)
        print(
            f"the same data without people (sketches deleted, vacuumed): "
            f"{bare_size / 2**20:,.1f} MiB; with people {size / bare_size:.2f}x that"
        )
        bare_conn = connect_readonly(bare)
        window = (now - 30 * DAY, now)
        month = {"since": "30d"}
        top = top_answer(conn, month, now)
        listed = top["libraries"]
        users = [row["users"] for row in listed if isinstance(row.get("users"), int)]
        print(
            f"30-day top: {len(listed)} libraries, step {top['step']} s, {top['from']} .. "
            f"{top['until']}; users of the first: {listed[0]['name']} {listed[0]['users']}, "
            f"most users {max(users, default=0)}, {len(users)} rows with a count of users"
        )
        figures = {
            "top --since 30d (answer, with users)": lambda: top_answer(conn, month, now),
            "top --since 30d --env E (answer)": lambda: top_answer(
                conn, {**month, "env": year_env()}, now
            ),
            "top --since 7d (answer)": lambda: top_answer(conn, {"since": "7d"}, now),
            "top --since 6h (answer)": lambda: top_answer(conn, {"since": "6h"}, now),
            "baseline: same data, no people (answer)": lambda: top_answer(bare_conn, month, now),
            "top --since 30d (libraries())": lambda: libraries(conn, *window, now=now),
            "top --since 30d --env E": lambda: libraries(conn, *window, env=year_env(), now=now),
            "top --since 7d": lambda: libraries(conn, now - 7 * DAY, now, now=now),
            "top --since 6h": lambda: libraries(conn, now - 6 * HOUR, now, now=now),
            "baseline: 30 days from hourly buckets": lambda: hourly_top(conn, *window),
        }
        results, firsts = {}, {}
        for name, function in figures.items():
            KEPT.clear()
            first = timed(function, 1)[0]  # also warms the page cache
            KEPT.clear()
            again = timed(function, 1)[0]
            times = timed(function, args.repeat)
            results[name], firsts[name] = times, again
            print(
                f"{name:40s} first {first:7.1f} ms   afresh {again:7.1f} ms   "
                f"then median {statistics.median(times):7.1f} ms   p95 {p95(times):7.1f} ms   "
                f"kept {KEPT.size() / 2**20:5.1f} MiB"
            )
        print(f"(kept: what answers keep between them, at most {KEPT_BYTES / 2**20:,.0f} MiB)")
        answer = p95(results["top --since 30d (answer, with users)"])
        afresh = firsts["top --since 30d (answer, with users)"]
        hourly = p95(results["baseline: 30 days from hourly buckets"])
        daily = p95(results["top --since 30d (libraries())"])
        without = p95(results["baseline: same data, no people (answer)"])
        print(
            f"30-day top with users p95: {answer:.1f} ms (target <= 50 ms): "
            f"{'MET' if answer <= 50 else 'NOT MET'}, once the window's rolled-up part is kept "
            f"(its first answer of the day: {afresh:.0f} ms); "
            f"without people {without:.1f} ms; "
            f"counts summed from hourly buckets (no people) {hourly:.1f} ms, "
            f"libraries() from daily ones {daily:.1f} ms"
        )
        conn.close()
        bare_conn.close()
    return 0


def top_answer(conn, params: dict, now: int) -> dict:
    """``GET /api/v1/libraries`` (and ``popcon top``) with the default thresholds."""
    return libraries_answer(conn, params, now=now, min_count=3, min_users=3)


def database_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def without_people(path: Path, copy: Path) -> int:
    """Copy the database at ``path`` to ``copy`` without its sketches (what the same records
    with ``-`` persons store); the copy's size."""
    source = sqlite3.connect(path)
    target = sqlite3.connect(copy)
    source.backup(target)
    source.close()
    for table in ("sketches_by_source", "sketches_by_library"):
        target.execute(f"DELETE FROM {table}")
    target.commit()
    target.execute("VACUUM")
    target.close()
    return database_size(copy)


def year_env() -> str:
    return environment_names(20)[3]


def hourly_top(conn, start: float, end: float) -> list:
    """The 30-day top summed from hourly buckets (tier 1) instead of daily ones."""
    return conn.execute(
        "SELECT l.name, x.n FROM (SELECT lib_id, SUM(direct + transitive + unknown) AS n "
        "FROM usage_by_library WHERE tier = 1 AND bucket >= ? AND bucket < ? GROUP BY lib_id) "
        "AS x JOIN libs l ON l.id = x.lib_id ORDER BY x.n DESC",
        (int(start) - int(start) % HOUR, int(end)),
    ).fetchall()


if __name__ == "__main__":
    sys.exit(main())
