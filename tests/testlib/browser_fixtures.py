"""Fixtures of the faces' tests that drive real programs: the workload venv with popcon
enabled, and pages of Debian's Chromium driven by Playwright.

They build on the helpers of ``faces`` (Chromium, what a test needs installed) and of
``recorder_testlib`` (cached virtual environments with real PyPI packages, ``popcon enable``).
The workload environment is the recorder tests' own (same requirements, same cache), so a CI
run installs it once.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING

import pytest
from faces import CHROMIUM, CHROMIUM_ARGS, require_module, require_program
from repo import artifact

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page
    from recorder_testlib import Venv


@pytest.fixture(scope="session")
def enabled_workload_venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """The shared workload venv (pandas, requests, PyYAML, beautifulsoup4, ipykernel, ...),
    recording enabled by the real ``popcon enable``."""
    from recorder_testlib import cached_venv, clean_environ, popcon_cli
    from venv_fixtures import WORKLOAD_REQUIREMENTS

    venv = cached_venv("workload", WORKLOAD_REQUIREMENTS)
    home = tmp_path_factory.mktemp("faces-enable-home")
    result = popcon_cli("enable", "--python", venv.python, env=clean_environ(home))
    assert result.returncode == 0, result.stdout + result.stderr
    return venv


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's Chromium driven by Playwright (never ``playwright install``).

    Module-scoped on purpose: while Playwright's sync API runs, its event loop counts as
    running in this thread, and ``asyncio.run()`` in later tests (other folders) would fail."""
    require_program(CHROMIUM, "apt-get install -y chromium")
    require_module("playwright", "pip install playwright")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test item, so fixtures can tell a failure."""
    report = yield
    setattr(item, "report_" + report.when, report)
    return report


@pytest.fixture
def page(chromium: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context and page; console errors are collected in ``page.errors``.
    When the test fails, the page as it was is kept in ``test-artifacts/failed-<test>.png``."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.errors = errors  # type: ignore[attr-defined]  # the tests read them off the page
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    page.set_default_timeout(15_000)
    try:
        yield page
        failed = getattr(request.node, "report_call", None)
        if failed is not None and failed.failed:
            name = re.sub(r"[^\w.-]+", "-", request.node.name)
            page.screenshot(path=str(artifact(f"failed-{name}.png")), full_page=True)
            print(f"page at failure: {page.url}\nerrors: {errors}")
    finally:
        context.close()
