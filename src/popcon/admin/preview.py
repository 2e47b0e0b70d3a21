"""``popcon preview -- CMD``: run a command with recording on, send nothing, show what would go.

The recorder is injected through a temporary ``sitecustomize`` on ``PYTHONPATH`` (which then
imports any real ``sitecustomize``), so the command's environment need not be enabled; where it
is, whichever copy of the recorder starts first does the work and the other stands aside.
``POPCON_PREVIEW`` makes the recorder append its datagrams to a file instead of sending them.

Each datagram shown is checked with the collector's own decoder (:mod:`popcon.protocol.decode`,
standard library only), with the command's ``POPCON_KEY`` where it has one: the output says
whether a collector would accept it and, if not, why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from popcon.protocol import (
    CLAIMED,
    DIRECT,
    PROTOCOL_VERSIONS,
    STATSD_LIBRARY_USED,
    STATSD_REPORTS,
    UNKNOWN_VERSION,
    UPGRADE,
    USE,
)
from popcon.protocol.decode import make_decoder
from popcon.protocol.records import Decoded, LibRecord, UseReport
from popcon.recorder.core import ENV_LABEL_VARIABLES

from .enable import recorder_sources

_USE = tuple(f"{version} {USE} ".encode("ascii") for version in PROTOCOL_VERSIONS)
#: What ``popcon preview`` says of a process whose records carry no person.
NOT_A_PERSON = (
    "counted as a process, not as a person: no usable secret (HOME and XDG_CONFIG_HOME unset, "
    "or the configuration directory not writable)"
)
_LIBRARY_USED = f".{STATSD_LIBRARY_USED}.".encode("ascii")  # what follows a statsd prefix
_REPORTS = f".{STATSD_REPORTS}:".encode("ascii")

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


def run_with_preview(command: list[str], *, json_output: bool) -> tuple[int, list[bytes]]:
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


def read_preview_file(path: str) -> list[bytes]:
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


def collector_answers(datagrams: list[bytes], key: str | None = None) -> list[Decoded]:
    """What the collector's decoder answers for each datagram: a record, or the reason it
    would drop the datagram. ``key`` is the collector's ``POPCON_KEY``; statsd lines are
    decoded as by a collector run with the prefix they carry (``popcon serve
    --statsd-prefix``)."""
    decode = make_decoder(key=key)
    answers: list[Decoded] = []
    for datagram in datagrams:
        answer = decode(datagram)
        if answer == "unknown_format":  # statsd lines, of another prefix than the default?
            prefix = datagram.split(_LIBRARY_USED, 1)[0].split(_REPORTS, 1)[0]
            try:
                answer = make_decoder(key=key, statsd_prefix=prefix.decode("utf-8"))(datagram)
            except (UnicodeDecodeError, ValueError):
                pass  # no prefix a collector could be run with: unknown_format it stays
        answers.append(answer)
    return answers


def _command_key() -> str | None:
    """The key the command's processes sign with, which their collector would have."""
    return os.environ.get("POPCON_KEY") or None


def format_datagrams(datagrams: list[bytes], answers: list[Decoded] | None = None) -> str:
    if not datagrams:
        return "# nothing would have been sent: the command imported no installed distribution\n"
    if answers is None:
        answers = collector_answers(datagrams, _command_key())
    parts = []
    for number, (datagram, answer) in enumerate(zip(datagrams, answers), 1):
        parts.append(f"# datagram {number}, {len(datagram)} bytes\n")
        if isinstance(answer, str):
            parts.append(f"# the collector would drop it: {answer}\n")
        else:
            parts.append("# the collector would accept it\n")
        parts.append(datagram.decode("utf-8", "replace"))
    return "".join(parts)


def summarize(datagrams: list[bytes], answers: list[Decoded] | None = None) -> dict[str, Any]:
    """One entry per library over all the processes, as ``popcon preview --json`` prints it,
    read from what the collector's decoder makes of the ``use`` datagrams: its level (people's
    ``direct`` or ``transitive``, or the program's), the programs run, and whether the records
    count a person (``person``: False when none does, None without records); and, per
    datagram, whether the collector would accept it."""
    if answers is None:
        answers = collector_answers(datagrams, _command_key())
    libraries: dict[str, dict[str, str | None]] = {}
    programs: dict[str, dict[str, str | None]] = {}
    labels: dict[str, str] = {}
    persons: set[bool] = set()
    for datagram, answer in zip(datagrams, answers):
        if not datagram.startswith(_USE) or not isinstance(answer, UseReport):
            continue
        labels["env"] = answer.env
        labels["python"] = answer.py
        labels.update(answer.labels)
        for record in answer.libs:
            _merge_record(libraries, record)
            persons.add(record.person is not None)
        program = answer.program
        if program is not None:
            programs[program.name] = {
                "name": program.name,
                "version": None if program.version == UNKNOWN_VERSION else program.version,
                "origin": program.origin,
            }
            persons.add(program.person is not None)
    return {
        "libraries": [libraries[name] for name in sorted(libraries)],
        "programs": [programs[name] for name in sorted(programs)],
        "person": (True in persons) if persons else None,
        "labels": labels,
        "datagrams": [
            {
                "bytes": len(datagram),
                "accepted": not isinstance(answer, str),
                "reason": answer if isinstance(answer, str) else None,
            }
            for datagram, answer in zip(datagrams, answers)
        ],
    }


def _merge_record(libraries: dict[str, dict[str, str | None]], record: LibRecord) -> None:
    """A library's entry: its first record's level, ``direct`` once people's code imports it
    (``upgrade``, ``claimed``)."""
    now_direct = record.level in (DIRECT, UPGRADE, CLAIMED)
    entry = libraries.get(record.name)
    if entry is None:
        libraries[record.name] = {
            "name": record.name,
            "version": None if record.version == UNKNOWN_VERSION else record.version,
            "level": DIRECT if now_direct else record.level,
            "origin": record.origin,
            "importer": None if now_direct else record.importer,
        }
    elif now_direct:
        entry["level"] = DIRECT
        entry["importer"] = None


def preview_main(command: list[str], *, json_output: bool) -> int:
    status, datagrams = run_with_preview(command, json_output=json_output)
    if json_output:
        sys.stdout.write(json.dumps(summarize(datagrams), indent=2) + "\n")
    else:
        answers = collector_answers(datagrams, _command_key())
        sys.stdout.write(format_datagrams(datagrams, answers))
        if summarize(datagrams, answers)["person"] is False:
            sys.stdout.write(f"# {NOT_A_PERSON}\n")
        if datagrams and not any(os.environ.get(name) for name in ENV_LABEL_VARIABLES):
            sys.stdout.write(
                "# env: the default label, derived from the environment's prefix "
                "(POPCON_ENV sets a readable one)\n"
            )
        sys.stdout.write(
            "# not shown: the environment's inventory, sent at most once an hour "
            "(POPCON_INVENTORY_INTERVAL)\n"
        )
    return status
