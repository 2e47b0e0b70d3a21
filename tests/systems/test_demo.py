"""``popcon demo --exit`` says what is true: what it installs (with pip's progress), where the
dashboard is, what it keeps (its venv, recording enabled there; a ``--db`` given) and what it
removes (its temporary database), run twice for real with PyPI's packages."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from collectors import subprocess_env

pytestmark = pytest.mark.slow


def _demo(cache: Path, *args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "popcon", "demo", "--exit", "--cache", str(cache), *args],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def _said(lines: list[str], pattern: str) -> re.Match[str]:
    for line in lines:
        found = re.fullmatch("popcon demo: " + pattern, line)
        if found:
            return found
    raise AssertionError(f"no line like {pattern!r} in:\n" + "\n".join(lines))


def test_the_demo_says_what_it_keeps_and_what_it_removes(tmp_path):
    cache = tmp_path / "cache"
    first = _demo(cache)
    venv = cache / "demo-venv"
    _said(first, re.escape(f"creating a virtual environment in {venv} (kept for the next run)"))
    _said(first, r"installing .* from PyPI into it \(about half a minute, the first time only\)")
    _said(first, r"pip: Collecting pandas.*")
    _said(first, r"pip: Successfully installed .*pandas.*")
    database = Path(
        _said(first, r"its database: (\S+) \(removed at the end; --db PATH keeps one\)")[1]
    )
    url = _said(first, r"open the dashboard in a browser: (http://127\.0\.0\.1:\d+/)")[1]
    _said(first, re.escape(f"(the API is under {url}api/v1/, the metrics at {url}metrics)"))
    _said(
        first,
        re.escape(
            f"recording stays enabled in {venv}, for the next run (undo: popcon disable "
            f"--python {venv / 'bin' / 'python'}, or remove the directory)"
        ),
    )
    assert first[-1] == "popcon demo: stopped the collector and removed its temporary database"
    assert not database.exists()
    table = first[first.index("") + 1 :]
    pandas = next(line.split() for line in table if line.startswith("pandas "))
    assert pandas[1:4] == ["1", "7", "7"]  # one person, 7 processes, all direct
    status = subprocess.run(
        [sys.executable, "-m", "popcon", "status", "--python", str(venv / "bin" / "python")],
        capture_output=True, text=True, env=subprocess_env(), timeout=120, check=False,
    )  # fmt: skip
    assert "recording:  enabled" in status.stdout  # as the demo said

    kept = tmp_path / "kept.sqlite"
    second = _demo(cache, "--db", str(kept))
    assert not any(line.startswith("popcon demo: pip: ") for line in second)  # venv reused
    _said(second, re.escape(f"its database: {kept} (kept)"))
    assert second[-1] == "popcon demo: stopped the collector"
    assert kept.is_file()
