"""statsd lines (``POPCON_COLLECTOR=statsd://``), and what the core learns when the hook attaches
it: the standard library's names, read from its directories on Python 3.9."""

from __future__ import annotations

import atexit
import importlib.util
import os
import sys
from types import SimpleNamespace

import pytest

RECORDS = [
    ("jupyterhub", "5.2.1", "prog", "env", ""),
    ("jupyterhub", "5.2.1", "program", "env", ""),
    ("pandas", "2.2.0", "direct", "env", ""),
    ("numpy", "1.26.4", "transitive", "env", "pandas"),
    ("numpy", "1.26.4", "upgrade", "env", ""),
    ("jupyterhub", "5.2.1", "claimed", "env", ""),
]


def test_statsd_lines_with_the_default_prefix(recorder) -> None:
    assert recorder.rare.DEFAULT_STATSD_PREFIX == "python_popcon"
    assert recorder.rare.statsd_datagrams(RECORDS, True) == [
        b"python_popcon.library_used.jupyterhub:1|c\n"
        b"python_popcon.library_used.pandas:1|c\n"
        b"python_popcon.library_used.numpy:1|c\n"
        b"python_popcon.reports:1|c\n"
    ]
    # a program is no library, and an upgrade or a claim is no new use
    assert recorder.rare.statsd_datagrams(RECORDS[:1] + RECORDS[4:], False) == []


@pytest.mark.parametrize(
    ("setting", "prefix"),
    [
        ("site.hub1", "site.hub1"),
        (" .site.hub-1_a. ", "site.hub-1_a"),
        ("", "python_popcon"),
        ("...", "python_popcon"),
        ("has space", "python_popcon"),
        ("semi;colon", "python_popcon"),
        ("p" * 100, "p" * 100),
        ("p" * 101, "python_popcon"),
    ],
)
def test_statsd_prefix_rules(recorder, monkeypatch, setting: str, prefix: str) -> None:
    assert recorder.rare.statsd_prefix(setting) == prefix
    monkeypatch.setenv("POPCON_STATSD_PREFIX", setting)
    (datagram,) = recorder.rare.statsd_datagrams(RECORDS[2:3], False)
    assert datagram == f"{prefix}.library_used.pandas:1|c\n".encode()


def test_statsd_lines_are_split_into_datagrams(recorder) -> None:
    records = [(f"distribution-{i:04d}", "1.0", "direct", "env", "") for i in range(300)]
    datagrams = recorder.rare.statsd_datagrams(records, True)
    assert len(datagrams) > 1
    assert all(len(d) <= recorder.core.MAX_DATAGRAM for d in datagrams)
    lines = b"".join(datagrams).decode().splitlines()
    assert lines[0] == "python_popcon.library_used.distribution-0000:1|c"
    assert lines[-1] == "python_popcon.reports:1|c"
    assert len(lines) == 301


def test_the_standard_library_s_names_before_3_10(recorder) -> None:
    names = recorder.rare.standard_library_names_before_3_10()
    assert {"os", "json", "asyncio", "encodings", "sys", "_frozen_importlib", "_json"} <= names
    assert not {"site-packages", "pip", "setuptools", "popcon"} & names
    if hasattr(sys, "stdlib_module_names"):
        # what 3.10+ lists and the directories lack cannot be imported here (other systems')
        missing = sys.stdlib_module_names - names
        assert [m for m in sorted(missing) if importlib.util.find_spec(m) is not None] == []


def _fake_hook(**names):
    return SimpleNamespace(settled=set(), __name__="sitecustomize", **names)


@pytest.fixture
def attached(recorder, monkeypatch):
    """The core attached to a fake hook, its exit and fork duties not registered."""
    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    monkeypatch.setattr(os, "register_at_fork", lambda **kwargs: registered.append(kwargs))
    hook = _fake_hook()

    def attach(*, before_3_10: bool):
        if before_3_10:
            monkeypatch.delattr(sys, "stdlib_module_names", raising=False)
        recorder.core.attach(hook)
        return hook, registered

    return attach


def test_on_python_3_9_the_core_settles_standard_library_imports(recorder, attached) -> None:
    hook, registered = attached(before_3_10=True)
    assert len(registered) == 2 and callable(registered[0])
    assert recorder.core.on_import("json", "json") is False
    assert recorder.core.on_import("xml.dom", "xml") is False
    assert {"json", "xml"} <= hook.settled


def test_attach_shares_the_hook_s_settled_names_once(recorder, attached) -> None:
    hook, registered = attached(before_3_10=False)
    second = _fake_hook()
    recorder.core.attach(second)  # a second hook in the same process stands aside
    assert len(registered) == 2
    assert recorder.core.on_import("json", "json") is False
    assert "json" in hook.settled and not second.settled
