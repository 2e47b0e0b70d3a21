"""Fixtures for the recorder tests: real virtual environments with real PyPI packages, popcon
enabled in them with the real CLI, and a UDP listener on loopback.

Helpers that are plain functions (the datagram parser, the venv and wheel builders) live in
``recorder_testlib.py`` beside this file.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from recorder_testlib import (
    UdpListener,
    Venv,
    cached_venv,
    clean_environ,
    create_venv,
    popcon_cli,
    run,
)

# Real packages whose module names differ from their distribution names, share a namespace
# package, are single files or compiled single-file extensions, and a Jupyter kernel.
WORKLOAD_REQUIREMENTS = (
    "pandas",
    "requests",
    "scikit-learn",
    "beautifulsoup4",
    "PyYAML",
    "Pillow",
    "protobuf",
    "googleapis-common-protos",
    "ipykernel",
    "jupyterhub",  # jupyterhub-singleuser: a Hub's single-user server, run in this venv
    "jupyter_server",
    "pytest",  # a console script (`pytest`) and `python -m pytest` over a user's tests
    "six",  # a single-file module (six.py)
    "typing_extensions",  # a single-file module whose name needs PEP 503 normalising
    "ujson",  # a compiled single-file extension (ujson.cpython-*.so)
    "cffi",  # ships the top-level compiled _cffi_backend beside its package
)


@pytest.fixture(scope="session")
def workload_venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """The shared venv with real packages, recording enabled by ``popcon enable``.

    Built once and cached across sessions; the recorder copy and the map are refreshed at every
    session start (disable, then enable). Tests must not change what is installed in it.
    """
    venv = cached_venv("workload", WORKLOAD_REQUIREMENTS)
    home = tmp_path_factory.mktemp("enable-home")
    env = clean_environ(home)
    for command in ("disable", "enable"):
        result = popcon_cli(command, "--python", venv.python, env=env)
        assert result.returncode == 0, f"popcon {command}: {result.stdout}{result.stderr}"
    return venv


@pytest.fixture(scope="session")
def workload_versions(workload_venv: Venv) -> dict:
    return workload_venv.metadata_versions()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def listener() -> Iterator[UdpListener]:
    udp = UdpListener()
    yield udp
    udp.close()


@pytest.fixture
def recorder_env(home: Path, listener: UdpListener):
    """``recorder_env(**overrides)``: a clean environment sending to the listener."""

    def make(**overrides: str | None) -> dict:
        overrides.setdefault("POPCON_COLLECTOR", listener.url)
        overrides.setdefault("POPCON_INVENTORY_INTERVAL", "0")
        return clean_environ(home, **overrides)

    return make


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty directory where user scripts live and run."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def run_script(workdir: Path):
    """``run_script(venv, code, env, *args, name="main.py")``: write a user script and run it
    with the venv's interpreter, in ``workdir``."""

    def runner(venv: Venv, code: str, env: dict, *args, name: str = "main.py", timeout=180):
        script = workdir / name
        script.write_text(textwrap.dedent(code))
        return run([venv.python, script, *args], env=env, cwd=workdir, timeout=timeout)

    return runner


@pytest.fixture
def new_venv(tmp_path: Path, home: Path):
    """``new_venv(name, enable=True, **kw)``: a small throwaway venv (no pip of its own)."""

    def make(name: str = "venv", *, enable: bool = True, **kwargs) -> Venv:
        venv = create_venv(tmp_path / name, **kwargs)
        if enable:
            result = popcon_cli("enable", "--python", venv.python, env=clean_environ(home))
            assert result.returncode == 0, result.stdout + result.stderr
        return venv

    return make


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    path = tmp_path / "wheels"
    path.mkdir()
    return path
