"""A root hub and real child hubs, with Chromium where the redirects matter.

The tests of this module run in order and share their hubs and a browser context: alice
logs in once, at child A, and the later tests build on that session.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hubs import PASSWORD, PROBE_TOKEN, Hub, child_hub, running, services, wait_until
from playwright.sync_api import Browser, BrowserContext, Page
from playwright.sync_api import Error as PlaywrightError

NAVIGATION_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def children(
    root: Hub, registration_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Hub, Hub]]:
    folder = Path(tmp_path_factory.mktemp("children"))
    a = child_hub(folder / "a", "127.0.0.2", root, registration_token, refresh_age=2)
    b = child_hub(
        folder / "b",
        "127.0.0.3",
        root,
        registration_token,
        base_url="/b/",
        extra="c.RootHubAuthenticator.logout_from_root = True\n",
    )
    with running(a, b):
        for hub in (a, b):
            hub.wait_for_log(r"roothub: registered at ")
        yield a, b


@pytest.fixture(scope="module")
def alice(browser: Browser) -> Iterator[BrowserContext]:
    """The browser of alice, admin of the root and member of physics."""
    context = browser.new_context()
    context.set_default_timeout(NAVIGATION_TIMEOUT_MS)
    try:
        yield context
    finally:
        context.close()


def visited(page: Page) -> list[str]:
    """Every URL the page's main frame navigates to, from now on."""
    urls: list[str] = []
    page.on(
        "framenavigated", lambda frame: urls.append(frame.url) if frame == page.main_frame else None
    )
    return urls


def log_in_at_root(page: Page, root: Hub, username: str) -> None:
    assert page.url.startswith(f"{root.url}hub/login"), page.url
    page.fill("#username_input", username)
    page.fill("#password_input", PASSWORD)
    page.click("#login_submit")


def signed_in_as(page: Page, hub: Hub, username: str) -> None:
    try:
        page.wait_for_url(f"{hub.url}hub/home")
    except PlaywrightError:
        raise AssertionError(
            f"not at {hub.url}hub/home but at {page.url}:\n{page.inner_text('body')[:2000]}"
        ) from None
    assert username in page.inner_text("#login_widget, nav, body")


def user_at(hub: Hub, username: str) -> dict[str, object]:
    model: dict[str, object] = hub.api(f"users/{username}", PROBE_TOKEN)
    return model


def kept_secret(hub: Hub) -> dict[str, str]:
    kept: dict[str, str] = json.loads((hub.folder / "roothub-client.json").read_text())
    return kept


def test_child_registers_itself_with_only_the_token(
    root: Hub, registration_token: str, children: tuple[Hub, Hub]
) -> None:
    a, _ = children
    assert "client_secret" not in a.config()
    secret_file = a.folder / "roothub-client.json"
    assert secret_file.parent == (a.folder / "jupyterhub.sqlite").parent
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    kept = kept_secret(a)
    assert kept["redirect_uri"] == f"{a.url}hub/oauth_callback"
    registered = services(root, registration_token)[kept["name"]]
    assert registered["info"]["url"] == a.url
    assert registered["display"] is False


def test_login_goes_through_the_root_and_lands_on_the_child(
    root: Hub, children: tuple[Hub, Hub], alice: BrowserContext
) -> None:
    a, _ = children
    page = alice.new_page()
    urls = visited(page)
    page.goto(f"{a.url}hub/home")
    page.wait_for_url(f"{root.url}hub/login**")
    log_in_at_root(page, root, "alice")
    signed_in_as(page, a, "alice")
    at_root = [url for url in urls if url.startswith(root.url)]
    assert at_root, urls
    assert all(url.startswith(f"{root.url}hub/login") for url in at_root), at_root
    model = user_at(a, "alice")
    assert model["admin"] is True
    assert model["groups"] == ["physics"]
    page.close()


def test_a_member_who_is_no_admin_at_the_root_is_none_at_the_child(
    root: Hub, children: tuple[Hub, Hub], browser: Browser
) -> None:
    a, _ = children
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{a.url}hub/home")
        page.wait_for_url(f"{root.url}hub/login**")
        log_in_at_root(page, root, "bob")
        signed_in_as(page, a, "bob")
    finally:
        context.close()
    model = user_at(a, "bob")
    assert model["admin"] is False
    assert model["groups"] == ["physics"]


def test_second_child_logs_the_same_browser_in_without_a_password(
    root: Hub, children: tuple[Hub, Hub], alice: BrowserContext
) -> None:
    _, b = children
    page = alice.new_page()
    urls = visited(page)
    page.goto(f"{b.url}hub/home")
    signed_in_as(page, b, "alice")
    assert not [url for url in urls if url.startswith(f"{root.url}hub/login")], urls
    assert user_at(b, "alice")["admin"] is True
    page.close()


def test_a_user_outside_the_allowed_groups_is_refused_at_the_child(
    root: Hub, children: tuple[Hub, Hub], browser: Browser
) -> None:
    a, _ = children
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{a.url}hub/home")
        page.wait_for_url(f"{root.url}hub/login**")
        log_in_at_root(page, root, "carol")
        page.wait_for_url(f"{a.url}hub/oauth_callback**")
        text = page.inner_text("body")
    finally:
        context.close()
    assert "403" in text
    assert "may not use this hub" in text
    assert "physics" in text


def test_logging_out_of_the_root_logs_out_of_the_child(
    root: Hub, children: tuple[Hub, Hub], alice: BrowserContext
) -> None:
    a, _ = children
    page = alice.new_page()
    page.goto(f"{root.url}hub/logout")
    page.wait_for_url(f"{root.url}hub/login**")

    def asked_to_log_in() -> bool:
        page.goto(f"{a.url}hub/home")
        return page.url.startswith(f"{root.url}hub/login")

    wait_until(asked_to_log_in, 30, "child A to ask alice to log in again", step=1.0)
    page.close()


def test_a_restarted_child_reuses_its_secret(
    root: Hub, registration_token: str, children: tuple[Hub, Hub], alice: BrowserContext
) -> None:
    a, _ = children
    before = kept_secret(a)
    a.stop()
    a.start()
    a.wait_for_log(r"roothub: using the registration kept in ")
    assert "roothub: registered at" not in a.log()
    assert kept_secret(a) == before
    registered = [name for name in services(root, registration_token) if name == before["name"]]
    assert registered == [before["name"]]
    page = alice.new_page()
    page.goto(f"{a.url}hub/home")
    page.wait_for_url(f"{root.url}hub/login**")
    log_in_at_root(page, root, "alice")
    signed_in_as(page, a, "alice")
    page.close()


def test_a_child_that_lost_its_secret_registers_again(
    root: Hub, children: tuple[Hub, Hub], alice: BrowserContext
) -> None:
    a, _ = children
    before = kept_secret(a)
    a.stop()
    (a.folder / "roothub-client.json").unlink()
    a.start()
    a.wait_for_log(r"roothub: registered at .* \(replacing the earlier registration")
    after = kept_secret(a)
    assert after["name"] == before["name"]
    assert after["client_secret"] != before["client_secret"]
    page = alice.new_page()
    page.goto(f"{a.url}hub/home")
    signed_in_as(page, a, "alice")
    page.close()


def test_logging_out_of_a_child_can_log_out_of_the_root(
    root: Hub, children: tuple[Hub, Hub], alice: BrowserContext
) -> None:
    a, b = children
    page = alice.new_page()
    page.goto(f"{b.url}hub/home")
    signed_in_as(page, b, "alice")
    page.goto(f"{b.url}hub/logout")
    page.wait_for_url(f"{root.url}hub/login**")

    def asked_to_log_in() -> bool:
        page.goto(f"{a.url}hub/home")
        return page.url.startswith(f"{root.url}hub/login")

    wait_until(asked_to_log_in, 30, "child A to ask alice to log in again", step=1.0)
    log_in_at_root(page, root, "alice")
    signed_in_as(page, a, "alice")
    page.close()


def test_a_bad_registration_token_is_one_clear_line_then_recovery(
    root: Hub, registration_token: str, tmp_path: Path, browser: Browser
) -> None:
    c = child_hub(tmp_path / "c", "127.0.0.4", root, "not-the-registration-token")
    with running(c):
        c.wait_for_log(r"roothub: .*does not accept the registration token")
        lines = [line for line in c.log().splitlines() if "roothub:" in line]
        assert len(lines) == 1, lines
        assert "wrong, expired or revoked" in lines[0]
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(f"{c.url}hub/home")
            text = page.inner_text("body")
        finally:
            context.close()
        assert "not registered with its root hub" in text
    assert not (c.folder / "roothub-client.json").exists()
    c.env["ROOTHUB_REGISTRATION_TOKEN"] = registration_token
    with running(c):
        c.wait_for_log(r"roothub: registered at ")


def test_a_root_that_is_down_at_start_is_one_line_then_recovery(
    root: Hub,
    registration_token: str,
    children: tuple[Hub, Hub],
    alice: BrowserContext,
    browser: Browser,
    tmp_path: Path,
) -> None:
    a, _ = children
    d = child_hub(tmp_path / "d", "127.0.0.5", root, registration_token, retry_max=1.0)
    root.stop()
    try:
        with running(d):
            d.wait_for_log(r"roothub: the root hub at .* cannot be reached")
            # Signed-in users keep working; a new login is told why it cannot start.
            page = alice.new_page()
            page.goto(f"{a.url}hub/home")
            signed_in_as(page, a, "alice")
            page.close()
            context = browser.new_context()
            try:
                page = context.new_page()
                page.goto(f"{a.url}hub/home")
                assert "cannot be reached right now" in page.inner_text("body")
                page.goto(f"{d.url}hub/home")
                assert "not registered with its root hub" in page.inner_text("body")
            finally:
                context.close()
            root.start()
            attempts = d.wait_for_log(r"roothub: registration succeeded after (\d+) attempts")
            assert int(attempts.group(1)) >= 2
            lines = [line for line in d.log().splitlines() if "roothub:" in line]
            unreachable = [line for line in lines if "cannot be reached" in line]
            assert len(unreachable) == 1, lines
            page = alice.new_page()
            page.goto(f"{d.url}hub/home")
            if page.url.startswith(f"{root.url}hub/login"):
                log_in_at_root(page, root, "alice")
            signed_in_as(page, d, "alice")
            page.close()
    finally:
        if root.process is None:
            root.start()


def test_environment_is_clean_of_roothub_settings() -> None:
    assert not [key for key in os.environ if re.match(r"ROOTHUB_", key)]
