"""Helpers of the storage-layer tests: datagram builders, a fake clock, in-process ingest."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence

from popcon.protocol.decode import make_decoder, sign
from popcon.server.receive.ingest import aggregate
from popcon.server.storage.writer import Writer

#: Monday 2026-11-02 00:00:00 UTC.
T0 = 1_793_577_600
MINUTE, HOUR, DAY = 60, 3600, 86400


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Lib = tuple  # (name, version, level, origin[, importer])


def use_datagram(
    env: str,
    libs: Sequence[Lib],
    *,
    seq: int = 0,
    labels: Sequence[tuple[str, str]] = (),
    py: str = "3.11",
    key: bytes | None = None,
) -> bytes:
    lines = [f"popcon/1 use {seq}", f"env {env}", f"py {py}"]
    lines += [f"label {k}={v}" for k, v in labels]
    lines += ["lib " + " ".join(lib) for lib in libs]
    data = ("\n".join(lines) + "\n").encode()
    return data + sign(key, data) if key else data


def inventory_datagrams(
    env: str, dists: Sequence[tuple[str, str]], *, inventory_id: str = "0badcafe", parts: int = 1
) -> list[bytes]:
    """The inventory ``dists`` split into ``parts`` datagrams."""
    out = []
    for part in range(parts):
        lines = [f"popcon/1 inv {inventory_id} {part + 1} {parts}", f"env {env}", "py 3.11"]
        lines += [f"dist {n} {v}" for n, v in dists[part::parts]]
        out.append(("\n".join(lines) + "\n").encode())
    return out


_INGESTORS: dict = {}


def ingest(writer: Writer, timed: Iterable[tuple[float, bytes]], **decoder_settings) -> None:
    """Decode and store ``(arrival time, datagram)`` pairs through the receiving side's code
    (:func:`aggregate`, the :class:`Ingestor`) and the writer, as received at those times."""
    decode = make_decoder(**decoder_settings)
    # One ingestor per writer, as one receiver keeps one (inventory parts wait in it).
    ingestor = _INGESTORS.get(id(writer))
    if ingestor is None or ingestor.catalog is not writer.catalog:
        ingestor = _INGESTORS[id(writer)] = writer.make_ingestor()
    by_bucket: dict[int, list[bytes]] = {}
    for moment, data in timed:
        bucket = int(moment) - int(moment) % writer.bucket_width
        by_bucket.setdefault(bucket, []).append(data)
    for bucket, datagrams in sorted(by_bucket.items()):
        ingestor.add(*aggregate(datagrams, decode, bucket), now=bucket)
    job = ingestor.take_job()
    if job is not None:
        assert writer.submit(job, timeout=10)
    assert writer.flush(20), writer.last_error


def send(address: tuple[str, int], datagrams: Iterable[bytes]) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    count = 0
    try:
        for data in datagrams:
            sock.sendto(data, address)
            count += 1
    finally:
        sock.close()
    return count


PANDAS_PROCESS = [
    ("pandas", "2.2.2", "direct", "env"),
    ("numpy", "1.26.4", "transitive", "env", "pandas"),
    ("python-dateutil", "2.9.0", "transitive", "env", "pandas"),
]
