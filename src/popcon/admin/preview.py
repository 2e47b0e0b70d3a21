"""``popcon preview -- CMD``: run a command with recording on, send nothing, show what would go.

The recorder is injected through a temporary ``sitecustomize`` on ``PYTHONPATH`` (which then
imports any real ``sitecustomize``), so the command's environment need not be enabled; where it
is, whichever copy of the recorder starts first does the work and the other stands aside.
``POPCON_PREVIEW`` makes the recorder append its datagrams to a file instead of sending them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .enable import recorder_sources

_SITECUSTOMIZE = """\
import sys
_popcon_preview_dir = {directory!r}
try:
    import _popcon_hook
    _popcon_hook.start()  # it loads the rest from its own directory, not through sys.path
finally:
    # Stand aside for a real sitecustomize further down sys.path, if there is one: the import
    # system returns whatever sys.modules holds under this name once this file has run.
    sys.path[:] = [p for p in sys.path if p != _popcon_preview_dir]
    try:
        from importlib.machinery import PathFinder
        from importlib.util import module_from_spec

        _spec = PathFinder.find_spec("sitecustomize", sys.path)
        if _spec is not None and _spec.loader is not None:
            _real = module_from_spec(_spec)
            sys.modules["sitecustomize"] = _real
            _spec.loader.exec_module(_real)
    except Exception:
        import traceback

        traceback.print_exc()
"""


def run_with_preview(command: list, *, json_output: bool) -> tuple:
    """Run ``command``; return (its exit status, the datagrams its processes would have sent)."""
    with tempfile.TemporaryDirectory(prefix="popcon-preview-") as directory:
        for name, text in recorder_sources().items():
            Path(directory, name).write_text(text, "utf-8")
        Path(directory, "sitecustomize.py").write_text(
            _SITECUSTOMIZE.format(directory=directory), "utf-8"
        )
        output = os.path.join(directory, "datagrams")
        environ = dict(os.environ)
        environ["POPCON_PREVIEW"] = output
        environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (directory, environ.get("PYTHONPATH")) if p
        )
        try:
            status = subprocess.call(
                command, env=environ, stdout=sys.stderr if json_output else None
            )
        except OSError as error:
            raise SystemExit(f"popcon preview: cannot run {command[0]}: {error.strerror}") from None
        return status, read_preview_file(output)


def read_preview_file(path: str) -> list:
    """The datagrams in a preview file: each is its length in ASCII, a newline, then the bytes."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    datagrams = []
    position = 0
    while position < len(data):
        newline = data.index(b"\n", position)
        length = int(data[position:newline])
        datagrams.append(data[newline + 1 : newline + 1 + length])
        position = newline + 1 + length
    return datagrams


def format_datagrams(datagrams: list) -> str:
    if not datagrams:
        return "# nothing would have been sent: the command imported no installed distribution\n"
    parts = []
    for number, datagram in enumerate(datagrams, 1):
        parts.append(f"# datagram {number}, {len(datagram)} bytes\n")
        parts.append(datagram.decode("utf-8", "replace"))
    return "".join(parts)


def summarize(datagrams: list) -> dict:
    """One entry per library over all the processes, as ``popcon preview --json`` prints it."""
    libraries: dict = {}
    labels: dict = {}
    for datagram in datagrams:
        lines = datagram.decode("utf-8", "replace").splitlines()
        if not lines or not lines[0].startswith("popcon/1 use "):
            continue
        for line in lines[1:]:
            key, _, rest = line.partition(" ")
            if key == "env":
                labels["env"] = rest
            elif key == "py":
                labels["python"] = rest
            elif key == "label":
                name, _, value = rest.partition("=")
                labels[name] = value
            elif key == "lib":
                _merge_record(libraries, rest.split(" "))
    return {
        "libraries": sorted(libraries.values(), key=lambda entry: entry["name"]),
        "labels": labels,
    }


def _merge_record(libraries: dict, fields: list) -> None:
    name, version, level, origin = fields[:4]
    importer = fields[4] if len(fields) > 4 else None
    entry = libraries.get(name)
    if entry is None:
        libraries[name] = {
            "name": name,
            "version": None if version == "-" else version,
            "level": "direct" if level == "upgrade" else level,
            "origin": origin,
            "importer": importer if level == "transitive" else None,
        }
    elif level in ("direct", "upgrade"):
        entry["level"] = "direct"
        entry["importer"] = None


def preview_main(command: list, *, json_output: bool) -> int:
    status, datagrams = run_with_preview(command, json_output=json_output)
    if json_output:
        sys.stdout.write(json.dumps(summarize(datagrams), indent=2) + "\n")
    else:
        sys.stdout.write(format_datagrams(datagrams))
        sys.stdout.write(
            "# not shown: the environment's inventory, sent at most once an hour "
            "(POPCON_INVENTORY_INTERVAL)\n"
        )
    return status
