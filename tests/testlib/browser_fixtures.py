"""Fixtures of the faces' tests (dashboard, JupyterHub service, Prometheus and Grafana).

They build on the other folders' helpers instead of copying them: ``apptestlib`` (tests/server:
a real ``popcon serve`` process, datagrams written from the protocol) and ``recorder_testlib``
(tests/recorder: cached virtual environments with real PyPI packages, ``popcon enable``).
The workload environment is the recorder tests' own (same requirements, same cache), so a CI
run installs it once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from facestestlib import (
    CHROMIUM,
    CHROMIUM_ARGS,
    artifact,
    require_module,
    require_program,
)


@pytest.fixture(scope="session")
def enabled_workload_venv(tmp_path_factory: pytest.TempPathFactory):
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
def chromium() -> Iterator:
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
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can tell a failure."""
    report = yield
    setattr(item, "report_" + report.when, report)
    return report


@pytest.fixture
def page(chromium, request) -> Iterator:
    """A fresh browser context and page; console errors are collected in ``page.errors``.
    When the test fails, the page as it was is kept in ``test-artifacts/failed-<test>.png``."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on(
        "console",
        lambda message: page.errors.append(message.text) if message.type == "error" else None,
    )
    page.set_default_timeout(15_000)
    try:
        yield page
        failed = getattr(request.node, "report_call", None)
        if failed is not None and failed.failed:
            name = re.sub(r"[^\w.-]+", "-", request.node.name)
            page.screenshot(path=str(artifact(f"failed-{name}.png")), full_page=True)
            print(f"page at failure: {page.url}\nerrors: {page.errors}")
    finally:
        context.close()
