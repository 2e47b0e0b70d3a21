"""Count decoded datagrams into the writer's jobs, applying the caps; no SQL, no threads.

This runs on the receiving thread: all per-datagram Python work happens there, so the writer
thread only runs long SQL statements (which release the GIL) and never makes the receiving
thread wait for the GIL (see ``docs/collector-storage.md``, "threads").

An :class:`Ingestor` holds the receiving side's state: the writer's
:class:`~popcon.server.storage.rows.Catalog` (ids and caps), the
:class:`~popcon.server.storage.rows.Pending` rows of the next job and the inventories being
assembled. :func:`expand_batch` counts a batch into the pending rows (keyed by ids, at the
finest bucket); a datagram that hits a cap is counted under it, and each cap logs at most one
line a minute. Tools and tests that write without a receiver count decoded datagrams with
:func:`job_of` and hand the job to :meth:`Writer.submit
<popcon.server.storage.writer.Writer.submit>`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from typing import Optional

from popcon.protocol import ORIGINS, TRANSITIVE
from popcon.protocol.decode import Decoder, is_signed
from popcon.protocol.records import Decoded, InventoryPart, LibRecord, ProgRecord, UseReport
from popcon.server.storage.rows import (
    Catalog,
    EdgeKey,
    Installed,
    Limits,
    Pending,
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
    env_id = catalog.env_id(report.env, limits, bucket, count)
    if env_id is None:
        return "env_cap"
    source_id = catalog.source_id(env_id, _labels_text(report.labels), limits, bucket, count)
    if source_id is None:
        return "labels_cap"
    # The records counted in this bucket (no cap to ask again): record without its person →
    # (lib, importer).
    counted = catalog.counted.get(env_id)
    if counted is not None and counted[0] == bucket:
        memo = counted[1]
    else:
        memo = {}
        catalog.counted[env_id] = (bucket, memo)
    placed = (slots or Slots()).of(pending, memo, source_id)
    placed_get = placed.get
    result = "ok"
    edges = pending.edges
    edges_get = edges.get
    for lib in report.libs:
        person = lib[5]
        counted_as = lib if person is None else lib[:5]
        slot = placed_get(counted_as)
        if slot is None:
            made = _place(pending, catalog, limits, bucket, env_id, source_id, memo, lib, count)
            if isinstance(made, str):
                if result == "ok":
                    result = made
                continue
            slot, capped = made
            if capped:
                if result == "ok":
                    result = capped
            elif counted_as in memo:
                placed[counted_as] = slot
        row, index, edge, registers = slot
        row[index] += count
        if edge is not None:
            edges[edge] = edges_get(edge, 0) + count
        if registers is not None and person is not None:
            register, rank = person
            if registers.get(register, 0) < rank:
                registers[register] = rank
    if report.program is not None:
        capped = _count_program(
            pending, catalog, limits, bucket, env_id, source_id, report.program, count
        )
        if capped and result == "ok":
            result = capped
    if report.processes:
        pending.reports[(source_id, bucket)] += report.processes * count
    _see(pending, env_id, bucket, report.py)
    if pending.source_seen.get(source_id, -1) < bucket:
        pending.source_seen[source_id] = bucket
    return result


def _place(
    pending: Pending,
    catalog: Catalog,
    limits: Limits,
    bucket: int,
    env_id: int,
    source_id: int,
    memo: dict[object, tuple[int, int | None]],
    lib: LibRecord,
    count: int,
) -> tuple[Slot, str] | str:
    """Where ``lib`` counts in ``pending`` (its library, version and importer admitted under
    the caps, or found in ``memo``) and the cap its importer hit (``""`` when none: such a
    record counts, without its edge); or the cap it hit, when it does not count."""
    counted_as = lib[:5] if lib.person is not None else lib
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
    key = (source_id, bucket, lib_id, ORIGIN_CODES[lib.origin], lib.version)
    row = pending.usage.get(key)
    if row is None:
        row = pending.usage[key] = [0] * _LEVELS
    edge = None if importer_id is None else (lib_id, bucket, env_id, importer_id)
    registers = None
    if lib.person is not None:
        sketch_key = (source_id, bucket, lib_id, lib.version, _SKETCH_CODES[lib.level, lib.origin])
        registers = pending.sketches.get(sketch_key)
        if registers is None:
            registers = pending.sketches[sketch_key] = {}
    return (row, _LEVEL_INDEX[lib.level], edge, registers)


def _count_program(
    pending: Pending,
    catalog: Catalog,
    limits: Limits,
    bucket: int,
    env_id: int,
    source_id: int,
    program: ProgRecord,
    count: int,
) -> str:
    """Count ``count`` processes that ran ``program`` (and its person); the cap it hit, or
    ``""``."""
    prog_id = catalog.lib_id(catalog.env_libs[env_id], program.name, limits, bucket)
    if prog_id is None:
        return "library_cap"
    if not catalog.version((env_id, prog_id), program.version, limits, bucket):
        return "version_cap"
    pending.programs[(source_id, bucket, prog_id, program.version)] += count
    if program.person is not None:
        sketch_key = (source_id, bucket, prog_id, program.version, _RAN_CODES[program.origin])
        registers = pending.sketches.get(sketch_key)
        if registers is None:
            registers = pending.sketches[sketch_key] = {}
        register, rank = program.person
        if registers.get(register, 0) < rank:
            registers[register] = rank
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
    for reason, count in moved.items():
        pending.results[reason] += count
        pending.results["ok"] -= count
    return moved


class Ingestor:
    """What the receiving side keeps between datagrams: the catalog (the writer's, loaded at
    its start), the pending rows and the inventories being assembled, under the caps and
    bucket width of ``settings``. One thread only (not thread-safe)."""

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
        self._now = 0.0
        #: Datagrams that hit each cap since its last log line, and when that line was.
        self._capped: Counter[str] = Counter()
        self._logged: dict[str, float] = {}

    def add(
        self, uses: Uses, inventories: list[InventoryPart], results: Counter[str], now: float
    ) -> None:
        """Count one batch (see :func:`expand_batch`); reports wait for :meth:`take_job`
        (``uses`` is theirs from now on)."""
        if self.uses:
            self.uses.update(uses)
        else:
            self.uses = uses
        self._now = now
        if len(self.uses) >= MAX_HELD_REPORTS:
            uses, self.uses = self.uses, Counter()
            self._expand(uses, inventories, results)
        elif inventories or results:
            self._expand(Counter(), inventories, results)

    def take_job(self) -> Pending | None:
        """The pending rows with their new names, for the writer; None when nothing waits."""
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
    datagrams: Iterable[bytes], decode: Decoder, bucket: int
) -> tuple[Uses, list[InventoryPart], Counter[str]]:
    """Decode and aggregate datagrams received in one bucket, as the receiving loop does:
    ``(uses, inventory parts, results)`` for :meth:`Ingestor.add` (the loop inlines the same
    steps for speed); identical datagrams are decoded once, signed ones each time (so the
    decoder drops replays)."""
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
            inventories.append(decoded)
            ok += 1
        elif is_signed(data):
            key = (bucket, decoded)
            uses[key] = uses_get(key, 0) + 1
            ok += 1
        else:
            seen[data] = (decoded, [1])
    for report, (count,) in seen.values():
        key = (bucket, report)
        uses[key] = uses_get(key, 0) + count
        ok += count
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
