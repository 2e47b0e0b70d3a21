"""Shared by every test folder: the repository's root, and loggers put back after each test."""

import logging
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


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
