"""Fixtures of the protocol's tests: the recorder's files loaded by path, as they run in
site-packages, so that their copies of the vocabulary and their datagrams meet the collector's
side (``popcon.protocol``) in one process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from recorder_by_path import load_recorder, unload


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[SimpleNamespace]:
    """``.core``, ``.map``, ``.rare``, ``.hook``: fresh modules, in an environment that sets
    nothing of popcon's but a scratch cache directory."""
    for name in list(os.environ):
        if name.startswith(("POPCON_", "JUPYTER_IMAGE")) or name == "XDG_CACHE_HOME":
            monkeypatch.delenv(name)
    monkeypatch.setenv("POPCON_CACHE_DIR", str(tmp_path / "user-cache"))
    yield load_recorder()
    unload()
