"""Realistic popcon datagrams for the benchmarks: 20 environments, 2,000 libraries, Zipf use.

Plain functions; deterministic for a given seed. Imported by ``ingest.py`` and
``top_query.py`` (run them from the repository root: ``python benchmarks/ingest.py``), which
put ``src`` on ``sys.path``: the datagrams are spelled with the protocol's vocabulary.
"""

from __future__ import annotations

import random

from popcon.protocol import DIRECT, ORIGINS, PROTOCOL_VERSION, TRANSITIVE, USE

ENVIRONMENTS = 20
LIBRARIES = 2000


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

    def __init__(self, seed: int = 1, installed_per_env: int = 600) -> None:
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

    def process_datagrams(self, per_datagram: int = 4) -> list[bytes]:
        """The datagrams of one process: its records, at most ``per_datagram`` per datagram
        (the recorder sends as soon as a new distribution is imported), seq 0, 1, ..."""
        env, records = self.process()
        head = f"env {env}\npy 3.11\n{self.labels[env]}"
        out = []
        for seq, first in enumerate(range(0, len(records), per_datagram)):
            lines = [f"{PROTOCOL_VERSION} {USE} {seq}\n", head]
            for name, version, level, importer in records[first : first + per_datagram]:
                tail = f" {importer}" if importer else ""
                lines.append(f"lib {name} {version} {level} {ORIGINS[0]}{tail}\n")
            out.append("".join(lines).encode())
        return out

    def datagram(self, seq: int = 0) -> bytes:
        """The first datagram of a new process."""
        return self.process_datagrams()[0]

    def datagrams(self, count: int) -> list[bytes]:
        """``count`` datagrams of whole processes, in order."""
        out: list[bytes] = []
        while len(out) < count:
            out.extend(self.process_datagrams())
        return out[:count]
