"""The fleet example: a root hub that also serves popcon's dashboard as its JupyterHub service
(roothub/examples/root_with_popcon.py, which loads popcon's examples/jupyterhub_config.py),
and a child. Runs where popcon's server extra is installed (scripts/roothub_tests.sh installs it
in its newest virtual environment)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from hubs import PASSWORD, ROOT_LOGIN, Hub, child_hub, free_port, running, wait_until
from playwright.sync_api import Browser, Page

pytest.importorskip("popcon")
pytest.importorskip("prometheus_client")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "root_with_popcon.py"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hub, Hub]]:
    folder = Path(tmp_path_factory.mktemp("popcon-fleet"))
    token = secrets.token_hex(24)
    root = Hub(
        folder / "root",
        "127.0.0.1",
        preamble=f"load_subconfig({str(EXAMPLE)!r})",
        settings=ROOT_LOGIN,
    )
    child = child_hub(folder / "child", "127.0.0.9", root, token)
    (folder / "popcon").mkdir()
    root.env = {
        "ROOTHUB_REGISTRATION_TOKEN": token,
        "ROOTHUB_EXAMPLE_CHILDREN": f"127.0.0.9-{child.port}",
        "POPCON_EXAMPLE_UDP": f"127.0.0.1:{free_port('127.0.0.1')}",
        "POPCON_EXAMPLE_HTTP_PORT": str(free_port("127.0.0.1")),
        "POPCON_EXAMPLE_DB": str(folder / "popcon" / "popcon.sqlite"),
        "POPCON_EXAMPLE_ADMINS": "alice",
    }
    with running(root, child):
        child.wait_for_log(r"roothub: registered at ")
        yield root, child


def log_in(page: Page, root: Hub, username: str) -> None:
    page.wait_for_url(f"{root.url}hub/login**")
    page.fill("#username_input", username)
    page.fill("#password_input", PASSWORD)
    page.click("#login_submit")


def test_a_user_logs_in_to_the_child_but_may_not_see_popcon(
    fleet: tuple[Hub, Hub], browser: Browser
) -> None:
    root, child = fleet
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{child.url}hub/home")
        log_in(page, root, "bob")
        page.wait_for_url(f"{child.url}hub/home")
        reply = page.goto(f"{root.url}services/popcon/")
        assert reply is not None
        assert reply.status == 403
    finally:
        context.close()


def test_an_operator_signs_in_once_for_the_dashboard_and_the_child(
    fleet: tuple[Hub, Hub], browser: Browser
) -> None:
    root, child = fleet
    context = browser.new_context()
    try:
        page = context.new_page()

        def dashboard() -> bool:
            reply = page.goto(f"{root.url}services/popcon/")
            return reply is not None and reply.status == 200 and "popcon" in page.title().lower()

        page.goto(f"{root.url}hub/login?next=/services/popcon/")
        log_in(page, root, "alice")
        page.wait_for_url(f"{root.url}services/popcon/**")
        wait_until(dashboard, 60, "popcon's dashboard at the root", step=1.0)
        page.goto(f"{child.url}hub/home")
        page.wait_for_url(f"{child.url}hub/home")
        assert "alice" in page.inner_text("body")
    finally:
        context.close()
