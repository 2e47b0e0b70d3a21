"""The real programs the faces' tests start: what they need installed (a failure under CI, a
skip elsewhere), Debian's Chromium for Playwright, the JupyterHub example, and programs run in
the background.

Every process is started on 127.0.0.1, with its output in a log file, and stopped by its own
process id (its process group, for the Hub and its children), bounded in time.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from repo import REPO_ROOT

HUB_EXAMPLE = REPO_ROOT / "examples" / "jupyterhub_config.py"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_program(name: str, install: str) -> str:
    """The path of a program the test needs. Missing: a failure under CI (which must install
    it), a skip on a developer's machine, with the command that installs it."""
    path = name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed ({install})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_module(name: str, install: str) -> Any:
    """The Python module a test needs, imported; missing, as :func:`require_program`."""
    try:
        return __import__(name)
    except ImportError:
        message = f"the Python package {name} is not installed ({install})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def free_tcp_port() -> int:
    """A loopback TCP port with nothing listening (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Background:
    """A program running in its own process group, output to ``log``; stopped by its id."""

    def __init__(
        self, args: Sequence[object], log: Path, env: Mapping[str, str], cwd: Path | None = None
    ) -> None:
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(a) for a in args],
            env=dict(env),
            cwd=str(cwd) if cwd else None,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM to the process (it stops its own children), then SIGKILL to its group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever is left of its group
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(5)
        self._out.close()
        return self.proc.returncode
