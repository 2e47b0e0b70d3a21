"""What the writer accepts: a job of pending rows keyed by ids, and the catalog of those ids.

The collector is the only writer of its database, so it assigns the ids of environments,
label sets ("sources") and library names itself, in a :class:`Catalog` that the writer loads
from the database at start (``persist.load_catalog``) and hands to the receiving side, which
assigns ids in it from then on. The catalog enforces the caps (:class:`Limits`), so the rows
pending are bounded by the caps times the buckets spanned, however much junk arrives and
however long the database is unavailable. New names travel with the first job that uses them
(``Pending.new_*``); a job the writer could not write is merged into a later one
(:func:`merge_pending`), so nothing is lost or doubled. Plain data: no SQL, no threads.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from popcon.server.storage.schema import StoreSettings

#: (source id, bucket, library id, origin code, version)
UsageKey = tuple[int, int, int, int, str]
#: (library id, bucket, env id, importer id)
EdgeKey = tuple[int, int, int, int]
#: (source id, bucket)
ReportKey = tuple[int, int]


@dataclass(frozen=True)
class Limits:
    """The caps on names (see :class:`~popcon.server.storage.schema.StoreSettings`)."""

    max_environments: int
    max_label_sets_per_env: int
    max_libraries_per_env: int
    max_libraries: int

    @classmethod
    def of(cls, settings: StoreSettings) -> Limits:
        return cls(
            settings.max_environments,
            settings.max_label_sets_per_env,
            settings.max_libraries_per_env,
            settings.max_libraries,
        )


@dataclass
class Catalog:
    """Ids of names, what each environment already counts (for the caps), and the names
    assigned an id but not yet handed to a job (``new_*``, see :meth:`take_new`)."""

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

    def env_id(self, name: str, limits: Limits) -> int | None:
        """The id of environment ``name``; None when it is new and the cap is reached."""
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
        """The id of the label set ``labels`` (stored text) of an environment, or None."""
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
    """A job: rows waiting to be written, at the finest bucket, keyed by ids."""

    #: (source, bucket, library, origin, version) → [direct, transitive, upgrade, unknown]
    usage: dict[UsageKey, list[int]] = field(default_factory=dict)
    #: (library, bucket, env, importer) → transitive records
    edges: Counter[EdgeKey] = field(default_factory=Counter)
    #: (source, bucket) → processes
    reports: Counter[ReportKey] = field(default_factory=Counter)
    #: env id → (last bucket seen, python version)
    env_seen: dict[int, tuple[int, str]] = field(default_factory=dict)
    #: env id → first bucket seen; source id → last bucket seen
    env_first: dict[int, int] = field(default_factory=dict)
    source_seen: dict[int, int] = field(default_factory=dict)
    #: env id → (inventory id, bucket when complete, {name: version}); the latest complete one
    inventories: dict[int, tuple[str, int, dict[str, str]]] = field(default_factory=dict)
    #: datagrams per result (``ok``, a rejection reason or a cap)
    results: Counter[str] = field(default_factory=Counter)
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
