"""``roothub register | unregister | list`` against a real root hub, and a child hub that
runs on the configuration ``roothub register`` printed (no registration token of its own)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from hubs import PASSWORD, Hub, child_hub, root_hub, root_settings, running
from playwright.sync_api import Browser

ROOTHUB = str(Path(sys.executable).with_name("roothub"))


def roothub(root: Hub, token: str | None, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ROOTHUB_")}
    if token is not None:
        env["ROOTHUB_REGISTRATION_TOKEN"] = token
    env["ROOTHUB_URL"] = root.url
    return subprocess.run(
        [ROOTHUB, *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_register_list_unregister(root: Hub, registration_token: str) -> None:
    child_url = "http://pipeline.example.org/"
    registered = roothub(root, registration_token, "register", "--child-url", child_url)
    assert registered.returncode == 0, registered.stderr
    assert "c.RootHubAuthenticator.client_id = 'service-pipeline.example.org'" in (
        registered.stdout
    )
    assert "c.RootHubAuthenticator.client_secret = '" in registered.stdout

    listed = roothub(root, registration_token, "list")
    assert f"pipeline.example.org\t{child_url}\n" in listed.stdout

    again = roothub(root, registration_token, "register", "--child-url", child_url)
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1
    assert "already registered" in again.stderr

    replaced = roothub(
        root,
        registration_token,
        "register",
        "--child-url",
        child_url,
        "--replace",
        "--format",
        "env",
    )
    assert replaced.returncode == 0, replaced.stderr
    assert "OAUTH_CLIENT_SECRET=" in replaced.stdout
    assert replaced.stdout.split("OAUTH_CLIENT_SECRET=")[1] not in registered.stdout

    gone = roothub(root, registration_token, "unregister", "pipeline.example.org")
    assert gone.returncode == 0, gone.stderr
    assert "pipeline.example.org" not in roothub(root, registration_token, "list").stdout
    twice = roothub(root, registration_token, "unregister", "pipeline.example.org")
    assert twice.returncode == 1
    assert "is not registered" in twice.stderr


def test_bad_or_missing_token_is_one_clear_line(root: Hub) -> None:
    bad = roothub(root, "not-a-token", "list")
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1
    assert "does not accept the registration token" in bad.stderr
    missing = roothub(root, None, "list")
    assert missing.returncode == 2
    assert "ROOTHUB_REGISTRATION_TOKEN" in missing.stderr


def test_a_child_runs_on_the_printed_configuration(
    root: Hub, registration_token: str, tmp_path: Path, browser: Browser
) -> None:
    child = child_hub(tmp_path / "e", "127.0.0.6", root, "")
    printed = roothub(root, registration_token, "register", "--child-url", child.url)
    assert printed.returncode == 0, printed.stderr
    child.settings += printed.stdout
    try:
        with running(child):
            context = browser.new_context()
            try:
                page = context.new_page()
                page.goto(f"{child.url}hub/home")
                page.wait_for_url(f"{root.url}hub/login**")
                page.fill("#username_input", "alice")
                page.fill("#password_input", PASSWORD)
                page.click("#login_submit")
                page.wait_for_url(f"{child.url}hub/home")
            finally:
                context.close()
            assert "roothub: registered" not in child.log()
    finally:
        name = "127.0.0.6-" + str(child.port)
        assert roothub(root, registration_token, "unregister", name).returncode == 0


def test_a_token_removed_from_the_root_configuration_is_revoked(tmp_path: Path) -> None:
    old, current = secrets.token_hex(24), secrets.token_hex(24)
    root = root_hub(tmp_path / "root", old, current)
    with running(root):
        assert roothub(root, old, "list").returncode == 0
    root.settings = root_settings(current, children=["allowed.example.org"])
    with running(root):
        revoked = roothub(root, old, "list")
        assert revoked.returncode == 1
        assert "does not accept the registration token" in revoked.stderr
        allowed = roothub(root, current, "register", "--child-url", "https://allowed.example.org/")
        assert allowed.returncode == 0, allowed.stderr
        other = roothub(root, current, "register", "--child-url", "https://other.example.org/")
        assert other.returncode == 1
        assert other.stderr.count("\n") == 1
        assert "may not register other.example.org" in other.stderr
        assert "admin:services!service=other.example.org" in other.stderr


def test_a_child_does_not_take_the_name_of_another(
    root: Hub, registration_token: str, tmp_path: Path
) -> None:
    taken = roothub(
        root,
        registration_token,
        "register",
        "--child-url",
        "https://elsewhere.example.org/",
        "--name",
        "taken",
    )
    assert taken.returncode == 0, taken.stderr
    child = child_hub(
        tmp_path / "f",
        "127.0.0.7",
        root,
        registration_token,
        extra="c.RootHubAuthenticator.child_name = 'taken'\n",
    )
    try:
        with running(child):
            child.wait_for_log(r"roothub: taken is registered at .* for https://elsewhere")
            lines = [line for line in child.log().splitlines() if "roothub:" in line]
            assert len(lines) == 1, lines
            assert "give this hub another name" in lines[0]
        listed = roothub(root, registration_token, "list")
        assert "taken\thttps://elsewhere.example.org/\n" in listed.stdout
        moved = roothub(
            root,
            registration_token,
            "register",
            "--child-url",
            child.url,
            "--name",
            "taken",
            "--replace",
        )
        assert moved.returncode == 0, moved.stderr
        assert f"taken\t{child.url}\n" in roothub(root, registration_token, "list").stdout
    finally:
        assert roothub(root, registration_token, "unregister", "taken").returncode == 0
