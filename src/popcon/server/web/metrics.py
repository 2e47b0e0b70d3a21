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

Privacy: a series whose value is below ``min_count`` is left out until it reaches it (counters
only grow, so a series never disappears once shown). ``popcon_datagrams_total`` is the
collector's own health and is always complete.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from popcon.protocol import UPGRADE
from popcon.server.query import totals
from popcon.server.query.privacy import is_hidden
from popcon.server.storage.schema import RESULT_REASONS
from popcon.server.web.auth import Route
from popcon.server.web.base import BaseHandler, ServerContext, normalize_prefix

#: Every metric family, as documented in docs/collector.md (a test keeps them in step):
#: name (without ``_total``) → (help, labels).
METRICS = {
    "popcon_library_processes": (
        "Processes that used a library, by the level it was first reported at "
        "(direct, transitive, unknown for statsd clients).",
        ("library", "env", "level"),
    ),
    "popcon_library_upgrades": (
        "Processes that used a library transitively first and later from user code; "
        "direct use = level direct + upgrades.",
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


def _family(name: str) -> CounterMetricFamily:
    documentation, labels = METRICS[name]
    return CounterMetricFamily(name, documentation, labels=list(labels))


def collect_families(conn: sqlite3.Connection, min_count: int) -> list[Metric]:
    """The metric families from the totals in the database (a plain function, for tests)."""
    processes = _family("popcon_library_processes")
    upgrades = _family("popcon_library_upgrades")
    for total in totals.library_process_totals(conn):
        if is_hidden(total.records, min_count):
            continue
        if total.level == UPGRADE:
            upgrades.add_metric([total.library, total.env], total.records)
        else:
            processes.add_metric([total.library, total.env, total.level], total.records)
    versions = _family("popcon_library_version_processes")
    for version_total in totals.library_version_totals(conn):
        if not is_hidden(version_total.processes, min_count):
            labels = [version_total.library, version_total.version, version_total.env]
            versions.add_metric(labels, version_total.processes)
    reports = _family("popcon_reports")
    for report_total in totals.report_totals(conn):
        if not is_hidden(report_total.processes, min_count):
            reports.add_metric([report_total.env], report_total.processes)
    datagrams = _family("popcon_datagrams")
    counts = dict(totals.datagram_totals(conn))
    for result in sorted(set(RESULT_REASONS) | set(counts)):
        datagrams.add_metric([result], counts.get(result, 0))
    return [processes, upgrades, versions, reports, datagrams]


class DatabaseCollector:
    """A prometheus_client custom collector reading the database at each scrape."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], min_count: int) -> None:
        self._connect = connect
        self._min_count = min_count

    def describe(self) -> Iterator[Metric]:
        # Registration asks for the names; answering from METRICS avoids a database read.
        for name in METRICS:
            yield _family(name)

    def collect(self) -> Iterator[Metric]:
        yield from collect_families(self._connect(), self._min_count)


def make_registry(connect: Callable[[], sqlite3.Connection], min_count: int) -> CollectorRegistry:
    """A private registry holding only the popcon collector."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(DatabaseCollector(connect, min_count))
    return registry


class MetricsHandler(BaseHandler):
    """``/metrics`` in the Prometheus text format; authorised by the context's metrics auth."""

    async def get(self) -> None:
        registry = self.ctx.registry
        assert registry is not None  # metrics_routes serves /metrics only with a registry
        try:
            body = await self.ctx.reader.run(lambda _conn: generate_latest(registry))
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
