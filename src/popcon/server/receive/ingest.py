"""Count datagrams into the writer's jobs, applying the caps; no SQL, no threads.

This runs on the receiving thread: all per-datagram Python work happens there, so the writer
thread only runs long SQL statements (which release the GIL) and never makes the receiving
thread wait for the GIL (see ``docs/collector-storage.md``, "threads").

An :class:`Ingestor` holds the receiving side's state: the writer's
:class:`~popcon.server.storage.rows.Catalog` (ids and caps), the
:class:`~popcon.server.storage.rows.Pending` rows of the next job, the inventories being
assembled and the known lines (:mod:`~popcon.server.receive.known`). The receiving loop hands
it each interval's datagrams (:meth:`Ingestor.receive`): those of known lines are counted by
their lines, the others decoded and aggregated (:func:`aggregate`), and
:func:`expand_batch` counts the decoded reports into the pending rows (keyed by ids, at the
finest bucket); a datagram that hits a cap is counted under it, and each cap logs at most
one line a minute. Tools and tests that write without a receiver count decoded datagrams
with :func:`job_of` and hand the job to :meth:`Writer.submit
<popcon.server.storage.writer.Writer.submit>`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from typing import Optional, cast

from popcon.protocol import ORIGINS, TRANSITIVE
from popcon.protocol.decode import Decoder, is_signed, takes_unsigned
from popcon.protocol.records import (
    Decoded,
    InventoryPart,
    Labels,
    LibRecord,
    Person,
    ProgRecord,
    UseReport,
)
from popcon.server.receive.known import (
    USE_START,
    KnownHead,
    KnownLines,
    Place,
    Record,
    count_known,
    split_use,
)
from popcon.server.storage.rows import (
    Catalog,
    EdgeKey,
    Installed,
    Limits,
    Pending,
    ProgramKey,
    SketchKey,
    UsageKey,
    merge_pending,
)
from popcon.server.storage.schema import (
    LEVEL_COLUMNS,
    ORIGIN_CODES,
    RAN,
    SKETCH_OF_LEVEL,
    StoreSettings,
    labels_text,
    sketch_code,
)

log = logging.getLogger(__name__)

_LEVEL_INDEX = {level: index for index, level in enumerate(LEVEL_COLUMNS)}
_LEVELS = len(LEVEL_COLUMNS)
#: The ``kind`` code of the sketch a record contributes to, by its level and origin.
_SKETCH_CODES = {
    (level, origin): sketch_code(kind, origin)
    for level, kind in SKETCH_OF_LEVEL.items()
    for origin in ORIGINS
}
_RAN_CODES = {origin: sketch_code(RAN, origin) for origin in ORIGINS}
#: Seconds between two log lines of one cap.
LOG_INTERVAL = 60.0
#: What each cap's log line says was full (every cap counts what was seen within a day).
CAP_CAUSES = {
    "env_cap": "max_environments reached",
    "labels_cap": "max_label_sets_per_env reached",
    "library_cap": "max_libraries_per_env or max_libraries reached",
    "version_cap": "max_versions_per_library or max_versions reached",
    "importer_cap": "max_importers_per_library or max_importers reached",
}
#: Label sets repeat: their stored text is kept for the most recent ones.
_labels_text = lru_cache(maxsize=10_000)(labels_text)

#: Inventory parts one batch keeps at most; more in one interval are counted as ``overload``.
MAX_INVENTORY_PARTS_PER_BATCH = 10_000
#: Distinct reports an :class:`Ingestor` holds for its next job at most; past that they are
#: counted into its rows at once (so what it holds does not grow with the rate).
MAX_HELD_REPORTS = 4096
#: Identical reports per finest bucket: ``{(bucket start, report): datagrams}``.
Uses = Counter[tuple[int, UseReport]]


def _see(pending: Pending, env_id: int, bucket: int, py: str) -> None:
    seen = pending.env_seen.get(env_id)
    if seen is None or seen[0] <= bucket:
        pending.env_seen[env_id] = (bucket, py or (seen[1] if seen else ""))
    if pending.env_first.get(env_id, bucket + 1) > bucket:
        pending.env_first[env_id] = bucket


#: A record or a program (without its person field, see :func:`_counted_as`) counted in one
#: bucket without a cap → (library id, importer id): ``Catalog.counted``'s memo of an
#: environment.
Memo = dict[object, tuple[int, Optional[int]]]
#: A record's place in a job, once counted in a bucket without a cap: its usage row, the
#: row's index of its level, its edge (or None) and its person's registers (or None).
Slot = tuple[list[int], int, Optional[EdgeKey], Optional[dict[int, int]]]


class Slots:
    """The :data:`Slot` of each record counted under one label set in one bucket, for the
    job being filled: a repeated record is then counted with one look-up. Valid only as long
    as the job and the catalog's memo of that environment and bucket (``Catalog.counted``)
    are the ones it was made for; see :meth:`of`."""

    __slots__ = ("by_source",)

    def __init__(self) -> None:
        self.by_source: dict[int, tuple[Pending, object, dict[object, Slot]]] = {}

    def of(self, pending: Pending, memo: object, source_id: int) -> dict[object, Slot]:
        """The slots of ``source_id``'s records in ``pending``, for ``memo``; new ones when
        either changed (a new job, a new bucket, an environment released)."""
        entry = self.by_source.get(source_id)
        if entry is None or entry[0] is not pending or entry[1] is not memo:
            if len(self.by_source) >= MAX_SLOT_SOURCES:
                self.by_source.clear()
            entry = self.by_source[source_id] = (pending, memo, {})
        return entry[2]


#: Label sets whose slots :class:`Slots` keeps at once (all of them are dropped when full).
MAX_SLOT_SOURCES = 4096


def _source(
    catalog: Catalog, limits: Limits, bucket: int, env: str, labels: Labels, count: int
) -> tuple[int, int, Memo] | str:
    """The ids of an environment and label set admitted under the caps, and the records
    counted in this bucket without a cap (``Catalog.counted``); or the cap either hit."""
    env_id = catalog.env_id(env, limits, bucket, count)
    if env_id is None:
        return "env_cap"
    source_id = catalog.source_id(env_id, _labels_text(labels), limits, bucket, count)
    if source_id is None:
        return "labels_cap"
    counted = catalog.counted.get(env_id)
    if counted is not None and counted[0] == bucket:
        return env_id, source_id, counted[1]
    memo: Memo = {}
    catalog.counted[env_id] = (bucket, memo)
    return env_id, source_id, memo


def _report_seen(
    pending: Pending, env_id: int, source_id: int, bucket: int, processes: int, py: str
) -> None:
    """What reports of a label set add besides their records: their new processes, and the
    environment and label set seen in ``bucket``."""
    if processes:
        pending.reports[(source_id, bucket)] += processes
    _see(pending, env_id, bucket, py)
    if pending.source_seen.get(source_id, -1) < bucket:
        pending.source_seen[source_id] = bucket


def expand_use(
    pending: Pending,
    catalog: Catalog,
    limits: Limits,
    bucket: int,
    report: UseReport,
    count: int,
    slots: Slots | None = None,
) -> str:
    """Add ``count`` identical reports; returns the datagrams' result (``ok`` or the first
    cap their records hit: records over a cap are left out, edges over one too). ``slots``
    (the receiving side's) spare a record counted before in this job and bucket its
    look-ups."""
    found = _source(catalog, limits, bucket, report.env, report.labels, count)
    if isinstance(found, str):
        return found
    env_id, source_id, memo = found
    placed = (slots or Slots()).of(pending, memo, source_id)
    result = "ok"
    for lib in report.libs:
        capped = _count_lib(
            pending, catalog, limits, bucket, env_id, source_id, memo, placed, lib, count
        )
        if capped and result == "ok":
            result = capped
    if report.program is not None:
        capped = _count_program(
            pending, catalog, limits, bucket, env_id, source_id, memo, report.program, count
        )
        if capped and result == "ok":
            result = capped
    _report_seen(pending, env_id, source_id, bucket, report.processes * count, report.py)
    return result


def expand_known(
    pending: Pending, catalog: Catalog, limits: Limits, bucket: int, head: KnownHead, slots: Slots
) -> Counter[str]:
    """Add what the datagrams of a known header counted in ``bucket`` since the last call (see
    :mod:`~popcon.server.receive.known`); returns the datagrams that hit a cap, by cap.

    A record with a place adds its count there, with the person of each line not fresh. Any
    other record (the bucket's first of it, or its environment was released since) is
    counted as a decoded one is, asking the caps, and gets its place if it counted without a
    cap; one left out moves its datagrams (all of the header's at most) from ``ok``, as the
    first cap of a decoded datagram does."""
    sums, counts, processes, datagrams = head.take()
    moved: Counter[str] = Counter()
    if not datagrams:
        return moved
    found = _source(catalog, limits, bucket, head.env, head.labels, datagrams)
    if isinstance(found, str):
        moved[found] = datagrams
        return moved
    env_id, source_id, memo = found
    counted = catalog.counted[env_id]
    places = head.places
    left = datagrams
    placed = slots.of(pending, memo, source_id)

    def count_anew(position: int, record: Record, count: int) -> bool:
        """Count ``record`` as a decoded one; whether it counted without a cap."""
        nonlocal left
        if isinstance(record, LibRecord):
            capped = _count_lib(
                pending, catalog, limits, bucket, env_id, source_id, memo, placed, record, count
            )
        else:
            capped = _count_program(
                pending, catalog, limits, bucket, env_id, source_id, memo, record, count
            )
        if capped:
            moved[capped] += min(count, left)
            left -= min(count, left)
            return False
        ids = memo.get(_counted_as(record))
        if ids is None:
            return False
        places[position] = _place_of(record, ids, env_id, source_id, bucket)
        return True

    if not head.placed_for(counted, source_id):
        head.rebase(counted, source_id)  # the bucket's first job of it, or ids released
        places = head.places
        for position, count in enumerate(sums):
            if count:
                count_anew(position, head.records[position], count)
        sums = [0] * len(places)
    of_line = head.of_line
    fresh = head.fresh
    people: list[tuple[SketchKey, Person]] = []
    for line, count in counts.items():
        position, person = of_line[line]
        place = places[position]
        if place is None:
            if count_anew(position, head.record(line), count):
                fresh.add(line)
            continue
        sums[position] += count
        if line not in fresh:
            fresh.add(line)
            sketch = place[3]
            if sketch is not None and person is not None:
                people.append((sketch, person))
    edges = pending.edges
    programs = pending.programs
    for place, count in zip(places, sums):
        if not count or place is None:
            continue
        key, index, edge, _sketch = place
        if index < 0:
            programs[cast(ProgramKey, key)] += count
            continue
        _usage_row(pending, cast(UsageKey, key))[index] += count
        if edge is not None:
            edges[edge] += count
    for sketch, person in people:
        _count_person(_registers(pending, sketch), person)
    _report_seen(pending, env_id, source_id, bucket, processes, head.py)
    return moved


def _counted_as(record: Record) -> object:
    """How ``Catalog.counted`` knows a record (or a program): without its person field when
    it has one, so that a record without one is told apart."""
    return record if record[-1] is None else record[:-1]


def _place_of(
    record: Record, ids: tuple[int, int | None], env_id: int, source_id: int, bucket: int
) -> Place:
    """Where a record counts in a job in ``bucket``, with the ids of its library and importer
    (the importer's None when its edge is not counted)."""
    lib_id, importer_id = ids
    if isinstance(record, ProgRecord):
        sketch = None
        if record.person is not None:
            sketch = (source_id, bucket, lib_id, record.version, _RAN_CODES[record.origin])
        return ((source_id, bucket, lib_id, record.version), -1, None, sketch)
    key = (source_id, bucket, lib_id, ORIGIN_CODES[record.origin], record.version)
    edge = None if importer_id is None else (lib_id, bucket, env_id, importer_id)
    sketch = None
    if record.person is not None:
        code = _SKETCH_CODES[record.level, record.origin]
        sketch = (source_id, bucket, lib_id, record.version, code)
    return (key, _LEVEL_INDEX[record.level], edge, sketch)


def _count_lib(
    pending: Pending,
    catalog: Catalog,
    limits: Limits,
    bucket: int,
    env_id: int,
    source_id: int,
    memo: Memo,
    placed: dict[object, Slot],
    lib: LibRecord,
    count: int,
) -> str:
    """Count ``count`` records ``lib``; the cap it hit (``""`` when none)."""
    counted_as = _counted_as(lib)
    slot = placed.get(counted_as)
    capped = ""
    if slot is None:
        made = _place(
            pending, catalog, limits, bucket, env_id, source_id, memo, lib, counted_as, count
        )
        if isinstance(made, str):
            return made
        slot, capped = made
        if not capped and counted_as in memo:
            placed[counted_as] = slot
    row, index, edge, registers = slot
    row[index] += count
    if edge is not None:
        pending.edges[edge] += count
    if registers is not None and lib.person is not None:
        _count_person(registers, lib.person)
    return capped


def _place(
    pending: Pending,
    catalog: Catalog,
    limits: Limits,
    bucket: int,
    env_id: int,
    source_id: int,
    memo: Memo,
    lib: LibRecord,
    counted_as: object,
    count: int,
) -> tuple[Slot, str] | str:
    """Where ``lib`` (``counted_as`` in ``memo``) counts in ``pending`` (its library, version
    and importer admitted under the caps, or found in ``memo``) and the cap its importer hit
    (``""`` when none: such a record counts, without its edge); or the cap it hit, when it
    does not count."""
    hit = memo.get(counted_as)
    if hit is not None:
        lib_id, importer_id = hit
    else:
        known = catalog.env_libs[env_id]
        # Its library, version and importer may each be counted in this bucket already.
        found = catalog.libs.get(lib.name)
        if (
            found is None
            or known.seen.get(found) != bucket
            or catalog.live_libs.seen.get(found) != bucket
        ):
            found = catalog.lib_id(known, lib.name, limits, bucket, count)
            if found is None:
                return "library_cap"
        lib_id = found
        pair = (env_id, lib_id)
        versions = catalog.versions.pairs.get(pair)
        if (versions is None or versions.seen.get(lib.version) != bucket) and not catalog.version(
            pair, lib.version, limits, bucket
        ):
            return "version_cap"
        importer_id = None
        capped = ""
        if lib.importer is None or lib.level != TRANSITIVE:
            memo[counted_as] = (lib_id, None)
        else:
            importer_id = catalog.lib_id(known, lib.importer, limits, bucket, count)
            if importer_id is None:
                capped = "library_cap"
            elif not catalog.importer(pair, importer_id, limits, bucket):
                capped = "importer_cap"
                importer_id = None
            else:
                memo[counted_as] = (lib_id, importer_id)
        if capped:
            return (_slot(pending, bucket, env_id, source_id, lib, lib_id, None), capped)
    return (_slot(pending, bucket, env_id, source_id, lib, lib_id, importer_id), "")


def _slot(
    pending: Pending,
    bucket: int,
    env_id: int,
    source_id: int,
    lib: LibRecord,
    lib_id: int,
    importer_id: int | None,
) -> Slot:
    key, index, edge, sketch = _place_of(lib, (lib_id, importer_id), env_id, source_id, bucket)
    registers = None if sketch is None else _registers(pending, sketch)
    return (_usage_row(pending, cast(UsageKey, key)), index, edge, registers)


def _usage_row(pending: Pending, key: UsageKey) -> list[int]:
    """The record counts per level of a usage row of ``pending``, made when missing."""
    row = pending.usage.get(key)
    if row is None:
        row = pending.usage[key] = [0] * _LEVELS
    return row


def _registers(pending: Pending, key: SketchKey) -> dict[int, int]:
    """The registers of a sketch of ``pending``, made when missing."""
    registers = pending.sketches.get(key)
    if registers is None:
        registers = pending.sketches[key] = {}
    return registers


def _count_person(registers: dict[int, int], person: Person) -> None:
    """Add a person field to a sketch's registers: the highest rank of each register."""
    register, rank = person
    if registers.get(register, 0) < rank:
        registers[register] = rank


def _count_program(
    pending: Pending,
    catalog: Catalog,
    limits: Limits,
    bucket: int,
    env_id: int,
    source_id: int,
    memo: Memo,
    program: ProgRecord,
    count: int,
) -> str:
    """Count ``count`` processes that ran ``program`` (and its person); the cap it hit, or
    ``""``. It goes in ``memo`` once admitted in this bucket."""
    counted_as = _counted_as(program)
    hit = memo.get(counted_as)
    if hit is not None:
        prog_id = hit[0]
    else:
        found = catalog.lib_id(catalog.env_libs[env_id], program.name, limits, bucket)
        if found is None:
            return "library_cap"
        if not catalog.version((env_id, found), program.version, limits, bucket):
            return "version_cap"
        prog_id = found
        memo[counted_as] = (prog_id, None)
    key, _index, _edge, sketch = _place_of(program, (prog_id, None), env_id, source_id, bucket)
    pending.programs[cast(ProgramKey, key)] += count
    if sketch is not None and program.person is not None:
        _count_person(_registers(pending, sketch), program.person)
    return ""


#: (first seen, parts, {part: the part}) of one inventory being assembled
_Assembly = tuple[float, int, dict[int, InventoryPart]]


class InventoryAssembler:
    """Parts of inventories by (env, id) until all arrived; bounded in count and age."""

    def __init__(self, max_pending: int, timeout: float) -> None:
        self.max_pending = max_pending
        self.timeout = timeout
        self.assemblies: dict[tuple[str, str], _Assembly] = {}

    def add(self, part: InventoryPart, now: float) -> dict[str, Installed] | None:
        """The complete inventory ``{name: (version, requested, requires)}`` once the last part
        arrived, else None."""
        key = (part.env, part.inventory_id)
        entry = self.assemblies.get(key)
        if entry is None or entry[1] != part.parts:
            self._make_room(now)
            entry = (now, part.parts, {})
            self.assemblies[key] = entry
        entry[2][part.part] = part
        if len(entry[2]) < part.parts:
            return None
        del self.assemblies[key]
        inventory: dict[str, Installed] = {}
        for number in sorted(entry[2]):
            done = entry[2][number]
            inventory.update((name, (version, None, None)) for name, version in done.dists)
            for reason in done.reasons:
                version = inventory[reason.name][0]
                inventory[reason.name] = (version, reason.requested, reason.requires)
        return inventory

    def _make_room(self, now: float) -> None:
        expired = [k for k, v in self.assemblies.items() if now - v[0] > self.timeout]
        for key in expired:
            del self.assemblies[key]
        while len(self.assemblies) >= self.max_pending:
            oldest = min(self.assemblies, key=lambda k: self.assemblies[k][0])
            del self.assemblies[oldest]


def expand_inventory(
    pending: Pending,
    catalog: Catalog,
    limits: Limits,
    assembler: InventoryAssembler,
    part: InventoryPart,
    bucket: int,
    now: float,
) -> str:
    """Add one inventory part; a complete inventory replaces the env's pending one."""
    env_id = catalog.env_id(part.env, limits, bucket)
    if env_id is None:
        return "env_cap"
    inventory = assembler.add(part, now)
    if inventory is not None:
        pending.inventories[env_id] = (part.inventory_id, bucket, inventory)
    _see(pending, env_id, bucket, part.py)
    return "ok"


def expand_batch(
    pending: Pending,
    catalog: Catalog,
    limits: Limits,
    assembler: InventoryAssembler,
    uses: Uses,
    inventories: list[InventoryPart],
    results: Counter[str],
    bucket_width: int,
    now: float,
    slots: Slots | None = None,
) -> Counter[str]:
    """Merge one batch into ``pending``; datagrams that hit a cap move from ``ok`` (returned:
    the datagrams moved, by cap)."""
    moved: Counter[str] = Counter()
    catalog.now = now
    slots = slots or Slots()
    for (bucket, report), count in uses.items():
        result = expand_use(pending, catalog, limits, bucket, report, count, slots)
        if result != "ok":
            moved[result] += count
    bucket = int(now) - int(now) % bucket_width
    for part in inventories:
        result = expand_inventory(pending, catalog, limits, assembler, part, bucket, now)
        if result != "ok":
            moved[result] += 1
    pending.results.update(results)
    _move(pending, moved)
    return moved


def _move(pending: Pending, moved: Counter[str]) -> None:
    """Datagrams counted as ``ok`` that hit a cap: counted under it instead."""
    for reason, count in moved.items():
        pending.results[reason] += count
        pending.results["ok"] -= count


class Ingestor:
    """What the receiving side keeps between datagrams: the catalog (the writer's, loaded at
    its start), the pending rows, the inventories being assembled and the known lines of the
    current bucket, under the caps and bucket width of ``settings``. One thread only (not
    thread-safe)."""

    def __init__(self, catalog: Catalog, settings: StoreSettings) -> None:
        self.catalog = catalog
        self.limits = Limits.of(settings)
        self.bucket_width = settings.bucket_width
        self.pending = Pending()
        self.assembler = InventoryAssembler(
            settings.max_pending_inventories, settings.inventory_timeout
        )
        #: Reports received since the last job, counted by (bucket, report): they repeat
        #: across hand-overs, so they are expanded into rows once per job.
        self.uses: Uses = Counter()
        self.slots = Slots()
        self.known = KnownLines()
        self._now = 0.0
        #: Datagrams that hit each cap since its last log line, and when that line was.
        self._capped: Counter[str] = Counter()
        self._logged: dict[str, float] = {}

    def receive(
        self, datagrams: list[bytes], decode: Decoder, bucket: int, now: float
    ) -> Counter[str]:
        """Count datagrams received in ``bucket`` (the latest at ``now``), as the receiving
        loop does once per interval; returns their results.

        With a decoder that takes unsigned datagrams, those of known lines are counted by
        their lines (:func:`~popcon.server.receive.known.count_known`), the others decoded
        and aggregated (:func:`aggregate`); the lines of the new ``popcon/2 use`` ones are
        learned once their records are counted (they are then, not at the next job)."""
        known = self.known
        if known.bucket != bucket:
            self._count_known()
            known.start(bucket)
        counted = 0
        learned: list[tuple[bytes, UseReport]] | None = None
        if takes_unsigned(decode):
            datagrams, counted = count_known(datagrams, known.heads)
            if known.size < known.limit:
                learned = []
        uses, inventories, results = aggregate(datagrams, decode, bucket, learned)
        if counted:
            results["ok"] += counted
        self.add(uses, inventories, results, now, expand=bool(learned))
        if learned:
            self._learn(learned, bucket)
        return results

    def add(
        self,
        uses: Uses,
        inventories: list[InventoryPart],
        results: Counter[str],
        now: float,
        *,
        expand: bool = False,
    ) -> None:
        """Count one batch (see :func:`expand_batch`); reports wait for :meth:`take_job`
        (``uses`` is theirs from now on) unless ``expand`` or too many wait."""
        if self.uses:
            self.uses.update(uses)
        else:
            self.uses = uses
        self._now = now
        if expand or len(self.uses) >= MAX_HELD_REPORTS:
            uses, self.uses = self.uses, Counter()
            self._expand(uses, inventories, results)
        elif inventories or results:
            self._expand(Counter(), inventories, results)

    def take_job(self) -> Pending | None:
        """The pending rows with their new names, for the writer; None when nothing waits."""
        self._count_known()
        if self.uses:
            uses, self.uses = self.uses, Counter()
            self._expand(uses, [], Counter())
        self.catalog.take_new(self.pending)
        if not self.pending:
            return None
        job, self.pending = self.pending, Pending()
        self.slots.by_source.clear()  # they hold the job's rows
        return job

    def give_back(self, job: Pending) -> None:
        """A job the writer could not write: it goes out again with the next one."""
        merge_pending(self.pending, job)

    def _learn(self, learned: list[tuple[bytes, UseReport]], bucket: int) -> None:
        """Learn the lines of decoded datagrams whose records were counted in ``bucket``
        without a cap (the catalog's memo of their environment holds them)."""
        known = self.known
        heads = known.heads
        catalog = self.catalog
        for data, report in learned:
            if known.size >= known.limit:
                return
            env_id = catalog.envs.get(report.env)
            if env_id is None:
                continue
            counted = catalog.counted.get(env_id)
            source_id = catalog.sources.get((env_id, _labels_text(report.labels)))
            split = split_use(data)
            if counted is None or counted[0] != bucket or source_id is None or split is None:
                continue
            head_text, lines = split
            head = heads.get(head_text)
            if head is None:
                head = heads[head_text] = KnownHead(report.env, report.labels, report.py, env_id)
                known.size += 1
            if not head.placed_for(counted, source_id):
                if head.datagrams:
                    self._count_head(head)  # what it counted before: the places it had
                if not head.placed_for(counted, source_id):
                    head.rebase(counted, source_id)
            memo_get = counted[1].get
            fresh = head.fresh
            positions = head.positions
            places = head.places
            libs = iter(report.libs)
            program = report.program
            for line in lines:
                # the decoder makes one record of each line, in order: libs, and the program
                record: Record = (
                    program if program is not None and line.startswith(b"prog ") else next(libs)
                )
                if line in fresh:
                    continue
                counted_as = _counted_as(record)
                ids = memo_get(counted_as)
                if ids is None:
                    continue
                position = positions.get(counted_as)
                place = None if position is None else places[position]
                if place is None:
                    place = _place_of(record, ids, env_id, source_id, bucket)
                known.size += head.learn(line, record, counted_as, place)

    def _count_known(self) -> None:
        """Add what the datagrams of known lines counted to the pending rows."""
        for head in self.known.heads.values():
            if head.datagrams:
                self._count_head(head)

    def _count_head(self, head: KnownHead) -> None:
        self.catalog.now = self._now
        moved = expand_known(
            self.pending, self.catalog, self.limits, self.known.bucket, head, self.slots
        )
        if moved:
            _move(self.pending, moved)
            self._log_caps(moved)

    def _expand(self, uses: Uses, inventories: list[InventoryPart], results: Counter[str]) -> None:
        moved = expand_batch(
            self.pending,
            self.catalog,
            self.limits,
            self.assembler,
            uses,
            inventories,
            results,
            self.bucket_width,
            self._now,
            self.slots,
        )
        if moved:
            self._log_caps(moved)

    def _log_caps(self, moved: Counter[str]) -> None:
        """One line per cap and minute (of arrival time) at most, with the datagrams since."""
        self._capped.update(moved)
        for reason in moved:
            if self._now - self._logged.get(reason, -LOG_INTERVAL) < LOG_INTERVAL:
                continue
            self._logged[reason] = self._now
            log.warning(
                "%s: %d datagrams %s (%s; at most one line a minute)",
                reason,
                self._capped.pop(reason),
                "dropped" if reason in ("env_cap", "labels_cap") else "stored in part",
                CAP_CAUSES.get(reason, "see docs/collector-storage.md"),
            )


def aggregate(
    datagrams: Iterable[bytes],
    decode: Decoder,
    bucket: int,
    learned: list[tuple[bytes, UseReport]] | None = None,
) -> tuple[Uses, list[InventoryPart], Counter[str]]:
    """Decode and aggregate datagrams received in one bucket: ``(uses, inventory parts,
    results)`` for :meth:`Ingestor.add`. Identical datagrams are decoded once, signed ones
    each time (so the decoder drops replays); inventory parts past
    :data:`MAX_INVENTORY_PARTS_PER_BATCH` count as ``overload``. ``learned`` gets each
    distinct unsigned ``popcon/2 use`` datagram with its report."""
    seen: dict[bytes, tuple[UseReport, list[int]]] = {}
    uses: Uses = Counter()
    uses_get = uses.get
    results: Counter[str] = Counter()
    inventories: list[InventoryPart] = []
    ok = 0
    for data in datagrams:
        entry = seen.get(data)
        if entry is not None:
            entry[1][0] += 1
            continue
        decoded = decode(data)
        if isinstance(decoded, str):
            results[decoded] += 1
        elif isinstance(decoded, InventoryPart):
            if len(inventories) < MAX_INVENTORY_PARTS_PER_BATCH:
                inventories.append(decoded)
                ok += 1
            else:
                results["overload"] += 1
        elif is_signed(data):
            key = (bucket, decoded)
            uses[key] = uses_get(key, 0) + 1
            ok += 1
        else:
            seen[data] = (decoded, [1])
    for data, (report, (count,)) in seen.items():
        key = (bucket, report)
        uses[key] = uses_get(key, 0) + count
        ok += count
        if learned is not None and data.startswith(USE_START):
            learned.append((data, report))
    if ok:
        results["ok"] += ok
    return uses, inventories, results


def job_of(ingestor: Ingestor, received: Iterable[tuple[float, Decoded]]) -> Pending | None:
    """The job of ``(arrival time, decoded datagram)`` pairs, counted into ``ingestor`` as
    the receiving loop counts datagrams received at those times (inventory parts complete at
    the start of their bucket); None when nothing is to be written.

    The one way for tools and tests to write without a receiver::

        ingestor = Ingestor(writer.catalog, writer.settings)  # one per started writer
        job = job_of(ingestor, [(time.time(), decode(datagram)) for datagram in datagrams])
        if job is not None:
            writer.submit(job, timeout=10)
    """
    width = ingestor.bucket_width
    batches: dict[int, tuple[Uses, list[InventoryPart], Counter[str]]] = {}
    for moment, decoded in received:
        bucket = int(moment) - int(moment) % width
        batch = batches.get(bucket)
        if batch is None:
            batch = batches[bucket] = (Counter(), [], Counter())
        if isinstance(decoded, str):
            batch[2][decoded] += 1
            continue
        batch[2]["ok"] += 1
        if isinstance(decoded, InventoryPart):
            batch[1].append(decoded)
        else:
            batch[0][(bucket, decoded)] += 1
    for bucket in sorted(batches):
        ingestor.add(*batches[bucket], now=bucket)
    return ingestor.take_job()
