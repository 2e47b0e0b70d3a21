"""The decoder fuzzer's short pass (the full million-input run: ``python fuzz/fuzz_decode.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


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
