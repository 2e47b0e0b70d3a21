"""Turn received batches into pending rows, applying the caps; plain functions, no SQL.

The writer keeps one :class:`Pending` (rows keyed by names, at the finest bucket) and one
:class:`Admission` (which environments, label sets and libraries are already counted, so the
caps hold). :func:`expand_batch` merges a batch into them; the store then writes the pending
rows through to every tier. Because pending rows are keyed by admitted names, their number is
bounded by the caps times the buckets spanned, however much junk arrives and however long the
database stays unavailable.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from popcon.server.decode import InventoryPart, UseReport

_LEVEL_INDEX = {"direct": 0, "transitive": 1, "upgrade": 2, "unknown": 3}
_ORIGIN_CODES = {"env": 0, "user": 1, "unknown": 2}

UsageKey = tuple[int, str, str, str, int]  # bucket, env, labels text, library, origin code


@dataclass
class Limits:
    max_environments: int
    max_label_sets_per_env: int
    max_libraries_per_env: int
    max_libraries: int


@dataclass
class Admission:
    """Names already counted (loaded from the database at start and after each sweep)."""

    envs: set[str] = field(default_factory=set)
    label_sets: dict[str, set[str]] = field(default_factory=dict)
    libs_per_env: dict[str, set[str]] = field(default_factory=dict)
    libs: set[str] = field(default_factory=set)

    def admit_env(self, env: str, limits: Limits) -> bool:
        if env in self.envs:
            return True
        if len(self.envs) >= limits.max_environments:
            return False
        self.envs.add(env)
        self.label_sets[env] = set()
        self.libs_per_env[env] = set()
        return True

    def admit_labels(self, env: str, labels: str, limits: Limits) -> bool:
        known = self.label_sets[env]
        if labels in known:
            return True
        if len(known) >= limits.max_label_sets_per_env:
            return False
        known.add(labels)
        return True

    def admit_library(self, known: set[str], name: str, limits: Limits) -> bool:
        """``known`` is ``libs_per_env[env]``; the name joins it if the caps allow."""
        if len(known) >= limits.max_libraries_per_env:
            return False
        if name not in self.libs:
            if len(self.libs) >= limits.max_libraries:
                return False
            self.libs.add(name)
        known.add(name)
        return True


@dataclass
class Pending:
    """Rows waiting to be written, at the finest bucket, keyed by names."""

    #: (bucket, env, labels, library, origin) → [direct, transitive, upgrade, unknown]
    usage: dict[UsageKey, list[int]] = field(default_factory=dict)
    #: (bucket, env, library, version) → processes
    versions: Counter = field(default_factory=Counter)
    #: (bucket, env, importer, library) → records
    edges: Counter = field(default_factory=Counter)
    #: (bucket, env, labels) → processes
    reports: Counter = field(default_factory=Counter)
    #: env → (last bucket seen, python version); (env, labels) → last bucket seen
    env_seen: dict[str, tuple[int, str]] = field(default_factory=dict)
    source_seen: dict[tuple[str, str], int] = field(default_factory=dict)
    #: env → (inventory id, bucket when complete, {name: version}); the latest complete one
    inventories: dict[str, tuple[str, int, dict[str, str]]] = field(default_factory=dict)
    results: Counter = field(default_factory=Counter)

    def __bool__(self) -> bool:
        return bool(self.usage or self.reports or self.env_seen or self.inventories or self.results)

    def size(self) -> int:
        return len(self.usage) + len(self.versions) + len(self.edges) + len(self.reports)


def _labels_text(labels: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels)


def _see(pending: Pending, env: str, labels: str, bucket: int, py: str) -> None:
    seen = pending.env_seen.get(env)
    if seen is None or seen[0] <= bucket:
        pending.env_seen[env] = (bucket, py or (seen[1] if seen else ""))
    source = (env, labels)
    if pending.source_seen.get(source, -1) < bucket:
        pending.source_seen[source] = bucket


def expand_use(
    pending: Pending,
    admission: Admission,
    limits: Limits,
    bucket: int,
    report: UseReport,
    count: int,
) -> str:
    """Add ``count`` identical reports; returns the datagrams' result (``ok`` or a cap)."""
    env = report.env
    if not admission.admit_env(env, limits):
        return "env_cap"
    labels = _labels_text(report.labels)
    if not admission.admit_labels(env, labels, limits):
        return "labels_cap"
    known = admission.libs_per_env[env]
    result = "ok"
    usage = pending.usage
    versions = pending.versions
    for lib in report.libs:
        name = lib.name
        if name not in known and not admission.admit_library(known, name, limits):
            result = "library_cap"
            continue
        key = (bucket, env, labels, name, _ORIGIN_CODES[lib.origin])
        row = usage.get(key)
        if row is None:
            row = usage[key] = [0, 0, 0, 0]
        level = lib.level
        row[_LEVEL_INDEX[level]] += count
        if level != "upgrade":
            versions[(bucket, env, name, lib.version)] += count
        importer = lib.importer
        if importer is not None:
            if importer in known or admission.admit_library(known, importer, limits):
                pending.edges[(bucket, env, importer, name)] += count
            else:
                result = "library_cap"
    if report.processes:
        pending.reports[(bucket, env, labels)] += report.processes * count
    _see(pending, env, labels, bucket, report.py)
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
    admission: Admission,
    limits: Limits,
    assembler: InventoryAssembler,
    part: InventoryPart,
    bucket: int,
    now: float,
) -> str:
    """Add one inventory part; a complete inventory replaces the env's pending one."""
    if not admission.admit_env(part.env, limits):
        return "env_cap"
    inventory = assembler.add(part, now)
    if inventory is not None:
        pending.inventories[part.env] = (part.inventory_id, bucket, inventory)
    seen = pending.env_seen.get(part.env)
    if seen is None or seen[0] <= bucket:
        pending.env_seen[part.env] = (bucket, part.py or (seen[1] if seen else ""))
    return "ok"


def expand_batch(
    pending: Pending,
    admission: Admission,
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
        result = expand_use(pending, admission, limits, bucket, report, count)
        if result != "ok":
            moved[result] += count
    bucket = int(now) - int(now) % bucket_width
    for part in inventories:
        result = expand_inventory(pending, admission, limits, assembler, part, bucket, now)
        if result != "ok":
            moved[result] += 1
    pending.results.update(results)
    for reason, count in moved.items():
        pending.results[reason] += count
        pending.results["ok"] -= count
