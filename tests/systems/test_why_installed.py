"""Why installed, with real parts: ``pip install requests`` into a real venv marks requests
``REQUESTED`` and its dependencies not; the enabled recorder says so in its inventory, a real
``popcon serve`` stores it, and ``/api/v1/unused``, ``popcon unused`` and the dashboard's Unused
view (in a real Chromium) split what was installed on request from what only as a dependency of
requests. The process imports urllib3 only."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from collectors import ServeProcess, subprocess_env
from recorder_testlib import Venv, clean_environ, create_venv, pip_install, popcon_cli, run
from repo import artifact
from timing import wait_until

pytestmark = pytest.mark.slow

ENV = "why-venv"


@dataclass
class Fed:
    venv: Venv
    serve: ServeProcess
    answer: dict[str, Any]  # the environment's entry of /api/v1/unused


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    tmp = tmp_path_factory.mktemp("why")
    home = tmp / "home"
    home.mkdir()
    venv = create_venv(tmp / "venv")
    pip_install(venv, "requests")
    result = popcon_cli("enable", "--python", venv.python, env=clean_environ(home))
    assert result.returncode == 0, result.stdout + result.stderr
    with ServeProcess(tmp / "popcon.sqlite", "--open") as serve:
        env = clean_environ(home, POPCON_COLLECTOR=serve.udp_url, POPCON_ENV=ENV)
        ran = run([venv.python, "-c", "import urllib3"], env)
        assert ran.returncode == 0, ran.stderr

        def stored() -> dict[str, Any] | None:
            status, answer, _ = serve.get(f"/api/v1/unused?env={ENV}&since=1h")
            assert status == 200, answer
            return answer["environments"][0] if answer["environments"] else None

        yield Fed(venv, serve, wait_until(stored, timeout=30, what="the inventory stored"))


def test_pip_install_requests_is_requested_and_its_dependencies_are_not(fed: Fed) -> None:
    info = next(fed.venv.site_packages.glob("requests-*.dist-info"))
    assert (info / "REQUESTED").exists()  # pip's marker, which the recorder reads
    assert (
        not next(fed.venv.site_packages.glob("certifi-*.dist-info")).joinpath("REQUESTED").exists()
    )
    found = {lib["name"]: lib for lib in fed.answer["libraries"]}
    assert fed.answer["reasons_known"] is True
    assert "urllib3" not in found  # imported
    assert (found["requests"]["why"], found["requests"]["removable"]) == ("requested", True)
    for name in ("certifi", "charset-normalizer", "idna"):
        assert found[name]["why"] == "dependency", name
        assert found[name]["required_by"] == ["requests"], name
        assert (found[name]["needed_by"], found[name]["removable"]) == ([], True), name


def test_popcon_unused_answers_as_the_api(fed: Fed) -> None:
    command = [sys.executable, "-m", "popcon", "unused", "--server", fed.serve.http_url,
               "--env", ENV, "--since", "1h"]  # fmt: skip
    cli = run([*command, "--json"], subprocess_env())
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["environments"][0]["libraries"] == fed.answer["libraries"]
    table = run(command, subprocess_env())
    assert table.returncode == 0, table.stderr
    rows = {line.split()[1]: line.split()[3:] for line in table.stdout.splitlines()[2:]}
    assert rows["requests"] == ["requested", "yes"]
    assert rows["idna"] == ["dependency", "requests", "yes"]


def test_the_unused_view_groups_by_why(page, fed: Fed) -> None:
    page.goto(f"{fed.serve.http_url}unused?since=1h&env={ENV}")
    page.wait_for_selector('main[data-loaded="unused"]')

    def chips(why: str) -> dict[str, str]:
        return page.eval_on_selector_all(
            f'section[data-why="{why}"] .chip',
            "chips => Object.fromEntries(chips.map(c => [c.dataset.name, c.textContent]))",
        )

    requested, dependencies = chips("requested"), chips("dependency")
    assert list(requested) == ["requests"]
    assert {"certifi", "charset-normalizer", "idna"} <= set(dependencies)
    assert "urllib3" not in dependencies
    assert "· of requests" in dependencies["certifi"]
    assert "· removable" in dependencies["certifi"] and "· removable" in requested["requests"]
    page.screenshot(path=str(artifact("dashboard-unused-why.png")), full_page=True)
    assert page.errors == []
