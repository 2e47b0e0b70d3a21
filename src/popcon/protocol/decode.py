"""The collector's decoder: one datagram, ``popcon/2``, ``popcon/1`` or statsd lines, to a
typed record.

``make_decoder(...)`` returns a function ``decode(data: bytes) -> UseReport | InventoryPart |
str`` (:mod:`popcon.protocol.records`): a typed record, or the reason (one of
:data:`popcon.protocol.REJECTIONS`) why the whole datagram is dropped. It never raises on any
input (``fuzz/fuzz_decode.py`` checks that).

The receiver calls it up to a few hundred thousand times a second, so the hot path is tuned:
whole ``use`` datagrams repeat (the same person running the same program again), and so do
header, ``lib`` and ``dist`` lines across processes (a ``popcon/2`` line with its person field
repeats for every process of that person), so each distinct unsigned datagram, line and record
block is validated once by the parsers of :mod:`popcon.protocol.lines` and its decoded form
kept, bounded by entries (a line's or block's in a :class:`_Cache`, which also keeps what was
rejected; a whole datagram's only when valid): the older half is dropped when one is full, so
junk cannot grow them.
Settings, caches and the signature check are bound once, when the decoder is made
(:class:`_Decoding`).

A decoder with a key also drops stale and replayed signed datagrams
(:class:`popcon.protocol.replays.Replays`); since it must see every copy, identical signed
datagrams are not to be counted by their bytes (:func:`is_signed`).
"""

from __future__ import annotations

import hmac
import re
import time
from itertools import islice
from typing import Callable, Generic, Optional, TypeVar

from popcon.protocol import (
    CHECK,
    DEFAULT_STATSD_PREFIX,
    ENV_LABEL_RE,
    IMPORTER_LEVELS,
    INVENTORY,
    LEVELS,
    MAX_DATAGRAM,
    MAX_STATSD_TOTAL,
    NAME_RE,
    NO_PERSON,
    ORIGINS,
    PERSON_RE,
    PROTOCOL_VERSIONS,
    SIGNATURE_LINE,
    STATSD_LIBRARY_USED,
    STATSD_REPORTS,
    UNKNOWN,
    UNKNOWN_VERSION,
    USE,
    VERSION_RE,
    sign,
)
from popcon.protocol.lines import (
    Head,
    PartLine,
    parse_dist_line,
    parse_head,
    parse_inventory_line,
    parse_lib_line_1,
    parse_lib_line_2,
    parse_prog_line,
    parse_statsd_line,
)
from popcon.protocol.records import (
    Decoded,
    DistReason,
    InventoryPart,
    LibRecord,
    ProgRecord,
    UseReport,
)
from popcon.protocol.replays import REPLAY_MEMORY, Replays

#: The environment label given to statsd lines, which carry none.
DEFAULT_STATSD_ENV = "statsd"
#: Entries kept per line cache (``lib``/``dist``/statsd lines, and a quarter as many rejected
#: lines); when full, the older half is dropped. Whole unsigned ``use`` datagrams and record
#: blocks are cached too, in caches half that size, and headers in one a tenth of it. Bounded
#: by entries: about 65 MiB in all when every cache is full of the longest lines.
CACHE_SIZE = 20_000

#: What :func:`make_decoder` returns.
Decoder = Callable[[bytes], Decoded]
#: A statsd line, parsed: its records (its library's, once per count), the processes it
#: counts, and its count.
StatsdLine = tuple[tuple[LibRecord, ...], int, int]

_VERSION_1, _VERSION_2 = PROTOCOL_VERSIONS
_USE_LINE_1 = f"{_VERSION_1} {USE} "  # a use datagram's first line, up to <seq>
_USE_LINE_2 = f"{_VERSION_2} {USE} "
_INVENTORY_LINES = tuple(f"{version} {INVENTORY} " for version in PROTOCOL_VERSIONS)
_VERSION_LINES = tuple(f"{version} " for version in PROTOCOL_VERSIONS)
_SEQ_AT = len(_USE_LINE_2)
assert len(_USE_LINE_1) == _SEQ_AT
#: A record block's records: the ``lib`` records and the ``prog`` record (or None).
Records = tuple[tuple[LibRecord, ...], Optional[ProgRecord]]
_SIGNATURE_RE = re.compile(rb"sig [0-9a-f]{32}\n\Z")
_TIME_LINE_RE = re.compile(rb"t (0|[1-9][0-9]{0,11}) [0-9a-f]{16}\n\Z")
#: Hex digits of a signature a decoder remembers (64 bits: collisions are not a concern).
_REMEMBERED_DIGITS = 16


def _field(pattern: re.Pattern[str]) -> str:
    """The regular expression of a whole-field pattern, without its end anchor."""
    return pattern.pattern.removesuffix(r"\Z")


#: A person field's register and rank (:data:`~popcon.protocol.PERSON_RE`, in two groups).
_REGISTER = r"0|[1-9][0-9]{0,3}|1[0-5][0-9]{3}|16[0-2][0-9]{2}|163[0-7][0-9]|1638[0-3]"
_RANK = r"[1-9]|[1-4][0-9]|5[01]"
assert PERSON_RE.pattern == rf"(?:{NO_PERSON}|(?:{_REGISTER}):(?:{_RANK}))\Z"
#: One ``popcon/2`` record line with its ``\n``: a ``lib`` record (groups 1-3: name, version,
#: level) or a ``prog`` record (4-5: name, version), then its origin, person field (register
#: and rank, both empty for ``-``) and importer (6-9). Each match is one whole line, so a
#: block with as many matches as lines is all records of these forms; the rules the pattern
#: leaves out (an importer's level, one ``prog`` record) are checked after it. Any other block
#: goes line by line, for its reason.
_RECORD_LINE_2_RE = re.compile(
    rf"^(?:lib ({_field(NAME_RE)}) ({_field(VERSION_RE)}) ({'|'.join(LEVELS)}) "
    rf"|prog ({_field(NAME_RE)}) ({_field(VERSION_RE)}) )"
    rf"({'|'.join(ORIGINS)}) (?:{NO_PERSON}|({_REGISTER}):({_RANK}))(?: ({_field(NAME_RE)}))?\n",
    re.MULTILINE,
)
_IMPORTER_LEVEL_SET = frozenset(IMPORTER_LEVELS)


# -- the decoder -------------------------------------------------------------------------------

_Parsed = TypeVar("_Parsed")
_Key = TypeVar("_Key")
_Value = TypeVar("_Value")


def _put(entries: dict[_Key, _Value], key: _Key, value: _Value, limit: int) -> None:
    """``entries[key] = value``; when ``entries`` is full, its older half (by insertion) goes."""
    if len(entries) >= limit:
        for old in list(islice(entries, limit // 2)):
            del entries[old]
    entries[key] = value


class _Cache(Generic[_Parsed]):
    """What texts seen before parsed to: the valid ones in ``parsed`` (read by the hot path
    through the bound ``get``), the reasons of the rejected ones in ``rejected``.

    Each dict is bounded: ``parsed`` by ``limit`` entries, ``rejected`` by a quarter of it.
    """

    __slots__ = ("get", "limit", "parsed", "rejected", "rejected_limit")

    def __init__(self, limit: int) -> None:
        self.parsed: dict[str, _Parsed] = {}
        self.rejected: dict[str, str] = {}
        self.get = self.parsed.get
        self.limit = max(2, limit)
        self.rejected_limit = max(2, limit // 4)

    def parse(self, text: str, parse: Callable[[str], _Parsed | str]) -> _Parsed | str:
        """What ``text``, not found by ``get``, parses to (a form, or the reason it is
        rejected), kept for the next time."""
        reason = self.rejected.get(text)
        if reason is not None:
            return reason
        parsed = parse(text)
        if isinstance(parsed, str):
            _put(self.rejected, text, parsed, self.rejected_limit)
        else:
            _put(self.parsed, text, parsed, self.limit)
        return parsed


def is_signed(data: bytes) -> bool:
    """Whether ``data``, a datagram a decoder took, ends with a ``sig`` line: then identical
    copies of it must each be decoded (a decoder with a key drops the replays), not counted by
    their bytes."""
    return data.startswith(b"sig ", len(data) - SIGNATURE_LINE)


def takes_unsigned(decode: Decoder) -> bool:
    """Whether ``decode`` is a decoder of :func:`make_decoder` without a key: one that takes
    unsigned ``popcon/2`` datagrams, so that the receiving side may count those it knows by
    their lines (:mod:`popcon.server.receive.known`)."""
    decoding = getattr(decode, "__self__", None)
    return isinstance(decoding, _Decoding) and decoding.key is None


def _strip_signature(data: bytes, cut: int) -> int | str:
    """Without a key, a ``sig`` line and the ``t`` line before it are accepted and ignored, if
    well formed: where the datagram's text ends, or the reason it is dropped."""
    if not _SIGNATURE_RE.match(data, cut):
        return "malformed"
    at = data.rfind(b"\n", 0, cut - 1) + 1
    return at if _TIME_LINE_RE.match(data, at, cut) else cut


class _Decoding:
    """One decoder's settings and caches, bound when it is made; :meth:`decode` is the function
    :func:`make_decoder` returns."""

    __slots__ = (
        "check_signature",
        "dist_lines",
        "heads",
        "inventory_lines",
        "key",
        "lib_blocks_1",
        "lib_blocks_2",
        "lib_lines_1",
        "lib_lines_2",
        "prog_lines",
        "replays",
        "statsd_env",
        "statsd_library_used",
        "statsd_lines",
        "statsd_reports",
        "statsd_start",
        "use_datagram_limit",
        "use_datagrams",
    )

    def __init__(
        self,
        key: bytes | None,
        statsd_prefix: str,
        statsd_env: str,
        size: int,
        clock: Callable[[], float],
        replay_memory: int,
    ) -> None:
        self.key = key
        self.check_signature: Callable[[bytes, int], int | str] = (
            _strip_signature if key is None else self._verify_signature
        )
        self.replays = Replays(clock, replay_memory)
        self.statsd_start = statsd_prefix.encode("utf-8") + b"."
        self.statsd_library_used = f"{statsd_prefix}.{STATSD_LIBRARY_USED}."
        self.statsd_reports = f"{statsd_prefix}.{STATSD_REPORTS}"
        self.statsd_env = statsd_env
        #: Unsigned ``use`` datagrams decoded before (only valid ones), ``use_datagram_limit``
        #: at most.
        self.use_datagrams: dict[bytes, UseReport] = {}
        self.use_datagram_limit = max(2, size // 2)
        self.heads: _Cache[Head] = _Cache(size // 10)
        self.lib_blocks_1: _Cache[Records] = _Cache(size // 4)
        self.lib_blocks_2: _Cache[Records] = _Cache(size // 2)
        self.lib_lines_1: _Cache[LibRecord] = _Cache(size // 2)
        self.lib_lines_2: _Cache[LibRecord] = _Cache(size)
        self.prog_lines: _Cache[ProgRecord] = _Cache(size // 4)
        self.inventory_lines: _Cache[PartLine] = _Cache(1000)
        self.dist_lines: _Cache[tuple[tuple[str, str], DistReason | None]] = _Cache(size)
        self.statsd_lines: _Cache[StatsdLine] = _Cache(size)

    def decode(self, data: bytes) -> Decoded:
        """A record, or the reason the datagram is dropped.

        The path of a ``use`` datagram, the one that counts, is written out here whole: an
        unsigned one seen before is one dictionary look-up, and the header and the block of
        records of a new one are each one look-up when seen before.
        """
        known = self.use_datagrams.get(data)
        if known is not None:
            return known
        received = data
        size = len(data)
        if size > MAX_DATAGRAM:
            return "too_long"
        if size == 0:
            return "empty"
        if not data.startswith(b"popcon/"):
            if data.startswith(self.statsd_start):
                return self.decode_statsd(data)
            return "unknown_format"
        if data[-1] != 10:  # no final b"\n"
            return "truncated"
        cut = data.rfind(b"\n", 0, size - 1) + 1  # start of the last line
        signed = data.startswith(b"sig ", cut)
        if signed:
            end = self.check_signature(data, cut)
            if isinstance(end, str):
                return end
            data = data[:end]
        elif self.key is not None:
            return "unsigned"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return "not_utf8"
        newline = text.find("\n")
        first = text[:newline]
        if first.startswith(_USE_LINE_2):
            blocks = self.lib_blocks_2
            parse_block = self.parse_records_2
            records_at = text.find("\nlib ", newline) + 1
            prog_at = text.find("\nprog ", newline) + 1
            if prog_at and (prog_at < records_at or not records_at):
                records_at = prog_at
        elif first.startswith(_USE_LINE_1):
            blocks = self.lib_blocks_1
            parse_block = self.parse_records_1
            records_at = text.find("\nlib ", newline) + 1
        else:
            if first.startswith(_INVENTORY_LINES):
                return self.decode_inventory(text, newline, first)
            if first.startswith(_VERSION_LINES) or first in PROTOCOL_VERSIONS:
                return "kind"
            return "version"
        # SEQ_RE, spelled out (faster than the regular expression here)
        seq = first[_SEQ_AT:]
        if seq != "0" and not (
            "0" < seq[:1] <= "9" and seq.isdigit() and seq.isascii() and len(seq) <= 10
        ):
            return "malformed"
        if records_at == 0:  # no record line: a check, once the header is found sound
            records_at = len(text)
        head_text = text[newline + 1 : records_at]
        head = self.heads.get(head_text)
        if head is None:
            new_head = self.heads.parse(head_text, parse_head)
            if isinstance(new_head, str):
                return new_head
            head = new_head
        block = text[records_at:]
        records = blocks.get(block)
        if records is None:
            new_records = blocks.parse(block, parse_block)
            if isinstance(new_records, str):
                return new_records
            records = new_records
        # tuple.__new__ skips the Python-level __new__ of the named tuple
        report = tuple.__new__(UseReport, (*head, 1 if seq == "0" else 0, *records))
        if not signed:  # a signed one must meet the replay check every time
            _put(self.use_datagrams, received, report, self.use_datagram_limit)
        return report

    def _verify_signature(self, data: bytes, cut: int) -> int | str:
        """With a key: where the text of a signed datagram ends (its ``t`` line), or the reason
        it is dropped."""
        if not _SIGNATURE_RE.match(data, cut):
            return "malformed"
        assert self.key is not None  # bound only to a decoder that has a key
        if not hmac.compare_digest(sign(self.key, data[:cut]), data[cut:]):
            return "bad_signature"
        at = data.rfind(b"\n", 0, cut - 1) + 1
        stamp = _TIME_LINE_RE.match(data, at, cut)
        if stamp is None:
            return "unstamped"
        signature = data[cut + 4 : cut + 4 + _REMEMBERED_DIGITS]
        return self.replays.take(int(stamp[1]), signature) or at

    def parse_records_1(self, block: str) -> Records | str:
        """The records of a ``popcon/1 use`` datagram (lines each ending with ``\\n``)."""
        if not block:
            return CHECK
        libs = []
        get = self.lib_lines_1.get
        for line in block[:-1].split("\n"):
            record = get(line)
            if record is None:
                new_record = self.lib_lines_1.parse(line, parse_lib_line_1)
                if isinstance(new_record, str):
                    return new_record
                record = new_record
            libs.append(record)
        return (tuple(libs), None)

    def parse_records_2(self, block: str) -> Records | str:
        """The records of a ``popcon/2 use`` datagram: ``lib`` lines and at most one ``prog``
        line (a datagram of only a ``prog`` line is valid).

        Most blocks are parsed by one regular expression, all lines at once (with people on,
        most lines are new: a line cache would miss); the others line by line."""
        if not block:
            return CHECK
        found = _RECORD_LINE_2_RE.findall(block)
        if len(found) == block.count("\n"):
            records = self.records_2(found)
            if records is not None:
                return records
        return self.parse_lines_2(block)

    @staticmethod
    def records_2(found: list[tuple[str, ...]]) -> Records | None:
        """The records of the matches of :data:`_RECORD_LINE_2_RE`, or None when they break a
        rule the pattern leaves out."""
        libs: list[LibRecord] = []
        append = libs.append
        program = None
        new = tuple.__new__
        for (
            name,
            version,
            level,
            prog_name,
            prog_version,
            origin,
            register,
            rank,
            importer,
        ) in found:
            person = (int(register), int(rank)) if register else None
            if not name:
                if importer or program is not None:
                    return None
                program = new(ProgRecord, (prog_name, prog_version, origin, person))
            elif not importer:
                append(new(LibRecord, (name, version, level, origin, None, person)))
            elif level in _IMPORTER_LEVEL_SET:
                append(new(LibRecord, (name, version, level, origin, importer, person)))
            else:
                return None
        return (tuple(libs), program)

    def parse_lines_2(self, block: str) -> Records | str:
        """:meth:`parse_records_2`, line by line (each line's form cached)."""
        libs = []
        program = None
        get = self.lib_lines_2.get
        for line in block[:-1].split("\n"):
            record = get(line)
            if record is None:
                if line.startswith("prog "):
                    if program is not None:
                        return "malformed"
                    program = self.prog_lines.get(line)
                    if program is None:
                        new_program = self.prog_lines.parse(line, parse_prog_line)
                        if isinstance(new_program, str):
                            return new_program
                        program = new_program
                    continue
                new_record = self.lib_lines_2.parse(line, parse_lib_line_2)
                if isinstance(new_record, str):
                    return new_record
                record = new_record
            libs.append(record)
        return (tuple(libs), program)

    def decode_inventory(self, text: str, newline: int, first: str) -> InventoryPart | str:
        """An ``inv`` datagram's text (signature line removed)."""
        part = self.inventory_lines.get(first)
        if part is None:
            new_part = self.inventory_lines.parse(first, parse_inventory_line)
            if isinstance(new_part, str):
                return new_part
            part = new_part
        records_at = text.find("\ndist ", newline) + 1
        if records_at == 0:  # no record line: an empty part
            records_at = len(text)
        head_text = text[newline + 1 : records_at]
        head = self.heads.get(head_text)
        if head is None:
            new_head = self.heads.parse(head_text, parse_head)
            if isinstance(new_head, str):
                return new_head
            head = new_head
        block = text[records_at:]
        dists = []
        reasons = []
        get = self.dist_lines.get
        for line in block[:-1].split("\n") if block else ():
            dist = get(line)
            if dist is None:
                new_dist = self.dist_lines.parse(line, parse_dist_line)
                if isinstance(new_dist, str):
                    return new_dist
                dist = new_dist
            dists.append(dist[0])
            if dist[1] is not None:
                reasons.append(dist[1])
        return InventoryPart(head.env, head.labels, head.py, *part, tuple(dists), tuple(reasons))

    def parse_statsd_line(self, line: str) -> StatsdLine | str:
        """A statsd line's records (its library's, once per count), the processes it counts
        and its count; or the reason it is dropped."""
        parsed = parse_statsd_line(line, self.statsd_library_used, self.statsd_reports)
        if isinstance(parsed, str):
            return parsed
        name, count = parsed
        if not name:
            return ((), count, count)
        return ((LibRecord(name, UNKNOWN_VERSION, UNKNOWN, UNKNOWN, None),) * count, 0, count)

    def decode_statsd(self, data: bytes) -> UseReport | str:
        """Lines of ``popularity-contest``: ``<prefix>.library_used.<name>:1|c`` and
        ``<prefix>.reports:1|c``, newline separated."""
        if self.key is not None:
            return "unsigned"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return "not_utf8"
        libs: list[LibRecord] = []
        processes = 0
        total = 0
        get = self.statsd_lines.get
        for line in text.split("\n"):
            counted = get(line)
            if counted is None:
                if not line:
                    continue
                new_counted = self.statsd_lines.parse(line, self.parse_statsd_line)
                if isinstance(new_counted, str):
                    return new_counted
                counted = new_counted
            records, reports, count = counted
            total += count
            if total > MAX_STATSD_TOTAL:
                return "statsd_cap"
            if reports:
                processes += reports
            else:
                libs += records
        if not libs and not processes:
            return "empty"
        return tuple.__new__(UseReport, (self.statsd_env, (), "", processes, tuple(libs), None))


def make_decoder(
    key: bytes | str | None = None,
    statsd_prefix: str = DEFAULT_STATSD_PREFIX,
    statsd_env: str = DEFAULT_STATSD_ENV,
    cache_size: int = CACHE_SIZE,
    *,
    clock: Callable[[], float] = time.time,
    replay_memory: int = REPLAY_MEMORY,
) -> Decoder:
    """A ``decode(data) -> UseReport | InventoryPart | reason`` bound to these settings.

    ``key``: the shared secret (``POPCON_KEY``); when set, every datagram must end with a valid
    ``t`` and ``sig`` line, the ``t`` line within :data:`~popcon.protocol.TIME_WINDOW` minutes
    of ``clock`` (seconds since the epoch), each signature taken once (at most
    ``replay_memory`` remembered), and statsd lines (which cannot be signed) are rejected as
    ``unsigned``. Without a key the ``t`` and ``sig`` lines are accepted and ignored.
    ``statsd_prefix`` is the metric prefix of ``popularity-contest`` lines; they are counted
    under environment ``statsd_env``.
    """
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not statsd_prefix or any(c in statsd_prefix for c in ":|\n "):
        raise ValueError(f"statsd prefix {statsd_prefix!r}: expected a dotted metric prefix")
    if not ENV_LABEL_RE.match(statsd_env):
        raise ValueError(f"statsd environment {statsd_env!r}: expected 1-200 characters")
    return _Decoding(key, statsd_prefix, statsd_env, cache_size, clock, replay_memory).decode
