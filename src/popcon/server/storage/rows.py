"""What the writer accepts: a job of pending rows keyed by ids, and the catalog of those ids.

The collector is the only writer of its database, so it assigns the ids of environments,
label sets ("sources") and library names itself, in a :class:`Catalog` that the writer loads
from the database at start (``persist.load_catalog``) and hands to the receiving side, which
assigns ids in it from then on. The catalog enforces the caps (:class:`Limits`) on what was
seen within the last day (:class:`Capped`: a name, version or importer unseen for
:data:`RELEASE_AFTER` gives its place to a new one), so the rows pending are bounded by the
caps times the buckets spanned, however much junk arrives and however long the database is
unavailable, and junk holds no place for longer than a day. New names travel with the first
job that uses them (``Pending.new_*``), and what was released with the next one
(``Pending.released_*``: its all-time totals are deleted); a job the writer could not write
is merged into a later one (:func:`merge_pending`), so nothing is lost or doubled. Plain data:
no SQL, no threads.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Generic, Optional, TypeVar

from popcon.server.storage.schema import StoreSettings

#: (source id, bucket, library id, origin code, version)
UsageKey = tuple[int, int, int, int, str]
#: (library id, bucket, env id, importer id)
EdgeKey = tuple[int, int, int, int]
#: (source id, bucket)
ReportKey = tuple[int, int]
#: (source id, bucket, library id, version, sketch kind code)
SketchKey = tuple[int, int, int, str, int]
#: (source id, bucket, program's library id, version)
ProgramKey = tuple[int, int, int, str]
#: (env id, library id)
Pair = tuple[int, int]
#: An inventory's entry of one distribution: (version, installed on request, the installed
#: distributions it requires); None where its ``dist`` line does not say.
Installed = tuple[str, Optional[bool], Optional[tuple[str, ...]]]

K = TypeVar("K")

#: Seconds (of arrival time) after which a name, a version or an importer no longer seen
#: counts toward no cap: a full cap then gives its place to a new one.
RELEASE_AFTER = 23 * 3600
#: A full cap looks for what it can release at most this often (so a flood of new names
#: costs no scan per datagram); with :data:`RELEASE_AFTER`, junk holds a place a day at most.
RELEASE_CHECK = 600
#: A full cap of environments, label sets or libraries has a reserve of ``cap // 16`` places
#: (at least one) beyond it for names that return (see :class:`Probation`).
RESERVE_SHARE = 16
#: Seconds (of arrival time) between two names entering the reserves of one kind of cap, and
#: how many may enter at once after a quiet while: the bound on what turns over there.
PROMOTE_EVERY = 10.0
PROMOTE_BURST = 6
#: Refused names a :class:`Probation` remembers (the once-seen ones are forgotten first).
CANDIDATES = 4096


@dataclass(frozen=True)
class Limits:
    """The caps (see :class:`~popcon.server.storage.schema.StoreSettings`)."""

    max_environments: int
    max_label_sets_per_env: int
    max_libraries_per_env: int
    max_libraries: int
    max_versions_per_library: int = 32
    max_importers_per_library: int = 1000
    max_versions: int = 100_000
    max_importers: int = 100_000

    @classmethod
    def of(cls, settings: StoreSettings) -> Limits:
        return cls(
            settings.max_environments,
            settings.max_label_sets_per_env,
            settings.max_libraries_per_env,
            settings.max_libraries,
            settings.max_versions_per_library,
            settings.max_importers_per_library,
            settings.max_versions,
            settings.max_importers,
        )


class Capped(Generic[K]):
    """What counts toward one cap: each key with the last bucket it was seen in (``seen``).

    :meth:`make_room` is asked before a key is added when the cap may be full: it releases
    the keys unseen for :data:`RELEASE_AFTER` (at most once per :data:`RELEASE_CHECK`) and
    says whether there is room.
    """

    __slots__ = ("_checked", "reserved", "seen")

    def __init__(self) -> None:
        self.seen: dict[K, int] = {}
        #: The keys of ``seen`` that hold a place of the reserve beyond the cap.
        self.reserved: set[K] = set()
        self._checked = -RELEASE_CHECK

    def __contains__(self, key: object) -> bool:
        return key in self.seen

    def __len__(self) -> int:
        return len(self.seen)

    def see(self, key: K, bucket: int) -> None:
        if self.seen.get(key, bucket) <= bucket:
            self.seen[key] = bucket

    def make_room(self, bucket: int, cap: int, released: list[K]) -> bool:
        """Whether one more key fits under ``cap``; keys released for it go to ``released``."""
        if len(self.seen) < cap:
            return True
        self.release(bucket, released)
        return len(self.seen) < cap

    def release(self, bucket: int, released: list[K], *, force: bool = False) -> None:
        """Take out the keys unseen for :data:`RELEASE_AFTER` (unless checked lately)."""
        if not force and bucket < self._checked + RELEASE_CHECK:
            return
        self._checked = bucket
        stale = [key for key, last in self.seen.items() if last < bucket - RELEASE_AFTER]
        for key in stale:
            del self.seen[key]
        released.extend(stale)
        self.reserved.difference_update(stale)

    def take_reserved_place(self, key: K, bucket: int, cap: int, released: list[K]) -> None:
        """Count ``key``, seen in ``bucket``, in the reserve beyond a full ``cap``: when the
        reserve's ``cap // RESERVE_SHARE`` places are taken, its least recently seen key gives
        way (to ``released``). Keys beyond the cap not in the reserve (loaded at start, or the
        cap was lowered) join it first, the least recently seen ones."""
        seen, reserved = self.seen, self.reserved
        reserved.intersection_update(seen)
        while len(reserved) > max(len(seen) - cap, 0):  # released keys freed places under it
            reserved.discard(max(reserved, key=seen.__getitem__))
        excess = len(seen) - len(reserved) - cap
        if excess > 0:
            unreserved = (key for key in seen if key not in reserved)
            reserved.update(sorted(unreserved, key=seen.__getitem__)[:excess])
        while reserved and len(reserved) >= max(cap // RESERVE_SHARE, 1):
            oldest = min(reserved, key=seen.__getitem__)
            reserved.discard(oldest)
            del seen[oldest]
            released.append(oldest)
        seen[key] = bucket
        reserved.add(key)


class Probation:
    """Names that full caps of one kind (environments, label sets, libraries of
    environments, libraries) refused, and which of them may enter the reserves beyond the
    caps, and when.

    A refused name is remembered with the datagrams it came in (at most :data:`CANDIDATES`
    names; the once-seen ones are forgotten first, then the least seen). One seen a second
    time (two datagrams, at once or later) *returns*, and may take a reserve place when the
    pace allows (one per :data:`PROMOTE_EVERY` seconds of arrival time, :data:`PROMOTE_BURST`
    at once after a quiet while) and no name waiting was seen more often within the last
    :data:`PROMOTE_BURST` times :data:`PROMOTE_EVERY` seconds. So names seen once never take a
    reserve place, names sent twice take one each :data:`PROMOTE_EVERY` at most, and a name
    that keeps reporting passes them all.
    """

    __slots__ = ("_best", "_best_at", "_best_name", "_next", "refused")

    def __init__(self) -> None:
        #: Refused name (or (env id, name)) → datagrams seen while refused.
        self.refused: dict[object, int] = {}
        #: The most datagrams of a name waiting, which name, and when it was last seen.
        self._best = 0
        self._best_name: object = None
        self._best_at = 0.0
        #: The arrival time at which the pace allows the next promotion with no burst left.
        self._next = float("-inf")

    def returning(self, name: object, count: int, now: float) -> bool:
        """Whether ``name``, refused by a full cap ``count`` more times, may enter the
        reserve now (then :meth:`promote` it)."""
        refused = self.refused
        seen = refused.get(name, 0) + count
        if (
            seen >= 2
            and (seen >= self._best or now > self._best_at + PROMOTE_BURST * PROMOTE_EVERY)
            and now >= self._next - (PROMOTE_BURST - 1) * PROMOTE_EVERY
        ):
            return True
        if len(refused) >= CANDIDATES and name not in refused:
            self._forget(now)
        refused[name] = seen
        if seen >= self._best or name == self._best_name:
            self._best, self._best_name, self._best_at = seen, name, now
        return False

    def promote(self, name: object, now: float) -> None:
        """``name`` takes a reserve place: the pace moves on."""
        self.refused.pop(name, None)
        self._next = max(self._next, now) + PROMOTE_EVERY
        if name == self._best_name:
            self._find_best(now)

    def _forget(self, now: float) -> None:
        kept = sorted((seen, i) for i, seen in enumerate(self.refused.values()) if seen > 1)
        keep = {i for _, i in kept[len(kept) - CANDIDATES // 2 :]} if kept else set()
        self.refused = {n: s for i, (n, s) in enumerate(self.refused.items()) if i in keep}
        self._find_best(now)

    def _find_best(self, now: float) -> None:
        self._best, self._best_name = max(
            ((seen, name) for name, seen in self.refused.items()),
            key=lambda pair: pair[0],
            default=(0, None),
        )
        self._best_at = now


class EnvLibraries(Capped[int]):
    """The library ids an environment counts (toward ``max_libraries_per_env``)."""

    __slots__ = ("env_id",)

    def __init__(self, env_id: int) -> None:
        super().__init__()
        self.env_id = env_id


class PairCaps(Generic[K]):
    """Versions or importers of each library in each environment: the first of a pair is
    always kept, more count toward a cap per pair and a pool shared by all pairs."""

    def __init__(self) -> None:
        self.pairs: dict[Pair, Capped[K]] = {}
        #: Keys beyond the first of their pair, over all pairs (what the pool holds).
        self.extra = 0
        self._checked = -RELEASE_CHECK

    def admit(
        self, pair: Pair, key: K, bucket: int, cap: int, pool: int, released: list[tuple[Pair, K]]
    ) -> bool:
        """Whether ``key`` of ``pair`` is counted (seen now); what was released for it goes
        to ``released``."""
        capped = self.pairs.get(pair)
        if capped is None:
            capped = self.pairs[pair] = Capped()
            capped.seen[key] = bucket
            return True
        seen = capped.seen
        last = seen.get(key)
        if last is not None:
            if last < bucket:
                seen[key] = bucket
            return True
        if self.extra >= pool:
            self._release_all(bucket, released)
        gone: list[K] = []
        before = len(seen)
        room = capped.make_room(bucket, cap, gone)
        released.extend((pair, k) for k in gone)
        self.extra -= max(before - 1, 0) - max(len(seen) - 1, 0)
        if not room or (seen and self.extra >= pool):
            return False
        self.extra += 1 if seen else 0
        seen[key] = bucket
        return True

    def drop(self, pair: Pair) -> None:
        """Forget a pair (its library was released from its environment)."""
        capped = self.pairs.pop(pair, None)
        if capped is not None:
            self.extra -= max(len(capped) - 1, 0)

    def _release_all(self, bucket: int, released: list[tuple[Pair, K]]) -> None:
        if bucket < self._checked + RELEASE_CHECK:
            return
        self._checked = bucket
        for pair, capped in list(self.pairs.items()):
            before = len(capped)
            gone: list[K] = []
            capped.release(bucket, gone, force=True)
            if gone:
                released.extend((pair, k) for k in gone)
                self.extra -= max(before - 1, 0) - max(len(capped) - 1, 0)
                if not capped.seen:
                    del self.pairs[pair]


@dataclass
class Catalog:
    """Ids of names (every name of the database, released or not), what counts toward each
    cap (seen within :data:`RELEASE_AFTER`), the names assigned an id but not yet handed to a
    job (``new_*``) and what was released since (``released_*``; see :meth:`take_new`).

    The ``bucket`` of the calls is the arrival time's bucket: what was seen then counts;
    ``count`` how many identical datagrams bring the name; ``now`` (set by the receiving
    side) the latest arrival time, which paces the reserves beyond full caps."""

    envs: dict[str, int] = field(default_factory=dict)
    sources: dict[tuple[int, str], int] = field(default_factory=dict)
    libs: dict[str, int] = field(default_factory=dict)
    #: What counts toward the caps: environments; env id → label sets; libraries (all
    #: environments); env id → libraries; versions and importers of each (env, library).
    live_envs: Capped[int] = field(default_factory=Capped)
    label_sets: dict[int, Capped[int]] = field(default_factory=dict)
    live_libs: Capped[int] = field(default_factory=Capped)
    env_libs: dict[int, EnvLibraries] = field(default_factory=dict)
    versions: PairCaps[str] = field(default_factory=PairCaps)
    importers: PairCaps[int] = field(default_factory=PairCaps)
    #: The names each kind of full cap refused, and the pace of its reserves.
    refused_envs: Probation = field(default_factory=Probation)
    refused_label_sets: Probation = field(default_factory=Probation)
    refused_env_libs: Probation = field(default_factory=Probation)
    refused_libs: Probation = field(default_factory=Probation)
    now: float = 0.0
    #: env id → (bucket, {record: (library id, importer id)}): the records the receiving
    #: side counted in that bucket without a cap (so it need not ask again in it).
    counted: dict[int, tuple[int, dict[object, tuple[int, int | None]]]] = field(
        default_factory=dict
    )
    next_env: int = 1
    next_source: int = 1
    next_lib: int = 1
    #: Names given an id since the last :meth:`take_new`.
    new_envs: list[tuple[int, str]] = field(default_factory=list)
    new_sources: list[tuple[int, int, str]] = field(default_factory=list)
    new_libs: list[tuple[int, str]] = field(default_factory=list)
    #: Released since the last :meth:`take_new`: environments, (env, library), versions.
    released_envs: list[int] = field(default_factory=list)
    released_pairs: list[Pair] = field(default_factory=list)
    released_versions: list[tuple[Pair, str]] = field(default_factory=list)

    def env_id(self, name: str, limits: Limits, bucket: int = 0, count: int = 1) -> int | None:
        """The id of environment ``name``; None when it does not count yet, the cap of
        environments seen within a day is reached and it may not enter the reserve."""
        env_id = self.envs.get(name)
        live = self.live_envs
        if env_id is not None:
            last = live.seen.get(env_id)
            if last is not None:
                if last < bucket:
                    live.seen[env_id] = bucket
                return env_id
        gone: list[int] = []
        room = live.make_room(bucket, limits.max_environments, gone)
        reserve = not room and self.refused_envs.returning(name, count, self.now)
        if not room and not reserve:
            for old in gone:
                self._release_env(old)
            return None
        if env_id is None:
            env_id = self.envs[name] = self.next_env
            self.next_env += 1
            self.new_envs.append((env_id, name))
        if reserve:
            self.refused_envs.promote(name, self.now)
            live.take_reserved_place(env_id, bucket, limits.max_environments, gone)
        for old in gone:
            self._release_env(old)
        live.seen[env_id] = bucket
        self.label_sets[env_id] = Capped()
        self.env_libs[env_id] = EnvLibraries(env_id)
        return env_id

    def source_id(
        self, env_id: int, labels: str, limits: Limits, bucket: int = 0, count: int = 1
    ) -> int | None:
        """The id of the label set ``labels`` (stored text) of an environment, or None."""
        source_id = self.sources.get((env_id, labels))
        live = self.label_sets[env_id]
        if source_id is not None:
            last = live.seen.get(source_id)
            if last is not None:
                if last < bucket:
                    live.seen[source_id] = bucket
                return source_id
        cap = limits.max_label_sets_per_env
        room = live.make_room(bucket, cap, [])
        reserve = not room and self.refused_label_sets.returning((env_id, labels), count, self.now)
        if not room and not reserve:
            return None
        if source_id is None:
            source_id = self.sources[(env_id, labels)] = self.next_source
            self.next_source += 1
            self.new_sources.append((source_id, env_id, labels))
        if reserve:
            self.refused_label_sets.promote((env_id, labels), self.now)
            live.take_reserved_place(source_id, bucket, cap, [])
        live.seen[source_id] = bucket
        return source_id

    def lib_id(
        self, known: EnvLibraries, name: str, limits: Limits, bucket: int = 0, count: int = 1
    ) -> int | None:
        """The id of library ``name`` if the environment whose libraries are ``known`` may
        count it (seen now), else None."""
        lib_id = self.libs.get(name)
        live = self.live_libs
        if lib_id is not None:
            in_env, anywhere = known.seen.get(lib_id), live.seen.get(lib_id)
            if in_env is not None and anywhere is not None:
                if in_env < bucket:
                    known.seen[lib_id] = bucket
                if anywhere < bucket:
                    live.seen[lib_id] = bucket
                return lib_id
        env_full = live_full = False
        if lib_id is None or lib_id not in known.seen:
            gone: list[int] = []
            env_full = not known.make_room(bucket, limits.max_libraries_per_env, gone)
            for old in gone:
                self._release_pair((known.env_id, old))
            candidate = (known.env_id, name)
            if env_full and not self.refused_env_libs.returning(candidate, count, self.now):
                return None
        if lib_id is None or lib_id not in live:
            live_full = not live.make_room(bucket, limits.max_libraries, [])
            if live_full and not self.refused_libs.returning(name, count, self.now):
                return None
            if lib_id is None:
                lib_id = self.libs[name] = self.next_lib
                self.next_lib += 1
                self.new_libs.append((lib_id, name))
        if env_full:
            gone = []
            self.refused_env_libs.promote((known.env_id, name), self.now)
            known.take_reserved_place(lib_id, bucket, limits.max_libraries_per_env, gone)
            for old in gone:
                self._release_pair((known.env_id, old))
        if live_full:
            self.refused_libs.promote(name, self.now)
            live.take_reserved_place(lib_id, bucket, limits.max_libraries, [])
        live.see(lib_id, bucket)
        known.see(lib_id, bucket)
        return lib_id

    def version(self, pair: Pair, version: str, limits: Limits, bucket: int = 0) -> bool:
        """Whether ``version`` of a library in an environment is counted (seen now)."""
        return self.versions.admit(
            pair,
            version,
            bucket,
            limits.max_versions_per_library,
            limits.max_versions,
            self.released_versions,
        )

    def importer(self, pair: Pair, importer_id: int, limits: Limits, bucket: int = 0) -> bool:
        """Whether the edge from ``importer_id`` to a library in an environment is counted."""
        return self.importers.admit(
            pair, importer_id, bucket, limits.max_importers_per_library, limits.max_importers, []
        )

    def _release_pair(self, pair: Pair) -> None:
        self.versions.drop(pair)
        self.importers.drop(pair)
        self.released_pairs.append(pair)

    def _release_env(self, env_id: int) -> None:
        self.counted.pop(env_id, None)
        self.label_sets.pop(env_id, None)
        known = self.env_libs.pop(env_id, None)
        for lib_id in known.seen if known is not None else ():
            self.versions.drop((env_id, lib_id))
            self.importers.drop((env_id, lib_id))
        self.released_envs.append(env_id)

    def take_new(self, pending: Pending) -> None:
        """Move the names given an id and what was released since the last call into
        ``pending``."""
        pending.new_envs.extend(self.new_envs)
        pending.new_sources.extend(self.new_sources)
        pending.new_libs.extend(self.new_libs)
        pending.released_envs.extend(self.released_envs)
        pending.released_pairs.extend(self.released_pairs)
        pending.released_versions.extend(self.released_versions)
        self.new_envs = []
        self.new_sources = []
        self.new_libs = []
        self.released_envs = []
        self.released_pairs = []
        self.released_versions = []


@dataclass
class Pending:
    """A job: rows waiting to be written, at the finest bucket, keyed by ids."""

    #: (source, bucket, library, origin, version) → record counts per level, in the order of
    #: ``schema.LEVEL_COLUMNS``
    usage: dict[UsageKey, list[int]] = field(default_factory=dict)
    #: (source, bucket, library, version, sketch kind) → {register: rank}: the people
    sketches: dict[SketchKey, dict[int, int]] = field(default_factory=dict)
    #: (source, bucket, program, version) → processes that ran it
    programs: Counter[ProgramKey] = field(default_factory=Counter)
    #: (library, bucket, env, importer) → transitive records
    edges: Counter[EdgeKey] = field(default_factory=Counter)
    #: (source, bucket) → processes
    reports: Counter[ReportKey] = field(default_factory=Counter)
    #: env id → (last bucket seen, python version)
    env_seen: dict[int, tuple[int, str]] = field(default_factory=dict)
    #: env id → first bucket seen; source id → last bucket seen
    env_first: dict[int, int] = field(default_factory=dict)
    source_seen: dict[int, int] = field(default_factory=dict)
    #: env id → (inventory id, bucket when complete, {name: entry}); the latest complete one
    inventories: dict[int, tuple[str, int, dict[str, Installed]]] = field(default_factory=dict)
    #: datagrams per result (``ok``, a rejection reason or a cap)
    results: Counter[str] = field(default_factory=Counter)
    #: Names whose id these rows use for the first time (inserted with them).
    new_envs: list[tuple[int, str]] = field(default_factory=list)
    new_sources: list[tuple[int, int, str]] = field(default_factory=list)
    new_libs: list[tuple[int, str]] = field(default_factory=list)
    #: Released from the caps (their all-time totals are deleted): environments, libraries
    #: of an environment, versions of a library in an environment.
    released_envs: list[int] = field(default_factory=list)
    released_pairs: list[Pair] = field(default_factory=list)
    released_versions: list[tuple[Pair, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.usage
            or self.sketches
            or self.programs
            or self.edges
            or self.reports
            or self.env_seen
            or self.inventories
            or self.new_envs
            or self.released_envs
            or self.released_pairs
            or self.released_versions
            or any(self.results.values())
        )

    def size(self) -> int:
        return (
            len(self.usage)
            + len(self.sketches)
            + len(self.programs)
            + len(self.edges)
            + len(self.reports)
        )


def merge_pending(into: Pending, other: Pending) -> None:
    """Add ``other`` (an earlier job that could not be written) to ``into``."""
    for key, counts in other.usage.items():
        row = into.usage.get(key)
        if row is None:
            into.usage[key] = counts
        else:
            for i, value in enumerate(counts):
                row[i] += value
    for cell, registers in other.sketches.items():
        have = into.sketches.get(cell)
        if have is None:
            into.sketches[cell] = registers
        else:
            for register, rank in registers.items():
                if have.get(register, 0) < rank:
                    have[register] = rank
    into.programs.update(other.programs)
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
    into.released_envs[:0] = other.released_envs
    into.released_pairs[:0] = other.released_pairs
    into.released_versions[:0] = other.released_versions
