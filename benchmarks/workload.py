"""Realistic popcon datagrams for the benchmarks: 20 environments, 2,000 libraries, Zipf use,
2,000 people, some processes running a program.

Plain functions; deterministic for a given seed. Imported by ``ingest.py``, ``ingest_peer.py``
and ``top_query.py`` (run them from the repository root: ``python benchmarks/ingest.py``),
which put ``src`` on ``sys.path``: the datagrams are spelled with the protocol's vocabulary.
They are what recorders send: ``popcon/2``, every record with its person's field
(``docs/protocol.md``), or ``popcon/1`` (no person, no program) as older recorders do.
"""

from __future__ import annotations

import hashlib
import random
from typing import Optional

from popcon.protocol import (
    DIRECT,
    MAX_RANK,
    ORIGINS,
    PROGRAM,
    PROTOCOL_VERSION,
    PROTOCOL_VERSIONS,
    SKETCH_PRECISION,
    TRANSITIVE,
    USE,
)

ENVIRONMENTS = 20
LIBRARIES = 2000
#: People (one secret each) whose processes the workload runs.
PEOPLE = 2000
#: Programs (console scripts, ``python -m``) some processes run, with their versions.
PROGRAMS = {
    "ipykernel": "6.29.5",
    "jupyter-server": "2.14.1",
    "pytest": "8.2.2",
    "pip": "24.0",
    "dask": "2024.5.0",
}
#: The share of processes that run a program (the rest run people's own scripts).
PROGRAM_SHARE = 0.3
#: The ``prog`` record's level in :meth:`Workload.person_process` (never on the wire).
PROG = "prog"
_RANK_BITS = MAX_RANK - 1
#: A record: (name, version, level, importer).
Record = tuple[str, str, str, Optional[str]]


def person_field(secret: bytes, name: str) -> str:
    """A person's contribution for distribution ``name``, ``<register>:<rank>``, as
    ``docs/protocol.md`` defines it (and the recorder computes it)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8, key=secret).digest()
    value = int.from_bytes(digest, "big")
    rank = MAX_RANK - (value & ((1 << _RANK_BITS) - 1)).bit_length()
    return f"{value >> (64 - SKETCH_PRECISION)}:{rank}"


def library_names(count: int = LIBRARIES) -> list[str]:
    """Plausible canonical names: ``lib-0000-core`` …"""
    stems = ["core", "utils", "client", "io", "plot", "ml", "db", "http", "cli", "sci"]
    return [f"lib{i:04d}-{stems[i % len(stems)]}" for i in range(count)]


def environment_names(count: int = ENVIRONMENTS) -> list[str]:
    return [f"quay.io/jupyter/image-{i:02d}:2026-11-{1 + i % 28:02d}" for i in range(count)]


def zipf_weights(count: int, exponent: float = 1.1) -> list[float]:
    return [1.0 / (rank + 1) ** exponent for rank in range(count)]


class Workload:
    """Each environment installs 600 of the libraries. Every library depends on 0-3 others
    (a fixed graph, as real distributions do). A process imports 1-3 libraries directly
    (Zipf-distributed) and, transitively, their dependencies (up to 12 libraries in all); a
    transitive record names the library that pulled it in first."""

    def __init__(self, seed: int = 1, installed_per_env: int = 600, people: int = PEOPLE) -> None:
        self.rng = random.Random(seed)
        rng = self.rng
        self.libraries = library_names()
        self.environments = environment_names()
        self.installed = {
            env: rng.sample(self.libraries, installed_per_env) for env in self.environments
        }
        self.weights = zipf_weights(installed_per_env)
        popular = zipf_weights(len(self.libraries), 1.3)
        self.dependencies = {
            name: [
                d for d in rng.choices(self.libraries, popular, k=rng.randint(0, 3)) if d != name
            ]
            for name in self.libraries
        }
        self.versions = {
            name: f"{1 + i % 5}.{i % 13}.{i % 7}" for i, name in enumerate(self.libraries)
        }
        self.labels = {env: f"label hub=hub{i % 3}\n" for i, env in enumerate(self.environments)}
        # People and programs draw from a generator of their own, so that ``process`` gives
        # the same processes as before they existed.
        self.people_rng = random.Random(f"people-{seed}")
        self.secrets = [self.people_rng.randbytes(32) for _ in range(people)]
        #: Some people run far more processes than others.
        self.people_weights = zipf_weights(people, 0.8)
        #: What each program's own machinery imports (``program`` records).
        self.machinery = {
            program: self.people_rng.sample(self.libraries[:200], self.people_rng.randint(2, 4))
            for program in PROGRAMS
        }
        self._fields: dict[tuple[int, str], str] = {}

    def process(self) -> tuple[str, list[tuple[str, str, str, str | None]]]:
        """(env, [(name, version, level, importer)]) for one process."""
        rng = self.rng
        env = rng.choice(self.environments)
        direct = dict.fromkeys(rng.choices(self.installed[env], self.weights, k=rng.randint(1, 3)))
        seen = set(direct)
        records = [(name, self.versions[name], DIRECT, None) for name in direct]
        queue = list(direct)
        while queue and len(records) < 12:
            importer = queue.pop(0)
            for dependency in self.dependencies[importer]:
                if dependency not in seen and len(records) < 12:
                    seen.add(dependency)
                    queue.append(dependency)
                    records.append((dependency, self.versions[dependency], TRANSITIVE, importer))
        return env, records

    def person_process(self) -> tuple[str, int, list[Record]]:
        """(env, person, records) of one process of :meth:`process`, run by one of the
        people (Zipf), and in :data:`PROGRAM_SHARE` of them under a program: then its records
        begin with the program's (level :data:`PROG`), the program's own distribution and
        what its machinery imports (level ``program``)."""
        env, records = self.process()
        rng = self.people_rng
        person = rng.choices(range(len(self.secrets)), self.people_weights)[0]
        if rng.random() < PROGRAM_SHARE:
            program = rng.choice(list(PROGRAMS))
            version = PROGRAMS[program]
            own: list[Record] = [(program, version, PROG, None), (program, version, PROGRAM, None)]
            own += [(lib, self.versions[lib], PROGRAM, program) for lib in self.machinery[program]]
            taken = {name for name, *_ in own}
            records = own + [record for record in records if record[0] not in taken]
        return env, person, records

    def field(self, person: int, name: str) -> str:
        """``person``'s field for ``name`` (computed once)."""
        key = (person, name)
        found = self._fields.get(key)
        if found is None:
            found = self._fields[key] = person_field(self.secrets[person], name)
        return found

    def process_datagrams(self, per_datagram: int = 4, protocol: int = 2) -> list[bytes]:
        """The datagrams of one process: its records, at most ``per_datagram`` per datagram
        (the recorder sends as soon as a new distribution is imported), seq 0, 1, ...

        ``protocol`` 2: a process of :meth:`person_process`, its ``prog`` and ``lib`` records
        with its person's field; 1: a ``popcon/1`` process of :meth:`process` (no person, no
        program), as recorders installed before people were counted send."""
        if protocol == 1:
            env, records = self.process()
            person = None
        else:
            env, person, records = self.person_process()
        version_word = PROTOCOL_VERSIONS[0] if protocol == 1 else PROTOCOL_VERSION
        head = f"env {env}\npy 3.11\n{self.labels[env]}"
        origin = ORIGINS[0]
        out = []
        for seq, first in enumerate(range(0, len(records), per_datagram)):
            lines = [f"{version_word} {USE} {seq}\n", head]
            for name, version, level, importer in records[first : first + per_datagram]:
                field = "" if person is None else " " + self.field(person, name)
                if level == PROG:
                    lines.append(f"prog {name} {version} {origin}{field}\n")
                    continue
                tail = f" {importer}" if importer else ""
                lines.append(f"lib {name} {version} {level} {origin}{field}{tail}\n")
            out.append("".join(lines).encode())
        return out

    def datagram(self, seq: int = 0) -> bytes:
        """The first datagram of a new process."""
        return self.process_datagrams()[0]

    def datagrams(self, count: int, protocol: int = 2) -> list[bytes]:
        """``count`` datagrams of whole processes, in order."""
        out: list[bytes] = []
        while len(out) < count:
            out.extend(self.process_datagrams(protocol=protocol))
        return out[:count]
