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

from popcon.protocol.decode import Decoder, is_signed
from popcon.protocol.records import Decoded, InventoryPart, UseReport
from popcon.server.storage.rows import Catalog, Limits, Pending, merge_pending
from popcon.server.storage.schema import LEVEL_COLUMNS, ORIGIN_CODES, StoreSettings, labels_text

log = logging.getLogger(__name__)

_LEVEL_INDEX = {level: index for index, level in enumerate(LEVEL_COLUMNS)}
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

#: Identical reports per finest bucket: ``{(bucket start, report): datagrams}``.
Uses = Counter[tuple[int, UseReport]]


def _see(pending: Pending, env_id: int, bucket: int, py: str) -> None:
    seen = pending.env_seen.get(env_id)
    if seen is None or seen[0] <= bucket:
        pending.env_seen[env_id] = (bucket, py or (seen[1] if seen else ""))
    if pending.env_first.get(env_id, bucket + 1) > bucket:
        pending.env_first[env_id] = bucket


def expand_use(
    pending: Pending,
    catalog: Catalog,
    limits: Limits,
    bucket: int,
    report: UseReport,
    count: int,
) -> str:
    """Add ``count`` identical reports; returns the datagrams' result (``ok`` or the first
    cap their records hit: records over a cap are left out, edges over one too)."""
    env_id = catalog.env_id(report.env, limits, bucket, count)
    if env_id is None:
        return "env_cap"
    source_id = catalog.source_id(env_id, _labels_text(report.labels), limits, bucket, count)
    if source_id is None:
        return "labels_cap"
    known = catalog.env_libs[env_id]
    # The records counted in this bucket (no cap to ask again): record → (lib, importer).
    counted = catalog.counted.get(env_id)
    if counted is not None and counted[0] == bucket:
        memo = counted[1]
    else:
        memo = {}
        catalog.counted[env_id] = (bucket, memo)
    libs = catalog.libs
    known_seen = known.seen
    live_seen = catalog.live_libs.seen
    version_pairs = catalog.versions.pairs
    result = "ok"
    usage = pending.usage
    edges = pending.edges
    edges_get = edges.get
    for lib in report.libs:
        hit = memo.get(lib)
        if hit is not None:
            lib_id, importer_id = hit
        else:
            # Its library, version and importer may each be counted in this bucket already.
            found = libs.get(lib.name)
            if found is None or known_seen.get(found) != bucket or live_seen.get(found) != bucket:
                found = catalog.lib_id(known, lib.name, limits, bucket, count)
                if found is None:
                    result = "library_cap" if result == "ok" else result
                    continue
            lib_id = found
            pair = (env_id, lib_id)
            versions = version_pairs.get(pair)
            if (
                versions is None or versions.seen.get(lib.version) != bucket
            ) and not catalog.version(pair, lib.version, limits, bucket):
                result = "version_cap" if result == "ok" else result
                continue
            importer_id = None
            if lib.importer is None:
                memo[lib] = (lib_id, None)
            else:
                importer_id = catalog.lib_id(known, lib.importer, limits, bucket, count)
                if importer_id is None:
                    result = "library_cap" if result == "ok" else result
                elif not catalog.importer(pair, importer_id, limits, bucket):
                    result = "importer_cap" if result == "ok" else result
                    importer_id = None
                else:
                    memo[lib] = (lib_id, importer_id)
        key = (source_id, bucket, lib_id, ORIGIN_CODES[lib.origin], lib.version)
        row = usage.get(key)
        if row is None:
            row = usage[key] = [0, 0, 0, 0]
        row[_LEVEL_INDEX[lib.level]] += count
        if importer_id is not None:
            edge = (lib_id, bucket, env_id, importer_id)
            edges[edge] = edges_get(edge, 0) + count
    if report.processes:
        pending.reports[(source_id, bucket)] += report.processes * count
    _see(pending, env_id, bucket, report.py)
    if pending.source_seen.get(source_id, -1) < bucket:
        pending.source_seen[source_id] = bucket
    return result


#: (first seen, parts, {part: dists}) of one inventory being assembled
_Assembly = tuple[float, int, dict[int, tuple[tuple[str, str], ...]]]


class InventoryAssembler:
    """Parts of inventories by (env, id) until all arrived; bounded in count and age."""

    def __init__(self, max_pending: int, timeout: float) -> None:
        self.max_pending = max_pending
        self.timeout = timeout
        self.assemblies: dict[tuple[str, str], _Assembly] = {}

    def add(self, part: InventoryPart, now: float) -> dict[str, str] | None:
        """The complete inventory ``{name: version}`` once the last part arrived, else None."""
        key = (part.env, part.inventory_id)
        entry = self.assemblies.get(key)
        if entry is None or entry[1] != part.parts:
            self._make_room(now)
            entry = (now, part.parts, {})
            self.assemblies[key] = entry
        entry[2][part.part] = part.dists
        if len(entry[2]) < part.parts:
            return None
        del self.assemblies[key]
        inventory: dict[str, str] = {}
        for number in sorted(entry[2]):
            inventory.update(entry[2][number])
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
) -> Counter[str]:
    """Merge one batch into ``pending``; datagrams that hit a cap move from ``ok`` (returned:
    the datagrams moved, by cap)."""
    moved: Counter[str] = Counter()
    catalog.now = now
    for (bucket, report), count in uses.items():
        result = expand_use(pending, catalog, limits, bucket, report, count)
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
        self._now = 0.0
        #: Datagrams that hit each cap since its last log line, and when that line was.
        self._capped: Counter[str] = Counter()
        self._logged: dict[str, float] = {}

    def add(
        self, uses: Uses, inventories: list[InventoryPart], results: Counter[str], now: float
    ) -> None:
        """Count one batch (see :func:`expand_batch`); reports wait for :meth:`take_job`."""
        self.uses.update(uses)
        self._now = now
        if inventories or results:
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
    results: Counter[str] = Counter()
    inventories: list[InventoryPart] = []
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
            results["ok"] += 1
        elif is_signed(data):
            uses[(bucket, decoded)] += 1
            results["ok"] += 1
        else:
            seen[data] = (decoded, [1])
    for report, (count,) in seen.values():
        uses[(bucket, report)] += count
        results["ok"] += count
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
