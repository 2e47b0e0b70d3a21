"""The recorder's files loaded by path, as ``popcon enable`` installs them, in this process.

``load_recorder()`` executes ``src/popcon/recorder/{core,map,rare,hook}.py`` under the names
their copies have in site-packages (``_popcon_recorder``, ``_popcon_recorder_map``,
``_popcon_recorder_rare``), so the core finds its siblings the way it does in a user's process,
without popcon's package. The hook is loaded under a name of its own (``_popcon_hook`` or
``sitecustomize`` would start it and watch this process's imports). Every call gives fresh
modules; ``unload()`` takes them out of ``sys.modules`` again. The ``recorder`` fixture does
both around a test; a folder's conftest imports it to offer it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

RECORDER_DIR = Path(__file__).resolve().parents[2] / "src" / "popcon" / "recorder"

#: source file -> the module name it is loaded under here
NAMES = {
    "core.py": "_popcon_recorder",
    "map.py": "_popcon_recorder_map",
    "rare.py": "_popcon_recorder_rare",
    "hook.py": "_popcon_hook_by_path",
}


def _load(source: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, RECORDER_DIR / source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def unload() -> None:
    for name in NAMES.values():
        sys.modules.pop(name, None)


def load_recorder() -> SimpleNamespace:
    """Fresh copies of the four recorder modules: ``.core``, ``.map``, ``.rare``, ``.hook``."""
    unload()
    loaded = {source[:-3]: _load(source, name) for source, name in NAMES.items()}
    return SimpleNamespace(**loaded)


def previewed(path: Path) -> list[bytes]:
    """The datagrams of a ``POPCON_PREVIEW`` file, each length-prefixed (read here, without
    popcon's package, which the recorder's tests on older Pythons do not have)."""
    data = path.read_bytes()
    datagrams = []
    while data:
        size, _, data = data.partition(b"\n")
        datagrams.append(data[: int(size)])
        data = data[int(size) :]
    return datagrams


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[SimpleNamespace]:
    """``.core``, ``.map``, ``.rare``, ``.hook``: fresh modules, with an environment that points
    the user's cache at a scratch directory and sets nothing else of popcon's."""
    for name in list(os.environ):
        if name.startswith(("POPCON_", "JUPYTER_IMAGE")) or name == "XDG_CACHE_HOME":
            monkeypatch.delenv(name)
    monkeypatch.setenv("POPCON_CACHE_DIR", str(tmp_path / "user-cache"))
    yield load_recorder()
    unload()
