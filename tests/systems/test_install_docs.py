"""The install commands of docs/install.md work as written: each block marked runnable runs,
line by line, in bash in a fresh virtual environment beside a copy of this checkout, and each
command prints what the block shows after it. The README's install lines are among them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from repo import REPO_ROOT

pytestmark = pytest.mark.slow

INSTALL = REPO_ROOT / "docs" / "install.md"
_BLOCK = re.compile(r"<!-- runnable[^>]*-->\n```console\n(.*?)```", re.DOTALL)


def runnable_blocks() -> list[list[tuple[str, list[str]]]]:
    """Each runnable block: its commands, each with the output lines shown after it."""
    blocks = []
    for text in _BLOCK.findall(INSTALL.read_text(encoding="utf-8")):
        commands: list[tuple[str, list[str]]] = []
        for line in text.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            else:
                commands[-1][1].append(line)
        blocks.append(commands)
    return blocks


def _checkout_copy(directory: Path) -> Path:
    """What a clone holds of what a build needs: the project file, the README, the sources."""
    copy = directory / "popcon"
    copy.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, copy / name)
    shutil.copytree(
        REPO_ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return copy


def test_there_are_runnable_blocks_for_a_checkout_and_a_wheel():
    commands = [command for block in runnable_blocks() for command, _out in block]
    assert "python -m pip install ./popcon              # the recorder and its CLI" in commands
    assert any(command.startswith("python -m pip wheel") for command in commands)


@pytest.mark.parametrize("number", range(len(runnable_blocks())), ids=["checkout", "wheel"])
def test_a_runnable_block_works_as_written(tmp_path, number):
    block = runnable_blocks()[number]
    _checkout_copy(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME") and not key.startswith("PIP_")
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    cwd = tmp_path
    for command, shown in block:
        if command.startswith("cd "):
            cwd = cwd / command[3:].strip()
            continue
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert result.returncode == 0, f"$ {command}\n{result.stdout}\n{result.stderr}"
        if shown:
            assert result.stdout.splitlines() == shown, command
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import tornado, traitlets, prometheus_client"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert version.returncode == 0, version.stderr  # the server extra came along


def test_the_readme_installs_as_install_md_does():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    documented = {
        " ".join(command.split("#")[0].split()) for b in runnable_blocks() for command, _ in b
    }
    lines = [
        line[2:]
        for line in readme.splitlines()
        if line.startswith("$ ") and "pip install" in line.split("#")[0]
    ]
    assert lines
    for line in lines:
        assert " ".join(line.split("#")[0].split()) in documented, line
