"""``GET /metrics``: Prometheus counters computed at scrape time from the stored totals.

A custom collector on a private :class:`~prometheus_client.CollectorRegistry` (nothing global,
no process metrics mixed in) reads the totals tables at every scrape. The totals only grow, and
they live in the database, so every counter is monotonic across collector restarts.

How the levels stay monotonic: a process reports a library once, as ``direct``, ``transitive``
or (statsd) ``unknown``, and may later report it once more as ``upgrade`` (it used it
transitively first, then from user code). ``popcon_library_processes_total{level}`` counts the
first report only, so its sum over ``level`` is the number of processes; upgrades are a
counter of their own, ``popcon_library_upgrades_total``. Processes that used a library
directly are ``level="direct"`` plus the upgrades; nothing ever moves from one series to
another, so no counter goes down.

Programs: a process's first record of a library may also be at level ``program`` (the
program's machinery imported it), and a later one ``claimed`` (people's code then used it):
claims count in ``popcon_library_upgrades_total`` with the upgrades, so that the sum over
``level`` stays the number of processes.

People: distinct people do not add up over time, environments or collectors, so they are no
counter. ``popcon_library_users{window}`` is a gauge of the people whose code used a library
in the last 6 hours and 30 days (over all environments of this collector; the
:data:`MAX_USER_SERIES` libraries with most people per window); fleet-wide people come from one
collector that every hub sends to (``docs/fleet.md``).

Privacy: a series whose value is below ``min_count`` is left out until it reaches it (counters
only grow, so a series never disappears once shown); a users gauge below ``min_users`` is left
out, and an environment's last report time is shown only with its ``popcon_reports``.
``popcon_datagrams_total`` is the collector's own health and is always complete.

A budget, whatever arrives: a scrape holds at most :data:`MAX_SERIES` series and about
:data:`MAX_BYTES` bytes. Per library and environment only the :data:`MAX_VERSION_SERIES`
versions with most processes have a series; then libraries are taken by processes (most
first, then by name) while they fit, whole. When the budget left something out, the gauge
``popcon_metrics_truncated{part="libraries"|"versions"}`` counts it (absent otherwise).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Callable, cast

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from popcon.protocol import CLAIMED, UPGRADE
from popcon.server.query import totals
from popcon.server.query.people import library_users
from popcon.server.query.privacy import is_hidden
from popcon.server.storage.schema import RESULT_REASONS
from popcon.server.web.auth import Route
from popcon.server.web.base import BaseHandler, ServerContext, normalize_prefix

#: Every metric family, as documented in docs/collector.md (a test keeps them in step):
#: name (without ``_total``) → (help, labels).
METRICS = {
    "popcon_library_processes": (
        "Processes that used a library, by the level it was first reported at "
        "(direct, transitive, program, unknown for statsd clients).",
        ("library", "env", "level"),
    ),
    "popcon_library_upgrades": (
        "Processes that used a library transitively or from the program first, and later "
        "from people's own code; direct use = level direct + upgrades.",
        ("library", "env"),
    ),
    "popcon_library_version_processes": (
        "Processes that used a library, by installed version ('-' when unknown).",
        ("library", "version", "env"),
    ),
    "popcon_reports": (
        "Processes that reported (one per process, whatever it imported).",
        ("env",),
    ),
    "popcon_datagrams": (
        "Datagrams received, by result: ok, or the reason they were dropped.",
        ("result",),
    ),
}
#: The gauges, as documented in docs/collector.md: name → (help, labels).
GAUGES = {
    "popcon_library_users": (
        "People whose own code used a library, directly or through other libraries, in the "
        "window (all environments of this collector; distinct counts: never add them up).",
        ("library", "window"),
    ),
    "popcon_environment_last_report_seconds": (
        "Unix time of the latest report of an environment (the start of its time bucket); "
        "alert on time() minus it.",
        ("env",),
    ),
}
#: The gauge of people per library, and its windows (label value → seconds).
USERS = "popcon_library_users"
USER_WINDOWS = {"6h": 6 * 3600, "30d": 30 * 86400}
#: Most libraries with a users gauge per window (those with most people).
MAX_USER_SERIES = 1000
#: The gauge of each environment's last report.
LAST_REPORT = "popcon_environment_last_report_seconds"


#: The gauge saying what the budget left out of this scrape.
TRUNCATED = "popcon_metrics_truncated"
TRUNCATED_HELP = (
    "Left out of this scrape by its budget: libraries (all their series), and version series "
    "beyond the versions with most processes per library and environment."
)
#: Most series in one scrape, and about the most bytes of its text.
MAX_SERIES = 100_000
MAX_BYTES = 10_000_000
#: Most version series per library and environment.
MAX_VERSION_SERIES = 20
#: The sample name of a version series (added to its family directly: there are most of them).
_VERSION_SAMPLE = "popcon_library_version_processes_total"
#: Bytes of a sample line besides its name and labels: braces, value, newline.
_LINE_BYTES = 24


def _family(name: str) -> CounterMetricFamily:
    documentation, labels = METRICS[name]
    return CounterMetricFamily(name, documentation, labels=list(labels))


def _cost(text: str) -> int:
    """Bytes a label value takes in a sample line, escaped."""
    return len(text.encode()) + text.count("\\") + text.count('"') + text.count("\n")


#: Bytes of a sample line besides its label values (the longest name and label names).
_PROCESS_LINE = len('popcon_library_processes_total{env="",level="",library=""} ') + _LINE_BYTES
_UPGRADE_LINE = len('popcon_library_upgrades_total{env="",library=""} ') + _LINE_BYTES
_VERSION_LINE = (
    len('popcon_library_version_processes_total{env="",library="",version=""} ') + _LINE_BYTES
)


class _Library:
    """One library's shown series, grouped for the budget."""

    __slots__ = ("processes", "series", "versions")

    def __init__(self) -> None:
        self.processes = 0
        #: (family, label values, value) of its process and upgrade series.
        self.series: list[tuple[str, list[str], int]] = []
        #: Per environment, (processes, version) of its shown versions.
        self.versions: dict[str, list[tuple[int, str]]] = {}


def _libraries(conn: sqlite3.Connection, min_count: int) -> dict[str, _Library]:
    libraries: dict[str, _Library] = {}
    upgrades: dict[tuple[str, str], int] = {}  # upgrades and claims
    for total in totals.library_process_totals(conn):
        if total.level in (UPGRADE, CLAIMED):
            key = (total.library, total.env)
            upgrades[key] = upgrades.get(key, 0) + total.records
        elif not is_hidden(total.records, min_count):
            library = libraries.get(total.library) or libraries.setdefault(
                total.library, _Library()
            )
            labels = [total.library, total.env, total.level]
            library.series.append(("popcon_library_processes", labels, total.records))
            library.processes += total.records
    for (name, env), count in upgrades.items():
        if not is_hidden(count, min_count):
            library = libraries.get(name) or libraries.setdefault(name, _Library())
            library.series.append(("popcon_library_upgrades", [name, env], count))
    for row in totals.library_version_totals(conn):
        if not is_hidden(row.processes, min_count):
            library = libraries.get(row.library) or libraries.setdefault(row.library, _Library())
            library.versions.setdefault(row.env, []).append((row.processes, row.version))
    return libraries


def _users(conn: sqlite3.Connection, now: float, min_users: int) -> GaugeMetricFamily:
    """The users gauge: per window, the libraries with most people (at least ``min_users``)."""
    gauge = GaugeMetricFamily(USERS, GAUGES[USERS][0], labels=list(GAUGES[USERS][1]))
    for window, seconds in USER_WINDOWS.items():
        counted = [
            (people, name)
            for name, people in library_users(conn, now - seconds, now, now=now).items()
            if not is_hidden(people, min_users)
        ]
        counted.sort(key=lambda pair: (-pair[0], pair[1]))
        for people, name in counted[:MAX_USER_SERIES]:
            gauge.add_metric([name, window], people)
    return gauge


def collect_families(
    conn: sqlite3.Connection,
    min_count: int,
    *,
    min_users: int = 1,
    now: float | None = None,
    max_series: int = MAX_SERIES,
    max_bytes: int = MAX_BYTES,
) -> list[Metric]:
    """The metric families from the totals in the database, within the budget (a plain
    function, for tests); the users gauge over the windows ending at ``now``."""
    used_series, used_bytes = 2, 2 * len(f'{TRUNCATED}{{part="libraries"}} ') + _LINE_BYTES
    users = _users(conn, time.time() if now is None else now, min_users)
    for sample in users.samples:
        used_series += 1
        used_bytes += len(f'{USERS}{{library="",window=""}} ') + _cost(sample.labels["library"])
        used_bytes += _LINE_BYTES
    reports = _family("popcon_reports")
    last_report = GaugeMetricFamily(
        LAST_REPORT, GAUGES[LAST_REPORT][0], labels=list(GAUGES[LAST_REPORT][1])
    )
    last_seen = dict(conn.execute("SELECT name, last_seen FROM envs"))
    for report_total in totals.report_totals(conn):
        if not is_hidden(report_total.processes, min_count):
            reports.add_metric([report_total.env], report_total.processes)
            used_series += 1
            used_bytes += len('popcon_reports_total{env=""} ') + _cost(report_total.env)
            if report_total.env in last_seen:
                last_report.add_metric([report_total.env], last_seen[report_total.env])
                used_series += 1
                used_bytes += len(f'{LAST_REPORT}{{env=""}} ') + _cost(report_total.env)
    datagrams = _family("popcon_datagrams")
    counts = dict(totals.datagram_totals(conn))
    for result in sorted(set(RESULT_REASONS) | set(counts)):
        datagrams.add_metric([result], counts.get(result, 0))
        used_series += 1
        used_bytes += len('popcon_datagrams_total{result=""} ') + _cost(result) + _LINE_BYTES

    libraries = _libraries(conn, min_count)
    families = {
        name: _family(name)
        for name in (
            "popcon_library_processes",
            "popcon_library_upgrades",
            "popcon_library_version_processes",
        )
    }
    versions = families["popcon_library_version_processes"]
    versions_left_out = sum(
        max(0, len(rows) - MAX_VERSION_SERIES)
        for library in libraries.values()
        for rows in library.versions.values()
    )
    ranked = sorted(libraries, key=lambda name: (-libraries[name].processes, name))
    costs: dict[str, int] = {}

    def cost_of(text: str) -> int:
        found = costs.get(text)
        if found is None:
            found = costs[text] = _cost(text)
        return found

    taken = 0
    version_sample = versions.samples.append
    for name in ranked:
        library = libraries[name]
        name_cost = cost_of(name)
        series = len(library.series)
        cost = 0
        for _, labels, _ in library.series:
            cost += name_cost + cost_of(labels[1])
            cost += _PROCESS_LINE if len(labels) == 3 else _UPGRADE_LINE
        kept = []
        for env, rows in library.versions.items():
            if len(rows) > MAX_VERSION_SERIES:
                rows = sorted(rows, key=lambda row: (-row[0], row[1]))[:MAX_VERSION_SERIES]
            series += len(rows)
            env_cost = cost_of(env) + name_cost + _VERSION_LINE
            for _, version in rows:
                cost += env_cost + cost_of(version)
            kept.append((env, rows))
        if used_series + series > max_series or used_bytes + cost > max_bytes:
            break
        used_series += series
        used_bytes += cost
        taken += 1
        for family, labels, value in library.series:
            families[family].add_metric(labels, value)
        for env, rows in kept:
            for processes, version in rows:
                labelled = {"library": name, "version": version, "env": env}
                version_sample(Sample(_VERSION_SAMPLE, labelled, processes, None, None))
    collected: list[Metric] = [*families.values(), users, reports, last_report, datagrams]
    if taken < len(ranked) or versions_left_out:
        truncated = GaugeMetricFamily(TRUNCATED, TRUNCATED_HELP, labels=["part"])
        truncated.add_metric(["libraries"], len(ranked) - taken)
        truncated.add_metric(["versions"], versions_left_out)
        collected.append(truncated)
    return collected


#: prometheus_client's number format (``5.0``, ``1.5e+06``); it has no annotations.
_number = cast(Callable[[float], str], floatToGoString)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format, as ``generate_latest`` writes it for
    counters and gauges, in a fraction of its time (a scrape at the budget in well under
    a second)."""
    out: list[str] = []
    escaped: dict[str, str] = {}
    numbers: dict[float, str] = {}
    for family in registry.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        documentation = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {documentation}\n# TYPE {name} {family.type}\n")
        keys = sorted(family.samples[0].labels) if family.samples else []  # one family's
        for sample in family.samples:
            labels = []
            for key in keys:
                value = sample.labels[key]
                text = escaped.get(value)
                if text is None:
                    text = escaped[value] = _escape(value)
                labels.append(f'{key}="{text}"')
            shown = numbers.get(sample.value)
            if shown is None:
                shown = numbers[sample.value] = _number(sample.value)
            out.append(f"{sample.name}{{{','.join(labels)}}} {shown}\n")
    return "".join(out).encode()


class DatabaseCollector:
    """A prometheus_client custom collector reading the database at each scrape."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        min_count: int,
        min_users: int,
        clock: Callable[[], float],
    ) -> None:
        self._connect = connect
        self._min_count = min_count
        self._min_users = min_users
        self._clock = clock

    def describe(self) -> Iterator[Metric]:
        # Registration asks for the names; answering from METRICS avoids a database read.
        for name in METRICS:
            yield _family(name)
        for name, (documentation, labels) in GAUGES.items():
            yield GaugeMetricFamily(name, documentation, labels=list(labels))
        yield GaugeMetricFamily(TRUNCATED, TRUNCATED_HELP, labels=["part"])

    def collect(self) -> Iterator[Metric]:
        yield from collect_families(
            self._connect(), self._min_count, min_users=self._min_users, now=self._clock()
        )


def make_registry(
    connect: Callable[[], sqlite3.Connection],
    min_count: int,
    min_users: int = 3,
    clock: Callable[[], float] = time.time,
) -> CollectorRegistry:
    """A private registry holding only the popcon collector."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(DatabaseCollector(connect, min_count, min_users, clock))
    return registry


class MetricsHandler(BaseHandler):
    """``/metrics`` in the Prometheus text format; authorised by the context's metrics auth."""

    async def get(self) -> None:
        registry = self.ctx.registry
        assert registry is not None  # metrics_routes serves /metrics only with a registry
        try:
            body = await self.ctx.reader.run(lambda _conn: exposition(registry))
        except (sqlite3.Error, FileNotFoundError) as error:
            self.set_status(503)
            self.set_header("Content-Type", "text/plain; charset=UTF-8")
            self.finish(f"database unavailable: {error}\n")
            return
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(body)


def metrics_routes(ctx: ServerContext, prefix: str = "/") -> list[Route]:
    """``<prefix>metrics``, when the context has a registry (none: no /metrics)."""
    if ctx.registry is None:
        return []
    return [
        (
            normalize_prefix(prefix) + "metrics",
            MetricsHandler,
            {"ctx": ctx, "auth": ctx.metrics_auth},
        )
    ]
