"""Peer benchmark: ``popcon serve`` against Etsy's statsd daemon 0.9.0 on the same stream.

    python benchmarks/ingest_peer.py            # full run (about five minutes here)
    python benchmarks/ingest_peer.py --quick    # three rates, short rounds (about a minute)

Part 1, *statsd lines*: the datagrams that popularity-contest 0.4.1 clients send, built the
way its reporter builds them (pystatsd's pipeline with prefix ``python_popcon``: one
``library_used.<name>:1|c`` line per distribution, packed into datagrams under 512 bytes,
then ``reports:1|c`` on its own), for processes that each use 5-30 of 218 real PyPI
distributions (their metadata spelling) with Zipf popularity: about 2.9 datagrams per
process, median 234 bytes. Each offered rate runs one round per receiver, a fresh process
each time, the receivers alternating which goes first; both get the same receive buffer
(``popcon serve`` asks for 8 MiB; the daemon is given the same through a server module of
its ``servers`` setting, since 0.9.0 has no setting of its own for it; Linux caps both at
``net.core.rmem_max``).

Part 2, *popcon datagrams*: ``use`` datagrams of the current protocol, every one different,
with people on (whole processes of ``workload.py``: each record carries its person's
contribution, ``<register>:<rank>``, of one of 2,000 people; 30 % of the processes run a
program), to ``popcon serve`` alone, offered flat out and at stepped rates.

Part 2 ends with its stream through the receiving side's code and the writer's without a
socket (``ingest.py``'s ``stages_run``): the CPU per datagram of each, which bounds what any
receiving loop could take on one core.

Every receiver is pinned to CPU 0 and the sender (one process, paced in 1 ms slices) to CPU
1. Per round: datagrams sent and counted (popcon: ``ok`` in the database; statsd: its
``statsd.packets_received`` counter, read over its admin port), loss, the receiver's CPU per
1,000 datagrams counted (user + system time of the whole process, all its threads, from the
first datagram until it is idle again), and its peak RSS (``VmHWM``). The ratios compare the
two receivers of the same run. The daemon is installed with npm (``npm install --prefix``)
into the run's scratch directory, or into ``--cache`` to keep it between runs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from ingest import stages_run
from workload import Workload, zipf_weights

from popcon.protocol import DEFAULT_STATSD_PREFIX, PROTOCOL_VERSION, USE
from popcon.server.query.connection import connect_readonly
from popcon.server.query.totals import datagram_totals, report_totals

SRC = Path(__file__).resolve().parent.parent / "src"
STATSD_DAEMON_VERSION = "0.9.0"
#: What ``popcon serve`` asks of the kernel (receiver.RECEIVE_BUFFER); the daemon gets the same.
RECEIVE_BUFFER = 8 << 20
#: Loss under which a rate counts as loss-free.
LOSS_FREE = 0.001
#: Datagrams each receiver gets (at 5,000/s) before a round is measured.
WARM_UP = 5000
RECEIVER_CPU = 0
SENDER_CPU = 1

#: 218 distributions from PyPI, as their metadata names them (what popularity-contest sends).
PYPI_NAMES = """
numpy pandas requests urllib3 certifi idna charset-normalizer six python-dateutil pytz tzdata
PyYAML setuptools packaging typing_extensions attrs Jinja2 MarkupSafe click matplotlib scipy
scikit-learn joblib threadpoolctl Pillow cycler kiwisolver fonttools pyparsing contourpy seaborn
statsmodels patsy sympy mpmath networkx ipython ipykernel jupyter_client jupyter_core traitlets
tornado pyzmq decorator jedi parso prompt_toolkit wcwidth pexpect ptyprocess pickleshare Pygments
matplotlib-inline backcall stack-data executing asttokens pure-eval debugpy nest-asyncio comm
psutil platformdirs jupyterlab notebook nbformat nbconvert nbclient jsonschema
jsonschema-specifications referencing rpds-py fastjsonschema bleach webencodings tinycss2 mistune
pandocfilters defusedxml beautifulsoup4 soupsieve lxml html5lib xlrd openpyxl et-xmlfile
XlsxWriter pyarrow fsspec dask distributed cloudpickle toolz partd locket zict tblib
sortedcontainers msgpack lz4 bokeh panel param holoviews hvplot plotly tenacity altair
ipywidgets widgetsnbextension jupyterlab_widgets tqdm h5py netCDF4 cftime xarray numba llvmlite
numexpr Bottleneck tables SQLAlchemy greenlet psycopg2-binary pymongo redis boto3 botocore
s3transfer jmespath s3fs aiobotocore aiohttp aiosignal frozenlist multidict yarl async-timeout
aioitertools wrapt google-auth cachetools pyasn1 pyasn1_modules rsa oauthlib requests-oauthlib
protobuf grpcio tensorflow keras tensorboard absl-py astunparse flatbuffers gast opt-einsum
termcolor torch torchvision filelock triton sentencepiece transformers tokenizers huggingface-hub
safetensors regex datasets xxhash multiprocess dill pydantic pydantic_core annotated-types
fastapi starlette uvicorn h11 anyio sniffio httpx httpcore cryptography cffi pycparser pyOpenSSL
paramiko bcrypt PyNaCl shapely geopandas pyproj fiona rasterio affine snuggs cligj click-plugins
folium branca scikit-image imageio tifffile PyWavelets opencv-python lazy_loader Markdown
docutils Sphinx pytest pluggy iniconfig tomli exceptiongroup coverage mypy black
""".split()  # noqa: SIM905 (218 names read better as words than as 218 lines)
assert len(PYPI_NAMES) == 218 and len({n.lower() for n in PYPI_NAMES}) == 218

#: A statsd server module for the daemon: its ``servers/udp.js`` with a receive buffer.
BUFFERED_UDP_SERVER = """\
// statsd 0.9.0's servers/udp.js, with the socket's receive buffer set to
// config.recvBufferSize bytes (the daemon has no setting of its own for it).
const dgram = require('dgram');

exports.start = function (config, callback) {
  const server = dgram.createSocket(
    {type: 'udp4', recvBufferSize: config.recvBufferSize}, callback);
  server.bind(config.port, config.address);
  this.server = server;
  return true;
};
"""


# -- the streams -------------------------------------------------------------------------------


def pipeline_datagrams(stats: list[str], max_size: int = 512) -> list[str]:
    """What pystatsd's ``Pipeline._send`` (statsd 4.0.1, ``statsd/client/udp.py``) makes of
    ``stats``: lines joined by ``\\n`` while the datagram stays under ``max_size``."""
    out = []
    data = stats[0]
    for stat in stats[1:]:
        if len(stat) + len(data) + 1 >= max_size:
            out.append(data)
            data = stat
        else:
            data += "\n" + stat
    out.append(data)
    return out


def statsd_stream(count: int, seed: int = 1) -> list[bytes]:
    """``count`` datagrams of whole popularity-contest 0.4.1 processes, in order: its
    ``report_popularity`` increments ``library_used.<dist.name>`` once per distribution in
    one pipeline, then ``reports`` with a plain ``incr``."""
    rng = random.Random(seed)
    weights = zipf_weights(len(PYPI_NAMES), 1.0)
    prefix = DEFAULT_STATSD_PREFIX
    out: list[bytes] = []
    while len(out) < count:
        wanted = rng.randint(5, 30)
        used: dict[str, None] = {}
        while len(used) < wanted:
            used[rng.choices(PYPI_NAMES, weights)[0]] = None
        names = list(used)
        rng.shuffle(names)  # the reporter iterates a set
        stats = [f"{prefix}.library_used.{name}:1|c" for name in names]
        out.extend(data.encode("ascii") for data in pipeline_datagrams(stats))
        out.append(f"{prefix}.reports:1|c".encode("ascii"))
    return out[:count]


def popcon_stream(count: int, seed: int = 5) -> list[bytes]:
    """``count`` ``use`` datagrams with people, every one different: whole processes of the
    benchmark workload (``workload.py``: 2,000 people, Zipf, each record with its person's
    field, 30 % of the processes under a program with its ``prog`` record), ``seq`` 0, 1, ...
    within each process, as recorders send them; a datagram equal to one sent before (the
    same person running the same process again) is left out."""
    workload = Workload(seed)
    seen: set[bytes] = set()
    out: list[bytes] = []
    while len(out) < count:
        for data in workload.process_datagrams():
            if data not in seen:
                seen.add(data)
                out.append(data)
    return out[:count]


def sizes_line(datagrams: list[bytes], per_process: float | None = None) -> str:
    sizes = sorted(len(d) for d in datagrams)
    text = (
        f"median {statistics.median(sizes):.0f} B, 10-90 % {sizes[len(sizes) // 10]}-"
        f"{sizes[len(sizes) * 9 // 10]} B"
    )
    return text + (f", {per_process:.2f} datagrams per process" if per_process else "")


# -- processes ---------------------------------------------------------------------------------


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system time of process ``pid``, all its threads."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def wait_idle(pid: int, quiet: float = 0.5, timeout: float = 60.0) -> None:
    """Until process ``pid`` used less than 20 ms of CPU in ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = cpu_seconds(pid)
        if now - last < 0.02:
            return
        last = now


def wait_for_port(port: int, proc: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"receiver exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Receiver(Protocol):
    name: str
    pid: int

    def totals(self) -> tuple[int, int]:
        """(datagrams, processes) counted so far."""
        ...

    def stop(self) -> None: ...


class PopconServe:
    """``popcon serve`` of this checkout on a new database, pinned to the receiver's CPU; its
    totals are read from the database (what the writer committed)."""

    name = "popcon"

    def __init__(self, db: Path, port: int) -> None:
        self.db = db
        http = free_port(socket.SOCK_STREAM)
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "popcon", "serve", "--open", "--udp", f"127.0.0.1:{port}",
             "--http", f"127.0.0.1:{http}", "--db", str(db)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: _pin(RECEIVER_CPU),
        )  # fmt: skip
        self.pid = self.proc.pid
        wait_for_port(http, self.proc)

    def totals(self) -> tuple[int, int]:
        conn = connect_readonly(self.db)
        try:
            return (
                datagram_totals(conn)["ok"],
                sum(row.processes for row in report_totals(conn)),
            )
        finally:
            conn.close()

    def stop(self) -> None:
        stop_process(self.proc)


class StatsdDaemon:
    """Etsy's statsd (``node stats.js config``) with no backend and no flush during a round,
    its socket given :data:`RECEIVE_BUFFER` bytes, pinned to the receiver's CPU; its totals
    are its counters, read over its admin port."""

    name = "statsd"

    def __init__(self, daemon: Path, server: Path, port: int, config_dir: Path) -> None:
        self.admin = free_port(socket.SOCK_STREAM)
        config = config_dir / f"statsd-{port}.js"
        config.write_text(
            json.dumps(
                {
                    "servers": [
                        {
                            "server": str(server),
                            "address": "127.0.0.1",
                            "port": port,
                            "recvBufferSize": RECEIVE_BUFFER,
                        }
                    ],
                    "mgmt_address": "127.0.0.1",
                    "mgmt_port": self.admin,
                    "backends": [],
                    "flushInterval": 3_600_000,
                }
            )
        )
        self.proc = subprocess.Popen(
            ["node", str(daemon), str(config)],
            cwd=daemon.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: _pin(RECEIVER_CPU),
        )  # fmt: skip
        self.pid = self.proc.pid
        wait_for_port(self.admin, self.proc)

    def totals(self) -> tuple[int, int]:
        with socket.create_connection(("127.0.0.1", self.admin), timeout=10) as connection:
            connection.sendall(b"counters\n")
            data = b""
            while not data.endswith(b"END\n\n"):
                chunk = connection.recv(65536)
                if not chunk:
                    break
                data += chunk
        counters = {
            key: int(value) for key, value in re.findall(r"'?([\w.\-]+)'?: (\d+)", data.decode())
        }
        return (
            counters.get("statsd.packets_received", 0),
            counters.get(f"{DEFAULT_STATSD_PREFIX}.reports", 0),
        )

    def stop(self) -> None:
        stop_process(self.proc)


def settled_totals(receiver: Receiver, timeout: float = 30.0) -> tuple[int, int]:
    """The receiver's totals once they stopped changing for 1.5 s (popcon commits what it
    received within about 1.5 s)."""
    deadline = time.monotonic() + timeout
    last = receiver.totals()
    since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < 1.5:
        time.sleep(0.25)
        now = receiver.totals()
        if now != last:
            last, since = now, time.monotonic()
    return last


def install_statsd(cache: Path) -> tuple[Path, Path]:
    """The daemon's ``stats.js`` (npm-installed into ``cache`` if it is not there yet) and the
    buffered server module beside it."""
    prefix = cache / f"statsd-{STATSD_DAEMON_VERSION}"
    daemon = prefix / "node_modules" / "statsd" / "stats.js"
    if not daemon.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("npm is needed to install Etsy's statsd daemon")
        print(f"installing statsd@{STATSD_DAEMON_VERSION} with npm into {prefix}", flush=True)
        subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--silent",
             f"statsd@{STATSD_DAEMON_VERSION}"],
            check=True, timeout=600,
        )  # fmt: skip
    server = prefix / "buffered_udp.js"
    if not server.exists() or server.read_text() != BUFFERED_UDP_SERVER:
        server.write_text(BUFFERED_UDP_SERVER)
    return daemon, server


# -- sending -----------------------------------------------------------------------------------


def _send(port: int, datagrams: list[bytes], rate: float, start: float, sent: Any) -> None:
    """Sender process: ``rate`` datagrams/s (0: as fast as it can), in 1 ms slices, from
    ``start`` (a time.time()); ``sent`` gets the seconds it took."""
    _pin(SENDER_CPU)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sock.connect(("127.0.0.1", port))
    send = sock.send
    while time.time() < start:
        time.sleep(0.001)
    t0 = time.perf_counter()
    total = len(datagrams)
    done = 0
    while done < total:
        due = total if not rate else min(total, int((time.perf_counter() - t0) * rate) + 1)
        for data in datagrams[done:due]:
            try:
                send(data)
            except OSError:
                pass
        done = due
        if rate:
            time.sleep(0.001)
    sent.value = time.perf_counter() - t0


def _sent(port: int, datagrams: list[bytes], rate: float) -> float:
    """Send ``datagrams`` to ``port`` from a sender process at ``rate``; the seconds it took."""
    ctx = multiprocessing.get_context("fork")
    seconds = ctx.Value("d", 0.0)
    start = time.time() + 0.2
    sender = ctx.Process(target=_send, args=(port, datagrams, rate, start, seconds))
    sender.start()
    sender.join()
    return float(seconds.value)


def run_round(
    start_receiver: Callable[[int], Receiver],
    datagrams: list[bytes],
    rate: float,
    warm_up: list[bytes],
) -> dict[str, Any]:
    """One receiver, fresh: ``warm_up`` at 5,000/s (so the daemon's JIT and popcon's caches
    are warm, as in a long-running receiver), then ``datagrams`` at ``rate``, measured."""
    port = free_port(socket.SOCK_DGRAM)
    receiver = start_receiver(port)
    try:
        _sent(port, warm_up, 5000)
        wait_idle(receiver.pid)
        before, before_processes = settled_totals(receiver)
        cpu0 = cpu_seconds(receiver.pid)
        seconds = _sent(port, datagrams, rate)
        wait_idle(receiver.pid)
        cpu = cpu_seconds(receiver.pid) - cpu0
        rss = peak_rss_mib(receiver.pid)
        after, after_processes = settled_totals(receiver)
    finally:
        receiver.stop()
    counted = after - before
    return {
        "receiver": receiver.name,
        "rate": rate,
        "offered": len(datagrams) / seconds if seconds else 0.0,
        "sent": len(datagrams),
        "counted": counted,
        "processes": after_processes - before_processes,
        "loss": 1 - counted / len(datagrams),
        "cpu": cpu,
        "ms_per_1000": 1e6 * cpu / max(1, counted),
        "rss": rss,
    }


def print_round(row: dict[str, Any]) -> None:
    print(
        f"  {row['receiver']:7s}{row['rate']:>9,.0f}/s (offered {row['offered']:>8,.0f}/s) "
        f"sent {row['sent']:>9,} counted {row['counted']:>9,} loss {row['loss']:>7.2%} "
        f"CPU {row['ms_per_1000']:6.2f} ms/1000 ({row['cpu']:5.2f} s) "
        f"peak RSS {row['rss']:6.1f} MiB",
        flush=True,
    )


def loss_free(rows: list[dict[str, Any]]) -> float:
    """The highest rate of ``rows`` (one receiver's) at which it lost under 0.1 %, below
    the first rate at which it did not."""
    best = 0.0
    for row in sorted(rows, key=lambda r: r["rate"]):
        if row["loss"] >= LOSS_FREE:
            break
        best = row["rate"]
    return best


def statsd_part(args: argparse.Namespace, tmp: Path) -> None:
    daemon, server = install_statsd(args.cache or tmp)
    rates = [10_000, 20_000, 40_000] if args.quick else args.rates
    stream = statsd_stream(int(max(rates) * args.seconds) + WARM_UP, seed=1)
    stream, warm_up = stream[:-WARM_UP], stream[-WARM_UP:]
    processes = sum(1 for d in stream if d.endswith(b".reports:1|c"))
    print(
        "part 1, popularity-contest 0.4.1 statsd lines: "
        f"{sizes_line(stream, len(stream) / processes)}; "
        f"{args.seconds:.0f} s per round, receive buffer {RECEIVE_BUFFER >> 20} MiB asked "
        f"(rmem_max {Path('/proc/sys/net/core/rmem_max').read_text().strip()} B)"
    )
    receivers: dict[str, Callable[[int], Receiver]] = {
        "popcon": lambda port: PopconServe(tmp / f"popcon-{port}-{time.time_ns()}.sqlite", port),
        "statsd": lambda port: StatsdDaemon(daemon, server, port, tmp),
    }
    rows: list[dict[str, Any]] = []
    for index, rate in enumerate(rates):
        datagrams = stream[: int(rate * args.seconds)]
        order = ["popcon", "statsd"] if index % 2 == 0 else ["statsd", "popcon"]
        for name in order:
            row = run_round(receivers[name], datagrams, rate, warm_up)
            print_round(row)
            rows.append(row)
    print("  ratios, popcon to statsd, same rate:")
    for rate in rates:
        mine = next(r for r in rows if r["rate"] == rate and r["receiver"] == "popcon")
        theirs = next(r for r in rows if r["rate"] == rate and r["receiver"] == "statsd")
        cpu = mine["ms_per_1000"] / theirs["ms_per_1000"]
        print(
            f"    {rate:>9,.0f}/s: CPU per datagram {cpu:.2f}x"
            f", peak RSS {mine['rss'] / theirs['rss']:.2f}x, loss {mine['loss']:.2%} vs "
            f"{theirs['loss']:.2%}"
        )
    for name in ("popcon", "statsd"):
        own = [r for r in rows if r["receiver"] == name]
        print(f"  {name}: loss-free (< {LOSS_FREE:.1%}) up to {loss_free(own):,.0f}/s; "
              f"{memory_line(own)}")  # fmt: skip
    mine_free = loss_free([r for r in rows if r["receiver"] == "popcon"])
    theirs_free = loss_free([r for r in rows if r["receiver"] == "statsd"])
    loaded = [r for r in rows if r["rate"] >= 20_000] or rows
    cpu_ratio = statistics.median(
        p["ms_per_1000"] / s["ms_per_1000"]
        for p in loaded
        if p["receiver"] == "popcon"
        for s in loaded
        if s["receiver"] == "statsd" and s["rate"] == p["rate"]
    )
    print(
        f"  summary: CPU per datagram popcon/statsd {cpu_ratio:.2f}x (median over rates "
        f">= 20,000/s; target <= 1: {'met' if cpu_ratio <= 1 else 'NOT met'}); loss-free rate "
        f"popcon/statsd {mine_free / max(1.0, theirs_free):.2f}x (target >= 1: "
        f"{'met' if mine_free >= theirs_free else 'NOT met'})"
    )


def popcon_part(args: argparse.Namespace, tmp: Path) -> None:
    rates = [50_000, 100_000] if args.quick else args.popcon_rates
    seconds = args.popcon_seconds
    count = int(max(rates) * seconds)
    stream = popcon_stream(count + WARM_UP)
    stream, warm_up = stream[:-WARM_UP], stream[-WARM_UP:]
    starts = sum(1 for d in stream if d.startswith(f"{PROTOCOL_VERSION} {USE} 0\n".encode()))
    print(
        f"part 2, {PROTOCOL_VERSION} use datagrams with people, every one different: "
        f"{sizes_line(stream, len(stream) / starts)}; {seconds:.0f} s per paced round"
    )

    def start(port: int) -> Receiver:
        return PopconServe(tmp / f"popcon2-{port}-{time.time_ns()}.sqlite", port)

    flat_out = run_round(start, stream, 0, warm_up)
    print_round(flat_out)
    per_cpu = flat_out["counted"] / flat_out["cpu"]
    print(
        f"  flat out: {per_cpu:,.0f} datagrams per CPU-second of the receiver's process "
        f"(target 150,000: {'met' if per_cpu >= 150_000 else 'NOT met'})"
    )
    rows = []
    for rate in rates:
        row = run_round(start, stream[: int(rate * seconds)], rate, warm_up)
        print_round(row)
        rows.append(row)
    print(f"  popcon: loss-free up to {loss_free(rows):,.0f}/s; {memory_line(rows)}")
    stages = stages_run(stream, tmp / "popcon2-stages.sqlite")
    receiving, writing = (stages[part] / len(stream) * 1e6 for part in ("receiving", "writing"))
    print(
        f"  without a socket, one job per 20,000 datagrams: receiving side {receiving:.2f} µs + "
        f"writer {writing:.2f} µs per datagram; the writer alone allows at most "
        f"{1e6 / writing:,.0f} per CPU-second"
    )


def memory_line(rows: list[dict[str, Any]]) -> str:
    """Peak RSS at the lowest and the highest offered rate of ``rows`` (one receiver's)."""
    low = min(rows, key=lambda r: r["rate"])
    high = max(rows, key=lambda r: r["rate"])
    return (
        f"peak RSS {low['rss']:.1f} MiB at {low['rate']:,.0f}/s, {high['rss']:.1f} MiB at "
        f"{high['rate']:,.0f}/s ({high['rss'] / low['rss']:.2f}x)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three rates, 2 s rounds")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per round")
    parser.add_argument(
        "--rates",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 80_000, 100_000],
        help="offered statsd rates, comma separated",
    )
    parser.add_argument(
        "--popcon-rates",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[10_000, 20_000, 50_000, 100_000, 150_000],
        help="offered rates of popcon datagrams, comma separated",
    )
    parser.add_argument(
        "--popcon-seconds", type=float, default=2.0, help="seconds per paced round of part 2"
    )
    parser.add_argument("--part", choices=("statsd", "popcon", "both"), default="both")
    parser.add_argument(
        "--cache", type=Path, default=None,
        help="keep the npm-installed statsd daemon here (default: a scratch directory, "
        "removed at the end)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (2.0 if args.quick else 4.0)
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("statsd", "both"):
            statsd_part(args, Path(tmp))
        if args.part in ("popcon", "both"):
            popcon_part(args, Path(tmp))
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
