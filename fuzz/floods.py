"""Flood a real ``popcon serve`` with unique values, then check that real data still counts.

    python fuzz/floods.py            # full: 1.5 M unique versions, 300,000 unique names...
    python fuzz/floods.py --quick    # a few seconds a flood, small caps (for CI)
    python fuzz/floods.py versions   # one flood: versions, importers, labels, names or twice

Each flood goes from one sender on loopback, bounded in time (60 s full) and paced:

- ``versions``: unique versions of one library in one environment;
- ``importers``: 20 transitive records a datagram, each with a unique importer;
- ``labels``: unique label sets in one environment;
- ``names``: 30 unique libraries a datagram, every other one in a unique environment (the
  rest in one flooded environment);
- ``twice``: the same names, each datagram sent twice (so each name returns once).

During the flood two threads time ``/api/v1/libraries`` and ``/metrics`` (p50/p95). After
it: the collector's peak RSS (``VmHWM``), its log's size, the database's size, one
``/metrics`` scrape (size, seconds, series, ``popcon_datagrams_total`` by result), the
flooded library's answer and version history; then a real environment
(``quay.io/jupyter/scipy-notebook:x``), a new library in an environment known before the
flood (and a new label set there, after the label flood), each reporting a few times (three
datagrams a second until counted), must be counted, and again after a restart on the same
database.
"""

from __future__ import annotations

import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from hostile import (
    TOKEN,
    Checks,
    LatencyProbe,
    db_size_mb,
    log_size,
    parse_args,
    peak_rss_mb,
    processes,
    scrape,
    send_for,
    serve,
    wait_for,
)

# isort: split
# (hostile, imported first, puts src/ and tests/testlib/ on sys.path)

from collectors import ServeProcess
from datagrams import use_datagram

REAL_ENV = "quay.io/jupyter/scipy-notebook:x"
BASE_ENV = "img:base"
FLOOD_ENV = "img:flood"
VICTIM = "victim"
IMPORTED = 20
NAMED = 30

#: How many datagrams each flood sends, full and quick (the sender stops earlier at its
#: deadline), and the flags its collector runs with in the quick mode (caps small enough for
#: a few thousand datagrams to reach them).
FULL = {
    "versions": 1_500_000,
    "importers": 100_000,
    "labels": 200_000,
    "names": 300_000,
    "twice": 600_000,
}
QUICK = {"versions": 3_000, "importers": 300, "labels": 600, "names": 1_500, "twice": 3_000}
QUICK_FLAGS: dict[str, tuple[str, ...]] = {
    "labels": ("--max-label-sets-per-env", "8"),
    "names": ("--max-environments", "50", "--max-libraries", "400"),
    "twice": ("--max-environments", "50", "--max-libraries", "400"),
}
#: Seconds a real name may take to be counted after a flood: a flood of names that return
#: takes the reserves' places at their pace (``storage.rows.PROMOTE_EVERY``, 10 s).
COUNTED_WITHIN = 20
#: Datagrams a second the quick floods send (the full ones spread theirs over 60 s).
QUICK_RATE = 3_000
#: The bounds of docs/collector-storage.md and the issue: peak RSS, /metrics size and scrape.
MAX_RSS_MB = 300
MAX_METRICS_MB = 10
MAX_SCRAPE_S = 1.0
#: Bytes the collector may log during a flood (its lines about bounds are rate-limited).
MAX_LOG = 1_000_000
#: What a library's answer and its version history may weigh and take (each lists at most
#: about 50 versions, however many were stored: 3,000 versions made them 0.1-0.2 MiB).
MAX_ANSWER_MB = 0.05
MAX_ANSWER_S = 1.0


def _lib(name: str, version: str = "1.0") -> tuple[str, str, str, str]:
    return (name, version, "direct", "env")


def _names(i: int) -> bytes:
    return use_datagram(
        f"flood/{i}" if i % 2 else FLOOD_ENV, [_lib(f"f{i}x{j}") for j in range(NAMED)]
    )


MAKERS: dict[str, Callable[[int], bytes]] = {
    "versions": lambda i: use_datagram(FLOOD_ENV, [_lib(VICTIM, f"0.{i}")]),
    "importers": lambda i: use_datagram(
        FLOOD_ENV,
        [(f"lib{j}", "1.0", "transitive", "env", f"imp-{i}-{j}") for j in range(IMPORTED)],
    ),
    "labels": lambda i: use_datagram(BASE_ENV, [_lib("seed")], labels=[("flood", f"l{i}")]),
    "names": _names,
    "twice": lambda i: _names(i // 2),
}


def _drained(server: ServeProcess, timeout: float) -> dict[str, float]:
    """``popcon_datagrams_total`` by result once it stopped growing for 2 s (the receiver
    hands over and the writer commits about every second), or at ``timeout``."""
    last: dict[str, float] = {}
    steady_since = time.monotonic()
    deadline = steady_since + timeout
    while time.monotonic() < deadline:
        results = {k: v for k, v in scrape(server)[3].items() if v}
        if sum(results.values()) != sum(last.values()):
            last, steady_since = results, time.monotonic()
        elif time.monotonic() - steady_since >= 2:
            break
        time.sleep(0.5)
    return last


def _real_data_counted(
    checks: Checks, server: ServeProcess, mode: str, when: str, timeout: float
) -> None:
    """Send a real environment's datagrams and a new library's in ``BASE_ENV`` (and a new
    label set there after the label flood); check each is counted."""
    new_lib = f"real-{mode}-{when}".replace(" ", "-")
    probes: list[tuple[str, str, tuple[tuple[str, str], ...], dict[str, str], str]] = [
        (REAL_ENV, "scipy", (), {"env": REAL_ENV}, "a real environment"),
        (BASE_ENV, new_lib, (), {"env": BASE_ENV}, "a new library in a known environment"),
    ]
    if mode == "labels":
        value = f"real-{when}".replace(" ", "-")
        label = (("hub", value),)
        probes.append((BASE_ENV, "seed", label, {"label.hub": value}, "a new label set"))
    before = {name: processes(server, name, **where) for _, name, _, where, _ in probes}
    for env, name, labels, where, what in probes:

        def counted(
            env: str = env,
            name: str = name,
            labels: tuple[tuple[str, str], ...] = labels,
            where: dict[str, str] = where,
        ) -> bool:
            if processes(server, name, **where) >= before[name] + 3:
                return True
            server.send(use_datagram(env, [_lib(name)], labels=labels) for _ in range(3))
            time.sleep(0.8)
            return False

        started = time.monotonic()
        ok = wait_for(counted, timeout)
        checks.figure(f"{what} counted {when} within s", round(time.monotonic() - started, 1))
        checks.check(f"{what} counted {when}", ok, f"{name} {where}")


def _answer_small(checks: Checks, server: ServeProcess) -> None:
    """The flooded library's API answer and its dashboard version history stay small."""
    name = urllib.parse.quote(VICTIM)
    for what, path in (
        ("the library's API answer", f"/api/v1/libraries/{name}?since=6h"),
        ("its version history", f"/dashboard/api/version-history/{name}?since=6h"),
    ):
        started = time.monotonic()
        status, answer, _ = server.get(path, token=TOKEN)
        seconds = time.monotonic() - started
        size = len(str(answer).encode()) / 1024 / 1024
        checks.figure(f"{what}: status, MiB, s", (status, round(size, 3), round(seconds, 3)))
        checks.check(
            f"{what} small",
            status == 200 and size < MAX_ANSWER_MB and seconds < MAX_ANSWER_S,
            f"{size:.3f} MiB in {seconds:.2f} s (status {status})",
        )


def flood(mode: str, quick: bool, directory: Path) -> Checks:
    """One flood against a fresh collector in ``directory``; its figures and verdicts."""
    checks = Checks(f"flood {mode}")
    db = directory / f"{mode}.sqlite"
    count = QUICK[mode] if quick else FULL[mode]
    seconds = 10 if quick else 60
    rate = QUICK_RATE if quick else count / seconds
    wait = 5 if quick else 20
    flags = QUICK_FLAGS.get(mode, ()) if quick else ()
    with serve(db, *flags) as server:
        server.send([use_datagram(BASE_ENV, [_lib("seed")]) for _ in range(3)])
        checks.check("seed counted", wait_for(lambda: processes(server, "seed") >= 3, wait))
        make = MAKERS[mode]
        with LatencyProbe(server) as probe, LatencyProbe(server, "/metrics") as scrapes:
            sent, took = send_for(
                server.udp, (make(i) for i in range(count)), seconds=seconds, rate=rate
            )
            results = _drained(server, 3 * wait)
        received = int(sum(results.values()))
        checks.figure("sent, s, per s", (sent, round(took, 1), round(sent / took)))
        checks.figure("received (popcon_datagrams_total)", received)
        checks.figure("popcon_datagrams_total by result", results)
        checks.figure("API p50/p95 s, requests during the flood", probe.spread())
        checks.figure("/metrics p50/p95 s, scrapes during the flood", scrapes.spread())
        checks.check("API answered during the flood", probe.errors == 0, f"{probe.errors} failed")
        logged = log_size(server)
        checks.figure("log bytes", logged)
        checks.check("the log stays small", logged < MAX_LOG, f"{logged} bytes < {MAX_LOG}")
        rss = peak_rss_mb(server.proc.pid)
        checks.figure("peak RSS MiB", round(rss, 1))
        checks.figure("database MiB", round(db_size_mb(db), 1))
        scrape_s, metrics_mb, series, _ = scrape(server)
        checks.figure("/metrics MiB, s, series", (round(metrics_mb, 3), round(scrape_s, 3), series))
        checks.check("peak RSS bounded", rss < MAX_RSS_MB, f"{rss:.0f} MiB < {MAX_RSS_MB}")
        checks.check(
            "/metrics bounded",
            metrics_mb < MAX_METRICS_MB and scrape_s < MAX_SCRAPE_S,
            f"{metrics_mb:.2f} MiB < {MAX_METRICS_MB}, {scrape_s:.2f} s < {MAX_SCRAPE_S}",
        )
        if mode == "versions":
            checks.check(
                "the versions are not each a /metrics series",
                series < received / 2,
                f"{series} series for {received} datagrams",
            )
        refused = {k: v for k, v in results.items() if k != "ok" and v}
        checks.check("the bound is counted as a result", bool(refused), str(refused or "none"))
        if mode == "versions":
            _answer_small(checks, server)
        _real_data_counted(checks, server, mode, "after the flood", COUNTED_WITHIN)
        checks.check("stops with status 0", server.stop() == 0, server.lines[-1])
    with serve(db, *flags) as again:
        _real_data_counted(checks, again, mode, "after a restart", COUNTED_WITHIN)
        again.stop()
    return checks


def main(argv: list[str] | None = None) -> int:
    quick, modes = parse_args(__doc__ or "", argv, MAKERS)
    failed = []
    with tempfile.TemporaryDirectory(prefix="popcon-floods-") as tmp:
        for mode in modes:
            failed += [f"{mode}: {name}" for name in flood(mode, quick, Path(tmp)).failed]
    print(f"floods: {len(failed)} checks failed" + (": " + "; ".join(failed) if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
