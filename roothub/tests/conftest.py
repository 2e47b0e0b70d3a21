"""Fixtures shared by the roothub tests: one root hub for the session, one Chromium."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from hubs import Hub, root_hub
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def registration_token() -> str:
    return secrets.token_hex(24)


@pytest.fixture(scope="session")
def root(tmp_path_factory: pytest.TempPathFactory, registration_token: str) -> Iterator[Hub]:
    hub = root_hub(Path(tmp_path_factory.mktemp("root")), registration_token)
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
