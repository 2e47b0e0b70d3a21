"""Turn received datagrams into pending rows, applying the caps; no SQL, no threads.

This runs on the receiving thread: all per-datagram Python work happens there, so the writer
thread only runs long SQL statements (which release the GIL) and never makes the receiving
thread wait for the GIL (see ``docs/collector-storage.md``, "threads").

The collector is the only writer of its database, so it assigns the ids of environments,
label sets ("sources") and library names itself, in a :class:`Catalog` loaded at start. New
names travel with the rows that use them (``Pending.new_*``); a job the writer could not
write comes back and is merged into the next one, so nothing is lost or doubled.
:func:`expand_batch` merges a batch into one :class:`Pending` (rows keyed by ids, at the
finest bucket). The catalog enforces the caps, so pending rows are bounded by the caps times
the buckets spanned, however much junk arrives and however long the database is unavailable.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from popcon.protocol.decode import InventoryPart, UseReport
from popcon.server.storage.schema import ORIGIN_CODES

_LEVEL_INDEX = {"direct": 0, "transitive": 1, "upgrade": 2, "unknown": 3}

#: (source id, bucket, library id, origin code, version)
UsageKey = tuple[int, int, int, int, str]


@dataclass
class Limits:
    max_environments: int
    max_label_sets_per_env: int
    max_libraries_per_env: int
    max_libraries: int


@dataclass
class Catalog:
    """Ids of names, what each environment already counts (for the caps), and the names
    assigned an id but not yet inserted (``new_*``, cleared after a successful flush)."""

    envs: dict[str, int] = field(default_factory=dict)
    sources: dict[tuple[int, str], int] = field(default_factory=dict)
    libs: dict[str, int] = field(default_factory=dict)
    #: env id → number of label sets; env id → admitted library ids
    label_sets: dict[int, int] = field(default_factory=dict)
    env_libs: dict[int, set[int]] = field(default_factory=dict)
    next_env: int = 1
    next_source: int = 1
    next_lib: int = 1
    #: Names given an id since the last :meth:`take_new`.
    new_envs: list[tuple[int, str]] = field(default_factory=list)
    new_sources: list[tuple[int, int, str]] = field(default_factory=list)
    new_libs: list[tuple[int, str]] = field(default_factory=list)
    #: labels tuple → text (label sets repeat)
    label_texts: dict[tuple[tuple[str, str], ...], str] = field(default_factory=dict)

    def env_id(self, name: str, limits: Limits) -> int | None:
        env_id = self.envs.get(name)
        if env_id is not None:
            return env_id
        if len(self.envs) >= limits.max_environments:
            return None
        env_id = self.envs[name] = self.next_env
        self.next_env += 1
        self.label_sets[env_id] = 0
        self.env_libs[env_id] = set()
        self.new_envs.append((env_id, name))
        return env_id

    def source_id(self, env_id: int, labels: str, limits: Limits) -> int | None:
        source_id = self.sources.get((env_id, labels))
        if source_id is not None:
            return source_id
        if self.label_sets[env_id] >= limits.max_label_sets_per_env:
            return None
        source_id = self.sources[(env_id, labels)] = self.next_source
        self.next_source += 1
        self.label_sets[env_id] += 1
        self.new_sources.append((source_id, env_id, labels))
        return source_id

    def lib_id(self, known: set[int], name: str, limits: Limits) -> int | None:
        """The id of library ``name`` if the environment whose set is ``known`` may count it."""
        lib_id = self.libs.get(name)
        if lib_id is not None and lib_id in known:
            return lib_id
        if len(known) >= limits.max_libraries_per_env:
            return None
        if lib_id is None:
            if len(self.libs) >= limits.max_libraries:
                return None
            lib_id = self.libs[name] = self.next_lib
            self.next_lib += 1
            self.new_libs.append((lib_id, name))
        known.add(lib_id)
        return lib_id

    def take_new(self, pending: Pending) -> None:
        """Move the names given an id since the last call into ``pending``."""
        pending.new_envs.extend(self.new_envs)
        pending.new_sources.extend(self.new_sources)
        pending.new_libs.extend(self.new_libs)
        self.new_envs = []
        self.new_sources = []
        self.new_libs = []


@dataclass
class Pending:
    """Rows waiting to be written, at the finest bucket, keyed by ids."""

    #: (source, bucket, library, origin, version) → [direct, transitive, upgrade, unknown]
    usage: dict[UsageKey, list[int]] = field(default_factory=dict)
    #: (library, bucket, env, importer) → transitive records
    edges: Counter = field(default_factory=Counter)
    #: (source, bucket) → processes
    reports: Counter = field(default_factory=Counter)
    #: env id → (last bucket seen, python version); source id → last bucket seen
    env_seen: dict[int, tuple[int, str]] = field(default_factory=dict)
    #: env id → first bucket seen
    env_first: dict[int, int] = field(default_factory=dict)
    source_seen: dict[int, int] = field(default_factory=dict)
    #: env id → (inventory id, bucket when complete, {name: version}); the latest complete one
    inventories: dict[int, tuple[str, int, dict[str, str]]] = field(default_factory=dict)
    results: Counter = field(default_factory=Counter)
    #: Names whose id these rows use for the first time (inserted with them).
    new_envs: list[tuple[int, str]] = field(default_factory=list)
    new_sources: list[tuple[int, int, str]] = field(default_factory=list)
    new_libs: list[tuple[int, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.usage
            or self.edges
            or self.reports
            or self.env_seen
            or self.inventories
            or self.new_envs
            or any(self.results.values())
        )

    def size(self) -> int:
        return len(self.usage) + len(self.edges) + len(self.reports)


def labels_text(labels: tuple[tuple[str, str], ...]) -> str:
    """``(("hub", "a"), ("ns", "b"))`` → ``"hub=a,ns=b"`` (labels arrive sorted by key)."""
    return ",".join(f"{k}={v}" for k, v in labels)


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
    """Add ``count`` identical reports; returns the datagrams' result (``ok`` or a cap)."""
    env_id = catalog.env_id(report.env, limits)
    if env_id is None:
        return "env_cap"
    labels = catalog.label_texts.get(report.labels)
    if labels is None:
        labels = labels_text(report.labels)
        if len(catalog.label_texts) < 10_000:
            catalog.label_texts[report.labels] = labels
    source_id = catalog.source_id(env_id, labels, limits)
    if source_id is None:
        return "labels_cap"
    known = catalog.env_libs[env_id]
    libs = catalog.libs
    result = "ok"
    usage = pending.usage
    edges = pending.edges
    edges_get = edges.get
    for lib in report.libs:
        lib_id = libs.get(lib.name)
        if lib_id is None or lib_id not in known:
            lib_id = catalog.lib_id(known, lib.name, limits)
            if lib_id is None:
                result = "library_cap"
                continue
        key = (source_id, bucket, lib_id, ORIGIN_CODES[lib.origin], lib.version)
        row = usage.get(key)
        if row is None:
            row = usage[key] = [0, 0, 0, 0]
        row[_LEVEL_INDEX[lib.level]] += count
        if lib.importer is not None:
            importer_id = libs.get(lib.importer)
            if importer_id is None or importer_id not in known:
                importer_id = catalog.lib_id(known, lib.importer, limits)
            if importer_id is None:
                result = "library_cap"
            else:
                edge = (lib_id, bucket, env_id, importer_id)
                edges[edge] = edges_get(edge, 0) + count
    if report.processes:
        pending.reports[(source_id, bucket)] += report.processes * count
    _see(pending, env_id, bucket, report.py)
    if pending.source_seen.get(source_id, -1) < bucket:
        pending.source_seen[source_id] = bucket
    return result


class InventoryAssembler:
    """Parts of inventories by (env, id) until all arrived; bounded in count and age."""

    def __init__(self, max_pending: int, timeout: float) -> None:
        self.max_pending = max_pending
        self.timeout = timeout
        #: (env, id) → (first seen, parts, {part: dists})
        self.assemblies: dict[
            tuple[str, str], tuple[float, int, dict[int, tuple[tuple[str, str], ...]]]
        ] = {}

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
    env_id = catalog.env_id(part.env, limits)
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
    uses: Counter,
    inventories: list[InventoryPart],
    results: Counter,
    bucket_width: int,
    now: float,
) -> None:
    """Merge one batch into ``pending``; datagrams dropped by a cap move from ``ok``."""
    moved: Counter = Counter()
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


def merge_pending(into: Pending, other: Pending) -> None:
    """Add ``other`` (an earlier job that could not be written) to ``into``."""
    for key, counts in other.usage.items():
        row = into.usage.get(key)
        if row is None:
            into.usage[key] = counts
        else:
            for i, value in enumerate(counts):
                row[i] += value
    into.edges.update(other.edges)
    into.reports.update(other.reports)
    for env_id, (bucket, py) in other.env_seen.items():
        seen = into.env_seen.get(env_id)
        if seen is None or seen[0] < bucket:
            into.env_seen[env_id] = (bucket, py or (seen[1] if seen else ""))
    for env_id, bucket in other.env_first.items():
        if into.env_first.get(env_id, bucket + 1) > bucket:
            into.env_first[env_id] = bucket
    for source_id, bucket in other.source_seen.items():
        if into.source_seen.get(source_id, -1) < bucket:
            into.source_seen[source_id] = bucket
    for env_id, inventory in other.inventories.items():
        into.inventories.setdefault(env_id, inventory)
    into.results.update(other.results)
    into.new_envs[:0] = other.new_envs
    into.new_sources[:0] = other.new_sources
    into.new_libs[:0] = other.new_libs


class Ingestor:
    """What the receiving thread keeps between datagrams: the catalog, the pending rows and
    the inventories being assembled. One thread only (not thread-safe)."""

    def __init__(
        self,
        catalog: Catalog,
        limits: Limits,
        bucket_width: int,
        *,
        max_pending_inventories: int = 256,
        inventory_timeout: float = 3600.0,
    ) -> None:
        self.catalog = catalog
        self.limits = limits
        self.bucket_width = bucket_width
        self.pending = Pending()
        self.assembler = InventoryAssembler(max_pending_inventories, inventory_timeout)
        #: Reports received since the last job, counted by (bucket, report): they repeat
        #: across hand-overs, so they are expanded into rows once per job.
        self.uses: Counter = Counter()
        self._now = 0.0

    def add(
        self, uses: Counter, inventories: list[InventoryPart], results: Counter, now: float
    ) -> None:
        """Count one batch (see :func:`expand_batch`); reports wait for :meth:`take_job`."""
        self.uses.update(uses)
        self._now = now
        if inventories or results:
            expand_batch(
                self.pending,
                self.catalog,
                self.limits,
                self.assembler,
                Counter(),
                inventories,
                results,
                self.bucket_width,
                now,
            )

    def take_job(self) -> Pending | None:
        """The pending rows with their new names, for the writer; None when nothing waits."""
        if self.uses:
            uses, self.uses = self.uses, Counter()
            expand_batch(
                self.pending,
                self.catalog,
                self.limits,
                self.assembler,
                uses,
                [],
                Counter(),
                self.bucket_width,
                self._now,
            )
        self.catalog.take_new(self.pending)
        if not self.pending:
            return None
        job, self.pending = self.pending, Pending()
        return job

    def give_back(self, job: Pending) -> None:
        """A job the writer could not write: it goes out again with the next one."""
        merge_pending(self.pending, job)


def aggregate(
    datagrams: Iterable[bytes], decode: Callable[[bytes], object], bucket: int
) -> tuple[Counter, list[InventoryPart], Counter]:
    """Decode and aggregate datagrams received in one bucket, as the receiving loop does:
    ``(uses, inventory parts, results)`` for :meth:`Ingestor.add`. For tests and tools; the
    receiver inlines the same steps for speed."""
    seen: dict[bytes, list] = {}
    results: Counter = Counter()
    inventories: list[InventoryPart] = []
    for data in datagrams:
        entry = seen.get(data)
        if entry is not None:
            entry[1] += 1
            continue
        decoded = decode(data)
        if isinstance(decoded, str):
            results[decoded] += 1
        elif isinstance(decoded, InventoryPart):
            inventories.append(decoded)
            results["ok"] += 1
        else:
            seen[data] = [decoded, 1]
    uses: Counter = Counter()
    for report, count in seen.values():
        uses[(bucket, report)] += count
        results["ok"] += count
    return uses, inventories, results
