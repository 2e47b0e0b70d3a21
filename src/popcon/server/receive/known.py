"""Datagrams counted by their lines, without decoding them.

Nearly every unsigned ``popcon/2 use`` datagram is made of lines the receiving side has seen
before: its header (the ``env``, ``py`` and ``label`` lines) is its environment's, and each
record line (``lib`` or ``prog``, with its person field) comes back for every process of
that person that uses that library, while the set of lines and the ``seq`` change from one
datagram to the next, so the datagrams themselves rarely repeat. The receiving side
(:class:`~popcon.server.receive.ingest.Ingestor`) learns the lines of the datagrams it
decoded once their records counted without a cap; a datagram whose header and every line
are known is then counted by its lines (:func:`count_known`), and the rows get each
record's count once per job (:func:`~popcon.server.receive.ingest.expand_known`). Any other
datagram (a new line, a signature, another version or kind, any malformation) is decoded.

This is exact: the decoder parses a header and a record line the same wherever they occur,
and a datagram of known lines breaks none of its rules when its ``seq`` is well formed and
it has at most one ``prog`` line, so it would decode to these records. A record counted in
the current bucket without a cap counts again without asking a cap, as a decoded one does;
one not counted yet in this bucket is counted as a decoded record is. A line's person counts
in its sketch once per bucket, since a sketch keeps the highest rank of each register.

Per datagram the common case is a few calls into C and a short loop over its lines' positions
(lines whose person counted in this bucket: ``fresh``); a line not fresh yet is counted by
its bytes, for the job to count its person.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional, Union

from popcon.protocol import MAX_DATAGRAM, PROTOCOL_VERSION, USE
from popcon.protocol.records import Labels, LibRecord, Person, ProgRecord
from popcon.server.storage.rows import EdgeKey, ProgramKey, SketchKey, UsageKey

#: The first line of a ``popcon/2 use`` datagram, up to its ``<seq>``.
USE_START = f"{PROTOCOL_VERSION} {USE} ".encode()
_SEQ_AT = len(USE_START)
#: Known headers and lines (all headers together) at most, by default: when full, no more are
#: learned, and at the next bucket those that did not come in the last one are forgotten.
MAX_KNOWN_LINES = 100_000

Record = Union[LibRecord, ProgRecord]
#: Where a record counts in a job: the key of its usage row, its level's index in the row, its
#: edge (or None) and the key of its sketch (None without a person); for a ``prog`` record
#: the key of its program row, -1, None and its sketch's key.
Place = tuple[Union[UsageKey, ProgramKey], int, Optional[EdgeKey], Optional[SketchKey]]


class KnownHead:
    """One header's known lines, and what its datagrams counted since the rows last got them.

    Lines that differ only in their person field are one record for the rows: ``records``
    holds one of each (the first learned), ``places`` where it counts in the current bucket
    (None until it counted there without a cap), ``sums`` its count since the last job;
    ``index`` gives each line's position in them, ``of_line`` its position and its person
    (:meth:`record` its record).
    """

    __slots__ = (
        "counted",
        "counts",
        "datagrams",
        "env",
        "env_id",
        "fresh",
        "index",
        "labels",
        "of_line",
        "places",
        "positions",
        "processes",
        "py",
        "records",
        "source_id",
        "sums",
    )

    def __init__(self, env: str, labels: Labels, py: str, env_id: int) -> None:
        self.env = env
        self.labels = labels
        self.py = py
        self.env_id = env_id
        #: The label set's id and the catalog's memo of the environment in one bucket
        #: (``Catalog.counted[env_id]``) that ``places`` and ``fresh`` are of.
        self.source_id = 0
        self.counted: object = None
        self.index: dict[bytes, int] = {}
        self.of_line: dict[bytes, tuple[int, Person | None]] = {}
        self.records: list[Record] = []
        self.places: list[Place | None] = []
        self.sums: list[int] = []
        #: Each record's position, by the record without its person.
        self.positions: dict[object, int] = {}
        #: The lines whose person counted in this bucket (each has a place).
        self.fresh: set[bytes] = set()
        #: Lines not fresh, counted by their bytes.
        self.counts: Counter[bytes] = Counter()
        self.processes = 0
        self.datagrams = 0

    def placed_for(self, counted: object, source_id: int) -> bool:
        """Whether ``places`` are of this memo and label set."""
        return self.counted is counted and self.source_id == source_id

    def rebase(self, counted: object, source_id: int) -> None:
        """Places and persons of another bucket (or of ids released since): none yet. The
        counts since the last job must have been taken."""
        self.counted = counted
        self.source_id = source_id
        self.places = [None] * len(self.records)
        self.fresh = set()

    def learn(self, line: bytes, record: Record, counted_as: object, place: Place) -> bool:
        """Know ``line``, of ``record`` (``counted_as`` without its person), counted with its
        person at ``place`` in this bucket; whether it is new."""
        known = self.of_line.get(line)
        if known is not None:
            self.places[known[0]] = place
            self.fresh.add(line)
            return False
        position = self.positions.get(counted_as)
        if position is None:
            position = self.positions[counted_as] = len(self.records)
            self.records.append(record)
            self.places.append(place)
            self.sums.append(0)
        else:
            self.places[position] = place
        self.index[line] = position
        self.of_line[line] = (position, record[-1])
        self.fresh.add(line)
        return True

    def keep(self, lines: set[bytes]) -> int:
        """Forget the lines not in ``lines``, and the records left without a line; how many
        lines are kept. The counts since the last job must have been taken."""
        key_of = {position: key for key, position in self.positions.items()}
        records, of_line = self.records, self.of_line
        self.index, self.of_line, self.records, self.positions = {}, {}, [], {}
        for line, (position, person) in of_line.items():
            if line not in lines:
                continue
            key = key_of[position]
            new = self.positions.get(key)
            if new is None:
                new = self.positions[key] = len(self.records)
                self.records.append(records[position])
            self.index[line] = new
            self.of_line[line] = (new, person)
        self.places = [None] * len(self.records)
        self.sums = [0] * len(self.records)
        self.fresh = set()
        return len(self.of_line)

    def record(self, line: bytes) -> Record:
        """The record of a known line."""
        position, person = self.of_line[line]
        known = self.records[position]
        return tuple.__new__(type(known), (*known[:-1], person))

    def take(self) -> tuple[list[int], Counter[bytes], int, int]:
        """Each record's count by position, the counts of lines not fresh, processes and
        datagrams since the last call; from zero again."""
        taken = (self.sums, self.counts, self.processes, self.datagrams)
        self.sums = [0] * len(self.records)
        self.counts = Counter()
        self.processes = self.datagrams = 0
        return taken


class KnownLines:
    """The known headers by their bytes, and the bucket they count in; ``size`` counts the
    headers and their lines."""

    __slots__ = ("bucket", "heads", "limit", "size")

    def __init__(self, limit: int = MAX_KNOWN_LINES) -> None:
        self.bucket = -1
        self.heads: dict[bytes, KnownHead] = {}
        self.size = 0
        #: Headers and lines known at most (:data:`MAX_KNOWN_LINES`).
        self.limit = limit

    def start(self, bucket: int) -> None:
        """Count in ``bucket`` from now on (the counts of the last one were taken): no record
        has a place or a person counted there yet. When full, the lines that did not come in
        the last bucket are forgotten (a header with none left too)."""
        self.bucket = bucket
        if self.size >= self.limit:
            self.size = 0
            for text, head in list(self.heads.items()):
                kept = head.keep(head.fresh)
                if kept:
                    self.size += 1 + kept
                else:
                    del self.heads[text]
        for head in self.heads.values():
            head.rebase(None, 0)


def split_use(data: bytes) -> tuple[bytes, list[bytes]] | None:
    """An unsigned-looking ``popcon/2 use`` datagram's header and record lines (from its first
    ``lib`` or ``prog`` line on, without their ``\\n``), split as :func:`count_known` and the
    decoder split it; None for any other datagram."""
    if not data.startswith(USE_START) or data[-1:] != b"\n" or len(data) > MAX_DATAGRAM:
        return None
    end = data.find(b"\n")
    at = data.find(b"\nlib ", end)
    prog = data.find(b"\nprog ", end)
    if prog != -1 and (at == -1 or prog < at):
        at = prog
    if at == -1:
        return None
    return data[end + 1 : at + 1], data[at + 1 : -1].split(b"\n")


def count_known(datagrams: list[bytes], heads: dict[bytes, KnownHead]) -> tuple[list[bytes], int]:
    """Count into its header each datagram of a known header, known lines only, at most one
    ``prog`` line and a well-formed ``seq``; the other datagrams (to decode), and how many
    were counted.

    :func:`split_use` and the decoder's ``seq`` rule, written out: this runs for every
    datagram the collector takes."""
    rest: list[bytes] = []
    keep = rest.append
    heads_get = heads.get
    counted = 0
    for data in datagrams:
        if data.startswith(USE_START) and data[-1] == 10 and len(data) <= MAX_DATAGRAM:
            end = data.find(b"\n")
            at = data.find(b"\nlib ", end)
            prog = data.find(b"\nprog ", end)
            if prog != -1 and (at == -1 or prog < at):
                at = prog
            head = heads_get(data[end + 1 : at + 1]) if at != -1 else None
            seq = data[_SEQ_AT:end]
            if (
                head is not None
                and (prog == -1 or data.find(b"\nprog ", prog + 1) == -1)
                and (
                    seq == b"0" or (seq.isdigit() and seq[0] != 48 and len(seq) <= 10)  # 48: "0"
                )
            ):
                lines = data[at + 1 : -1].split(b"\n")
                if head.fresh.issuperset(lines):
                    sums = head.sums
                    index = head.index
                    for line in lines:
                        sums[index[line]] += 1
                elif all(map(head.of_line.__contains__, lines)):
                    head.counts.update(lines)
                else:
                    keep(data)
                    continue
                head.datagrams += 1
                if seq == b"0":
                    head.processes += 1
                counted += 1
                continue
        keep(data)
    return rest, counted
