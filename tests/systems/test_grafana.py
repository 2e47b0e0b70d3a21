"""Every PromQL expression of ``grafana/popcon-dashboard.json`` against a real Prometheus.

A fleet in small: two real ``popcon serve`` collectors (hubs "research" and "teaching") fed
by real UDP datagrams (popcon ones written from the protocol, statsd lines of the older
clients, one malformed datagram), one Debian ``prometheus`` scraping both every second with
the collectors' token, the ``hub`` label given per target as docs/fleet.md says. The test
takes each expression from the dashboard file, substitutes the template variables as
Grafana would, runs it, and checks the series it returns.

Counters only count what happens while Prometheus watches, so datagrams go in twice: the
first round makes the series exist, the second is what ``increase()`` must see.
"""

from __future__ import annotations

import json
import math
import re
import time

import pytest
from collectors import ServeProcess, send_udp
from datagrams import PANDAS_PROCESS, statsd_datagram, use_datagram
from faces import require_program
from fleet import (
    GRAFANA_DASHBOARD,
    GrafanaQuery,
    Prometheus,
    grafana_queries,
    prometheus_config,
    substitute,
)
from timing import wait_until

pytestmark = pytest.mark.slow

TOKEN = "fleet-scrape-token"
MATPLOTLIB = [
    ("matplotlib", "3.9.0", "direct", "env"),
    ("numpy", "2.1.0", "transitive", "env", "matplotlib"),
]


def round_of_datagrams(hub: str) -> list:
    """One round: what each hub's processes send (statsd lines count as level unknown)."""
    env = f"img:{hub}"
    labels = (("hub", hub),)
    statsd = statsd_datagram("numpy", reports=True)
    if hub == "research":
        out = [use_datagram(env, PANDAS_PROCESS, labels=labels) for _ in range(3)]
        # one of them later used numpy from user code
        out.append(use_datagram(env, [("numpy", "1.26.4", "upgrade", "env")], seq=1, labels=labels))
        out += [use_datagram(env, [("requests", "2.32.3", "direct", "env")], labels=labels)] * 2
    else:
        out = [use_datagram(env, MATPLOTLIB, labels=labels) for _ in range(2)]
        out.append(use_datagram(env, [("numpy", "2.1.0", "direct", "env")], labels=labels))
    return [*out, statsd, b"this is not a datagram\n"]


#: Processes per library in one round of each hub (numpy: + 1 statsd process).
PROCESSES = {
    "research": {"pandas": 3, "numpy": 4, "python-dateutil": 3, "requests": 2},
    "teaching": {"matplotlib": 2, "numpy": 4},
}
#: Direct share per library (numpy in research: one upgrade of four processes).
DIRECT_SHARE = {
    "research": {"pandas": 1.0, "numpy": 0.25, "python-dateutil": 0.0, "requests": 1.0},
    "teaching": {"matplotlib": 1.0, "numpy": 0.25},
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    binary = require_program("prometheus", "apt-get install -y prometheus")
    tmp = tmp_path_factory.mktemp("fleet")
    collectors = {}
    prometheus = None
    try:
        for hub in PROCESSES:
            collectors[hub] = ServeProcess(
                tmp / f"{hub}.sqlite", "--min-count", "1", env={"POPCON_API_TOKEN": TOKEN}
            )
        targets = {hub: c.http_url.split("//")[1].rstrip("/") for hub, c in collectors.items()}
        prometheus = Prometheus(binary, prometheus_config(targets, TOKEN), tmp)

        def scraped(rounds: int):
            reports = {
                r["metric"]["hub"]: float(r["value"][1])
                for r in prometheus.query("sum by (hub) (popcon_reports_total)")
            }
            expected = {"research": 6.0 * rounds, "teaching": 4.0 * rounds}
            return reports == expected

        for hub, collector in collectors.items():
            send_udp(collector.udp, round_of_datagrams(hub))
        wait_until(lambda: scraped(1), timeout=30, what="the first round in Prometheus")
        time.sleep(2.5)  # a few scrapes of the first round: the base increase() counts from
        settled = time.time()  # every sample from 2 s before this holds the whole first round
        for hub, collector in collectors.items():
            send_udp(collector.udp, round_of_datagrams(hub))
        wait_until(lambda: scraped(2), timeout=30, what="the second round in Prometheus")
        time.sleep(INGESTED + 0.5)  # so that refreshes ending INGESTED ago hold the second round
        yield prometheus, settled
    finally:
        if prometheus is not None:
            prometheus.stop()
        for collector in collectors.values():
            collector.stop()


#: Seconds after which every sample of a scrape can be queried. A scrape's samples carry the
#: time it started and are stored when it ends (timeout 900 ms), so a query ending at "now"
#: could see a sample that the same query, repeated a moment later, sees joined by a newer one.
INGESTED = 2.0


def variables(settled: float, hub: str = "research", **extra: str) -> dict:
    """Template variables of one dashboard refresh as Grafana sends them: regex values for the
    multi-value ones, and ``__to`` (milliseconds), the end of the refresh's time range, at
    which `run` evaluates every query of the refresh, as Grafana does."""
    end = time.time() - INGESTED
    # from a little before `settled` (all samples there hold the whole first round) to `end`:
    # the window sees the second round's change, never a part of the first round
    window = f"{math.ceil(end - settled) + 1}s"
    return {
        "hub": hub,
        "env": ".*",
        "library": "numpy",
        "__range": window,
        "__rate_interval": window,
        "datasource": "unused",
        "__to": str(int(end * 1000)),
        **extra,
    }


def by_library(result: list) -> dict:
    return {r["metric"].get("library"): float(r["value"][1]) for r in result}


def queries() -> dict:
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    return {q.where: q for q in grafana_queries(dashboard)}


def run(prometheus: Prometheus, query: GrafanaQuery, values: dict) -> list:
    """Evaluate one expression of the refresh ``values`` describes, ending at its ``__to``."""
    expr = substitute(query.expr, values)
    end = int(values["__to"]) / 1000
    if query.where.startswith("variable"):
        return prometheus.label_values(query.ref, expr)
    if query.instant:
        return prometheus.query(expr, at=end)
    return prometheus.query_range(expr, seconds=30, end=end)


def test_every_expression_returns_series(fleet):
    """Each expression of the file (none skipped) returns something for each hub."""
    prometheus, settled = fleet
    found = queries()
    assert len(found) >= 12
    for hub in ("research", "teaching", ".*"):
        for where, query in found.items():
            result = run(prometheus, query, variables(settled, hub))
            assert result, f"{where} returned nothing for hub={hub}: {query.expr}"


def test_the_libraries_table_counts_processes_and_direct_share(fleet):
    prometheus, settled = fleet
    table = [q for q in queries().values() if q.panel == "Libraries over the range"]
    refresh = variables(settled)
    processes, direct, share = (run(prometheus, q, refresh) for q in table)
    counts = by_library(processes)
    assert set(counts) == set(PROCESSES["research"])  # no library of the other hub
    assert [r["metric"]["library"] for r in processes][-1] == "requests"  # sort_desc
    # increase() extrapolates; the proportions between libraries are exact
    ratio = counts["requests"] / counts["pandas"]
    assert ratio == pytest.approx(2 / 3, abs=0.02)
    assert set(by_library(direct)) == {"pandas", "numpy", "requests"}
    assert by_library(share) == pytest.approx(DIRECT_SHARE["research"], abs=0.01)
    every_hub = by_library(run(prometheus, table[0], variables(settled, ".*")))
    assert set(every_hub) == set(PROCESSES["research"]) | set(PROCESSES["teaching"])


def test_direct_share_panel(fleet):
    prometheus, settled = fleet
    (query,) = [q for q in queries().values() if q.panel == "Direct share"]
    for hub in ("research", "teaching"):
        share = by_library(run(prometheus, query, variables(settled, hub)))
        assert share == pytest.approx(DIRECT_SHARE[hub], abs=0.01)


def last_values(series: list) -> dict:
    """Legend → the value at the end of each series of a range query. Only the last step's
    window is the one ``variables`` made: it holds the whole second round and nothing of the
    first. Earlier steps' windows reach back into the first round, or catch the collector
    between two commits of one round (the transitive processes in, their upgrade not yet)."""
    return {json.dumps(r["metric"], sort_keys=True): float(r["values"][-1][1]) for r in series}


def test_per_library_panels(fleet):
    prometheus, settled = fleet
    found = queries()
    panels = {q.where: q for q in found.values() if q.panel.startswith("$library")}
    # One refresh: the three queries end at the same moment, so their windows hold the same
    # samples and increase() extrapolates them alike (two refreshes differ by up to 1 s of
    # the window's ~20 s; CI saw 1.875 for 2).
    refresh = variables(settled)
    direct, transitive, unknown = (
        last_values(run(prometheus, panels[f"panel '$library: direct and transitive' / {ref}"],
                        refresh))
        for ref in "ABC"
    )  # fmt: skip
    (direct_now,), (transitive_now,), (unknown_now,) = (
        direct.values(),
        transitive.values(),
        unknown.values(),
    )
    # numpy in research per round: 1 direct (upgrade), 2 only transitive, 1 statsd
    assert transitive_now / direct_now == pytest.approx(2, abs=0.1)
    assert unknown_now / direct_now == pytest.approx(1, abs=0.1)
    versions = run(prometheus, panels["panel '$library: versions in use' / A"], variables(settled))
    assert {r["metric"]["version"] for r in versions} == {"1.26.4", "-"}
    envs = run(prometheus, panels["panel '$library: environments' / A"], variables(settled))
    assert {(r["metric"]["hub"], r["metric"]["env"]) for r in envs} == {
        ("research", "img:research"),
        ("research", "statsd"),
    }


def test_fleet_panels_keep_hubs_apart(fleet):
    prometheus, settled = fleet
    found = queries()
    top = run(prometheus, found["panel 'Processes per library over time (top 10)' / A"],
              variables(settled, "teaching"))  # fmt: skip
    assert {r["metric"]["library"] for r in top} == set(PROCESSES["teaching"])
    reports = run(prometheus, found["panel 'Processes reporting, per hub' / A"],
                  variables(settled, ".*"))  # fmt: skip
    assert {r["metric"]["hub"] for r in reports} == {"research", "teaching"}
    dropped = last_values(run(prometheus, found["panel 'Collector health: datagrams dropped' / A"],
                              variables(settled, ".*")))  # fmt: skip
    reasons = {json.loads(key)["result"] for key, value in dropped.items() if value > 0}
    assert reasons == {"unknown_format"}


def test_template_variables(fleet):
    prometheus, settled = fleet
    found = queries()
    values = variables(settled)
    assert set(run(prometheus, found["variable hub"], values)) == {"research", "teaching"}
    assert set(run(prometheus, found["variable env"], values)) == {"img:research", "statsd"}
    libraries = set(run(prometheus, found["variable library"], values))
    assert libraries == set(PROCESSES["research"])


def test_substitution_refuses_an_unknown_variable():
    with pytest.raises(KeyError, match=re.escape("$nope")):
        substitute('x{a="$nope"}', {})
