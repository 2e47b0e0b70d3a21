"""Fixtures of the recorder's fast tests: its four files loaded by path, fresh for each test, and
a builder of fake site directories.

These tests need pytest and the standard library only (not popcon's package), so that
scripts/recorder_pythons.sh can run them on every CPython from 3.9 to 3.13.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from recorder_by_path import recorder  # noqa: F401  (the fixture, offered to this folder)


class Site:
    """A fake site-packages directory: ``add`` writes a distribution's metadata and files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.installed = 0

    def add(
        self,
        name: str,
        version: str,
        files: dict[str, str],
        *,
        record: bool = True,
        top_level: list[str] | None = None,
    ) -> Path:
        """``<name>-<version>.dist-info`` with METADATA, a RECORD of ``files`` (unless
        ``record`` is false) and ``top_level.txt`` if given; each later ``add`` counts as
        installed later (the dist-info's modification time)."""
        for relative, text in files.items():
            target = self.path / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        info = self.path / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        if record:
            lines = [f"{relative},," for relative in files]
            lines.append(f"{info.name}/METADATA,,")
            (info / "RECORD").write_text("\n".join(lines) + "\n")
        if top_level is not None:
            (info / "top_level.txt").write_text("\n".join(top_level) + "\n")
        self.installed += 1
        stamp = 1_700_000_000 + self.installed
        os.utime(info, (stamp, stamp))
        return info


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path / "site-packages")
