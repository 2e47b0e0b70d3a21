"""``popcon enable``, ``disable`` and ``status``: put the recorder into an environment.

The target environment is described by running its own interpreter (``--python``), so popcon
can enable an environment it is not installed in. Nothing here runs inside user processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import __version__
from .recorder_hook import opted_out

PTH_NAME = "popcon.pth"
PTH_LINE = "import _popcon_hook\n"  # the module starts itself when imported by this name
CACHE_DIR_NAME = "popcon-cache"
# Files popcon enable writes into site-packages, and the source each is a copy of.
RECORDER_FILES = {
    "_popcon_hook.py": "recorder_hook.py",
    "_popcon_recorder.py": "recorder.py",
    "_popcon_recorder_map.py": "recorder_map.py",
    "_popcon_recorder_rare.py": "recorder_rare.py",
}

_DESCRIBE = """
import json, site, sys, sysconfig
paths = sysconfig.get_paths()
try:
    sites = site.getsitepackages()
except AttributeError:
    sites = [paths["purelib"]]
print(json.dumps({
    "executable": sys.executable,
    "version": "%d.%d" % sys.version_info[:2],
    "purelib": paths["purelib"],
    "platlib": paths["platlib"],
    "sites": sites,
}))
"""

_STATUS = """
import json, os, sys
site = sys.argv[1]
sys.path.insert(0, site)
import _popcon_recorder as core, _popcon_recorder_map as mapper, _popcon_recorder_rare as rare
sites = [s for s in json.loads(sys.argv[2]) if os.path.isdir(s)]
labels, rejected = rare.parse_labels(os.environ.get("POPCON_LABELS", ""))
print(json.dumps({
    "maps": [mapper.map_status(s) for s in sites],
    "environment_label": core.environment_label(os.environ),
    "labels": dict(labels),
    "rejected_labels": rejected,
}))
"""

_BUILD = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import _popcon_recorder as core, _popcon_recorder_map as mapper
sites = [s for s in json.loads(sys.argv[2]) if os.path.isdir(s)]
print(json.dumps(mapper.build_caches(sites)))
"""


class EnableError(Exception):
    """A problem the user can fix, said in one line."""


def describe_interpreter(python: str | None) -> dict:
    """Where the target interpreter's environment keeps its site-packages."""
    executable = python or sys.executable
    return json.loads(_run_target(executable, ["-c", _DESCRIBE], what="--python"))


def _run_target(executable: str, arguments: list, *, what: str) -> str:
    # -I: ignore PYTHON* variables, the user site and the current directory. Not -S: in a
    # virtual environment it is site that sets sys.prefix to the environment.
    # POPCON_DISABLE: the target may be enabled already; its recorder has nothing to do here.
    try:
        result = subprocess.run(
            [executable, "-I", *arguments],
            env={**os.environ, "POPCON_DISABLE": "1"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise EnableError(f"{what} {executable}: cannot run it: {error}") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnableError(f"{what} {executable}: failed: {last}")
    return result.stdout


def recorder_sources() -> dict:
    """File name in site-packages -> text of the recorder file it is a copy of."""
    here = Path(__file__).parent
    return {target: (here / source).read_text("utf-8") for target, source in RECORDER_FILES.items()}


def _write_if_changed(path: Path, text: str) -> bool:
    """Write only when the content differs: every new file changes the directory's
    modification time, which would make the module map stale for nothing."""
    if path.exists() and path.read_text("utf-8") == text:
        return False
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, "utf-8")
    os.replace(temporary, path)
    return True


def _require_writable(site: Path) -> None:
    if not site.is_dir():
        raise EnableError(f"site-packages {site} does not exist")
    if not os.access(site, os.W_OK):
        raise EnableError(
            f"site-packages {site} is not writable by this user; run popcon as its owner"
        )


def enable(python: str | None = None) -> dict:
    """Install the recorder into the environment of ``python``; idempotent."""
    interpreter = describe_interpreter(python)
    site = Path(interpreter["purelib"])
    _require_writable(site)
    try:
        (site / CACHE_DIR_NAME).mkdir(exist_ok=True)
        sources = recorder_sources()
        changed = [name for name, text in sources.items() if _write_if_changed(site / name, text)]
        if changed:
            # Without column tables (Python 3.11+), the bytecode every process loads is 7 %
            # smaller; tracebacks through the recorder, never shown to users, lose their carets.
            _run_target(
                interpreter["executable"],
                ["-X", "no_debug_ranges", "-m", "py_compile", *(str(site / n) for n in sources)],
                what="compiling the recorder with",
            )
        # The .pth goes last: recording starts only once everything it needs is in place.
        _write_if_changed(site / PTH_NAME, PTH_LINE)
    except PermissionError as error:
        raise EnableError(f"cannot write into {site}: {error.strerror}") from None
    maps = json.loads(
        _run_target(
            interpreter["executable"],
            ["-c", _BUILD, str(site), json.dumps(interpreter["sites"])],
            what="building the module map with",
        )
    )
    return {"site": str(site), "python": interpreter["executable"], "maps": maps}


def disable(python: str | None = None) -> dict:
    """Remove everything ``enable`` wrote; idempotent."""
    interpreter = describe_interpreter(python)
    site = Path(interpreter["purelib"])
    removed = []
    targets = [site / PTH_NAME, *(site / name for name in RECORDER_FILES)]
    compiled = site / "__pycache__"
    if compiled.is_dir():
        for name in RECORDER_FILES:
            targets.extend(compiled.glob(name[:-3] + ".*.pyc"))
    try:
        for path in targets:  # the .pth first: recording stops before its files go
            if path.exists():
                path.unlink()
                removed.append(str(path))
        if (site / CACHE_DIR_NAME).exists():
            shutil.rmtree(site / CACHE_DIR_NAME)
            removed.append(str(site / CACHE_DIR_NAME))
    except PermissionError as error:
        raise EnableError(f"cannot remove files from {site}: {error.strerror}") from None
    return {"site": str(site), "python": interpreter["executable"], "removed": removed}


def status(python: str | None = None) -> dict:
    """Whether recording is on in that environment, and what it would send where."""
    interpreter = describe_interpreter(python)
    site = Path(interpreter["purelib"])
    enabled = (site / PTH_NAME).exists() and all((site / n).exists() for n in RECORDER_FILES)
    report = {
        "python": interpreter["executable"],
        "site": str(site),
        "enabled": enabled,
        "recorder_version": _installed_version(site / "_popcon_recorder.py"),
        "popcon_version": __version__,
        "collector": os.environ.get("POPCON_COLLECTOR") or "udp://127.0.0.1:8137",
    }
    if enabled:
        report["opted_out"] = opted_out(os.environ)
        report.update(
            json.loads(
                _run_target(
                    interpreter["executable"],
                    ["-c", _STATUS, str(site), json.dumps(interpreter["sites"])],
                    what="asking the recorder of",
                )
            )
        )
    return report


def _installed_version(path: Path) -> str | None:
    try:
        for line in path.read_text("utf-8").splitlines():
            if line.startswith("_VERSION = "):
                return line.split('"')[1]
    except (OSError, IndexError):
        pass
    return None


def format_status(report: dict) -> str:
    """``popcon status`` for people."""
    lines = [f"python:     {report['python']}", f"site:       {report['site']}"]
    if not report["enabled"]:
        lines.append("recording:  disabled (run: popcon enable)")
        return "\n".join(lines)
    version = report["recorder_version"]
    same = "same as" if version == report["popcon_version"] else "differs from"
    lines.append(f"recording:  enabled (recorder {version}, {same} popcon {__version__})")
    lines.append(f"collector:  {report['collector']}")
    lines.append(f"env label:  {report['environment_label']}")
    labels = ", ".join(f"{k}={v}" for k, v in report["labels"].items()) or "none"
    lines.append(f"labels:     {labels}")
    if report["rejected_labels"]:
        lines.append(f"            ignored, invalid: {', '.join(report['rejected_labels'])}")
    for entry in report["maps"]:
        where = entry["cache"] or "no cache"
        count = entry.get("distributions")
        extra = f", {count} distributions" if count is not None else ""
        lines.append(f"map:        {entry['state']} for {entry['site']} ({where}{extra})")
    opted = "yes: this user's processes record nothing" if report["opted_out"] else "no"
    lines.append(f"opted out:  {opted}")
    return "\n".join(lines)
