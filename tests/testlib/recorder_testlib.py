"""Plain helpers for the recorder tests: a strict datagram parser, a UDP listener, and builders
for virtual environments, wheels and distributions on disk.

The parser is written from ``docs/protocol.md`` alone (it does not use the collector's
decoder), so a recorder that drifts from the documented wire format fails these tests.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import fcntl
import hashlib
import hmac
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_DATAGRAM = 1400
MAX_LABELS = 8
CACHE_ROOT = Path(os.environ.get("POPCON_TEST_CACHE", Path.home() / ".cache" / "popcon-tests"))
#: The interpreter the test venvs are made from: POPCON_TEST_PYTHON where set (the recorder's
#: tests on each CPython, scripts/recorder_pythons.sh), else the one running the tests.
BASE_PYTHON = os.environ.get("POPCON_TEST_PYTHON") or sys.executable

# --------------------------------------------------------------------------- wire format

NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,98}[a-z0-9])?\Z")
VERSION_RE = re.compile(r"[!-~]{1,64}\Z")
_NAME = r"[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?"
REQUIRES_RE = re.compile(rf"(?:-|{_NAME}(?:,{_NAME}){{0,31}})\Z")
LABEL_KEY_RE = re.compile(r"[a-z_][a-z0-9_]{0,31}\Z")
LABEL_VALUE_RE = re.compile(r"[A-Za-z0-9_.:/@+-]{1,64}\Z")
PY_RE = re.compile(r"[0-9]+\.[0-9]+\Z")
INV_ID_RE = re.compile(r"[0-9a-f]{8}\Z")
SIG_RE = re.compile(r"[0-9a-f]{32}\Z")
TIME_LINE_RE = re.compile(r"t [0-9]{1,12} [0-9a-f]{16}\Z")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
#: ``-``, or ``<register>:<rank>``: register 0 to 16383, rank 1 to 51, no leading zeros.
PERSON_RE = re.compile(r"(?:-|(?:0|[1-9][0-9]{0,4}):(?:[1-9]|[1-4][0-9]|5[01]))\Z")
LEVELS = ("direct", "transitive", "upgrade", "program", "claimed")
FIRST_LEVELS = ("direct", "transitive", "program")
ORIGINS = ("env", "user")


class ProtocolError(ValueError):
    """A datagram that breaks docs/protocol.md."""


@dataclass(frozen=True)
class Lib:
    name: str
    version: str
    level: str
    origin: str
    importer: str | None = None
    #: ``<register>:<rank>`` or ``-``; left out of comparisons (tests about it read it)
    person: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Prog:
    """A ``prog`` line: the process's program."""

    name: str
    version: str
    origin: str
    person: str | None = field(default=None, compare=False)


@dataclass
class Datagram:
    raw: bytes
    kind: str  # "use" or "inv"
    env: str
    py: str
    labels: dict = field(default_factory=dict)
    seq: int | None = None
    inv_id: str | None = None
    part: int | None = None
    parts: int | None = None
    libs: list = field(default_factory=list)
    dists: list = field(default_factory=list)
    #: name -> (requested field, [requires]) of the dist lines that say why
    reasons: dict = field(default_factory=dict)
    sig: str | None = None
    program: Prog | None = None

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8")


def canonical_name(name: str) -> str:
    """PEP 503: lower case, runs of ``-``, ``_`` and ``.`` become one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _check_name(name: str, line: str) -> None:
    if not NAME_RE.match(name) or "--" in name:
        raise ProtocolError(f"not a canonical distribution name in {line!r}")


def parse_datagram(raw: bytes) -> Datagram:
    """Parse one popcon/2 datagram, raising ProtocolError on anything the protocol forbids."""
    if len(raw) > MAX_DATAGRAM:
        raise ProtocolError(f"datagram of {len(raw)} bytes > {MAX_DATAGRAM}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ProtocolError(f"not UTF-8: {error}") from None
    if not text.endswith("\n"):
        raise ProtocolError("no final newline")
    lines = text[:-1].split("\n")
    first = lines[0].split(" ")
    if first[0] != "popcon/2":
        raise ProtocolError(f"bad first line {lines[0]!r}")
    if first[1:2] == ["use"] and len(first) == 3 and first[2].isdigit():
        kind, seq = "use", int(first[2])
        inv_id = part = parts = None
    elif first[1:2] == ["inv"] and len(first) == 5:
        kind, seq = "inv", None
        inv_id = first[2]
        if not INV_ID_RE.match(inv_id) or not (first[3].isdigit() and first[4].isdigit()):
            raise ProtocolError(f"bad inv line {lines[0]!r}")
        part, parts = int(first[3]), int(first[4])
        if not (1 <= parts <= 64 and 1 <= part <= parts):
            raise ProtocolError(f"bad inventory part numbers {lines[0]!r}")
    else:
        raise ProtocolError(f"bad first line {lines[0]!r}")
    if len(lines) < 3 or not lines[1].startswith("env ") or not lines[2].startswith("py "):
        raise ProtocolError("env and py lines must follow the first line")
    env = lines[1][4:]
    if not 1 <= len(env) <= 200 or CONTROL_RE.search(env):
        raise ProtocolError(f"bad env label {env!r}")
    py = lines[2][3:]
    if not PY_RE.match(py):
        raise ProtocolError(f"bad py line {lines[2]!r}")
    datagram = Datagram(raw, kind, env, py, seq=seq, inv_id=inv_id, part=part, parts=parts)
    rest = lines[3:]
    index = 0
    while index < len(rest) and rest[index].startswith("label "):
        key, sep, value = rest[index][6:].partition("=")
        if not sep or not LABEL_KEY_RE.match(key) or not LABEL_VALUE_RE.match(value):
            raise ProtocolError(f"bad label line {rest[index]!r}")
        if key in datagram.labels:
            raise ProtocolError(f"label {key} twice")
        datagram.labels[key] = value
        index += 1
    if len(datagram.labels) > MAX_LABELS:
        raise ProtocolError("more than 8 labels")
    for position, line in enumerate(rest[index:], start=index):
        fields = line.split(" ")
        if fields[0] == "sig":
            if position != len(rest) - 1 or len(fields) != 2 or not SIG_RE.match(fields[1]):
                raise ProtocolError(f"bad or misplaced sig line {line!r}")
            datagram.sig = fields[1]
        elif fields[0] == "t":
            if position != len(rest) - 2 or not rest[-1].startswith("sig "):
                raise ProtocolError(f"a t line must come just before the sig line: {line!r}")
            if not TIME_LINE_RE.match(line):
                raise ProtocolError(f"bad t line {line!r}")
        elif fields[0] == "lib" and kind == "use":
            datagram.libs.append(_parse_lib(fields, line))
        elif fields[0] == "prog" and kind == "use" and len(fields) == 5:
            if datagram.program is not None:
                raise ProtocolError(f"a second prog line {line!r}")
            _check_name(fields[1], line)
            if not VERSION_RE.match(fields[2]) or fields[3] not in ORIGINS:
                raise ProtocolError(f"bad prog line {line!r}")
            _check_person(fields[4], line)
            datagram.program = Prog(fields[1], fields[2], fields[3], fields[4])
        elif fields[0] == "dist" and kind == "inv" and len(fields) in (3, 5):
            _check_name(fields[1], line)
            if not VERSION_RE.match(fields[2]):
                raise ProtocolError(f"bad version in {line!r}")
            if len(fields) == 5:
                if fields[3] not in ("r", "-", "?") or not REQUIRES_RE.match(fields[4]):
                    raise ProtocolError(f"bad requested or requires field in {line!r}")
                requires = [] if fields[4] == "-" else fields[4].split(",")
                datagram.reasons[fields[1]] = (fields[3], requires)
            datagram.dists.append((fields[1], fields[2]))
        else:
            raise ProtocolError(f"unexpected line {line!r} in a {kind} datagram")
    return datagram


def _check_person(person: str, line: str) -> None:
    if not PERSON_RE.match(person) or (person != "-" and int(person.split(":")[0]) > 16383):
        raise ProtocolError(f"bad person in {line!r}")


def _parse_lib(fields: list, line: str) -> Lib:
    if len(fields) not in (6, 7):
        raise ProtocolError(f"bad lib line {line!r}")
    _, name, version, level, origin, person, *importer = fields
    _check_name(name, line)
    if not VERSION_RE.match(version):
        raise ProtocolError(f"bad version in {line!r}")
    if level not in LEVELS or origin not in ORIGINS:
        raise ProtocolError(f"bad level or origin in {line!r}")
    _check_person(person, line)
    if level == "transitive" and not importer:
        raise ProtocolError(f"a transitive record names its importer: {line!r}")
    if importer and level not in ("transitive", "program"):
        raise ProtocolError(f"an importer with transitive or program only: {line!r}")
    if importer:
        _check_name(importer[0], line)
    return Lib(name, version, level, origin, importer[0] if importer else None, person)


def signature(raw: bytes, key: str) -> str:
    """The documented signature of a signed datagram: HMAC-SHA256 over the bytes before the
    ``sig`` line, first 32 hex digits."""
    body = raw[: raw.rindex(b"sig ")]
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()[:32]


STATSD_LINE_RE = re.compile(r"([^:|\s]+):(-?[0-9]+(?:\.[0-9]+)?)\|(c|g|ms|h|s)(?:\|@[0-9.]+)?\Z")


def parse_statsd(raw: bytes) -> list:
    """The lines of a statsd datagram as ``(metric, value, type)``; raises on a bad line."""
    if len(raw) > MAX_DATAGRAM:
        raise ProtocolError(f"statsd datagram of {len(raw)} bytes")
    metrics = []
    for line in raw.decode("ascii").split("\n"):
        if not line:
            continue
        match = STATSD_LINE_RE.match(line)
        if not match:
            raise ProtocolError(f"not a statsd line: {line!r}")
        metrics.append((match.group(1), float(match.group(2)), match.group(3)))
    return metrics


def use_libs(datagrams: Iterable[Datagram]) -> list:
    return [lib for d in datagrams if d.kind == "use" for lib in d.libs]


def by_name(libs: Iterable[Lib]) -> dict:
    """name -> list of that name's records, in arrival order."""
    out: dict = {}
    for lib in libs:
        out.setdefault(lib.name, []).append(lib)
    return out


#: what a later record of a library says it was first: an upgrade, transitive; a claim, program
BEFORE = {"upgrade": "transitive", "claimed": "program"}


def first_records(libs: Iterable[Lib]) -> dict:
    """name -> the first (direct, transitive or program) record, for the datagrams of ONE
    process.

    Fails when a distribution was reported twice, upgraded without being transitive first or
    claimed without being the program's first, or when its records carry different persons.
    """
    first: dict = {}
    for lib in libs:
        if lib.level in BEFORE:
            previous = first.get(lib.name)
            assert previous is not None and previous.level == BEFORE[lib.level], (
                f"{lib.level} of {lib.name} that was not reported {BEFORE[lib.level]} before"
            )
            assert lib.person == previous.person, f"{lib.name}: two persons in one process"
        else:
            assert lib.name not in first, f"{lib.name} reported twice: {first[lib.name]}, {lib}"
            first[lib.name] = lib
    return first


def final_levels(libs: Iterable[Lib]) -> dict:
    """name -> "direct", "transitive" or "program" after upgrades and claims, for the
    datagrams of ONE process."""
    libs = list(libs)
    levels = {name: lib.level for name, lib in first_records(libs).items()}
    for lib in libs:
        if lib.level in BEFORE:
            levels[lib.name] = "direct"
    return levels


def programs(datagrams: Iterable[Datagram]) -> list:
    """The ``prog`` records of these datagrams, in arrival order."""
    return [d.program for d in datagrams if d.program is not None]


# --------------------------------------------------------------------------- UDP listener


class UdpListener:
    """Collects datagrams arriving on a loopback port, from a background thread; with
    ``forward_to``, also passes each on to that address (a relay reading what recorders really
    sent on its way to a collector)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, forward_to: tuple[str, int] | None = None
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind((host, port))
        self.sock.settimeout(0.05)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.forward_to = forward_to
        self.received: list = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="udp-listener", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"udp://{self._netloc}"

    @property
    def statsd_url(self) -> str:
        return f"statsd://{self._netloc}"

    @property
    def _netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, BlockingIOError):
                continue
            except OSError:
                return
            with self._changed:
                self.received.append(data)
                self._changed.notify_all()
            if self.forward_to is not None:
                self.sock.sendto(data, self.forward_to)

    def wait_for(self, predicate: Callable[[list], bool], timeout: float = 15.0) -> bool:
        """Wait until predicate(raw datagrams) holds; False after timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self.received)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def settle(self, quiet: float = 0.3, timeout: float = 5.0) -> list:
        """Wait until no datagram arrived for ``quiet`` seconds; return the raw datagrams."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while time.monotonic() < deadline:
                count = len(self.received)
                self._changed.wait(quiet)
                if len(self.received) == count:
                    break
            return list(self.received)

    def datagrams(self, settle: bool = True) -> list:
        """Every datagram so far, parsed strictly (a protocol violation fails the test)."""
        raws = self.settle() if settle else list(self.received)
        return [parse_datagram(raw) for raw in raws]

    def clear(self) -> None:
        with self._changed:
            self.received.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def free_udp_port() -> int:
    """A loopback UDP port with nothing listening (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- processes


def clean_environ(home: Path, **overrides: str | None) -> dict:
    """The test process's environment without anything that could steer popcon, Python or a
    virtual environment, with HOME set to a scratch directory."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("POPCON_", "PYTHON", "PIP_", "JUPYTER", "XDG_"))
        and key not in ("VIRTUAL_ENV", "CONDA_PREFIX", "HOME")
    }
    env["HOME"] = str(home)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the venvs may be shared between test sessions
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run(args: Sequence, env: Mapping, cwd: Path | None = None, timeout: float = 180, **kw):
    return subprocess.run(
        [str(a) for a in args],
        env=dict(env),
        cwd=str(cwd) if cwd else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,
    )


def popcon_cli(*args, env: Mapping, timeout: float = 120):
    """``python -m popcon ARGS`` from the test interpreter (where popcon is installed)."""
    return run([sys.executable, "-m", "popcon", *args], env=env, timeout=timeout)


# --------------------------------------------------------------------------- venvs


@dataclass(frozen=True)
class Venv:
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def site_packages(self) -> Path:
        (found,) = self.path.glob("lib/python*/site-packages")
        return found

    def metadata_versions(self) -> dict:
        """canonical name -> version, as the venv's own importlib.metadata sees them."""
        code = (
            "import importlib.metadata as m, json, re\n"
            "print(json.dumps({re.sub(r'[-_.]+','-',d.metadata['Name']).lower(): d.version "
            "for d in m.distributions() if d.metadata['Name']}))"
        )
        result = subprocess.run(
            [str(self.python), "-I", "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PATH": os.environ.get("PATH", ""), "POPCON_DISABLE": "1"},
        )
        return json.loads(result.stdout)


def create_venv(path: Path, *, system_site_packages: bool = False, with_pip: bool = False) -> Venv:
    args = [BASE_PYTHON, "-m", "venv", str(path)]
    if not with_pip:
        args.append("--without-pip")
    if system_site_packages:
        args.append("--system-site-packages")
    subprocess.run(args, check=True, capture_output=True)
    return Venv(path)


@contextlib.contextmanager
def running_kernel(venv: Venv, tmp_path: Path, env: dict) -> Iterator:
    """``with running_kernel(venv, tmp_path, env) as (manager, client)``: an ipykernel of
    ``venv`` (``python -m ipykernel_launcher``, its kernelspec under ``tmp_path``) started by
    jupyter_client and ready, its client's channels open; all of it stopped afterwards."""
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    spec_dir = tmp_path / "kernels" / "popcon-workload"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [str(venv.python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "popcon workload",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    manager = KernelManager(kernel_name="popcon-workload", kernel_spec_manager=specs)
    manager.start_kernel(env=env, cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        yield manager, client
    finally:
        client.stop_channels()
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)
        manager.cleanup_resources()


def run_cell(client, code: str, timeout: float = 120) -> None:
    """Execute one cell in a kernel and check that it ran."""
    reply = client.execute_interactive(code, timeout=timeout)
    assert reply["content"]["status"] == "ok", reply["content"]


def pip_install(venv: Venv, *args, env_extra: Mapping | None = None) -> None:
    """Install into ``venv`` with the pip of the interpreter it was made from (the venvs have
    no pip of their own; pip supports the Python versions of its time only).
    POPCON_DISABLE keeps an enabled recorder quiet inside pip itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POPCON_")}
    env["POPCON_DISABLE"] = "1"
    env.update(env_extra or {})
    command = [
        BASE_PYTHON, "-m", "pip", "--python", str(venv.python), "install",
        "--disable-pip-version-check", "--no-input", "-q", *map(str, args),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"pip install {args} failed:\n{result.stdout}\n{result.stderr}")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cached_venv(name: str, requirements: Sequence[str]) -> Venv:
    """A venv with ``requirements`` from PyPI, kept under CACHE_ROOT keyed by a hash of the
    interpreter and the requirement list, so that reruns skip the install."""
    interpreter = [sys.version, sys.executable] if sys.executable == BASE_PYTHON else [BASE_PYTHON]
    key_source = "\n".join([*interpreter, *sorted(requirements)])
    key = hashlib.sha256(key_source.encode()).hexdigest()[:12]
    path = CACHE_ROOT / "venvs" / f"{name}-{key}"
    complete = path / ".popcon-tests-complete"
    with _file_lock(CACHE_ROOT / "venvs" / f"{name}-{key}.lock"):
        if not complete.exists():
            shutil.rmtree(path, ignore_errors=True)
            venv = create_venv(path)
            pip_install(venv, *requirements)
            complete.write_text("\n".join(requirements) + "\n")
    return Venv(path)


# --------------------------------------------------------------------------- wheels and dists


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def build_wheel(
    directory: Path,
    name: str,
    version: str,
    files: Mapping,
    *,
    requires: Sequence[str] = (),
    top_level: Sequence[str] | None = None,
    tag: str = "py3-none-any",
) -> Path:
    """Write a valid wheel ``name-version-tag.whl`` holding ``files`` (path -> str|bytes)."""
    dist_name = re.sub(r"[-_.]+", "_", name)
    info = f"{dist_name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    contents = {
        path: (data.encode() if isinstance(data, str) else data) for path, data in files.items()
    }
    contents[f"{info}/METADATA"] = metadata.encode()
    contents[f"{info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: popcon-tests\nRoot-Is-Purelib: true\nTag: {tag}\n"
    ).encode()
    if top_level is not None:
        contents[f"{info}/top_level.txt"] = "".join(f"{t}\n" for t in top_level).encode()
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for path, data in contents.items():
        writer.writerow([path, _record_hash(data), len(data)])
    writer.writerow([f"{info}/RECORD", "", ""])
    contents[f"{info}/RECORD"] = record.getvalue().encode()
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{dist_name}-{version}-{tag}.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in contents.items():
            archive.writestr(path, data)
    return wheel


def write_dist_info(
    site_packages: Path,
    name: str,
    version: str,
    files: Mapping,
    *,
    with_record: bool = True,
    top_level: Sequence[str] | None = None,
) -> None:
    """Lay out an installed distribution directly in site-packages, as pip leaves it."""
    dist_name = re.sub(r"[-_.]+", "_", name)
    info = site_packages / f"{dist_name}-{version}.dist-info"
    info.mkdir(parents=True)
    rows = []
    for relative, data in files.items():
        target = site_packages / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        raw = data.encode() if isinstance(data, str) else data
        target.write_bytes(raw)
        rows.append(f"{relative},{_record_hash(raw)},{len(raw)}")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    if top_level is not None:
        (info / "top_level.txt").write_text("".join(f"{t}\n" for t in top_level))
    if with_record:
        rows += [f"{info.name}/{f},," for f in ("METADATA", "INSTALLER", "RECORD")]
        (info / "RECORD").write_text("\n".join(rows) + "\n")


# --------------------------------------------------------------------------- file system


@contextlib.contextmanager
def unwritable(*paths: Path) -> Iterator[None]:
    """Make directories unwritable even for root (``chattr +i``), or by mode for others."""
    done = []
    try:
        for path in paths:
            if os.geteuid() == 0:
                result = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
                if result.returncode != 0:
                    import pytest

                    pytest.skip(f"cannot make {path} immutable: {result.stderr.strip()}")
                done.append(("chattr", path))
            else:
                mode = path.stat().st_mode
                path.chmod(mode & ~0o222)
                done.append(("chmod", path, mode))
        yield
    finally:
        for entry in reversed(done):
            if entry[0] == "chattr":
                subprocess.run(["chattr", "-i", str(entry[1])], check=True)
            else:
                entry[1].chmod(entry[2])


# --------------------------------------------------------------------------- an oracle

# Appended to user scripts: writes {canonical name: version} of the distributions that own a
# module loaded in the process, found with importlib.metadata inside that process. It is
# independent of popcon's map, so the recorder's report can be checked against it.
ORACLE_CODE = """
def _popcon_test_oracle(path):
    import importlib.metadata, json, os, re, sys
    loaded = set()
    for module in list(sys.modules.values()):
        filename = getattr(module, "__file__", None)
        if isinstance(filename, str):
            loaded.add(os.path.realpath(filename))
    found = {}
    for dist in importlib.metadata.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()
        for file in dist.files or ():
            if str(file).endswith((".py", ".so")) and os.path.realpath(file.locate()) in loaded:
                found[name] = dist.version
                break
    with open(path, "w") as out:
        json.dump(found, out)
"""


def with_oracle(code: str, output: Path, where: str = "end") -> str:
    """``code`` (dedented) with the oracle defined first and called at the end (or wherever
    ``where`` names a line ``# ORACLE`` in the code)."""
    import textwrap

    body = textwrap.dedent(code)
    call = f"_popcon_test_oracle({str(output)!r})"
    if where == "end":
        body = body + "\n" + call + "\n"
    else:
        body = "\n".join(
            line.replace("# ORACLE", call) if line.strip() == "# ORACLE" else line
            for line in body.splitlines()
        )
    return ORACLE_CODE + "\n" + body
