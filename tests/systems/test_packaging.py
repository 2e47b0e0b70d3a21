"""The bare install: ``pip install popcon`` brings the recorder and its CLI and nothing else."""

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory, repo_root: Path) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(repo_root)],
        check=True,
    )
    (built,) = out.glob("popcon-*.whl")
    return built


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory, wheel: Path) -> Path:
    """A fresh virtual environment holding popcon and nothing but what venv itself puts in."""
    directory = tmp_path_factory.mktemp("bare") / "venv"
    venv.create(directory, with_pip=True)
    python = directory / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)],
        check=True,
    )
    return directory


def _installed(python: Path) -> set:
    listing = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {entry["name"].lower() for entry in json.loads(listing)}


def test_wheel_declares_no_dependencies(wheel: Path) -> None:
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    requirements = [line for line in text.splitlines() if line.startswith("Requires-Dist:")]
    assert requirements, "the server and test extras should be declared"
    assert all("extra ==" in line for line in requirements), requirements


def test_bare_install_records_and_previews(bare_venv: Path) -> None:
    python = bare_venv / "bin" / "python"
    popcon = bare_venv / "bin" / "popcon"
    assert _installed(python) <= {"pip", "setuptools", "popcon"}

    enabled = subprocess.run([str(popcon), "enable"], capture_output=True, text=True)
    assert enabled.returncode == 0, enabled.stderr
    status = json.loads(
        subprocess.run(
            [str(popcon), "status", "--json"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert status["enabled"] and status["maps"][0]["state"] == "fresh"

    # pip is the one third-party distribution a bare venv has: importing it is a direct use.
    preview = subprocess.run(
        [str(popcon), "preview", "--json", "--", str(python), "-c", "import pip"],
        capture_output=True,
        text=True,
        check=True,
    )
    libraries = {entry["name"]: entry for entry in json.loads(preview.stdout)["libraries"]}
    assert libraries["pip"]["level"] == "direct"
    assert "popcon" not in libraries


def test_bare_install_imports_only_the_standard_library(bare_venv: Path) -> None:
    python = bare_venv / "bin" / "python"
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import popcon.cli, popcon.admin.enable, popcon.admin.preview, popcon.recorder.core, "
        "popcon.recorder.hook, popcon.recorder.map, popcon.recorder.rare\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(n for n in new if n not in sys.stdlib_module_names and n != 'popcon'))\n"
    )
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_serve_explains_the_missing_extra(bare_venv: Path) -> None:
    result = subprocess.run(
        [str(bare_venv / "bin" / "popcon"), "serve"], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "pip install 'popcon[server]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
