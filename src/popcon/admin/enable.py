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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from popcon import __version__
from popcon.recorder.core import DEFAULT_COLLECTOR, cache_directory, path_key
from popcon.recorder.hook import opted_out

PTH_NAME = "popcon.pth"
PTH_LINE = "import _popcon_hook\n"  # the module starts itself when imported by this name
HOOK_NAME = "_popcon_hook.py"
SITECUSTOMIZE_NAME = "sitecustomize.py"
HOOK_FIRST_LINE = "# popcon's start-up hook"  # how a sitecustomize.py is known to be popcon's
CACHE_DIR_NAME = "popcon-cache"
# The recorder's files in site-packages, and the source each is a copy of. The hook goes in as
# sitecustomize.py instead of _popcon_hook.py when it starts that way (see ``choose_start``).
RECORDER_FILES = {
    "_popcon_recorder.py": "core.py",
    "_popcon_recorder_map.py": "map.py",
    "_popcon_recorder_rare.py": "rare.py",
    HOOK_NAME: "hook.py",
}
# What each way of starting adds to RECORDER_FILES' modules; the file that starts recording comes
# first, as it must go first (a popcon.pth left without its module would print an error).
START_FILES = {"sitecustomize": (SITECUSTOMIZE_NAME,), "pth": (PTH_NAME, HOOK_NAME)}

# Run isolated: a sitecustomize on PYTHONPATH or in a user site is that user's own business.
_DESCRIBE = """
import json, site, sys, sysconfig
from importlib.machinery import PathFinder
paths = sysconfig.get_paths()
found = PathFinder.find_spec("sitecustomize", [p for p in sys.path if p])
try:
    sites = site.getsitepackages()
except AttributeError:
    sites = [paths["purelib"]]
print(json.dumps({
    "executable": sys.executable,
    "prefix": sys.prefix,
    "version": "%d.%d" % sys.version_info[:2],
    "purelib": paths["purelib"],
    "platlib": paths["platlib"],
    "sites": sites,
    "sitecustomize": found.origin if found is not None else None,
}))
"""

_STATUS = """
import json, os, sys
site = sys.argv[1]
sys.path.insert(0, site)
import _popcon_recorder as core, _popcon_recorder_map as mapper, _popcon_recorder_rare as rare
sites = [s for s in json.loads(sys.argv[2]) if os.path.isdir(s)]
labels, rejected = rare.parse_labels(os.environ.get("POPCON_LABELS", ""))
label = core.environment_label(os.environ)
print(json.dumps({
    "maps": [mapper.map_status(s) for s in sites],
    "environment_label": label,
    "environment_label_is_default": label == core.environment_label({}),
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


def describe_interpreter(python: str | None) -> dict[str, Any]:
    """Where the target interpreter's environment keeps its site-packages."""
    executable = python or sys.executable
    described: dict[str, Any] = json.loads(
        _run_target(executable, ["-c", _DESCRIBE], what="--python")
    )
    return described


def _run_target(executable: str, arguments: list[str], *, what: str, isolated: bool = True) -> str:
    # -I: ignore PYTHON* variables, the user site and the current directory. Not -S: in a
    # virtual environment it is site that sets sys.prefix to the environment.
    # POPCON_DISABLE: the target may be enabled already; its recorder has nothing to do here.
    try:
        result = subprocess.run(
            [executable, *(["-I"] if isolated else []), *arguments],
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


def recorder_sources() -> dict[str, str]:
    """File name in site-packages -> text of the recorder file it is a copy of."""
    here = Path(__file__).parent.parent / "recorder"
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


def choose_start(site: Path, found: str | None) -> str:
    """How processes of the environment will start the recorder: ``"sitecustomize"`` where
    the environment has no sitecustomize of its own (``found``: the one its interpreter would
    import, if any), else ``"pth"``.

    site imports ``sitecustomize`` at every start-up and searches all of sys.path for it even
    when there is none, so a hook loaded that way costs about half what ``import`` from a
    ``.pth`` line costs (docs/recording.md has the figures). There is only one such module per
    process, though: popcon never replaces or hides an environment's own.
    """
    ours = site / SITECUSTOMIZE_NAME
    if ours.exists() and not is_our_sitecustomize(ours):
        return "pth"
    if found is not None and os.path.realpath(found) != os.path.realpath(ours):
        return "pth"
    return "sitecustomize"


def is_our_sitecustomize(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as file:
            return file.readline().startswith(HOOK_FIRST_LINE)
    except (OSError, UnicodeDecodeError):
        return False


def installed_start(site: Path) -> str | None:
    """How recording starts in this site-packages now, None when it does not."""
    if is_our_sitecustomize(site / SITECUSTOMIZE_NAME):
        return "sitecustomize"
    if (site / PTH_NAME).exists() and (site / HOOK_NAME).exists():
        return "pth"
    return None


def _start_files(site: Path, start: str) -> list[Path]:
    """The files (and their bytecode) that starting ``start``'s way put into ``site``, in the
    order to remove them."""
    ours = is_our_sitecustomize(site / SITECUSTOMIZE_NAME)
    names = [n for n in START_FILES[start] if n != SITECUSTOMIZE_NAME or ours]
    return [site / n for n in names] + _compiled(site, names)


def _compiled(site: Path, names: Iterable[str]) -> list[Path]:
    cache = site / "__pycache__"
    if not cache.is_dir():
        return []
    return [p for n in names if n.endswith(".py") for p in cache.glob(n[:-3] + ".*.pyc")]


def enable(python: str | None = None, *, pth: bool = False) -> dict[str, Any]:
    """Install the recorder into the environment of ``python``; idempotent. ``pth``: start it
    from ``popcon.pth`` even where it could start as the environment's sitecustomize."""
    interpreter = describe_interpreter(python)
    site = Path(interpreter["purelib"])
    _require_writable(site)
    start = "pth" if pth else choose_start(site, interpreter["sitecustomize"])
    sources = recorder_sources()
    if start == "sitecustomize":
        sources[SITECUSTOMIZE_NAME] = sources.pop(HOOK_NAME)  # last: it starts recording
    try:
        (site / CACHE_DIR_NAME).mkdir(exist_ok=True)
        changed = [name for name, text in sources.items() if _write_if_changed(site / name, text)]
        if changed:
            # Without column tables (Python 3.11+), the bytecode every process loads is 7 %
            # smaller; tracebacks through the recorder, never shown to users, lose their carets.
            _run_target(
                interpreter["executable"],
                ["-X", "no_debug_ranges", "-m", "py_compile", *(str(site / n) for n in sources)],
                what="compiling the recorder with",
            )
        if start == "pth":  # the .pth goes last: recording starts once all it needs is there
            _write_if_changed(site / PTH_NAME, PTH_LINE)
        other = "pth" if start == "sitecustomize" else "sitecustomize"
        for path in _start_files(site, other):  # after: no process goes unrecorded meanwhile
            path.unlink(missing_ok=True)
    except PermissionError as error:
        raise EnableError(f"cannot write into {site}: {error.strerror}") from None
    maps = json.loads(
        _run_target(
            interpreter["executable"],
            ["-c", _BUILD, str(site), json.dumps(interpreter["sites"])],
            what="building the module map with",
        )
    )
    return {"site": str(site), "python": interpreter["executable"], "start": start, "maps": maps}


def user_cache_files(interpreter: dict[str, Any]) -> list[Path]:
    """What the recorder of this environment keeps in this user's cache directory
    (``POPCON_CACHE_DIR``, else ``~/.cache/popcon``) where site-packages is not writable: the
    module maps of the environment's site directories and its default label. The user site's
    map stays: other environments of the same Python share it."""
    cache = cache_directory()
    if cache is None:
        return []
    names = [f"map-{path_key(site)}.marshal" for site in interpreter["sites"]]
    names.append(f"label-{path_key(interpreter['prefix'])}")
    return [Path(cache, name) for name in names]


def disable(python: str | None = None) -> dict[str, Any]:
    """Remove everything ``enable`` wrote, and what the recorder kept of this environment in
    the user's cache directory; idempotent."""
    interpreter = describe_interpreter(python)
    site = Path(interpreter["purelib"])
    removed = []
    # What starts recording goes first: recording stops before the files it needs go.
    targets = [*_start_files(site, "pth"), *_start_files(site, "sitecustomize")]
    targets += [site / name for name in RECORDER_FILES] + _compiled(site, RECORDER_FILES)
    targets += user_cache_files(interpreter)
    try:
        for path in targets:
            if path.exists():
                path.unlink()
                removed.append(str(path))
        if (site / CACHE_DIR_NAME).exists():
            shutil.rmtree(site / CACHE_DIR_NAME)
            removed.append(str(site / CACHE_DIR_NAME))
    except PermissionError as error:
        raise EnableError(f"cannot remove files from {site}: {error.strerror}") from None
    return {"site": str(site), "python": interpreter["executable"], "removed": removed}


def status(python: str | None = None) -> dict[str, Any]:
    """Whether recording is on in that environment, and what it would send where."""
    interpreter = describe_interpreter(python)
    site = Path(interpreter["purelib"])
    start = installed_start(site)
    modules = [n for n in RECORDER_FILES if n != HOOK_NAME or start == "pth"]
    enabled = start is not None and all((site / n).exists() for n in modules)
    report: dict[str, Any] = {
        "python": interpreter["executable"],
        "site": str(site),
        "enabled": enabled,
        "start": start if enabled else None,
        "recorder_version": _installed_version(site / "_popcon_recorder.py"),
        "popcon_version": __version__,
        "collector": os.environ.get("POPCON_COLLECTOR") or DEFAULT_COLLECTOR,
    }
    if enabled and start is not None:
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
        report["hidden_by"] = _hiding_sitecustomize(interpreter["executable"], site, start)
    return report


def _hiding_sitecustomize(executable: str, site: Path, start: str) -> str | None:
    """Started as sitecustomize, the hook is hidden from this user by a sitecustomize that
    their PYTHONPATH or user site puts first: which one, run as this user would run it."""
    if start != "sitecustomize":
        return None
    code = "import sys; print(getattr(sys.modules.get('sitecustomize'), '__file__', ''))"
    found = _run_target(
        executable, ["-c", code], what="asking for the sitecustomize of", isolated=False
    ).strip()
    if found and os.path.realpath(found) == os.path.realpath(site / SITECUSTOMIZE_NAME):
        return None
    return found or "no sitecustomize (popcon's failed to load)"


def _installed_version(path: Path) -> str | None:
    try:
        for line in path.read_text("utf-8").splitlines():
            if line.startswith("_VERSION = "):
                return line.split('"')[1]
    except (OSError, IndexError):
        pass
    return None


def format_status(report: dict[str, Any]) -> str:
    """``popcon status`` for people."""
    lines = [f"python:     {report['python']}", f"site:       {report['site']}"]
    if not report["enabled"] and report["recorder_version"] is not None:
        lines.append(
            "recording:  disabled, though popcon's files are there: nothing starts them (a "
            "package's own sitecustomize.py may have replaced popcon's; run: popcon enable)"
        )
        return "\n".join(lines)
    if not report["enabled"]:
        lines.append("recording:  disabled (run: popcon enable)")
        return "\n".join(lines)
    version = report["recorder_version"]
    same = "same as" if version == report["popcon_version"] else "differs from"
    lines.append(f"recording:  enabled (recorder {version}, {same} popcon {__version__})")
    lines.append(f"starts in:  {START_FILES[report['start']][0]}")
    if report["hidden_by"]:
        lines.append(
            f"            but not for this user, whose processes import {report['hidden_by']}: "
            "they record nothing (popcon enable --pth starts recording from popcon.pth)"
        )
    lines.append(f"collector:  {report['collector']}")
    if "check" in report:
        verdict = "receives" if report["check"]["ok"] else "FAILED"  # status gives --server
        lines.append(f"check:      {verdict}: {report['check']['text']}")
    else:
        lines.append("            (--server URL, or popcon check, confirms that it receives)")
    lines.append(f"env label:  {report['environment_label']}")
    if report["environment_label_is_default"]:
        lines.append(
            "            the default, derived from the environment's prefix: "
            "POPCON_ENV sets a readable one"
        )
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
