"""The fleet of docs/fleet.md in the tests: Debian's ``prometheus`` scraping collectors, and the
plain functions that read the Grafana dashboard's PromQL."""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collectors import http_get
from faces import Background, free_tcp_port
from repo import REPO_ROOT
from timing import wait_until

GRAFANA_DASHBOARD = REPO_ROOT / "grafana" / "popcon-dashboard.json"

# -- Prometheus --------------------------------------------------------------------------------


def prometheus_config(targets: Mapping[str, str], token: str) -> str:
    """A ``prometheus.yml`` scraping each ``hub → host:port`` every second with the collectors'
    bearer token, the ``hub`` label given per target as docs/fleet.md says."""
    lines = [
        "global:",
        "  scrape_interval: 1s",
        "  evaluation_interval: 1s",
        "scrape_configs:",
        "  - job_name: popcon",
        "    scrape_interval: 1s",
        "    scrape_timeout: 900ms",
        "    authorization:",
        f"      credentials: {token}",
        "    static_configs:",
    ]
    for hub, address in targets.items():
        lines += [f'      - targets: ["{address}"]', "        labels:", f"          hub: {hub}"]
    return "\n".join(lines) + "\n"


class Prometheus(Background):
    """Debian's ``prometheus`` on 127.0.0.1 with a temporary data directory."""

    def __init__(self, binary: str, config: str, workdir: Path) -> None:
        self.port = free_tcp_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "prometheus.yml").write_text(config)
        super().__init__(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            workdir / "prometheus.log",
            env={"PATH": os.environ.get("PATH", "")},
            cwd=workdir,
        )
        wait_until(self.ready, timeout=30, what="prometheus to start")

    def ready(self) -> bool:
        if not self.alive():
            raise AssertionError("prometheus exited:\n" + self.output())
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a successful answer of ``/api/v1/<path>``."""
        status, answer, _ = http_get(f"{self.url}/api/v1/{path}?" + urllib.parse.urlencode(params))
        assert status == 200 and answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query, at ``at`` (default: Prometheus's now)."""
        moment = {} if at is None else {"time": str(at)}
        result: list[dict[str, Any]] = self.api("query", query=expr, **moment)["result"]
        return result

    def query_range(
        self, expr: str, seconds: int, step: str = "1s", end: float | None = None
    ) -> list[dict[str, Any]]:
        """A range query over the ``seconds`` before ``end`` (default: now)."""
        end = time.time() if end is None else end
        result: list[dict[str, Any]] = self.api(
            "query_range", query=expr, start=str(end - seconds), end=str(end), step=step
        )["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        values: list[str] = self.api(f"label/{label}/values", **{"match[]": match})
        return values


# -- the Grafana dashboard ---------------------------------------------------------------------


@dataclass(frozen=True)
class GrafanaQuery:
    """One PromQL expression of the dashboard and where it comes from."""

    where: str  # "panel <title> / <refId>" or "variable <name>"
    expr: str
    instant: bool
    panel: str = ""
    ref: str = ""


_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<match>.+),\s*)?(?P<label>\w+)\)$")


def grafana_queries(dashboard: Mapping[str, Any]) -> Iterator[GrafanaQuery]:
    """Every PromQL expression in a Grafana dashboard: panel targets and the queries of the
    template variables (``label_values(<selector>, <label>)``, yielded as the selector)."""
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = str(query.get("query") if isinstance(query, dict) else query)
        match = _LABEL_VALUES.match(text.strip())
        assert match, f"variable {variable['name']}: not a label_values() query: {text!r}"
        yield GrafanaQuery(
            f"variable {variable['name']}",
            match.group("match") or "",
            instant=True,
            ref=match.group("label"),
        )
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            yield GrafanaQuery(
                f"panel {panel['title']!r} / {target['refId']}",
                target["expr"],
                instant=bool(target.get("instant")),
                panel=panel["title"],
                ref=target["refId"],
            )


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace Grafana's ``$name`` and ``${name}`` by ``values[name]``; an unknown one fails."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"no value for the Grafana variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, expr)
