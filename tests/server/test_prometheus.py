"""A real Prometheus scrapes a real ``popcon serve``; its ``increase()`` agrees with the API.

Needs Debian's ``prometheus`` package (``apt-get install -y prometheus``); skipped without it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from apptestlib import ServeProcess, use_datagram, wait_until

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
TOKEN = "prometheus-test-token"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(  # under CI, which installs it, a missing binary fails instead
        not Path(PROMETHEUS).exists() and not os.environ.get("CI"),
        reason="the prometheus binary is absent (Debian: apt-get install -y prometheus)",
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Prometheus:
    """``/usr/bin/prometheus`` on 127.0.0.1 scraping one target every second."""

    def __init__(self, workdir: Path, target: str, token: str) -> None:
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: popcon\n"
            "    authorization:\n"
            "      type: Bearer\n"
            f"      credentials: {token}\n"
            "    static_configs:\n"
            f"      - targets: ['{target}']\n"
        )
        self.log = open(workdir / "prometheus.log", "w")  # noqa: SIM115 - closed in stop()
        self.log_path = workdir / "prometheus.log"
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def query(self, expr: str, at: float | None = None) -> list:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                answer = json.loads(response.read())
        except OSError:
            if self.proc.poll() is not None:
                raise AssertionError("prometheus exited:\n" + self.log_path.read_text()) from None
            return []
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def by_library(self, expr: str, at: float | None = None) -> dict:
        return {r["metric"]["library"]: float(r["value"][1]) for r in self.query(expr, at)}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def api_processes(server: ServeProcess) -> dict:
    status, answer, _ = server.get("/api/v1/libraries?since=6h", token=TOKEN)
    assert status == 200, answer
    return {row["name"]: row["processes"] for row in answer["libraries"]}


def processes_datagrams(library: str, count: int, importer_of: str = "") -> list:
    libs = [(library, "1.0", "direct", "env")]
    if importer_of:
        libs.append((importer_of, "2.0", "transitive", "env", library))
    return [use_datagram("hub-image", libs) for _ in range(count)]


def statsd(library: str, count: int) -> list:
    return [f"python_popcon.library_used.{library}:1|c\n".encode()] * count


def test_prometheus_increase_agrees_with_the_api(tmp_path):
    with ServeProcess(
        tmp_path / "popcon.sqlite", "--min-count", "1", env={"POPCON_API_TOKEN": TOKEN}
    ) as server:
        # before Prometheus starts, every series exists (increase() cannot see a series' birth)
        server.send(processes_datagrams("pandas", 3, importer_of="numpy"))
        server.send(processes_datagrams("requests", 2) + processes_datagrams("attrs", 3))
        server.send(statsd("numpy", 2))
        expected_a = {"pandas": 3, "numpy": 5, "requests": 2, "attrs": 3}
        wait_until(lambda: api_processes(server) == expected_a, what="batch A in the API")

        target = server.http_url.split("//", 1)[1].rstrip("/")
        prometheus = Prometheus(tmp_path, target, TOKEN)
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
            server.send(processes_datagrams("requests", 3) + statsd("numpy", 2))
            upgrade = [("numpy", "2.0", "upgrade", "env")]
            server.send([use_datagram("hub-image", upgrade, seq=1)])
            expected = {"pandas": 7, "numpy": 11, "requests": 5, "attrs": 3}
            wait_until(lambda: api_processes(server) == expected, what="batch B in the API")
            after = api_processes(server)

            # the latest scrape: the counters summed over env and level are the API's numbers
            wait_until(
                lambda: (
                    prometheus.by_library("sum by (library) (popcon_library_processes_total)")
                    == {k: float(v) for k, v in after.items()}
                ),
                timeout=30,
                what="Prometheus to scrape batch B",
            )
            upgrades = prometheus.by_library("popcon_library_upgrades_total")
            assert upgrades == {"numpy": 1.0}

            # increase() over a window from 12 s before batch B (Prometheus scraped for 15 s
            # before it) to a little after the scrape that saw it
            at = max(sent_b + 6, time.time() + 1.5)
            time.sleep(max(0.0, at - time.time()))
            seconds = math.ceil(at - (sent_b - 12))
            increase = prometheus.by_library(
                f"sum by (library) (increase(popcon_library_processes_total[{seconds}s]))", at
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
