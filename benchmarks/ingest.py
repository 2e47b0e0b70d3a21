"""Ingest benchmark: datagrams per CPU-second through receive + decode + aggregate + store,
against a bare ``recv`` loop measured in the same run; then no loss at 100,000/s and
150,000/s on one core and at 20,000/s, for 10 s each.

    python benchmarks/ingest.py               # full run (a few minutes)
    python benchmarks/ingest.py --quick       # smaller counts, a few seconds
    python benchmarks/ingest.py --protocol-1  # also the repeating mix as popcon/1, a baseline

Everything runs on loopback (127.0.0.1). The collector (a real ``Collector``: receiving
thread, writer thread, SQLite file) runs in this process, pinned to one CPU; one sender
process, pinned to another CPU, replays prepared datagrams (typical 100-300 byte ``popcon/2
use`` reports of a realistic workload, see ``workload.py``: every record carries the person
field of one of 2,000 people, and 30 % of the processes run a program, with its ``prog``
record) as fast as it can, which is faster than the collector can take them, so the receiving
socket stays full and the collector runs flat out on its core. Figures: datagrams handled per
CPU-second of the collector process (all its threads), and per wall-second. The bare ``recv``
loop runs the same way in the same run. Two mixes: *repeating* (the processes drawn from
5,000 distinct ones, each a person's, with Zipf weights: people run the same things again)
and *all distinct* (every datagram's bytes differ, the worst case for the per-interval
dedupe). With ``--protocol-1``, the repeating mix's processes are also sent as ``popcon/1``
(no person, no program), what recorders sent before people were counted: the cost of
people, in the same run. The flat-out runs are short (the collector takes a few tens of
thousands of the datagrams offered, most of them the first it sees of their lines); the paced
runs at 100,000/s and 150,000/s measure a collector already warm (the first 20,000 datagrams sent at
20,000/s before): its loss and its share of one core. Everything runs with the garbage
collection thresholds ``popcon serve`` sets (``collect_garbage_rarely``); the part paced at
20,000/s runs again with Python's own, the baseline.

Last, each mix goes through the same code without a socket, in this thread
(``Ingestor.receive`` per interval of 4,096 datagrams, one job per 20,000 datagrams: a second at
20,000/s, handed to a real ``Writer``): the CPU per datagram of the receiving side and of the
writer, which the loaded runs above cannot tell apart and which moves far less between runs.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from workload import Workload, zipf_weights

from popcon.protocol import PROTOCOL_VERSION, USE
from popcon.protocol.decode import make_decoder
from popcon.server import Collector
from popcon.server.query.connection import connect_readonly
from popcon.server.query.totals import datagram_totals, report_totals
from popcon.server.receive.ingest import Ingestor
from popcon.server.receive.receiver import (
    GC_THRESHOLDS,
    MAX_INTERVAL_DATAGRAMS,
    collect_garbage_rarely,
)
from popcon.server.storage.writer import Writer

#: Python's own garbage collection thresholds, the paced run's baseline.
PYTHON_GC = (700, 10, 10)
#: Datagrams per job in the run without a socket: one second's at 20,000/s.
JOB_DATAGRAMS = 20_000
#: Rates the collector is to take on one core, losing under 0.1 %, people counted (100,000/s, and
#: 150,000/s when every datagram differs), after :data:`WARM_UP` datagrams at
#: :data:`WARM_UP_RATE`: a collector that has run for a second, its decoder and known lines
#: warm.
FAST_RATES = (100_000, 150_000)
WARM_UP = 20_000
WARM_UP_RATE = 20_000


def repeating_mix(
    count: int, distinct: int = 5000, seed: int = 2, protocol: int = 2
) -> list[bytes]:
    """Processes drawn from 5,000 distinct ones with Zipf weights, datagrams in order."""
    workload = Workload(seed)
    pool = [workload.process_datagrams(protocol=protocol) for _ in range(distinct)]
    rng = random.Random(seed)
    out: list[bytes] = []
    weights = zipf_weights(distinct, 1.0)
    while len(out) < count:
        for process in rng.choices(pool, weights, k=1000):
            out.extend(process)
    return out[:count]


def distinct_mix(count: int, seed: int = 3) -> list[bytes]:
    """Every datagram's bytes differ: realistic datagrams whose ``seq`` counts up (so none
    counts a new process; the library lines still repeat, as they do in reality)."""
    pool = Workload(seed).datagrams(20_000)
    out = []
    for i in range(count):
        data = pool[i % len(pool)]
        cut = data.index(b"\n")
        out.append(b"%s %s %d" % (PROTOCOL_VERSION.encode(), USE.encode(), i + 1) + data[cut:])
    return out


def mix_text(datagrams: list[bytes]) -> str:
    """What the datagrams carry: records with a person field, ``prog`` records."""
    records = with_person = programs = 0
    for data in datagrams:
        for line in data.split(b"\n"):
            if line.startswith((b"lib ", b"prog ")):
                records += 1
                fields = line.split(b" ")
                with_person += fields[5 if line.startswith(b"lib ") else 4] != b"-"
                programs += line.startswith(b"prog ")
    return (
        f"{records:,} records, {with_person / records:.0%} with a person field; "
        f"{programs / len(datagrams):.0%} of the datagrams with a prog record"
    )


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})


def _sender(address: tuple[str, int], start: float):
    """In a sender process: pin it to the second CPU, connect a UDP socket to ``address``,
    wait for ``start`` (a time.time()); return the socket's ``send``."""
    _pin(1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(address)
    while time.time() < start:
        time.sleep(0.001)
    return sock.send


def _blast(address: tuple[str, int], datagrams: list[bytes], start: float) -> None:
    """Sender process: wait for ``start`` (a time.time()), send everything once."""
    send = _sender(address, start)
    for data in datagrams:
        try:
            send(data)
        except OSError:
            pass


def _paced(address: tuple[str, int], datagrams: list[bytes], rate: float, start: float) -> None:
    """Sender process: ``rate`` datagrams/s, in 5 ms slices, starting at ``start``."""
    send = _sender(address, start)
    t0 = time.perf_counter()
    sent = 0
    total = len(datagrams)
    while sent < total:
        due = min(total, int((time.perf_counter() - t0) * rate) + 1)
        while sent < due:
            send(datagrams[sent])
            sent += 1
        time.sleep(0.005)


class Senders:
    """Sender processes, forked before the receiver they send to starts: each waits for
    :meth:`go`. A process forked from one whose collector runs shares the collector's pages,
    and the collector then copies each page it first writes to; forked after it started, the
    senders cost the collector the first 0.1-0.2 s of a run at 100,000/s, and datagrams."""

    def __init__(self, target, datagrams: list[bytes], processes: int, *extra) -> None:
        ctx = multiprocessing.get_context("fork")
        self.pipes = []
        self.procs = []
        for i in range(processes):
            ours, theirs = ctx.Pipe()
            share = datagrams[i::processes]
            proc = ctx.Process(target=_when_told, args=(theirs, target, share, *extra))
            proc.start()
            self.pipes.append(ours)
            self.procs.append(proc)

    def go(self, address: tuple[str, int]) -> float:
        """Tell them where to send, and to start in half a second: the start (a time.time())."""
        start = time.time() + 0.5
        for pipe in self.pipes:
            pipe.send((address, start))
        return start

    def join(self) -> None:
        for proc in self.procs:
            proc.join()


def _when_told(pipe, target, datagrams: list[bytes], *extra) -> None:
    """Sender process: wait for the address and start, then run ``target``."""
    address, start = pipe.recv()
    target(address, datagrams, *extra, start)


def bare_recv(datagrams: list[bytes], processes: int) -> dict:
    """The baseline: a thread doing only ``recv`` in a loop, in this process."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(1.0)
    got = [0]

    def loop() -> None:
        recv = sock.recv
        n = 0
        try:
            while True:
                recv(1401)
                n += 1
        except socket.timeout:
            pass
        got[0] = n

    senders = Senders(_blast, datagrams, processes)
    thread = threading.Thread(target=loop)
    cpu0 = time.process_time()
    thread.start()
    start = senders.go(sock.getsockname())
    senders.join()
    sent_wall = time.time() - start
    thread.join()
    cpu = time.process_time() - cpu0
    sock.close()
    return {"received": got[0], "cpu": cpu, "wall": sent_wall}


def _drained(collector: Collector, quiet: float = 0.3) -> float:
    """Wait until the receiver took nothing new for ``quiet`` seconds; the time it last did."""
    last, last_change = -1, time.time()
    while time.time() - last_change < quiet:
        total = sum(collector.receiver.results.values())
        if total != last:
            last, last_change = total, time.time()
        time.sleep(0.02)
    return last_change


def collector_run(datagrams: list[bytes], processes: int, db: Path) -> dict:
    senders = Senders(_blast, datagrams, processes)
    collector = Collector(db, ("127.0.0.1", 0))
    collector.start()
    try:
        cpu0 = time.process_time()
        start = senders.go(collector.address)
        senders.join()
        sent_wall = time.time() - start
        busy_wall = _drained(collector) - start
    finally:
        collector.stop()
    cpu = time.process_time() - cpu0
    received = sum(collector.receiver.results.values())
    conn = connect_readonly(db)
    stored_ok = datagram_totals(conn)["ok"]
    (sketches,) = conn.execute("SELECT COUNT(*) FROM sketches_by_source WHERE tier = 0").fetchone()
    conn.close()
    return {
        "received": received,
        "stored_ok": stored_ok,
        "sketches": sketches,
        "cpu": cpu,
        "wall": busy_wall,
        "sent_wall": sent_wall,
    }


def paced_run(datagrams: list[bytes], rate: float, db: Path, warm_up: int = 0) -> dict:
    """``datagrams`` at ``rate``, the first ``warm_up`` of them at :data:`WARM_UP_RATE` before
    (not measured): what the collector stored of the rest, and its CPU seconds meanwhile."""
    warming = Senders(_paced, datagrams[:warm_up], 1, WARM_UP_RATE) if warm_up else None
    measured = datagrams[warm_up:]
    senders = Senders(_paced, measured, 1, rate)
    collector = Collector(db, ("127.0.0.1", 0))
    collector.start()
    stored_before = reports_before = 0
    try:
        if warming is not None:
            warming.go(collector.address)
            warming.join()
            collector.flush(30)
            stored_before, reports_before = _stored(db)
        cpu0 = time.process_time()
        start = senders.go(collector.address)
        senders.join()
        wall = time.time() - start
        collector.flush(30)
        cpu = time.process_time() - cpu0
    finally:
        collector.stop()
    stored, reports = _stored(db)
    return {
        "sent": len(measured),
        "ok": stored - stored_before,
        "reports": reports - reports_before,
        "wall": wall,
        "cpu": cpu,
    }


def _stored(db: Path) -> tuple[int, int]:
    """Datagrams stored as ``ok`` and processes counted in ``db`` so far."""
    conn = connect_readonly(db)
    try:
        return datagram_totals(conn)["ok"], sum(row.processes for row in report_totals(conn))
    finally:
        conn.close()


def stages_run(datagrams: list[bytes], db: Path) -> dict:
    """The receiving side's code and the writer's on ``datagrams``, without a socket: CPU
    seconds of each (the writer's measured while this thread waits for it)."""
    writer = Writer(db)
    writer.start()
    try:
        decode = make_decoder()
        ingestor = Ingestor(writer.catalog, writer.settings)
        width = writer.bucket_width
        receiving = writing = 0.0
        for start in range(0, len(datagrams), JOB_DATAGRAMS):
            cpu0 = time.process_time()
            end = min(start + JOB_DATAGRAMS, len(datagrams))
            for at in range(start, end, MAX_INTERVAL_DATAGRAMS):
                now = time.time()
                interval = datagrams[at : min(at + MAX_INTERVAL_DATAGRAMS, end)]
                ingestor.receive(interval, decode, int(now) - int(now) % width, now)
            job = ingestor.take_job()
            cpu1 = time.process_time()
            if job is not None and not (writer.submit(job, timeout=30) and writer.flush(30)):
                raise RuntimeError("the writer did not take a job")
            receiving += cpu1 - cpu0
            writing += time.process_time() - cpu1
    finally:
        writer.stop()
    return {"receiving": receiving, "writing": writing}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (a few seconds)")
    parser.add_argument("--datagrams", type=int, default=None, help="per measured run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--senders", type=int, default=1, help="sender processes")
    parser.add_argument(
        "--protocol-1",
        action="store_true",
        help="also the repeating mix as popcon/1 (no people), a baseline in the same run",
    )
    args = parser.parse_args(argv)
    _pin(0)
    collect_garbage_rarely()  # as popcon serve does
    count = args.datagrams or (60_000 if args.quick else 600_000)
    repeat = 1 if args.quick else args.repeat
    mixes = {"repeating": repeating_mix(count), "all distinct": distinct_mix(count)}
    if args.protocol_1:
        mixes["repeating, popcon/1"] = repeating_mix(count, protocol=1)
    sizes = sorted(len(d) for d in mixes["repeating"])
    print(
        f"datagram sizes: median {statistics.median(sizes):.0f} B, "
        f"10-90 % {sizes[len(sizes) // 10]}-{sizes[len(sizes) * 9 // 10]} B; "
        f"{count:,} per run, {args.senders} sender processes, median of {repeat}"
    )
    print(f"popcon/2 mixes: {mix_text(mixes['repeating'])}")
    with tempfile.TemporaryDirectory() as tmp:
        base = [bare_recv(mixes["repeating"], args.senders) for _ in range(repeat)]
        base_cpu = statistics.median(r["received"] / r["cpu"] for r in base)
        base_wall = statistics.median(r["received"] / r["wall"] for r in base)
        print(
            f"bare recv loop:          {base_cpu:>9,.0f}/CPU-s {base_wall:>9,.0f}/wall-s "
            f"(sender offered {statistics.median(count / r['wall'] for r in base):,.0f}/s)"
        )
        for name, datagrams in mixes.items():
            runs = [
                collector_run(datagrams, args.senders, Path(tmp) / f"{name}-{i}.sqlite")
                for i in range(repeat)
            ]
            per_cpu = statistics.median(r["received"] / r["cpu"] for r in runs)
            per_wall = statistics.median(r["received"] / r["wall"] for r in runs)
            stored = all(r["stored_ok"] == r["received"] for r in runs)
            print(
                f"collector, {name + ':':13s}{per_cpu:>9,.0f}/CPU-s {per_wall:>9,.0f}/wall-s "
                f"(ratio to bare recv: {per_cpu / base_cpu:.2f} per CPU-s, "
                f"{per_wall / base_wall:.2f} per wall-s; sender offered "
                f"{statistics.median(count / r['sent_wall'] for r in runs):,.0f}/s; every datagram "
                f"received was stored: {stored}; sketch rows {runs[0]['sketches']:,})"
            )
        seconds = 2.0 if args.quick else 10.0
        for rate in FAST_RATES:
            count = int(rate * seconds) + WARM_UP
            for name, datagrams in (
                ("repeating", repeating_mix(count, seed=4)),
                ("all distinct", distinct_mix(count, seed=4)),
            ):
                paced = paced_run(
                    datagrams, rate, Path(tmp) / f"fast-{rate}-{name}.sqlite", WARM_UP
                )
                loss = 1 - paced["ok"] / paced["sent"]
                share = paced["cpu"] / paced["wall"]
                verdict = "met" if loss < 0.001 and share < 1 else "NOT met"
                print(
                    f"paced {rate:,.0f}/s for {seconds:.0f} s, {name} mix, after {WARM_UP:,} "
                    f"at {WARM_UP_RATE:,}/s: sent {paced['sent']:,}, stored ok {paced['ok']:,} "
                    f"(loss {loss:.2%}, sender {paced['sent'] / paced['wall']:,.0f}/s); "
                    f"collector CPU {share:.0%} of one core, "
                    f"{paced['ok'] / paced['cpu']:,.0f} datagrams per CPU-second "
                    f"(target: under 0.1 % lost, on one core: {verdict})"
                )
        shares = {}
        for name, thresholds in (("popcon serve", GC_THRESHOLDS), ("Python", PYTHON_GC)):
            gc.set_threshold(*thresholds)
            paced = paced_run(
                repeating_mix(int(20_000 * seconds), seed=4),
                20_000,
                Path(tmp) / f"paced-{thresholds[0]}.sqlite",
            )
            verdict = "NO LOSS" if paced["ok"] == paced["sent"] else "LOSS"
            shares[name] = paced["cpu"] / paced["wall"]
            print(
                f"paced 20,000/s for {seconds:.0f} s, garbage collection of {name} {thresholds}: "
                f"sent {paced['sent']:,}, stored ok {paced['ok']:,}, processes counted "
                f"{paced['reports']:,} -> {verdict}; collector CPU {shares[name]:.0%} of one core"
            )
        collect_garbage_rarely()
        print(
            "CPU at 20,000/s with popcon serve's garbage collection: "
            f"{shares['popcon serve'] / shares['Python']:.2f}x Python's default"
        )
        print(f"without a socket, one job per {JOB_DATAGRAMS:,} datagrams (median of {repeat}):")
        for name, datagrams in mixes.items():
            runs = [
                stages_run(datagrams, Path(tmp) / f"stages-{name}-{i}.sqlite")
                for i in range(repeat)
            ]
            receiving = statistics.median(r["receiving"] for r in runs) / len(datagrams) * 1e6
            writing = statistics.median(r["writing"] for r in runs) / len(datagrams) * 1e6
            print(
                f"  {name + ':':21s}receiving side {receiving:5.2f} µs + writer {writing:5.2f} µs "
                f"per datagram = {1e6 / (receiving + writing):>9,.0f}/CPU-s before recv"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
