"""A real Prometheus scrapes a real ``popcon serve``; its ``increase()`` agrees with the API.

Needs Debian's ``prometheus`` package (``apt-get install -y prometheus``): a failure under
CI, which installs it, a skip elsewhere.
"""

from __future__ import annotations

import math
import time

import pytest
from collectors import ServeProcess
from datagrams import statsd_datagram, use_datagram
from faces import require_program
from fleet import Prometheus, prometheus_config
from timing import wait_until

TOKEN = "prometheus-test-token"

pytestmark = pytest.mark.slow


def by_library(prometheus: Prometheus, expr: str, at: float | None = None) -> dict:
    return {r["metric"]["library"]: float(r["value"][1]) for r in prometheus.query(expr, at)}


def api_processes(server: ServeProcess) -> dict:
    status, answer, _ = server.get("/api/v1/libraries?since=6h", token=TOKEN)
    assert status == 200, answer
    return {row["name"]: row["processes"] for row in answer["libraries"]}


def processes_datagrams(library: str, count: int, importer_of: str = "") -> list:
    libs = [(library, "1.0", "direct", "env")]
    if importer_of:
        libs.append((importer_of, "2.0", "transitive", "env", library))
    return [use_datagram("hub-image", libs) for _ in range(count)]


def test_prometheus_increase_agrees_with_the_api(tmp_path):
    binary = require_program("prometheus", "apt-get install -y prometheus")
    with ServeProcess(
        tmp_path / "popcon.sqlite", "--min-count", "1", env={"POPCON_API_TOKEN": TOKEN}
    ) as server:
        # before Prometheus starts, every series exists (increase() cannot see a series' birth)
        server.send(processes_datagrams("pandas", 3, importer_of="numpy"))
        server.send(processes_datagrams("requests", 2) + processes_datagrams("attrs", 3))
        server.send([statsd_datagram("numpy")] * 2)
        expected_a = {"pandas": 3, "numpy": 5, "requests": 2, "attrs": 3}
        wait_until(lambda: api_processes(server) == expected_a, what="batch A in the API")

        target = server.http_url.split("//", 1)[1].rstrip("/")
        prometheus = Prometheus(binary, prometheus_config({"hub": target}, TOKEN), tmp_path)
        try:
            wait_until(
                lambda: prometheus.query('up{job="popcon"} == 1'), timeout=60, what="a scrape"
            )
            # fifteen seconds of samples before batch B
            wait_until(
                lambda: [
                    r
                    for r in prometheus.query("count_over_time(popcon_reports_total[1m])")
                    if float(r["value"][1]) >= 15
                ],
                timeout=60,
                what="fifteen scrapes",
            )
            before = api_processes(server)
            sent_b = time.time()
            server.send(processes_datagrams("pandas", 4, importer_of="numpy"))
            server.send(processes_datagrams("requests", 3) + [statsd_datagram("numpy")] * 2)
            upgrade = [("numpy", "2.0", "upgrade", "env")]
            server.send([use_datagram("hub-image", upgrade, seq=1)])
            expected = {"pandas": 7, "numpy": 11, "requests": 5, "attrs": 3}
            wait_until(lambda: api_processes(server) == expected, what="batch B in the API")
            after = api_processes(server)

            # the latest scrape: the counters summed over env and level are the API's numbers
            wait_until(
                lambda: (
                    by_library(prometheus, "sum by (library) (popcon_library_processes_total)")
                    == {k: float(v) for k, v in after.items()}
                ),
                timeout=30,
                what="Prometheus to scrape batch B",
            )
            upgrades = by_library(prometheus, "popcon_library_upgrades_total")
            assert upgrades == {"numpy": 1.0}

            # increase() over a window from 12 s before batch B (Prometheus scraped for 15 s
            # before it) to a little after the scrape that saw it
            at = max(sent_b + 6, time.time() + 1.5)
            time.sleep(max(0.0, at - time.time()))
            seconds = math.ceil(at - (sent_b - 12))
            increase = by_library(
                prometheus,
                f"sum by (library) (increase(popcon_library_processes_total[{seconds}s]))",
                at,
            )
        finally:
            prometheus.stop()

    delta = {name: after[name] - before.get(name, 0) for name in after}
    assert delta == {"pandas": 4, "numpy": 6, "requests": 3, "attrs": 0}
    assert set(increase) == set(delta)
    for name, expected_increase in delta.items():
        # increase() extrapolates from the first and last samples to the window's edges,
        # which can only add (here about 5 %): allow that, and no more
        assert expected_increase <= increase[name] <= 1.15 * expected_increase, (
            name,
            increase,
            delta,
        )
