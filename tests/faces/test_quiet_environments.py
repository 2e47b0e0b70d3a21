"""Silence noticed: an environment that reported and then fell quiet for longer than
``--quiet-after`` is flagged by the API (``quiet``), ``popcon envs`` and a real ``popcon
serve``; ``/metrics`` has each environment's last report time, and the alert rule of
docs/fleet.md fires on it in Prometheus's own rule tester.

The database: ``img:busy`` reported an hour before ``timing.NOW``, ``img:gone`` five days
before, three processes each.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from collectors import ApiServer, ServeProcess, by_name, store_datagrams
from datagrams import use_datagram
from faces import require_program
from repo import REPO_ROOT
from timing import NOW

from popcon.server.cli import main
from popcon.server.query.environments import QUIET_AFTER
from popcon.server.web.metrics import LAST_REPORT, collect_families

HOUR = 3600
DAY = 24 * HOUR
BUSY_AT = NOW - HOUR
GONE_AT = NOW - 5 * DAY


@pytest.fixture(scope="module")
def quiet_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("quiet") / "popcon.sqlite"
    timed = [(BUSY_AT, use_datagram("img:busy", [("numpy", "2.1.0", "direct", "env")]))] * 3
    timed += [(GONE_AT, use_datagram("img:gone", [("numpy", "2.1.0", "direct", "env")]))] * 3
    store_datagrams(db, timed)
    return db


def test_the_api_flags_an_environment_quiet_longer_than_the_setting(quiet_db, make_ctx):
    ctx = make_ctx(quiet_db)
    with ApiServer(ctx) as server:
        status, answer, _ = server.get("/api/v1/environments")
        assert status == 200, answer
        envs = by_name(answer["environments"], "env")
        assert answer["quiet_after"] == QUIET_AFTER == 72 * HOUR
        assert envs["img:gone"]["quiet"] is True
        assert envs["img:busy"]["quiet"] is False
        ctx.quiet_after = 6 * DAY
        _, answer, _ = server.get("/api/v1/environments")
        assert not any(row["quiet"] for row in answer["environments"])
        ctx.quiet_after = 30 * 60.0  # the last bucket of img:busy ended 50 minutes before NOW
        _, answer, _ = server.get("/api/v1/environments")
        assert all(row["quiet"] for row in answer["environments"])


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_popcon_envs_has_a_quiet_column(capsys, quiet_db):
    status, out, err = run(capsys, "envs", "--db", str(quiet_db), "--min-count", "1")
    assert status == 0, err
    caption, header, *rows = out.splitlines()
    assert "quiet: no report for more than 72 hours (1 of 2)" in caption
    assert "QUIET" in header.split()
    by_env = {row.split()[0]: row for row in rows}
    assert " quiet " in by_env["img:gone"]
    assert "quiet" not in by_env["img:busy"]

    status, out, err = run(capsys, "envs", "--db", str(quiet_db), "--quiet-after", "200")
    assert status == 0, err
    assert "(0 of 2)" in out.splitlines()[0]

    status, out, err = run(capsys, "envs", "--db", str(quiet_db), "--csv")
    assert status == 0, err
    quiet = {row["env"]: row["quiet"] for row in csv.DictReader(io.StringIO(out))}
    assert quiet == {"img:busy": "False", "img:gone": "True"}


def test_popcon_envs_from_a_server_uses_the_servers_setting(capsys, quiet_db, make_ctx):
    ctx = make_ctx(quiet_db, min_count=1)
    ctx.quiet_after = 6 * DAY
    with ApiServer(ctx) as server:
        status, out, err = run(capsys, "envs", "--server", server.url)
    assert status == 0, err
    assert "quiet: no report for more than 144 hours (0 of 2)" in out.splitlines()[0]


@pytest.mark.parametrize("hours", ["0", "-1", "nan"])
def test_popcon_envs_refuses_a_bad_quiet_after(capsys, quiet_db, hours):
    status, out, err = run(capsys, "envs", "--db", str(quiet_db), "--quiet-after", hours)
    assert status == 2
    assert err.strip() == f"popcon envs: --quiet-after: expected more than 0, got {hours}"
    assert out == ""


def last_reports(families) -> dict:
    family = next(f for f in families if f.name == LAST_REPORT)
    return {sample.labels["env"]: sample.value for sample in family.samples}


def test_metrics_have_each_environments_last_report_time(quiet_db):
    import sqlite3

    conn = sqlite3.connect(quiet_db)
    try:
        shown = last_reports(collect_families(conn, 3, now=NOW))
        assert shown == {"img:busy": BUSY_AT // 600 * 600, "img:gone": GONE_AT // 600 * 600}
        # Shown only with the environment's popcon_reports_total, so never below min_count.
        assert last_reports(collect_families(conn, 4, now=NOW)) == {}
    finally:
        conn.close()


def test_popcon_serve_takes_quiet_after_and_serves_the_gauge(quiet_db):
    with ServeProcess(quiet_db, "--open", "--quiet-after", "200") as serve:
        _, answer, _ = serve.get("/api/v1/environments")
        assert answer["quiet_after"] == 200 * HOUR
        assert not any(row["quiet"] for row in answer["environments"])
        status, text, _ = serve.get("/metrics")
        assert status == 200
        values = {
            line.split('"')[1]: float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith(LAST_REPORT + "{")
        }
        assert values == {"img:busy": BUSY_AT // 600 * 600, "img:gone": GONE_AT // 600 * 600}
    with ServeProcess(quiet_db, "--open") as serve:
        _, answer, _ = serve.get("/api/v1/environments")
        assert by_name(answer["environments"], "env")["img:gone"]["quiet"] is True


def test_popcon_serve_refuses_a_quiet_after_of_zero(quiet_db):
    result = subprocess.run(
        [sys.executable, "-m", "popcon", "serve", "--db", str(quiet_db), "--quiet-after", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "popcon serve: --quiet-after: expected more than 0"


#: Prometheus's rule tester: a hub whose image reported once at time 0 and then never, and one
#: that reports every hour.
RULE_TEST = """
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'popcon_environment_last_report_seconds{env="img:gone",hub="research",job="popcon"}'
        values: '0x4500'
      - series: 'popcon_environment_last_report_seconds{env="img:busy",hub="research",job="popcon"}'
        values: '0+60x4500'
      - series: 'up{hub="research",job="popcon"}'
        values: '1x4500'
    alert_rule_test:
      - eval_time: 72h
        alertname: PopconEnvironmentQuiet
        exp_alerts: []
      - eval_time: 74h
        alertname: PopconEnvironmentQuiet
        exp_alerts:
          - exp_labels: {severity: warning, env: img:gone, hub: research, job: popcon}
            exp_annotations:
              summary: "popcon: img:gone on research has not reported for 3d 2h 0m 0s"
      - eval_time: 74h
        alertname: PopconCollectorDown
        exp_alerts: []
"""


def test_the_alert_rule_of_the_fleet_docs_fires_on_a_quiet_environment(tmp_path):
    promtool = require_program("promtool", "apt-get install -y prometheus")
    doc = (REPO_ROOT / "docs" / "fleet.md").read_text(encoding="utf-8")
    rules = re.search(r"```yaml\n(# popcon-rules\.yml.*?)```", doc, re.DOTALL)
    assert rules, "docs/fleet.md lost its alert rules"
    (tmp_path / "rules.yml").write_text(rules.group(1), encoding="utf-8")
    (tmp_path / "test.yml").write_text(RULE_TEST, encoding="utf-8")
    result = subprocess.run(
        [promtool, "test", "rules", "test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
