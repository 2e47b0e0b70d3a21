"""Where the tests find the repository: its root, its sources, and ``test-artifacts/``."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SRC = REPO_ROOT / "src"
ARTIFACTS = REPO_ROOT / "test-artifacts"


def artifact(name: str) -> Path:
    """Where a test keeps something to look at afterwards (``test-artifacts/``, gitignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
