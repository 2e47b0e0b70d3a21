"""Decode one datagram: a popcon/1 datagram or statsd lines of ``popularity-contest``.

``make_decoder(...)`` returns a function ``decode(data: bytes) -> UseReport | InventoryPart |
str``: a typed record, or the reason (one of :data:`REJECTIONS`) why the whole datagram is
dropped. It never raises on any input (``fuzz/fuzz_decode.py`` checks that).

The receiver calls it up to a few hundred thousand times a second, so the hot path is tuned:
header, ``lib`` and ``dist`` lines repeat across processes, so each distinct line (and record
block) is validated once and its parsed form kept in a bounded cache (the older half dropped
when full, so junk cannot grow it); settings are bound once when the decoder is made.
"""

from __future__ import annotations

import hmac
import re
from hashlib import sha256
from itertools import islice
from typing import Callable, NamedTuple, Union

MAX_DATAGRAM = 1400
MAX_LABELS = 8
MAX_INVENTORY_PARTS = 64
#: Largest value accepted on a statsd counter line (``name:3|c`` counts 3 processes).
MAX_STATSD_VALUE = 100
#: Largest number of library records one datagram may expand to (statsd values multiply).
MAX_RECORDS = 1000
DEFAULT_STATSD_PREFIX = "python_popcon"
#: The environment label given to statsd lines, which carry none.
DEFAULT_STATSD_ENV = "statsd"
#: Entries kept per line cache (``lib``/``dist``/statsd lines); when full, the older half is
#: dropped. Whole record blocks and headers are cached too, in caches a half and a tenth that
#: size. Bounded by entries: about 40 MiB in all when every cache is full of the longest lines.
CACHE_SIZE = 20_000

#: Every reason a datagram can be rejected for by the decoder.
REJECTIONS = (
    "too_long",  # more than 1,400 bytes
    "empty",
    "not_utf8",
    "unknown_format",  # neither popcon/ nor a statsd line with the configured prefix
    "version",  # popcon/<n> with n != 1
    "kind",  # a first line of an unknown kind
    "truncated",  # no final newline
    "missing_env",
    "missing_py",
    "too_many_labels",
    "bad_label",
    "bad_name",  # a library name that is not a canonical distribution name
    "malformed",  # any other malformed line
    "unsigned",  # the collector has a key and the datagram carries no signature
    "bad_signature",
    "statsd_malformed",
)

LEVELS = ("direct", "transitive", "upgrade", "unknown")
ORIGINS = ("env", "user", "unknown")

NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?\Z")
_VERSION_RE = re.compile(r"[!-~]{1,64}\Z")
_PY_RE = re.compile(r"[0-9]{1,2}\.[0-9]{1,3}\Z")
_LABEL_KEY_RE = re.compile(r"[a-z_][a-z0-9_]{0,31}\Z")
_LABEL_VALUE_RE = re.compile(r"[A-Za-z0-9_.:/@+-]{1,64}\Z")
_SEQ_RE = re.compile(r"(?:0|[1-9][0-9]{0,9})\Z")
_INV_ID_RE = re.compile(r"[0-9a-f]{8}\Z")
_PART_RE = re.compile(r"[1-9][0-9]?\Z")
_SIG_RE = re.compile(rb"sig [0-9a-f]{32}\n\Z")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_STATSD_VALUE_RE = re.compile(r"[1-9][0-9]{0,2}\Z")
_SEPARATORS_RE = re.compile(r"[-_.]+")


_USE_FIRST = ("use", 1)
_USE_LATER = ("use", 0)


class LibRecord(NamedTuple):
    """One ``lib`` line: a process used this distribution."""

    name: str
    version: str  # "-" when unknown
    level: str  # direct | transitive | upgrade | unknown (statsd)
    origin: str  # env | user | unknown (statsd)
    importer: str | None  # with transitive only


class UseReport(NamedTuple):
    """A ``use`` datagram (or statsd lines, with ``py`` empty and level/origin unknown)."""

    env: str
    labels: tuple[tuple[str, str], ...]  # sorted by key
    py: str
    processes: int  # new processes this datagram announces: 1 for seq 0, else 0
    libs: tuple[LibRecord, ...]


class InventoryPart(NamedTuple):
    """One part of an environment's inventory."""

    env: str
    labels: tuple[tuple[str, str], ...]
    py: str
    inventory_id: str
    part: int
    parts: int
    dists: tuple[tuple[str, str], ...]  # (name, version)


Decoded = Union[UseReport, InventoryPart, str]
Decoder = Callable[[bytes], Decoded]


def canonical_name(name: str) -> str:
    """PEP 503 normalisation: ``Scikit_Learn`` → ``scikit-learn``."""
    return _SEPARATORS_RE.sub("-", name).lower()


def sign(key: bytes, payload: bytes) -> bytes:
    """The signature line for ``payload`` (which ends with ``\\n``): ``b"sig <32 hex>\\n"``."""
    digest = hmac.new(key, payload, sha256).hexdigest()[:32]
    return b"sig " + digest.encode("ascii") + b"\n"


# -- line parsers (uncached); each returns the parsed value or a rejection reason -------------


def _parse_lib_line(line: str) -> Union[LibRecord, str]:
    fields = line.split(" ")
    if len(fields) not in (5, 6) or fields[0] != "lib":
        return "malformed"
    name, version, level, origin = fields[1], fields[2], fields[3], fields[4]
    if not NAME_RE.match(name):
        return "bad_name"
    if not _VERSION_RE.match(version):
        return "malformed"
    if level not in ("direct", "transitive", "upgrade") or origin not in ("env", "user"):
        return "malformed"
    importer = None
    if len(fields) == 6:
        importer = fields[5]
        if level != "transitive":
            return "malformed"
        if not NAME_RE.match(importer):
            return "bad_name"
    return LibRecord(name, version, level, origin, importer)


def _parse_dist_line(line: str) -> Union[tuple[str, str], str]:
    fields = line.split(" ")
    if len(fields) != 3 or fields[0] != "dist":
        return "malformed"
    if not NAME_RE.match(fields[1]):
        return "bad_name"
    if not _VERSION_RE.match(fields[2]):
        return "malformed"
    return (fields[1], fields[2])


def _parse_env_line(line: str) -> str:
    """The environment label, or "" when the line is not a valid ``env`` line."""
    if not line.startswith("env "):
        return ""
    label = line[4:]
    if not 1 <= len(label) <= 200 or _CONTROL_RE.search(label):
        return ""
    return label


def _parse_label_line(line: str) -> Union[tuple[str, str], str]:
    key, sep, value = line[6:].partition("=")
    if not sep or not _LABEL_KEY_RE.match(key) or not _LABEL_VALUE_RE.match(value):
        return "bad_label"
    return (key, value)


def _parse_statsd_line(
    line: str, prefix_used: str, prefix_reports: str
) -> Union[tuple[str, int], str]:
    """``("name", n)`` for a library line, ``("", n)`` for a reports line, or a reason."""
    metric, sep, rest = line.partition(":")
    if not sep:
        return "statsd_malformed"
    value, sep, kind = rest.partition("|")
    if kind != "c" or not _STATSD_VALUE_RE.match(value):
        return "statsd_malformed"
    count = int(value)
    if count > MAX_STATSD_VALUE:
        return "statsd_malformed"
    if metric == prefix_reports:
        return ("", count)
    if not metric.startswith(prefix_used):
        return "statsd_malformed"
    raw = metric[len(prefix_used) :]
    if not raw or len(raw) > 200:
        return "bad_name"
    name = canonical_name(raw)
    if not NAME_RE.match(name):
        return "bad_name"
    return (name, count)


class _LineCache:
    """A dict of parsed lines; when full, the older half (by insertion) is dropped."""

    __slots__ = ("entries", "limit")

    def __init__(self, limit: int) -> None:
        self.entries: dict[str, object] = {}
        self.limit = max(2, limit)

    def put(self, line: str, value: object) -> None:
        entries = self.entries
        if len(entries) >= self.limit:
            for old in list(islice(entries, self.limit // 2)):
                del entries[old]
        entries[line] = value


def make_decoder(
    key: bytes | str | None = None,
    statsd_prefix: str = DEFAULT_STATSD_PREFIX,
    statsd_env: str = DEFAULT_STATSD_ENV,
    cache_size: int = CACHE_SIZE,
) -> Decoder:
    """A ``decode(data) -> UseReport | InventoryPart | reason`` bound to these settings.

    ``key``: the shared secret (``POPCON_KEY``); when set, every datagram must end with a valid
    ``sig`` line, and statsd lines (which cannot be signed) are rejected as ``unsigned``.
    Without a key a ``sig`` line is accepted and ignored. ``statsd_prefix`` is the metric prefix
    of ``popularity-contest`` lines; they are counted under environment ``statsd_env``.
    """
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not statsd_prefix or any(c in statsd_prefix for c in ":|\n "):
        raise ValueError(f"statsd prefix {statsd_prefix!r}: expected a dotted metric prefix")
    if _parse_env_line("env " + statsd_env) == "":
        raise ValueError(f"statsd environment {statsd_env!r}: expected 1-200 characters")
    prefix_bytes = statsd_prefix.encode("utf-8") + b"."
    prefix_used = statsd_prefix + ".library_used."
    prefix_reports = statsd_prefix + ".reports"
    lib_cache = _LineCache(cache_size)
    dist_cache = _LineCache(cache_size)
    head_cache = _LineCache(cache_size // 10)
    first_cache = _LineCache(1000)
    block_cache = _LineCache(cache_size // 2)
    statsd_cache = _LineCache(cache_size)
    libs_get = lib_cache.entries.get
    dists_get = dist_cache.entries.get
    head_get = head_cache.entries.get
    first_get = first_cache.entries.get
    block_get = block_cache.entries.get
    statsd_get = statsd_cache.entries.get
    no_labels: tuple[tuple[str, str], ...] = ()

    def parse_head(head: str) -> Union[tuple, str]:
        """(env, py, labels) from the header lines (each ending with "\\n"), or a reason."""
        lines = head.split("\n")
        lines.pop()
        if not lines or not lines[0].startswith("env "):
            return "missing_env"
        env = _parse_env_line(lines[0])
        if not env:
            return "malformed"
        if len(lines) < 2 or not lines[1].startswith("py "):
            return "missing_py"
        py = lines[1][3:]
        if not _PY_RE.match(py):
            return "malformed"
        labels = []
        for line in lines[2:]:
            if not line.startswith("label "):
                return "malformed"
            if len(labels) == MAX_LABELS:
                return "too_many_labels"
            label = _parse_label_line(line)
            if isinstance(label, str):
                return label
            labels.append(label)
        keys = [k for k, _ in labels]
        if len(set(keys)) != len(keys):
            return "bad_label"
        return (env, tuple(sorted(labels)) if labels else no_labels, py)

    def decode_statsd(data: bytes) -> Decoded:
        if key is not None:
            return "unsigned"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return "not_utf8"
        libs = []
        processes = 0
        for line in text.split("\n"):
            if not line:
                continue
            parsed = statsd_get(line)
            if parsed is None:
                parsed = _parse_statsd_line(line, prefix_used, prefix_reports)
                statsd_cache.put(line, parsed)
            if isinstance(parsed, str):
                return parsed
            name, count = parsed
            if name:
                if len(libs) + count > MAX_RECORDS:
                    return "statsd_malformed"
                libs.extend([LibRecord(name, "-", "unknown", "unknown", None)] * count)
            else:
                processes += count
        if not libs and not processes:
            return "empty"
        return UseReport(statsd_env, no_labels, "", processes, tuple(libs))

    def parse_first(first: str) -> tuple | str:
        """("use", processes) or ("inv", id, part, parts) from the first line, or a reason."""
        if first.startswith("popcon/1 use "):
            if not _SEQ_RE.match(first, 13):
                return "malformed"
            return ("use", 1 if first == "popcon/1 use 0" else 0)
        if first.startswith("popcon/1 inv "):
            fields = first.split(" ")
            if (
                len(fields) != 5
                or not _INV_ID_RE.match(fields[2])
                or not _PART_RE.match(fields[3])
                or not _PART_RE.match(fields[4])
            ):
                return "malformed"
            part, parts = int(fields[3]), int(fields[4])
            if part > parts or parts > MAX_INVENTORY_PARTS:
                return "malformed"
            return ("inv", fields[2], part, parts)
        if first.startswith("popcon/1 ") or first == "popcon/1":
            return "kind"
        return "version"

    def parse_libs(block: str) -> tuple | str:
        """The records of a ``use`` datagram (lines each ending with "\\n"), or a reason."""
        if not block:
            return "malformed"
        libs = []
        append = libs.append
        for line in block[:-1].split("\n"):
            record = libs_get(line)
            if record is None:
                record = _parse_lib_line(line)
                lib_cache.put(line, record)
            if record.__class__ is str:
                return record  # type: ignore[return-value]
            append(record)
        return tuple(libs)

    def parse_dists(block: str) -> tuple | str:
        dists = []
        for line in block[:-1].split("\n") if block else ():
            dist = dists_get(line)
            if dist is None:
                dist = _parse_dist_line(line)
                dist_cache.put(line, dist)
            if dist.__class__ is str:
                return dist  # type: ignore[return-value]
            dists.append(dist)
        return tuple(dists)

    new_tuple = tuple.__new__

    def decode(data: bytes) -> Decoded:
        size = len(data)
        if size > MAX_DATAGRAM:
            return "too_long"
        if size == 0:
            return "empty"
        if not data.startswith(b"popcon/"):
            if data.startswith(prefix_bytes):
                return decode_statsd(data)
            return "unknown_format"
        if data[-1] != 10:  # no final b"\n"
            return "truncated"
        cut = data.rfind(b"\n", 0, size - 1) + 1  # start of the last line
        if data.startswith(b"sig ", cut):
            if not _SIG_RE.match(data, cut):
                return "malformed"
            if key is not None and not hmac.compare_digest(sign(key, data[:cut]), data[cut:]):
                return "bad_signature"
            data = data[:cut]
        elif key is not None:
            return "unsigned"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return "not_utf8"
        newline = text.find("\n")
        first_line = text[:newline]
        if first_line.startswith("popcon/1 use ") and (
            first_line == "popcon/1 use 0" or "0" < first_line[13:14] <= "9"
        ):
            seq = first_line[13:]
            if not seq.isdigit() or not seq.isascii() or len(seq) > 10:
                return "malformed"
            first = _USE_FIRST if seq == "0" else _USE_LATER
        else:
            first = first_get(first_line)
            if first is None:
                first = parse_first(first_line)
                first_cache.put(first_line, first)
        if first.__class__ is str:
            return first  # type: ignore[return-value]
        is_use = first[0] == "use"  # type: ignore[index]
        records_at = text.find("\nlib " if is_use else "\ndist ", newline) + 1
        if records_at == 0:  # no record line
            records_at = len(text)
        head_text = text[newline + 1 : records_at]
        head = head_get(head_text)
        if head is None:
            head = parse_head(head_text)
            head_cache.put(head_text, head)
        if head.__class__ is str:
            return head  # type: ignore[return-value]
        block = text[records_at:]
        if is_use:
            libs = block_get(block)
            if libs is None:
                libs = parse_libs(block)
                block_cache.put(block, libs)
            if libs.__class__ is str:
                return libs  # type: ignore[return-value]
            return new_tuple(UseReport, (*head, first[1], libs))  # type: ignore[index,misc]
        dists = parse_dists(block)
        if dists.__class__ is str:
            return dists  # type: ignore[return-value]
        env, labels, py = head  # type: ignore[misc]
        _kind, inventory_id, part, parts = first  # type: ignore[misc]
        return InventoryPart(env, labels, py, inventory_id, part, parts, dists)  # type: ignore[arg-type]

    return decode
