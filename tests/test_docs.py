"""Documentation that cannot drift: every recorder setting and CLI command is documented."""

import re
from pathlib import Path

from popcon.cli import SERVER_COMMANDS, _parser

SOURCES = [
    "recorder/core.py",
    "recorder/hook.py",
    "recorder/map.py",
    "recorder/rare.py",
    "admin/preview.py",
    "admin/enable.py",
]


def _settings_table(doc: str) -> set:
    return set(re.findall(r"^\| `(POPCON_[A-Z_]+)` \|", doc, flags=re.MULTILINE))


def test_every_recorder_variable_is_in_the_one_table(repo_root: Path) -> None:
    used = set()
    for name in SOURCES:
        used |= set(re.findall(r"POPCON_[A-Z_]+", (repo_root / "src/popcon" / name).read_text()))
    documented = _settings_table((repo_root / "docs/recording.md").read_text())
    assert used, "the scan found no variable at all"
    assert used <= documented, f"undocumented: {sorted(used - documented)}"


def test_every_documented_variable_is_used(repo_root: Path) -> None:
    used = set()
    for name in SOURCES:
        used |= set(re.findall(r"POPCON_[A-Z_]+", (repo_root / "src/popcon" / name).read_text()))
    documented = _settings_table((repo_root / "docs/recording.md").read_text())
    assert documented <= used, f"documented but unused: {sorted(documented - used)}"


def test_readme_names_every_recorder_command(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text() + (repo_root / "docs/recording.md").read_text()
    commands = set(_parser()._subparsers._group_actions[0].choices) - set(SERVER_COMMANDS)
    assert commands == {"enable", "disable", "status", "preview", "check", "completion"}
    for command in commands:
        assert f"popcon {command}" in readme, command


def test_readme_test_command_is_what_ci_runs(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    assert "bash .ci/run" in readme
    ci = (repo_root / ".ci/run").read_text()
    assert ".venv/bin/python -m pytest" in ci
