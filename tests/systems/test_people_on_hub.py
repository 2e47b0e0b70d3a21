"""People and their own code on a real JupyterHub: issue 10's "done when".

A real Hub (``examples/jupyterhub_config.py``, DummyAuthenticator, SimpleLocalProcessSpawner)
with three users, each with a HOME of their own (so a popcon secret of their own). Each starts
a real single-user server, ``jupyterhub-singleuser`` of the popcon-enabled workload venv, and
in it a kernel of that venv whose cell runs ``import pandas``; one of them also runs ``python
job.py`` (which imports requests) ten times from a cell. The servers send to a UDP relay that
keeps a copy of every datagram on its way to the Hub's popcon service.

Then the default answer (API, ``popcon top``, the dashboard in Chromium) counts people's code:
pandas and numpy (through pandas) with 3 users, requests with 1 user and 10 processes, and none
of what only the servers' and the kernels' machinery imported; with programs included that
machinery appears, and the programs (the kernel's ``ipykernel``, the server's ``jupyterhub``)
have 3 users each. Nothing sent, nor shown by ``popcon preview --json``, names a user, a uid,
a home, the host or a secret.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from collectors import by_name
from faces import (
    HUB_ADMIN,
    Hub,
    browser_login,
    execute,
    free_udp_port,
    in_own_loop,
    running_hub,
)
from recorder_testlib import UdpListener, clean_environ, popcon_cli
from repo import artifact
from timing import wait_until
from tornado.simple_httpclient import HTTPTimeoutError

pytestmark = pytest.mark.slow

#: Users with names nothing else in a datagram could contain.
USERS = ("quillonx", "marlowex", "tamsinx")
JOB_USER = USERS[1]
JOB_RUNS = 10
JOB = "import requests\n\nrequests.Session()\n"
#: What only the servers' and kernels' machinery imports.
MACHINERY = ("ipython", "tornado", "traitlets", "pyzmq", "jupyter-client")
#: The programs: the kernel's distribution and the single-user server's.
PROGRAMS = ("ipykernel", "jupyterhub")


@dataclass
class Worked:
    """The Hub after the users' work, what the relay read and what preview showed."""

    hub: Hub
    relay: UdpListener
    preview: str
    pandas_version: str

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"token {self.hub.user_token(HUB_ADMIN)}"}

    def api(self, path: str, **params: str) -> Any:
        import requests

        reply = requests.get(
            self.hub.popcon + "api/v1/" + path,
            params={"since": "6h", **params},
            headers=self.admin,
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        return reply.json()

    def cli(self, *args: str) -> str:
        env = clean_environ(self.hub.tmp, POPCON_API_TOKEN=self.hub.user_token(HUB_ADMIN))
        result = popcon_cli(*args, "--server", self.hub.popcon, "--since", "6h", env=env)
        assert result.returncode == 0, result.stderr
        return str(result.stdout)


def _cell_running_the_job(job: Path) -> str:
    return (
        "import subprocess, sys\n"
        f"for _ in range({JOB_RUNS}):\n"
        f"    subprocess.run([sys.executable, {str(job)!r}], check=True)\n"
        "print('ran')\n"
    )


async def _work(hub: Hub, kernels: dict[str, str], job: Path) -> list[dict[str, Any]]:
    """Every user's ``import pandas`` at once, then the job user's ten runs of job.py."""
    import asyncio

    code = "import pandas\nprint(pandas.__version__)"
    replies = await asyncio.gather(
        *(execute(kernels[name], hub.user_token(name), code, name) for name in USERS)
    )
    job_reply = await execute(
        kernels[JOB_USER], hub.user_token(JOB_USER), _cell_running_the_job(job), JOB_USER
    )
    return [*replies, job_reply]


#: Hubs started at most, one after the other, for the users' work: jupyter_client chooses a
#: kernel's ports by binding port 0 and letting it go, and another process (the tests run
#: beside others) may take one before the kernel binds it; the kernel then dies at its start
#: ("Address already in use") and its websocket never answers. A second Hub starts afresh.
HUB_ATTEMPTS = 2


@contextmanager
def _hub_with_servers(
    tmp_path_factory: pytest.TempPathFactory, venv
) -> Iterator[tuple[Hub, UdpListener]]:
    """A Hub whose users' servers run, and the relay its servers send through."""
    tmp: Path = tmp_path_factory.mktemp("people-hub")
    udp_port = free_udp_port()
    relay = UdpListener(forward_to=("127.0.0.1", udp_port))
    singleuser = venv.path / "bin" / "jupyterhub-singleuser"
    try:
        with running_hub(
            tmp,
            kernel_python=venv.python,
            singleuser=[str(singleuser)],
            spawner_environment={"POPCON_COLLECTOR": relay.url},
            udp_port=udp_port,
        ) as hub:
            hub.start_servers(USERS)
            yield hub, relay
            for name in USERS:
                hub.stop_server(name)
    finally:
        relay.close()


@contextmanager
def _hub_at_work(
    tmp_path_factory: pytest.TempPathFactory, venv
) -> Iterator[tuple[Hub, UdpListener, list[dict[str, Any]]]]:
    """A Hub whose users did their work, its relay, and the cells' replies (the job user's
    last)."""
    for attempt in range(1, HUB_ATTEMPTS + 1):
        with _hub_with_servers(tmp_path_factory, venv) as (hub, relay):
            try:
                kernels = {name: hub.start_kernel(name) for name in USERS}
                job = hub.home(JOB_USER) / "job.py"
                job.write_text(JOB)
                replies = in_own_loop(_work(hub, kernels, job), timeout=300)
            except HTTPTimeoutError:
                if attempt == HUB_ATTEMPTS:
                    raise
                continue  # a kernel died at its start: see HUB_ATTEMPTS
            yield hub, relay, replies
            return


@pytest.fixture(scope="module")
def worked(tmp_path_factory: pytest.TempPathFactory, enabled_workload_venv) -> Iterator[Worked]:
    with _hub_at_work(tmp_path_factory, enabled_workload_venv) as (hub, relay, replies):
        *pandas, ran = replies
        for reply in replies:
            assert reply["status"] == "ok", reply
        assert ran["stdout"].strip() == "ran"
        preview = popcon_cli(
            "preview",
            "--json",
            "--",
            enabled_workload_venv.python,
            hub.home(JOB_USER) / "job.py",
            env=clean_environ(hub.home(JOB_USER)),
        )
        assert preview.returncode == 0, preview.stderr
        worked = Worked(hub, relay, preview.stdout, pandas[0]["stdout"].strip())

        def counted() -> bool:
            rows = by_name(worked.api("libraries")["libraries"])
            return (
                rows.get("requests", {}).get("processes") == JOB_RUNS
                and rows.get("pandas", {}).get("users") == len(USERS)
                and rows.get("numpy", {}).get("users") == len(USERS)
            )

        wait_until(counted, timeout=30, interval=0.5, what="the users' work in popcon")
        yield worked


def test_the_default_answer_counts_people_and_their_code(worked):
    answer = worked.api("libraries")
    rows = by_name(answer["libraries"])
    assert rows["pandas"]["users"] == 3 and rows["pandas"]["processes"] == 3
    assert rows["pandas"]["direct"] == 3
    assert rows["numpy"]["users"] == 3 and rows["numpy"]["transitive"] == 3
    assert rows["numpy"]["direct"] == 0
    assert rows["requests"]["users"] == 1 and rows["requests"]["processes"] == JOB_RUNS
    assert not set(rows) & {*MACHINERY, *PROGRAMS}, sorted(rows)
    users = [row["users"] for row in answer["libraries"]]
    assert users == sorted(users, reverse=True)  # most users first
    numpy = worked.api("libraries/numpy")
    assert numpy["users"] == 3
    assert by_name(numpy["importers"], "importer")["pandas"]["processes"] == 3
    versions = worked.api("libraries/pandas")["versions"]
    assert versions[0]["version"] == worked.pandas_version and versions[0]["users"] == 3


def test_with_programs_included_their_machinery_appears(worked):
    rows = by_name(worked.api("libraries", include="programs")["libraries"])
    for name in MACHINERY:
        assert rows[name]["users"] == 3, rows.get(name)
    assert rows["pandas"]["users"] == 3
    assert rows["requests"]["users"] >= 1


def test_the_programs_are_the_kernel_and_the_server(worked):
    programs = by_name(worked.api("programs")["programs"])
    for name in PROGRAMS:
        assert programs[name]["users"] == 3, programs.get(name)
        assert programs[name]["processes"] >= 3
    assert not set(programs) & {"pandas", "numpy", "requests"}


def test_popcon_top_and_programs_from_the_cli(worked):
    libraries = json.loads(worked.cli("top", "--json"))["libraries"]
    assert libraries == worked.api("libraries")["libraries"]
    table = {line.split()[0]: line.split() for line in worked.cli("top").splitlines()[2:]}
    assert table["pandas"][:3] == ["pandas", "3", "3"]  # LIBRARY USERS PROCESSES
    assert table["requests"][:3] == ["requests", "1", str(JOB_RUNS)]
    assert not set(table) & set(MACHINERY)
    included = {line.split()[0] for line in worked.cli("top", "--include-programs").splitlines()}
    assert set(MACHINERY) <= included
    programs = {line.split()[0]: line.split() for line in worked.cli("programs").splitlines()[2:]}
    for name in PROGRAMS:
        assert programs[name][1] == "3", programs


def _shown_users(page: Any) -> dict[str, str]:
    """Library (or program) → the text of its Users cell, as the table shows them."""
    return dict(
        page.eval_on_selector_all(
            "main tbody tr",
            "rows => rows.map(r => [r.dataset.name, "
            "r.querySelector('td[data-column=users]').textContent])",
        )
    )


def test_the_dashboard_in_chromium(worked, page):
    browser_login(page, worked.hub, HUB_ADMIN, "/services/popcon/?since=6h")
    page.wait_for_selector('main[data-loaded="libraries"]')
    shown = _shown_users(page)
    assert shown["pandas"] == "3" and shown["numpy"] == "3" and shown["requests"] == "1"
    assert not set(shown) & {*MACHINERY, *PROGRAMS}
    assert list(shown)[:2] in (["numpy", "pandas"], ["pandas", "numpy"])  # by users
    page.screenshot(path=str(artifact("people-hub-libraries.png")), full_page=True)

    page.check("#include-programs")
    page.wait_for_selector('main[data-loaded="libraries"][data-include="programs"]')
    included = _shown_users(page)
    assert all(included[name] == "3" for name in MACHINERY), included
    assert "include=programs" in page.url

    page.click('.tabs a[data-view="programs"]')
    page.wait_for_selector('main[data-loaded="programs"]')
    programs = _shown_users(page)
    assert all(programs[name] == "3" for name in PROGRAMS), programs
    page.screenshot(path=str(artifact("people-hub-programs.png")), full_page=True)
    assert page.errors == []


def _secrets(hub: Hub) -> dict[str, str]:
    """Each user's popcon secret, which the recorder made in their config directory."""
    secrets = {}
    for name in USERS:
        path = hub.home(name) / ".config" / "popcon" / "secret"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        secrets[name] = path.read_text().strip()
        assert re.fullmatch(r"[0-9a-f]{64}", secrets[name])
    assert len(set(secrets.values())) == len(USERS)
    return secrets


def test_nothing_sent_identifies_anyone(worked):
    hub = worked.hub
    datagrams = [data.decode() for data in worked.relay.settle()]
    assert datagrams, "the relay read nothing"
    records = [line.split() for text in datagrams for line in text.splitlines()]
    people = {fields[5] for fields in records if fields[0] == "lib" and len(fields) >= 6}
    assert any(re.fullmatch(r"\d+:\d+", person) for person in people), people
    assert {fields[1] for fields in records if fields[0] == "prog"} >= set(PROGRAMS)
    secrets = _secrets(hub)
    forbidden = [
        *USERS,
        HUB_ADMIN,
        str(hub.tmp),
        "/home",
        ".config",
        *secrets.values(),
        *(secret[:16] for secret in secrets.values()),  # no part of a secret either
    ]
    host = socket.gethostname()
    if len(host) >= 4:
        forbidden.append(host)
    uid = str(os.getuid())
    for text in [*datagrams, worked.preview]:
        for word in forbidden:
            assert word not in text, f"{word!r} in {text!r}"
        if os.getuid() != 0:  # as root, "0" is every first sequence number
            assert uid not in re.split(r"[\s=/:@,\"]+", text), f"the uid in {text!r}"
    shown = json.loads(worked.preview)
    assert "requests" in {row["name"] for row in shown["libraries"]}


def test_a_kernel_and_a_server_are_programs_not_people(worked):
    """The relay's datagrams say so themselves: every ``prog`` record names a program, and
    no record of the kernel machinery is people's."""
    people_levels = {"direct", "transitive", "upgrade", "claimed"}
    for text in (data.decode() for data in worked.relay.settle()):
        for fields in (line.split() for line in text.splitlines()):
            if fields[0] == "lib" and fields[1] in ("ipython", "traitlets", "pyzmq"):
                assert fields[3] not in people_levels, text
