"""Distinct people counted from real processes: each of many real HOMEs (a secret of its own,
made by the recorder) runs real Python processes of an enabled venv that send to a real
``popcon serve`` on loopback; the collector's ``users`` is exact (or within one) below 50
people, and one person's many processes count one person. The estimator at 1,000 and 100,000
people is tested directly (``tests/collector/test_sketch.py``)."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from collectors import ServeProcess, by_name
from recorder_testlib import clean_environ
from timing import wait_until

pytestmark = pytest.mark.slow

PEOPLE = 40
#: One person's processes, and the people who each run one.
REPEATS = 12


def _run(venv, home, collector: str, code: str) -> None:
    env = clean_environ(home, POPCON_COLLECTOR=collector, POPCON_ENV="lab")
    done = subprocess.run(
        [str(venv.python), "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr


def test_many_homes_count_as_many_people_and_one_home_as_one(enabled_workload_venv, tmp_path):
    homes = [tmp_path / f"home-{n:02d}" for n in range(PEOPLE)]
    for home in homes:
        home.mkdir()
    with ServeProcess(
        tmp_path / "popcon.sqlite", "--open", "--min-count", "1", "--min-users", "1"
    ) as serve:
        collector = serve.udp_url
        jobs = [(home, "import yaml") for home in homes]
        jobs += [(homes[0], "import six") for _ in range(REPEATS)]
        jobs += [(home, "import six") for home in homes[1:4]]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda job: _run(enabled_workload_venv, job[0], collector, job[1]), jobs))

        def rows() -> dict:
            return by_name(serve.get("/api/v1/libraries?since=6h")[1]["libraries"])

        wait_until(
            lambda: (
                rows().get("pyyaml", {}).get("processes") == PEOPLE
                and rows().get("six", {}).get("processes") == REPEATS + 3
            ),
            timeout=30,
            what="every process counted",
        )
        counted = rows()
        assert abs(counted["pyyaml"]["users"] - PEOPLE) <= 1, counted["pyyaml"]
        assert counted["six"]["users"] == 4, counted["six"]  # 12 processes of one, 3 of others
        assert counted["six"]["direct_users"] == 4
        serve.stop()
    secrets = {(home / ".config" / "popcon" / "secret").read_text() for home in homes}
    assert len(secrets) == PEOPLE
