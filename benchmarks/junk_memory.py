"""Memory under junk: a million distinct junk library names (and 200,000 junk environment
names) sent to a real collector on loopback; the caps must keep its memory bounded.

    python benchmarks/junk_memory.py           # 1,000,000 names (about a minute)
    python benchmarks/junk_memory.py --quick   # 100,000 names

Prints the collector's RSS (``/proc/self/status``) after start, while the junk arrives, and
its peak, against the RSS of the same collector after 100,000 datagrams of a realistic
workload measured first in the same run; plus how many names were stored (the caps) and how
many datagrams the caps turned away.
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from workload import Workload

from popcon.protocol import DIRECT, ORIGINS, PROTOCOL_VERSION, SKETCH_PRECISION, USE
from popcon.server import Collector
from popcon.server.query.connection import connect_readonly
from popcon.server.query.totals import datagram_totals

JUNK_PER_DATAGRAM = 10


def rss_mib(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def junk_person(n: int) -> str:
    """A valid person field that differs from one junk record to the next."""
    return f"{n * 7919 % (1 << SKETCH_PRECISION)}:{1 + n % 20}"


def junk_library_datagrams(first: int, count: int) -> list[bytes]:
    """``count // 10`` datagrams naming ``junk-<n>`` from ``first``, ten per datagram, in 10
    environments, each record with a person field of its own."""
    out = []
    for start in range(first, first + count, JUNK_PER_DATAGRAM):
        env = f"img{start // JUNK_PER_DATAGRAM % 10}"
        libs = "".join(
            f"lib junk-{n:07d} 0.{n % 97} {DIRECT} {ORIGINS[0]} {junk_person(n)}\n"
            for n in range(start, min(start + JUNK_PER_DATAGRAM, first + count))
        )
        out.append(f"{PROTOCOL_VERSION} {USE} 0\nenv {env}\npy 3.11\n{libs}".encode())
    return out


def junk_env_datagrams(count: int) -> list[bytes]:
    return [
        f"{PROTOCOL_VERSION} {USE} 0\nenv junk-env-{n}\npy 3.11\n"
        f"lib numpy 1.26.4 {DIRECT} {ORIGINS[0]} {junk_person(n)}\n".encode()
        for n in range(count)
    ]


def make_datagrams(kind: str, count: int) -> list[bytes]:
    """Built in the sender process, so the collector's RSS holds none of them."""
    if kind == "realistic":
        return Workload(9).datagrams(count)
    if kind == "junk libraries":
        return junk_library_datagrams(0, count)
    return junk_env_datagrams(count)


def _send(address: tuple[str, int], kind: str, count: int, rate: float) -> None:
    datagrams = make_datagrams(kind, count)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(address)
    started = time.perf_counter()
    for sent, data in enumerate(datagrams):
        sock.send(data)
        if sent % 200 == 0:
            ahead = sent / rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)


def send_from_process(address, kind: str, count: int, rate: float, peaks: list) -> None:
    proc = multiprocessing.get_context("fork").Process(
        target=_send, args=(address, kind, count, rate)
    )
    proc.start()
    while proc.is_alive():
        peaks.append(rss_mib())
        time.sleep(0.5)
    proc.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 junk names")
    parser.add_argument("--rate", type=float, default=20_000, help="datagrams/s sent")
    args = parser.parse_args(argv)
    names = 100_000 if args.quick else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "junk.sqlite"
        collector = Collector(db, ("127.0.0.1", 0))
        collector.start()
        try:
            print(f"RSS after start:                      {rss_mib():7.1f} MiB")
            samples: list[float] = []
            send_from_process(collector.address, "realistic", 100_000, args.rate, samples)
            collector.flush(60)
            baseline = max([*samples, rss_mib()])
            print(f"RSS with 100,000 realistic datagrams: {baseline:7.1f} MiB (peak)")
            phases = [
                (f"{names:,} junk library names", "junk libraries", names),
                ("200,000 junk environment names", "junk environments", 200_000),
            ]
            for label, kind, count in phases:
                samples = []
                send_from_process(collector.address, kind, count, args.rate, samples)
                collector.flush(60)
                samples.append(rss_mib())
                print(
                    f"RSS with {label + ':':35s}{max(samples):7.1f} MiB peak "
                    f"({max(samples) / baseline:.2f}x the realistic peak)"
                )
            print(f"peak RSS of the whole run (VmHWM):    {rss_mib('VmHWM'):7.1f} MiB")
            results = dict(collector.receiver.results)
        finally:
            collector.stop()
        conn = connect_readonly(db)
        libs = conn.execute("SELECT COUNT(*) FROM libs").fetchone()[0]
        envs = conn.execute("SELECT COUNT(*) FROM envs").fetchone()[0]
        totals = datagram_totals(conn)
        conn.close()
        size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) / 2**20
        print(
            f"stored: {libs:,} library names, {envs:,} environments, database {size:.1f} MiB; "
            f"datagrams: ok {totals['ok']:,}, library_cap {totals['library_cap']:,}, "
            f"env_cap {totals['env_cap']:,} (received {sum(results.values()):,})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
