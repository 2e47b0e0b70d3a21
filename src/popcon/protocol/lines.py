"""The collector's parsers of single lines (and of a datagram's header), uncached.

Each takes the text of a line, without its ``\\n``, and returns its parsed form or the reason
(one of :data:`popcon.protocol.REJECTIONS`) it is not valid. They are plain functions of
their input: the decoder (:mod:`popcon.protocol.decode`) caches what they return.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from popcon.protocol import (
    ENV_LABEL_RE,
    IMPORTER_LEVELS,
    INVENTORY_ID_RE,
    LABEL_KEY_RE,
    LABEL_VALUE_RE,
    LEVELS,
    LEVELS_1,
    MAX_INVENTORY_PARTS,
    MAX_LABELS,
    MAX_STATSD_VALUE,
    NAME_RE,
    NO_PERSON,
    ORIGINS,
    PERSON_RE,
    PY_RE,
    REQUESTED,
    REQUESTED_FIELDS,
    REQUESTED_UNKNOWN,
    REQUIRES_NONE,
    REQUIRES_RE,
    TRANSITIVE,
    VERSION_RE,
    canonical_name,
)
from popcon.protocol.records import DistReason, Labels, LibRecord, Person, ProgRecord

_PART_RE = re.compile(r"[1-9][0-9]?\Z")
#: Longest statsd library name read, before canonical_name (runs of separators shrink).
_MAX_STATSD_NAME = 200
_STATSD_VALUE_RE = re.compile(r"[1-9][0-9]{0,2}\Z")
_LEVELS = frozenset(LEVELS)
_LEVELS_1 = frozenset(LEVELS_1)
_IMPORTER_LEVELS = frozenset(IMPORTER_LEVELS)
_ORIGINS = frozenset(ORIGINS)


class Head(NamedTuple):
    """A datagram's header lines: ``env``, ``py`` and the labels."""

    env: str
    labels: Labels
    py: str


class PartLine(NamedTuple):
    """An inventory part's first line: ``popcon/1 inv <id> <part> <parts>``."""

    inventory_id: str
    part: int
    parts: int


def parse_lib_line_1(line: str) -> LibRecord | str:
    """popcon/1: ``lib <name> <version> <level> <origin> [<importer>]`` (no person)."""
    fields = line.split(" ")
    if len(fields) not in (5, 6) or fields[0] != "lib":
        return "malformed"
    name, version, level, origin = fields[1], fields[2], fields[3], fields[4]
    if not NAME_RE.match(name):
        return "bad_name"
    if not VERSION_RE.match(version) or level not in _LEVELS_1 or origin not in _ORIGINS:
        return "malformed"
    importer = None
    if len(fields) == 6:
        importer = fields[5]
        if level != TRANSITIVE:
            return "malformed"
        if not NAME_RE.match(importer):
            return "bad_name"
    return LibRecord(name, version, level, origin, importer)


def parse_person(field: str) -> Person | str | None:
    """``<register>:<rank>`` → ``(register, rank)``, ``-`` → None, else ``"malformed"``."""
    if not PERSON_RE.match(field):
        return "malformed"
    if field == NO_PERSON:
        return None
    register, _colon, rank = field.partition(":")
    return (int(register), int(rank))


def parse_lib_line_2(line: str) -> LibRecord | str:
    """popcon/2: ``lib <name> <version> <level> <origin> <person> [<importer>]``."""
    fields = line.split(" ")
    if len(fields) not in (6, 7) or fields[0] != "lib":
        return "malformed"
    name, version, level, origin = fields[1], fields[2], fields[3], fields[4]
    if not NAME_RE.match(name):
        return "bad_name"
    if not VERSION_RE.match(version) or level not in _LEVELS or origin not in _ORIGINS:
        return "malformed"
    person = parse_person(fields[5])
    if isinstance(person, str):
        return person
    importer = None
    if len(fields) == 7:
        importer = fields[6]
        if level not in _IMPORTER_LEVELS:
            return "malformed"
        if not NAME_RE.match(importer):
            return "bad_name"
    return LibRecord(name, version, level, origin, importer, person)


def parse_prog_line(line: str) -> ProgRecord | str:
    """popcon/2: ``prog <name> <version> <origin> <person>``."""
    fields = line.split(" ")
    if len(fields) != 5 or fields[0] != "prog":
        return "malformed"
    if not NAME_RE.match(fields[1]):
        return "bad_name"
    if not VERSION_RE.match(fields[2]) or fields[3] not in _ORIGINS:
        return "malformed"
    person = parse_person(fields[4])
    if isinstance(person, str):
        return person
    return ProgRecord(fields[1], fields[2], fields[3], person)


def parse_dist_line(line: str) -> tuple[tuple[str, str], DistReason | None] | str:
    """``dist <name> <version> [<requested> <requires>]`` → ``((name, version), reason)``,
    the reason None when the line does not say it."""
    fields = line.split(" ")
    if len(fields) not in (3, 5) or fields[0] != "dist":
        return "malformed"
    if not NAME_RE.match(fields[1]):
        return "bad_name"
    if not VERSION_RE.match(fields[2]):
        return "malformed"
    if len(fields) == 3:
        return ((fields[1], fields[2]), None)
    requested, requires = fields[3], fields[4]
    if requested not in REQUESTED_FIELDS or not REQUIRES_RE.match(requires):
        return "malformed"
    names = () if requires == REQUIRES_NONE else tuple(sorted(set(requires.split(","))))
    known = None if requested == REQUESTED_UNKNOWN else requested == REQUESTED
    return ((fields[1], fields[2]), DistReason(fields[1], known, names))


def parse_label_line(line: str) -> tuple[str, str] | str:
    """``label <key>=<value>`` → ``(key, value)``."""
    key, separator, value = line[6:].partition("=")
    if not separator or not LABEL_KEY_RE.match(key) or not LABEL_VALUE_RE.match(value):
        return "bad_label"
    return (key, value)


def parse_head(head: str) -> Head | str:
    """The header lines (each ending with ``\\n``): ``env``, ``py``, then the labels."""
    lines = head.split("\n")
    lines.pop()
    if not lines or not lines[0].startswith("env "):
        return "missing_env"
    env = lines[0][4:]
    if not ENV_LABEL_RE.match(env):
        return "malformed"
    if len(lines) < 2 or not lines[1].startswith("py "):
        return "missing_py"
    py = lines[1][3:]
    if not PY_RE.match(py):
        return "malformed"
    labels: list[tuple[str, str]] = []
    for line in lines[2:]:
        if not line.startswith("label "):
            return "malformed"
        if len(labels) == MAX_LABELS:
            return "too_many_labels"
        label = parse_label_line(line)
        if isinstance(label, str):
            return label
        labels.append(label)
    if len({key for key, _value in labels}) != len(labels):
        return "bad_label"
    return Head(env, tuple(sorted(labels)), py)


def parse_inventory_line(first: str) -> PartLine | str:
    """``popcon/<n> inv <id> <part> <parts>``."""
    fields = first.split(" ")
    if (
        len(fields) != 5
        or not INVENTORY_ID_RE.match(fields[2])
        or not _PART_RE.match(fields[3])
        or not _PART_RE.match(fields[4])
    ):
        return "malformed"
    part, parts = int(fields[3]), int(fields[4])
    if part > parts or parts > MAX_INVENTORY_PARTS:
        return "malformed"
    return PartLine(fields[2], part, parts)


def parse_statsd_line(line: str, library_used: str, reports: str) -> tuple[str, int] | str:
    """``(name, n)`` for a ``<library_used><name>:n|c`` line, ``("", n)`` for a
    ``<reports>:n|c`` line, or a reason."""
    metric, separator, rest = line.partition(":")
    if not separator:
        return "statsd_malformed"
    value, _separator, kind = rest.partition("|")
    if kind != "c" or not _STATSD_VALUE_RE.match(value):
        return "statsd_malformed"
    count = int(value)
    if count > MAX_STATSD_VALUE:
        return "statsd_cap"
    if metric == reports:
        return ("", count)
    if not metric.startswith(library_used):
        return "statsd_malformed"
    raw = metric[len(library_used) :]
    if not raw or len(raw) > _MAX_STATSD_NAME:
        return "bad_name"
    name = canonical_name(raw)
    if not NAME_RE.match(name):
        return "bad_name"
    return (name, count)
