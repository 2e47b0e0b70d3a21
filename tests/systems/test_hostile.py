"""The hostile-input suite's short modes (``fuzz/floods.py``, ``params.py``, ``connections.py``,
``writers.py``, ``csv_cells.py`` with ``--quick``), each against a real ``popcon serve``: every
verdict they print must be PASS. Their full modes, for the figures, run without ``--quick``."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def fuzz(repo_root: Path, monkeypatch: pytest.MonkeyPatch):
    """``fuzz("floods")``: that script of ``fuzz/`` as a module (they import ``hostile``,
    their sibling)."""
    monkeypatch.syspath_prepend(str(repo_root / "fuzz"))
    return lambda name: importlib.import_module(name)


def failed(checks) -> list[str]:
    return [f"{checks.name}: {name}" for name in checks.failed]


@pytest.mark.parametrize("mode", ["versions", "importers"])
def test_a_flood_of_unique_values_is_bounded_and_real_data_still_counts(fuzz, tmp_path, mode):
    floods: ModuleType = fuzz("floods")
    assert failed(floods.flood(mode, quick=True, directory=tmp_path)) == []


@pytest.mark.parametrize("mode", ["labels", "names", "twice"])
def test_a_flood_of_unique_names_is_bounded_and_real_names_still_count(fuzz, tmp_path, mode):
    floods: ModuleType = fuzz("floods")
    assert failed(floods.flood(mode, quick=True, directory=tmp_path)) == []


def test_no_parameter_of_any_route_gives_a_5xx_or_logs_the_token(fuzz):
    assert failed(fuzz("params").fuzz(400)) == []


def test_idle_connections_beyond_the_descriptor_limit_lock_nothing_out(fuzz):
    assert failed(fuzz("connections").idle(300, 256, 2.0)) == []


def test_a_second_collector_on_one_database_refuses_to_start(fuzz, tmp_path):
    assert failed(fuzz("writers").two_collectors(tmp_path)) == []


def test_a_full_disk_ends_with_an_honest_last_line_and_an_intact_database(fuzz, tmp_path):
    assert failed(fuzz("writers").full_disk(tmp_path, quick=True)) == []


def test_sigkill_mid_flood_loses_at_most_a_moment_and_keeps_the_database_intact(fuzz, tmp_path):
    assert failed(fuzz("writers").sigkill(tmp_path, quick=True)) == []


def test_csv_exports_neutralise_formulas_in_stored_data(fuzz, tmp_path):
    assert failed(fuzz("csv_cells").formulas(tmp_path)) == []
