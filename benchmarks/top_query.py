"""Top-query benchmark: a year of data for 2,000 libraries in 20 environments; p95 of the
30-day ``top`` (``popcon.server.query.libraries``) and the database size.

    python benchmarks/top_query.py            # build a year (a few minutes), then query
    python benchmarks/top_query.py --quick    # 40 days, fewer libraries (seconds)
    python benchmarks/top_query.py --db PATH  # keep the database (reused if it exists)

The year is written through the store's own code (``persist.write_job`` and ``roll_up``, then
``sweep``), at the resolution each tier keeps: one job per day for days older than 60 days,
one per hour back to 2 days, one per 10 minutes for the last 2 days, as a collector that ran
all year would leave it. Each environment installs 600 of the 2,000 libraries and uses them
with Zipf weights, about 2,000 processes a day with ~6 libraries each, busier by day than by
night; transitive libraries have 1-2 fixed importers; a few libraries have a second version or
come from the user site. The baseline, in the same run, is the same 30-day answer computed
from the hourly tier (what the daily tier saves).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from workload import environment_names, library_names, zipf_weights

from popcon.server.query.connection import connect_readonly
from popcon.server.query.libraries import libraries
from popcon.server.storage.persist import roll_up, sweep, write_job
from popcon.server.storage.rows import Catalog, Limits, Pending
from popcon.server.storage.schema import DAY, StoreSettings, connect_writer

HOUR = 3600
#: Processes per environment per day, and libraries imported per process.
PROCESSES_PER_DAY = 2000
LIBS_PER_PROCESS = 6


def activity(moment: int) -> float:
    """Relative activity: busier in (UTC) working hours and on weekdays; averages about 1."""
    hour = (moment % DAY) / HOUR
    weekday = (moment // DAY + 3) % 7 < 5
    return (0.3 + 1.4 * max(0.0, math.sin(math.pi * (hour - 6) / 14))) * (1.2 if weekday else 0.5)


class Year:
    def __init__(self, libraries: int, environments: int, installed: int, seed: int = 5) -> None:
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
                job.usage[(source, start, lib_id, origin, version)] = [direct, transitive, 0, 0]
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


def _accumulate(values):
    total = 0.0
    for value in values:
        total += value
        yield total


def build(path: Path, now: int, days: int, year: Year) -> float:
    """Write ``days`` of data ending at ``now``; returns the seconds it took."""
    started = time.monotonic()
    settings = StoreSettings()
    tiers = settings.resolved_tiers()
    first = (now - days * DAY) - (now - days * DAY) % DAY
    conn = connect_writer(path, settings, now=first)
    conn.execute("PRAGMA synchronous = OFF")  # building test data: no need to survive a crash
    conn.execute("PRAGMA cache_size = -200000")
    moment = first
    while moment < now - 10 * 60:
        age = now - moment
        width = DAY if age > 60 * DAY else HOUR if age > 2 * DAY else 600
        width = min(width, DAY - moment % DAY) if width > 600 else width
        write_job(conn, year.job(moment, width), tiers, moment)
        roll_up(conn, tiers, moment, moment + width)
        moment += width
        if moment % (30 * DAY) < width:
            print(f"  … {(moment - first) // DAY} days", file=sys.stderr)
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
    parser.add_argument("--quick", action="store_true", help="40 days, 400 libraries")
    parser.add_argument("--db", type=Path, help="keep the database here (reused if present)")
    parser.add_argument("--repeat", type=int, default=100, help="queries timed per figure")
    args = parser.parse_args(argv)
    days, libs, installed = (40, 400, 150) if args.quick else (365, 2000, 600)
    now = 1_793_577_600 + 400 * DAY + 13 * HOUR + 7 * 60  # a Thursday afternoon
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "year.sqlite"
        if not path.exists():
            year = Year(libs, 20, installed)
            seconds = build(path, now, days, year)
            print(f"built {days} days, {libs:,} libraries, 20 environments in {seconds:.0f} s")
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        conn = connect_readonly(path)
        rows = conn.execute("SELECT COUNT(*) FROM usage_by_source").fetchone()[0]
        print(f"database: {size / 2**20:,.1f} MiB, {rows:,} usage rows")
        window = (now - 30 * DAY, now)
        top = libraries(conn, *window, now=now)
        print(
            f"30-day top: {len(top['libraries'])} libraries, step {top['step']} s, "
            f"{top['from']} .. {top['until']}"
        )
        figures = {
            "top --since 30d": lambda: libraries(conn, *window, now=now),
            "top --since 30d --env E": lambda: libraries(conn, *window, env=year_env(), now=now),
            "top --since 7d": lambda: libraries(conn, now - 7 * DAY, now, now=now),
            "top --since 6h": lambda: libraries(conn, now - 6 * HOUR, now, now=now),
            "baseline: 30 days from hourly buckets": lambda: hourly_top(conn, *window),
        }
        results = {}
        for name, function in figures.items():
            function()  # warm the page cache
            times = timed(function, args.repeat)
            results[name] = times
            print(
                f"{name:40s} median {statistics.median(times):7.1f} ms   p95 {p95(times):7.1f} ms"
            )
        ratio = p95(results["baseline: 30 days from hourly buckets"]) / p95(
            results["top --since 30d"]
        )
        print(
            f"30-day top p95: {p95(results['top --since 30d']):.1f} ms (target <= 50 ms); "
            f"the hourly baseline is {ratio:.1f}x slower"
        )
        conn.close()
    return 0


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
