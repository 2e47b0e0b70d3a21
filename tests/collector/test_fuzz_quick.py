"""The decoder fuzzer's short pass (the full million-input run: ``python fuzz/fuzz_decode.py``),
and the hostile-input scripts' generators (their short modes against a real collector are
``tests/systems/test_hostile.py``)."""

from __future__ import annotations

import importlib
import importlib.util
import random
import re
from pathlib import Path

import pytest


def _load_fuzzer(repo_root: Path):
    spec = importlib.util.spec_from_file_location(
        "popcon_fuzz_decode", repo_root / "fuzz" / "fuzz_decode.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_short_fuzz_pass_raises_nothing_and_reaches_every_part(repo_root: Path) -> None:
    fuzzer = _load_fuzzer(repo_root)
    run = fuzzer.fuzz(6_000, progress=False)
    assert run.inputs >= 6_000
    # The pass is only worth something if it reaches deep: accepted datagrams and many reasons.
    assert run.results["ok"] > 600
    assert len(run.results) >= 10


def test_the_generator_is_reproducible_from_its_seed(repo_root: Path) -> None:
    fuzzer = _load_fuzzer(repo_root)
    assert fuzzer.engine(7, 50) == fuzzer.engine(7, 50)
    assert fuzzer.engine(7, 50) != fuzzer.engine(8, 50)


def _load_hostile_script(repo_root: Path, name: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(repo_root / "fuzz"))
    return importlib.import_module(name)


def test_the_parameter_fuzzer_is_reproducible_and_reaches_every_route_and_parameter(
    repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = _load_hostile_script(repo_root, "params", monkeypatch)
    first, again, other = random.Random(3), random.Random(3), random.Random(4)
    drawn = [params.request(first) for _ in range(20)]
    assert drawn == [params.request(again) for _ in range(20)]
    assert drawn != [params.request(other) for _ in range(20)]
    rng = random.Random(11)
    requests = [params.request(rng) for _ in range(400)]  # what the short mode sends
    routes = {path.partition("?")[0] for _, path, _, _ in requests}
    for route in params.ROUTES:
        assert any(re.fullmatch(re.escape(route).replace(r"\{name\}", ".+"), r) for r in routes)
    names = {part.partition("=")[0] for _, path, _, _ in requests for part in path.split("&")}
    assert all(any(name in got for got in names) for name in params.EDGES)
    assert {how for *_, how in requests} == {"header", "query", "none", "known"}


def test_each_flood_sends_unique_values(repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every datagram of a flood differs, but in ``twice``, which sends each one twice."""
    floods = _load_hostile_script(repo_root, "floods", monkeypatch)
    for mode, make in floods.MAKERS.items():
        datagrams = [make(i) for i in range(50)]
        copies = 2 if mode == "twice" else 1
        assert len(set(datagrams)) == 50 // copies, mode
        assert all(datagrams.count(data) == copies for data in datagrams), mode
        assert all(len(data) <= 1400 for data in datagrams), mode
