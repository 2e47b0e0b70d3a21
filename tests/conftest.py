"""Shared by every test folder: the repository's root, a configuration directory of the test run's
own, loggers put back after each test, and running ``popcon`` into a closed pipe. The helpers and
the fixtures of each kind of part live in ``tests/testlib`` (on ``sys.path`` through pytest's
``pythonpath``); the fixtures load as plugins."""

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from repo import REPO_ROOT

pytest_plugins = ["venv_fixtures", "collector_fixtures", "browser_fixtures"]

_CONFIG_HOME = tempfile.mkdtemp(prefix="popcon-tests-config-")


def pytest_configure(config: pytest.Config) -> None:
    """Every process the tests start, and the recorder loaded in this one, keep the per-user
    secret of people (``$XDG_CONFIG_HOME/popcon/secret``) in a directory of this run, never in
    the home of whoever runs the tests; tests of the secret's place set their own."""
    os.environ["XDG_CONFIG_HOME"] = _CONFIG_HOME


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_CONFIG_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(autouse=True)
def _loggers_put_back():
    """A ``popcon serve`` application initialized in-process points the popcon and tornado
    loggers at the test's captured stderr; later tests would log into that closed stream
    ("--- Logging error ---")."""
    loggers = [logging.getLogger(name) for name in ("popcon", "tornado")]
    saved = [(logger, logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    yield
    for logger, handlers, level, propagate in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.fixture
def popcon_into_closed_pipe():
    """``popcon_into_closed_pipe(*args, env=None)``: run ``python -m popcon ARGS`` with its
    output going to a pipe whose reader is already gone (``popcon ... | head -0``); returns the
    completed process, stderr captured."""

    def run(*args, env=None) -> subprocess.CompletedProcess:
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            return subprocess.run(
                [sys.executable, "-m", "popcon", *map(str, args)],
                env=env,
                stdout=write_end,
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            os.close(write_end)

    return run
