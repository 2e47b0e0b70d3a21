"""What the collector's decoder makes of a datagram: typed records, or a rejection reason.

:data:`Decoded` is the answer of a decoder (:func:`popcon.protocol.decode.make_decoder`): a
:class:`UseReport` (from a ``use`` datagram or statsd lines), an :class:`InventoryPart`, or one
of :data:`popcon.protocol.REJECTIONS`. The receiving side aggregates these.
"""

from __future__ import annotations

from typing import NamedTuple, Union

#: ``label`` lines as ``(key, value)`` pairs, sorted by key.
Labels = tuple[tuple[str, str], ...]
#: A person field: ``(register, rank)`` of a HyperLogLog contribution.
Person = tuple[int, int]


class LibRecord(NamedTuple):
    """One ``lib`` line: a process used this distribution."""

    name: str
    version: str  # UNKNOWN_VERSION ("-") when unknown
    level: str  # one of LEVELS, or UNKNOWN (statsd)
    origin: str  # one of ORIGINS, or UNKNOWN (statsd)
    importer: str | None  # with TRANSITIVE or PROGRAM only
    person: Person | None = None  # None: no person (``-``, popcon/1, statsd)


class ProgRecord(NamedTuple):
    """The ``prog`` line: the process's program (popcon/2)."""

    name: str
    version: str
    origin: str
    person: Person | None


class UseReport(NamedTuple):
    """A ``use`` datagram (or statsd lines, with ``py`` empty and level/origin unknown)."""

    env: str
    labels: Labels
    py: str
    processes: int  # new processes this datagram announces: 1 for seq 0, else 0
    libs: tuple[LibRecord, ...]
    program: ProgRecord | None = None


class DistReason(NamedTuple):
    """Why a distribution is installed, from a ``dist`` line that says it (``<requested>``
    and ``<requires>``)."""

    name: str
    requested: bool | None  # None: not known (``?``)
    requires: tuple[str, ...]  # the installed distributions it requires


class InventoryPart(NamedTuple):
    """One part of an environment's inventory."""

    env: str
    labels: Labels
    py: str
    inventory_id: str
    part: int
    parts: int
    dists: tuple[tuple[str, str], ...]  # (name, version)
    reasons: tuple[DistReason, ...] = ()  # of the dist lines that say why


#: A decoder's answer: a record, or the reason the whole datagram is dropped.
Decoded = Union[UseReport, InventoryPart, str]
