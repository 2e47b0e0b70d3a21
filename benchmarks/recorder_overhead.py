"""What the recorder costs a Python process, against a baseline measured in the same run.

    python benchmarks/recorder_overhead.py [--quick] [--scale FACTOR]

One virtual environment (created and cached under ~/.cache/popcon-bench) holds pandas and
``popularity-contest`` 0.4.1. These variants run on it, interleaved round-robin:

- ``bare``: nothing enabled;
- ``popcon``: ``popcon enable`` (here its ``sitecustomize.py``, the way it chooses where the
  environment has no sitecustomize of its own);
- ``popcontest``: popularity-contest 0.4.1 with the two lines its README gives
  (``import popularity_contest.reporter; popularity_contest.reporter.setup_reporter()``), run
  from a ``.pth`` so that it covers every process as popcon does (its README puts them in an
  IPython startup file, which plain ``python`` processes never run);
- ``popcon-pth`` (``-c pass`` only): ``popcon enable --pth``, recording started from
  ``popcon.pth`` instead, the way popcon takes where the environment has a sitecustomize;
- ``floor`` (``-c pass`` only): a ``.pth`` that imports an empty module, the least any hook
  started from a ``.pth`` can cost.

Switching variants renames the files that start each one and then restores the site-packages
directory's modification time, so popcon's module map stays fresh (the environment did not
change).

Measured over many interleaved runs (OpenBLAS and OpenMP held to one thread, whose spinning
makes CPU times noisy):

1. ``python -c pass``: whole-process wall time and CPU time (user + system, from ``wait4``);
2. ``python -c "import pandas"``: the same, and the ``import pandas`` statement alone, timed
   inside the process;
3. work at exit, inside the process: a ``.pth`` sorted before the others registers an
   ``atexit`` handler (so it runs last) and the command registers one last (so it runs first);
   each prints ``time.perf_counter_ns()``. Their difference is all exit-time work, the
   recorder's included; the bare variant's difference is subtracted.

Each target is judged on the median of the per-round differences popcon - bare, with a
bootstrap 95 % interval: MET when the whole interval is within the target, NOT MET when all of
it is above, UNRESOLVED when the machine is too noisy to tell (then run with ``--scale``). The
difference of 10th percentiles is printed too: other jobs on the machine only add time, so it
is the less disturbed figure.

People (issue 10): every run has a HOME, so popcon computes its person fields. The runs above
share one HOME, made empty at the start: the first popcon process that imports a third-party
library creates the secret (``~/.config/popcon/secret``) and the contributions kept beside it,
and the warm-up runs do so before any run is measured, so those figures are the *warm* case
(the contributions cache holds every library imported). Two more measurements take the *cold*
case, the first process of a user: ``python -c "import pandas"`` with a new, empty HOME for
every run (bare and popcon alike), so popcon creates the secret, hashes every library's person
field and writes the contributions, whole-process wall time and instructions. And with
``strace`` (when installed) the files each kind of process opens or looks at under the user's
configuration directory are listed: ``-c pass`` and a standard-library-only import must touch
neither the secret nor the contributions, a warm ``import pandas`` only the contributions. The
warm ``import pandas`` is counted once more with the contributions of 4,000 other libraries
kept, a user of long standing: what it costs must not grow with what the user used before.
The counts of ``import pandas`` are means over seven starts at different moments of the
garbage collector's cycle (``pandas_instructions``): one count alone moves by up to 0.06 % of
the import with any change of what the recorder allocates.

The datagrams each variant sends go to a UDP socket of this script and are counted, to show
that the variant measured is really doing its job. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("POPCON_BENCH_CACHE", Path.home() / ".cache" / "popcon-bench"))
REQUIREMENTS = ("pandas", "popularity-contest==0.4.1")
VARIANTS = ("bare", "popcon", "popcon-pth", "popcontest", "floor")
STARTUP_REFERENCES = ("popcon-pth", "floor")  # measured on -c pass only

POPCONTEST_PTH = "zz-popularity-contest.pth"
POPCONTEST_LINE = (
    "import popularity_contest.reporter; popularity_contest.reporter.setup_reporter()\n"
)
STARTERS = {"sitecustomize": "sitecustomize.py", "pth": "popcon.pth"}  # popcon enable's two ways
FLOOR_PTH = "zz-popcon-bench-floor.pth"
FLOOR_MODULE = "_popcon_bench_empty"
EXIT_PROBE_PTH = "00-popcon-bench-exit.pth"
EXIT_PROBE_LINE = (
    "import atexit, os, time; os.environ.get('POPCON_BENCH_EXIT') and atexit.register("
    "lambda: __import__('os').write(1, b'end %d\\n' % __import__('time').perf_counter_ns()))\n"
)
EXIT_START = (
    "import atexit, os, time; atexit.register("
    "lambda: os.write(1, b'start %d\\n' % time.perf_counter_ns()))"
)

TARGET_STARTUP_MS = 0.5
TARGET_PANDAS_RATIO = 0.005
TARGET_EXIT_MS = 0.5


# --------------------------------------------------------------------------- environment


def popcon_command() -> list:
    return [sys.executable, "-m", "popcon"]


def popcon_environ() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    return env


def build_venv() -> Path:
    key = hashlib.sha256("\n".join([sys.version, *REQUIREMENTS]).encode()).hexdigest()[:12]
    venv = CACHE / f"bench-{key}"
    done = venv / ".complete"
    if not done.exists():
        print(f"creating {venv} with {', '.join(REQUIREMENTS)} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
             "--disable-pip-version-check", *REQUIREMENTS],
            check=True,
        )  # fmt: skip
        done.write_text("\n".join(REQUIREMENTS) + "\n")
    return venv


def site_packages(venv: Path) -> Path:
    (found,) = venv.glob("lib/python*/site-packages")
    return found


class Switch:
    """Turns the variants' start-up files on and off without making popcon's map stale."""

    def __init__(self, site: Path) -> None:
        self.site = site
        for name in (*STARTERS.values(), POPCONTEST_PTH, EXIT_PROBE_PTH, FLOOR_PTH):
            on, off = site / name, site / (name + ".off")
            if on.exists():
                on.replace(off)
        (site / (POPCONTEST_PTH + ".off")).write_text(POPCONTEST_LINE)
        (site / (EXIT_PROBE_PTH + ".off")).write_text(EXIT_PROBE_LINE)
        (site / (FLOOR_PTH + ".off")).write_text(f"import {FLOOR_MODULE}\n")
        python = site.parents[2] / "bin" / "python"
        empty = site / f"{FLOOR_MODULE}.py"
        if not empty.exists():  # before enable: the map is stamped with the final directory
            empty.write_text("")
            subprocess.run([str(python), "-m", "py_compile", str(empty)], check=True)
        for name in STARTERS.values():
            (site / (name + ".off")).unlink(missing_ok=True)
        # popcon enable --pth first, its files kept aside; then popcon enable, which removes
        # them; they are put back once the map is stamped.
        enable(python, "--pth")
        (site / STARTERS["pth"]).replace(site / (STARTERS["pth"] + ".off"))
        kept = [site / "_popcon_hook.py", *site.glob("__pycache__/_popcon_hook.*.pyc")]
        kept = [(path, path.read_bytes(), path.stat()) for path in kept]
        self.default = STARTERS[enable(python)["start"]]
        self.stamp = site.stat()
        for path, data, stat in kept:
            if not path.exists():
                path.write_bytes(data)
                os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the pyc stays valid
        self.on = {self.default}
        self.set(set())

    def set(self, names: set) -> None:
        for name in self.on - names:
            (self.site / name).replace(self.site / (name + ".off"))
        for name in names - self.on:
            (self.site / (name + ".off")).replace(self.site / name)
        self.on = set(names)
        os.utime(self.site, ns=(self.stamp.st_atime_ns, self.stamp.st_mtime_ns))

    def variant(self, variant: str, exit_probe: bool = False) -> None:
        names = {
            "bare": set(),
            "popcon": {self.default},
            "popcon-pth": {STARTERS["pth"]},
            "popcontest": {POPCONTEST_PTH},
            "floor": {FLOOR_PTH},
        }
        self.set(names[variant] | ({EXIT_PROBE_PTH} if exit_probe else set()))


def enable(python: Path, *flags: str) -> dict:
    result = subprocess.run(
        [*popcon_command(), "enable", *flags, "--json", "--python", str(python)],
        env=popcon_environ(),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"popcon enable {' '.join(flags)} failed: {result.stderr.strip()}")
    report = json.loads(result.stdout)
    print(f"popcon enable {' '.join(flags)}: starts in {STARTERS[report['start']]}")
    return report


# --------------------------------------------------------------------------- running


class Sink:
    """A UDP socket that every variant sends to; counts what each run sent."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def drain(self) -> int:
        count = 0
        while True:
            try:
                self.sock.recv(65536)
            except BlockingIOError:
                return count
            count += 1


def run_once(argv: list, env: dict) -> tuple:
    """(wall ns, cpu ns, stdout) of one process, from fork to reaping."""
    start = time.perf_counter_ns()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter_ns() - start
    process.stdout.close()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{argv} exited with {process.returncode}")
    cpu = int((usage.ru_utime + usage.ru_stime) * 1e9)
    return wall, cpu, output


def measure(
    switch,
    sink,
    python,
    code,
    env,
    rounds,
    contest_every,
    exit_probe=False,
    references=(),
    fresh_homes=None,
) -> dict:
    """Round-robin over bare, popcon and the ``references`` variants; popularity-contest
    (slow) only every Nth round (never when ``contest_every`` is 0).

    Besides wall and CPU time, every ``NAME VALUE`` line the process prints is kept as a
    sample ``NAME``; the exit probe's ``start``/``end`` marks become the sample ``exit``.
    ``fresh_homes``: a directory in which every run gets a new, empty HOME (the first process
    of a user); then the samples ``secret`` and ``contributions`` say (1 or 0) whether the run
    left a secret and contributions in it."""
    samples = {v: {"wall": [], "cpu": [], "sent": []} for v in VARIANTS}
    argv = [str(python), "-c", code]
    variants = ["bare", "popcon", *references]
    warm_ups = [*variants, "popcontest"] if contest_every else variants
    for warm in warm_ups:  # compile caches, inventory stamp, page cache
        switch.variant(warm, exit_probe)
        for _ in range(3):
            run_once(argv, home_environ(env, fresh_homes))
        sink.drain()
    for number in range(rounds):
        order = list(variants)
        shift = number % len(order)
        order = order[shift:] + order[:shift]
        if contest_every and number % contest_every == 0:
            order.insert(number % 3, "popcontest")
        for variant in order:
            switch.variant(variant, exit_probe)
            run_env = home_environ(env, fresh_homes)
            wall, cpu, output = run_once(argv, run_env)
            bucket = samples[variant]
            if fresh_homes is not None:
                config = Path(run_env["HOME"]) / ".config" / "popcon"
                for name in ("secret", "contributions"):
                    bucket.setdefault(name, []).append(int((config / name).is_file()))
            bucket["wall"].append(wall)
            bucket["cpu"].append(cpu)
            bucket["sent"].append(sink.drain())
            marks = dict(line.split() for line in output.decode().splitlines() if line)
            if "start" in marks and "end" in marks:
                marks["exit"] = int(marks.pop("end")) - int(marks.pop("start"))
            for name, value in marks.items():
                bucket.setdefault(name, []).append(int(value))
    switch.variant("bare")
    return samples


def home_environ(env: dict, fresh_homes: Path | None) -> dict:
    """``env``, or with a new empty HOME under ``fresh_homes`` when that is given."""
    if fresh_homes is None:
        return env
    return dict(env, HOME=tempfile.mkdtemp(prefix="home-", dir=fresh_homes))


def config_files_touched(python: Path, env: dict, code: str) -> list | None:
    """The files under the user's ``~/.config/popcon`` that ``python -c CODE`` opens or
    looks at (``strace -f`` of every file system call naming a path), each with what was
    done (``openat O_RDONLY``, ``newfstatat``, ...); None without strace."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    config = str(Path(env["HOME"]) / ".config" / "popcon")
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as log:
        subprocess.run(
            [strace, "-f", "-qq", "-e", "trace=%file", "-o", log.name, str(python), "-c", code],
            env=env, capture_output=True, check=True,
        )  # fmt: skip
        touched = []
        for line in log.read().splitlines():
            if config not in line:
                continue
            call = line.split(None, 1)[-1].split("(", 1)[0]
            path = line.split(config, 1)[1].split('"', 1)[0] or "/"
            mode = " O_RDONLY" if "O_RDONLY" in line else " write" if "O_WR" in line else ""
            touched.append(f"{call}{mode} ~/.config/popcon{path}")
    return touched


# --------------------------------------------------------------------------- reporting


def ms(ns: float) -> str:
    return f"{ns / 1e6:9.3f}"


def report(title: str, samples: dict, key: str = "wall") -> dict:
    medians = {v: statistics.median(s[key]) for v, s in samples.items() if s.get(key)}
    base = medians["bare"]
    print(f"\n## {title}")
    print(
        f"{'variant':<12}{'runs':>6}{'median ms':>12}{'added ms':>12}{'ratio':>10}"
        f"{'p10 ms':>11}{'added p10':>11}{'sent/run':>10}"
    )
    base_p10 = tenth_percentile(samples["bare"][key])
    for variant, value in medians.items():
        runs = len(samples[variant][key])
        sent = statistics.mean(samples[variant]["sent"])
        p10 = tenth_percentile(samples[variant][key])
        print(
            f"{variant:<12}{runs:>6}{ms(value):>12}{ms(value - base):>12}"
            f"{value / base:>10.4f}{ms(p10):>11}{ms(p10 - base_p10):>11}{sent:>10.1f}"
        )
    return medians


def tenth_percentile(values: list) -> float:
    """Less sensitive than the median to other jobs on the machine, which only add time."""
    return statistics.quantiles(values, n=10)[0] if len(values) >= 2 else values[0]


def paired_differences(
    samples: dict, key: str, variant: str = "popcon", baseline: str = "bare"
) -> list:
    """variant - baseline, round by round: they ran back to back, so slow drifts of the
    machine (other jobs, CPU frequency) cancel out."""
    return [v - b for v, b in zip(samples[variant][key], samples[baseline][key])]


def interval_text(differences: list) -> str:
    """``+0.123 (95 % interval +0.100, +0.150)``, in ms, of differences in ns."""
    middle, low, high = median_with_interval(differences)
    return f"{middle / 1e6:+.3f} (95 % interval {low / 1e6:+.3f}, {high / 1e6:+.3f})"


def floor_difference(samples: dict, key: str) -> float:
    return tenth_percentile(samples["popcon"][key]) - tenth_percentile(samples["bare"][key])


def median_with_interval(values: list, resamples: int = 2000) -> tuple:
    """Median and a bootstrap 95 % confidence interval of the median."""
    generator = random.Random(0)
    medians = sorted(
        statistics.median(generator.choices(values, k=len(values))) for _ in range(resamples)
    )
    return (
        statistics.median(values),
        medians[int(0.025 * resamples)],
        medians[int(0.975 * resamples) - 1],
    )


def verdict(
    what: str, values: list, target: float, scale: float, unit: str, floor: float | None = None
) -> None:
    """MET when the whole 95 % interval is within the target, NOT MET when it is entirely
    above it, otherwise UNRESOLVED (the machine is noisier than the target is small)."""
    middle, low, high = median_with_interval(values)
    if high <= target:
        outcome = "MET"
    elif low > target:
        outcome = "NOT MET"
    else:
        outcome = "UNRESOLVED at this noise (more runs: --scale 3)"
    shown = ", ".join(f"{x * scale:+.3f}" for x in (low, high))
    print(
        f"- {what}: {middle * scale:+.3f} {unit} (95 % interval {shown}; "
        f"target <= {target * scale:.3f} {unit}): {outcome}"
    )
    if floor is not None:
        print(f"    difference of 10th percentiles: {floor * scale:+.3f} {unit}")


REFERENCE_NAMES = {
    "popcon-pth": "popcon started from popcon.pth (enable --pth)",
    "floor": "a .pth importing an empty module",
}

PANDAS_IMPORT = (
    "import time; _t = time.perf_counter_ns(); import pandas; "
    "print('import', time.perf_counter_ns() - _t); "
)
PANDAS_CODE = PANDAS_IMPORT + EXIT_START
#: What the strace check runs: nothing, the standard library only, a third-party library.
TOUCH_CODES = ("pass", "import json, decimal, email.message", "import pandas")


# The recorder's own time during "import pandas", timed from inside the process around the
# hook's hand-over to the core (core load, map, classification and sends all happen in there;
# the hook's thin wrappers around the path finder's finders are left out, and counted by the
# instruction counts below). Far less noisy than a difference of two whole runs. The wrapper's
# frames claim a standard-library module name, so the recorder looks through them as it does
# through importlib's and classifies as usual.
OWN_TIME_CODE = """
import sys, time
_spent = [0]
_hook = sys.modules.get("sitecustomize")
if not hasattr(_hook, "_report"):
    _hook = sys.modules["_popcon_hook"]
_inner = _hook._report
def _timed(*arguments):
    start = time.perf_counter_ns()
    try:
        return _inner(*arguments)
    finally:
        _spent[0] += time.perf_counter_ns() - start
_hook._report = _timed
_t = time.perf_counter_ns()
import pandas
_total = time.perf_counter_ns() - _t
print("import", _total)
print("recorder", _spent[0])
"""


def measure_own_time(python: Path, env: dict, rounds: int) -> tuple:
    """Medians of (the import statement, the recorder's time inside it), in ns."""
    code = f"exec({OWN_TIME_CODE!r}, {{'__name__': 'importlib._popcon_benchmark'}})"
    totals, own = [], []
    for _ in range(rounds):
        result = subprocess.run(
            [str(python), "-c", code], env=env, capture_output=True, text=True, check=True
        )
        values = dict(line.split() for line in result.stdout.splitlines())
        totals.append(int(values["import"]))
        own.append(int(values["recorder"]))
    return statistics.median(totals), statistics.median(own), own


#: Libraries whose contributions the long-history runs keep (the recorder keeps 4,000 at most).
HISTORY = 4000


@contextlib.contextmanager
def long_history(home: Path) -> Iterator[bool]:
    """While in it, the warm ``home``'s ``contributions`` (docs/recording.md#people) keeps
    fields for :data:`HISTORY` libraries, those of the warm runs last: a user of long standing.
    Yields False (and changes nothing) when the warm runs left no contributions."""
    kept = home / ".config" / "popcon" / "contributions"
    if not kept.is_file():
        yield False
        return
    warm = kept.read_bytes()
    head, _, fields = warm.partition(b"\n")
    others = [
        b"history-%04d %d:%d\n" % (number, number * 7919 % 16384, 1 + number % 5)
        for number in range(HISTORY - fields.count(b"\n"))
    ]
    kept.write_bytes(head + b"\n" + b"".join(others) + fields)
    try:
        yield True
    finally:
        kept.write_bytes(warm)


#: How many objects a count of ``import pandas`` makes first (see :func:`pandas_instructions`).
GC_PHASES = tuple(1100 * step for step in range(7))


def count_instructions(
    switch: Switch, python: Path, env: dict, variant: str, code: str = "pass"
) -> int | None:
    """Instructions ``python -c CODE`` executes (valgrind's callgrind): a deterministic
    figure, where wall time on a busy two-core machine varies by a few tenths of a ms."""
    switch.variant(variant)
    return callgrind_count(python, env, code)


def callgrind_count(python: Path, env: dict, code: str) -> int | None:
    """One callgrind count of ``python -c CODE`` in the variant set now, from an empty
    directory (``-c`` puts the current one on sys.path).

    The environment's inventory is held off (``POPCON_INVENTORY_INTERVAL`` of a year): it is
    sent at most once an hour per environment and user, and while young again after 1, 2,
    4, ... minutes, so a count taken at such a moment would hold a send that the usual
    process does not make (the recorder still makes its check, one ``stat``)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    command = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", str(python)]
    with tempfile.TemporaryDirectory(prefix="popcon-bench-cwd-") as empty:
        result = subprocess.run(
            [*command, "-c", code],
            env=dict(env, PYTHONHASHSEED="0", POPCON_INVENTORY_INTERVAL=str(365 * 86400)),
            capture_output=True, text=True, cwd=empty,
        )  # fmt: skip
    counts = [line.rsplit(" ", 1)[-1] for line in result.stderr.splitlines() if "Collected" in line]
    return int(counts[-1]) if counts and counts[-1].isdigit() else None


def pandas_instructions(switch: Switch, python: Path, env: dict, variant: str) -> list[int] | None:
    """Callgrind counts of ``import pandas``, one per entry of :data:`GC_PHASES`: the
    process first makes that many objects (two counts run at once).

    The garbage collector's young collections come every 700 allocations and the older ones
    every 10 of those, so where they fall in the import, and what they walk, moves with every
    allocation before: one count moves by up to 0.6 M instructions (0.06 % of the import)
    between recorder versions whose own work differs by a few thousand. Starts 1,100 objects
    apart fall at every seventh of a young collection's period and across an older one's,
    the way processes meet an import at any moment: their mean is the figure to judge."""
    switch.variant(variant)
    codes = [f"kept = [[] for _ in range({objects})]\nimport pandas" for objects in GC_PHASES]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = list(pool.map(lambda code: callgrind_count(python, env, code), codes))
    if None in counts:
        return None
    return [count for count in counts if count is not None]


def spread_text(added: list[int], base: float) -> str:
    """The mean of per-start differences, as instructions and as a share of ``base``, and
    their range."""
    mean = statistics.mean(added)
    return (
        f"added {mean:,.0f} ({100 * mean / base:.3f} %; per start {min(added):,} to {max(added):,})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (noisier)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every repetition count (default 1)"
    )
    arguments = parser.parse_args()
    rounds = (60, 20, 12, 8) if arguments.quick else (400, 60, 80, 40)
    pass_rounds, exit_rounds, pandas_rounds, cold_rounds = (
        max(4, round(n * arguments.scale)) for n in rounds
    )

    venv = build_venv()
    python = venv / "bin" / "python"
    switch = Switch(site_packages(venv))
    sink = Sink()
    home = Path(tempfile.mkdtemp(prefix="popcon-bench-home-"))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "POPCON_COLLECTOR": f"udp://127.0.0.1:{sink.port}",
        "PYTHON_POPCONTEST_STATSD_HOST": "127.0.0.1",
        "PYTHON_POPCONTEST_STATSD_PORT": str(sink.port),
        # numpy's BLAS threads spin at import; one thread makes CPU times far less noisy
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, venv {venv}")
    started = time.monotonic()

    references = STARTUP_REFERENCES if switch.default != STARTERS["pth"] else ("floor",)
    startup = measure(
        switch, sink, python, "pass", env, pass_rounds, contest_every=15, references=references
    )
    startup_wall = report("python -c pass: whole process, wall time", startup)
    report("python -c pass: CPU time (user + system)", startup, "cpu")

    exit_env = dict(env, POPCON_BENCH_EXIT="1")
    trivial = measure(
        switch, sink, python, EXIT_START, exit_env, exit_rounds, contest_every=10, exit_probe=True
    )
    trivial_exit = report("-c pass: work at exit, inside the process", trivial, "exit")

    pandas = measure(
        switch, sink, python, PANDAS_CODE, exit_env, pandas_rounds, contest_every=8,
        exit_probe=True,
    )  # fmt: skip
    pandas_wall = report('python -c "import pandas": whole process, wall time', pandas)
    report('python -c "import pandas": CPU time (user + system)', pandas, "cpu")
    pandas_import = report('"import pandas" statement, inside the process', pandas, "import")
    report('"import pandas": work at exit, inside the process', pandas, "exit")

    switch.variant("popcon")
    import_ns, own_ns, own_samples = measure_own_time(python, env, max(4, pandas_rounds // 2))
    print('\n## "import pandas": the recorder\'s own time, timed inside the process')
    print(
        f"import statement median {ms(import_ns)} ms; recorder inside it median "
        f"{ms(own_ns)} ms (p10 {ms(tenth_percentile(own_samples))} ms) = "
        f"{100 * own_ns / import_ns:.3f} % of the import"
    )

    instructions = {
        v: count_instructions(switch, python, env, v) for v in ("bare", "popcon", *references)
    }
    if None not in instructions.values():
        added = instructions["popcon"] - instructions["bare"]
        as_ms = added / instructions["bare"] * startup_wall["bare"] / 1e6
        print("\n## python -c pass: instructions (valgrind callgrind), deterministic")
        print(
            f"bare {instructions['bare']:,}; popcon {instructions['popcon']:,}; added {added:,} "
            f"({100 * added / instructions['bare']:.2f} %), about {as_ms:.3f} ms at the bare "
            "run's median speed"
        )
        for variant in references:
            print(
                f"{REFERENCE_NAMES[variant]}: {instructions[variant]:,}, added "
                f"{instructions[variant] - instructions['bare']:,}"
            )
    pandas_counts = {v: pandas_instructions(switch, python, env, v) for v in ("bare", "popcon")}
    bare_counts, popcon_counts = pandas_counts["bare"], pandas_counts["popcon"]
    if bare_counts is not None and popcon_counts is not None:
        pandas_base = statistics.mean(bare_counts)
        pandas_added = [p - b for p, b in zip(popcon_counts, bare_counts)]
        pandas_share = statistics.mean(pandas_added) / pandas_base
        print(
            '\n## python -c "import pandas": instructions (valgrind callgrind), mean over '
            f"{len(GC_PHASES)} starts {GC_PHASES[1]:,} objects apart"
        )
        print(
            f"bare {pandas_base:,.0f}; popcon {statistics.mean(popcon_counts):,.0f}; "
            + spread_text(pandas_added, pandas_base)
        )
        with long_history(home) as kept:
            long_counts = pandas_instructions(switch, python, env, "popcon")
        if kept and long_counts is not None:
            long_added = [p - b for p, b in zip(long_counts, bare_counts)]
            print(
                f"with a long history (contributions of {HISTORY:,} libraries kept): popcon "
                f"{statistics.mean(long_counts):,.0f}; " + spread_text(long_added, pandas_base)
            )

    cold_homes = Path(tempfile.mkdtemp(prefix="popcon-bench-homes-"))
    cold = measure(
        switch, sink, python, PANDAS_IMPORT, env, cold_rounds, contest_every=0,
        fresh_homes=cold_homes,
    )  # fmt: skip
    cold_title = 'python -c "import pandas", cold (a new, empty HOME every run)'
    cold_wall = report(f"{cold_title}: whole process, wall time", cold)
    cold_import = report(f"{cold_title}: the import statement, inside the process", cold, "import")
    print(
        f"popcon runs that left a secret: {sum(cold['popcon']['secret'])} of "
        f"{len(cold['popcon']['secret'])}, contributions: {sum(cold['popcon']['contributions'])}; "
        f"bare runs: {sum(cold['bare']['secret'])} secrets"
    )
    cold_instructions = {
        (v, code): count_instructions(switch, python, home_environ(env, cold_homes), v, code)
        for v in ("bare", "popcon")
        for code in ("pass", "import pandas")
    }
    if None not in cold_instructions.values():
        print("\n## cold (a new, empty HOME): instructions (valgrind callgrind), deterministic")
        for code in ("pass", "import pandas"):
            bare_count = cold_instructions[("bare", code)]
            popcon_count = cold_instructions[("popcon", code)]
            assert bare_count is not None and popcon_count is not None
            added_count = popcon_count - bare_count
            print(
                f"python -c {code!r}: bare {bare_count:,}; popcon {popcon_count:,}; added "
                f"{added_count:,} ({100 * added_count / bare_count:.3f} %)"
            )

    switch.variant("popcon")
    touched = {code: config_files_touched(python, env, code) for code in TOUCH_CODES}
    if None not in touched.values():
        print("\n## what popcon touches of the user's ~/.config/popcon (strace -f, trace=%file)")
        for code, calls in touched.items():
            print(f"warm HOME, python -c {code!r}: {'; '.join(calls or []) or 'nothing'}")
        calls = config_files_touched(python, home_environ(env, cold_homes), "import pandas")
        print(f"new HOME, python -c 'import pandas': {'; '.join(calls or []) or 'nothing'}")
    switch.variant("bare")

    print("\n## Targets (issue 2, issue 10): popcon - bare, paired round by round")
    verdict(
        "added start-up, python -c pass (wall)",
        paired_differences(startup, "wall"), TARGET_STARTUP_MS * 1e6, 1e-6, "ms",
        floor_difference(startup, "wall"),
    )  # fmt: skip
    verdict(
        "added start-up, python -c pass (CPU)",
        paired_differences(startup, "cpu"), TARGET_STARTUP_MS * 1e6, 1e-6, "ms",
        floor_difference(startup, "cpu"),
    )  # fmt: skip
    for key in ("wall", "cpu"):
        for variant in references:
            added_there = paired_differences(startup, key, variant, "bare")
            print(
                f"    same rounds ({key}): {REFERENCE_NAMES[variant]} adds "
                f"{interval_text(added_there)} ms"
            )
    for key, base in (("wall", pandas_wall["bare"]), ("import", pandas_import["bare"])):
        where = "whole process" if key == "wall" else "the import statement alone"
        verdict(
            f'added time, python -c "import pandas", {where} (% of bare)',
            [d / base for d in paired_differences(pandas, key)],
            TARGET_PANDAS_RATIO, 100, "%", floor_difference(pandas, key) / base,
        )  # fmt: skip
    if None not in instructions.values():
        print(
            f"- added start-up by instruction count: {as_ms:.3f} ms "
            f"(target <= {TARGET_STARTUP_MS:.3f} ms): "
            + ("MET" if as_ms <= TARGET_STARTUP_MS else "NOT MET")
        )
    if bare_counts is not None and popcon_counts is not None:
        print(
            f'- added instructions, python -c "import pandas" (mean): {100 * pandas_share:.3f} % '
            f"(target <= {100 * TARGET_PANDAS_RATIO:.3f} %): "
            + ("MET" if pandas_share <= TARGET_PANDAS_RATIO else "NOT MET")
        )
    print(
        f"- the recorder's own time inside import pandas: {100 * own_ns / import_ns:.3f} % "
        f"(target <= {100 * TARGET_PANDAS_RATIO:.3f} %): "
        + ("MET" if own_ns / import_ns <= TARGET_PANDAS_RATIO else "NOT MET")
    )
    for key, base in (("wall", cold_wall["bare"]), ("import", cold_import["bare"])):
        where = "whole process" if key == "wall" else "the import statement alone"
        verdict(
            f'cold (first process of a user): added time, python -c "import pandas", {where} '
            "(% of bare)",
            [d / base for d in paired_differences(cold, key)],
            TARGET_PANDAS_RATIO, 100, "%", floor_difference(cold, key) / base,
        )  # fmt: skip
    for label, samples in (("-c pass", trivial), ("import pandas", pandas)):
        verdict(
            f"work at exit, {label}",
            paired_differences(samples, "exit"), TARGET_EXIT_MS * 1e6, 1e-6, "ms",
        )  # fmt: skip
    print(
        "- popularity-contest 0.4.1, for comparison: "
        f"+{(startup_wall['popcontest'] - startup_wall['bare']) / 1e6:.1f} ms on -c pass, "
        f"+{(pandas_wall['popcontest'] - pandas_wall['bare']) / 1e6:.1f} ms on import pandas, "
        f"+{(trivial_exit['popcontest'] - trivial_exit['bare']) / 1e6:.1f} ms of it at exit; "
        f"{statistics.mean(startup['popcontest']['sent']):.0f} datagrams per -c pass"
    )
    switch.variant("popcon")  # leave the venv enabled, as popcon enable left it
    status = subprocess.run(
        [*popcon_command(), "status", "--python", str(python)],
        env=popcon_environ(),
        capture_output=True,
        text=True,
    )
    maps = [
        line.split(None, 1)[1] for line in status.stdout.splitlines() if line.startswith("map:")
    ]
    print(f"- popcon's module map after the runs: {'; '.join(maps) or status.stderr.strip()}")
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(cold_homes, ignore_errors=True)
    print(f"\n{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
