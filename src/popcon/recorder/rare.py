"""The recorder's rarely needed parts, loaded only by a process that needs one of them.

statsd lines, signed datagrams, the hourly inventory, host-name resolution, ``popcon preview``
and ``POPCON_DEBUG`` output, files written atomically, the environment's default label, the
user's secret, the person fields computed from it and kept beside it, the IPython hook, and
the standard library's names on Python 3.9. Every process that imports a library loads the
core (``core.py``); keeping these out of it keeps that load short. ``popcon enable`` copies
this file into site-packages as ``_popcon_recorder_rare.py``. Standard library only; it uses
the core's public names only, and like the core, keeps its types in comments.

What it offers the others: to the core, ``parse_labels``, ``sign``, ``time_line``,
``statsd_datagrams``, ``send_inventory``, ``show``, ``resolve``, ``await_resolution``,
``keep_default_label``, ``create_secret``, ``read_secret``, ``contribution``,
``keep_contributions``, ``hook_ipython`` and
``standard_library_names_before_3_10``; to ``map``, ``write_atomically``;
to ``popcon status``, ``parse_labels``; and the protocol's terms that only these parts use
(``MAX_LABELS``, ...).
"""

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # never true when it runs: the type checker reads popcon's package
    from . import core
    from ._types import *  # noqa: F403
else:
    _CORE = "popcon.recorder.core" if __name__.startswith("popcon.") else "_popcon_recorder"
    __import__(_CORE)
    core = sys.modules[_CORE]

# The protocol's terms (docs/protocol.md) that only these parts use.
MAX_LABELS = 8
MAX_INVENTORY_PARTS = 64
MAX_REQUIRES = 32  # names in a dist line's <requires>
REQUIRES_NONE = "-"
MAX_LABEL_KEY = 32  # characters
MAX_LABEL_VALUE = 64  # characters
LABEL_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")  # not a digit first
LABEL_VALUE_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:/@+-"
)
DEFAULT_STATSD_PREFIX = "python_popcon"

_RESOLVE_TTL = 600.0  # seconds a resolved collector address stays cached on disk
_nonce = None  # type: tuple[int, str] | None  # (process id, nonce) of the signed datagrams


def standard_library_names_before_3_10():
    # type: () -> frozenset[str]
    """What lives in the standard library's directories, the built-in and frozen modules
    (``sys.stdlib_module_names`` exists from Python 3.10)."""
    found = set(sys.builtin_module_names) | {"_frozen_importlib", "_frozen_importlib_external"}
    stdlib = os.path.dirname(os.__file__)
    for directory in (stdlib, os.path.join(stdlib, "lib-dynload")):
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        for entry in entries:
            if entry != "site-packages":
                found.add(entry.split(".", 1)[0])
    return frozenset(found)


def write_atomically(path, data, mode=0o666):
    # type: (str, bytes, int) -> bool
    """Write ``path`` whole or not at all (its directory made 0700 where missing); ``mode``
    before the umask."""
    directory = os.path.dirname(path)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.write(descriptor, data)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
        return True
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        return False


def prefix_label(prefix):
    # type: (str) -> str
    """The default label: ``env:`` and 12 hex digits of a BLAKE2b hash of the environment's
    prefix as Python spells it (resolving it would cost an lstat per directory). The same
    for every user and process of the environment, it names no path and no user
    (docs/recording.md#privacy). Not ``core.path_key``: it is linear in the text's bytes, so a
    user name of up to 8 bytes at a known place in the path could be solved for. ``_blake2``
    is CPython's own module (0.4 M instructions to load, none once hashlib has loaded it;
    kept by builds that drop the other built-in hashes); hashlib would also load OpenSSL."""
    data = os.fsencode(prefix)
    try:
        from _blake2 import blake2b
    except ImportError:  # a build without it: hashlib's sha256, from OpenSSL
        from hashlib import sha256

        return "env:" + sha256(data).hexdigest()[:12]
    return "env:" + blake2b(data, digest_size=6).hexdigest()


def keep_default_label(shared, own):
    # type: (list[str], list[str]) -> str
    """``prefix_label(sys.prefix)``, kept for later processes (``core.default_label``) in the
    first file that can be written of ``shared`` (beside site directories; those whose
    directory this user may write to) and then ``own`` (the user's cache directory); where
    none can, the next process computes it again."""
    label = prefix_label(sys.prefix)
    writable = [path for path in shared if os.access(os.path.dirname(path), os.W_OK)] + own
    for path in writable:
        if write_atomically(path, label.encode("ascii")):
            break
    return label


# --------------------------------------------------------------------------- the user's secret


def create_secret(path):
    # type: (str) -> bool
    """Make the user's secret, 32 random bytes as 64 hex digits, mode 0600 (its directory 0700
    where it has to be made); True when there is a secret at ``path`` afterwards. Written
    whole to a file of its own and linked into place, so that no process reads half of one,
    none replaces one, and processes starting at once all take the first."""
    directory = os.path.dirname(path)
    temporary = f"{path}.{os.getpid()}.tmp"
    data = os.urandom(32).hex().encode("ascii") + b"\n"
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        _write_new(temporary, data)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process made one first: that is the secret
        except OSError:  # a file system without hard links
            _write_new(path, data)
    except FileExistsError:
        pass
    except OSError:
        return False
    finally:
        try:
            os.unlink(temporary)
        except OSError:
            pass
    return os.path.isfile(path)


def read_secret(path):
    # type: (str | None) -> bytes
    """The user's secret: 64 lower-case hex digits (and a newline); b"" when unusable."""
    if path is None:
        return b""
    try:
        with open(path, "rb") as stream:
            text = stream.read(1 << 10).decode("ascii").strip()
    except (OSError, UnicodeError):
        return b""
    if len(text) != 64 or text.strip("0123456789abcdef"):
        return b""
    return bytes.fromhex(text)


def contribution(key, name):
    # type: (bytes, str) -> str
    """``<register>:<rank>`` (docs/protocol.md): the first 8 bytes of BLAKE2b(key, name), its
    high ``core.SKETCH_PRECISION`` bits the register, the rank one more than the leading zeros
    of the rest. ``core.NO_PERSON`` on a build without BLAKE2b."""
    try:
        from _blake2 import blake2b
    except ImportError:
        try:
            from hashlib import blake2b
        except ImportError:
            return core.NO_PERSON
    digest = blake2b(name.encode("utf-8"), digest_size=8, key=key).digest()
    value = int.from_bytes(digest, "big")
    rest = 64 - core.SKETCH_PRECISION
    rank = rest + 1 - (value & ((1 << rest) - 1)).bit_length()
    return f"{value >> rest}:{rank}"


def _write_new(path, data):
    # type: (str, bytes) -> None
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(descriptor, data)
    finally:
        os.close(descriptor)


def keep_contributions(path, head, kept, people):
    # type: (str, bytes, bytes, dict[str, str]) -> None
    """Keep the person fields computed so far beside the secret they come from (mode 0600):
    ``head``, the line naming the secret file's identity, then one line ``<name> <field>``
    each, the latest ``_MAX_KEPT`` of those ``kept`` before and of ``people``, at most
    ``_MAX_KEPT_BYTES`` in all."""
    lines = {}  # type: dict[bytes, bytes]
    for line in kept.split(b"\n")[1:-1]:
        lines[line.partition(b" ")[0]] = line
    for name, field in people.items():
        if field != core.NO_PERSON:
            key = name.encode("utf-8")
            lines.pop(key, None)
            lines[key] = key + b" " + field.encode("ascii")
    chosen = list(lines.values())[-_MAX_KEPT:]
    size = sum(len(line) + 1 for line in chosen)
    while size > _MAX_KEPT_BYTES:
        size -= len(chosen.pop(0)) + 1
    write_atomically(path, head + b"".join(line + b"\n" for line in chosen), 0o600)


_MAX_KEPT = 4000  # contributions kept beside a secret (about 25 bytes each)
_MAX_KEPT_BYTES = 1 << 17  # and bytes: the core reads at most twice as many


# --------------------------------------------------------------------------- labels


def parse_labels(text):
    # type: (str) -> tuple[list[tuple[str, str]], list[str]]
    """``"k=v,k=v"`` -> (valid [(key, value)], rejected [entry]); at most ``MAX_LABELS`` are
    kept (only a process whose ``POPCON_LABELS`` is set needs this)."""
    valid = []  # type: list[tuple[str, str]]
    rejected = []
    seen = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, separator, value = item.partition("=")
        key = key.strip()
        value = value.strip()
        if (
            separator
            and 0 < len(key) <= MAX_LABEL_KEY
            and key[0] not in "0123456789"
            and set(key) <= LABEL_KEY_CHARS
            and 0 < len(value) <= MAX_LABEL_VALUE
            and set(value) <= LABEL_VALUE_CHARS
            and key not in seen
            and len(valid) < MAX_LABELS
        ):
            seen.add(key)
            valid.append((key, value))
        else:
            rejected.append(item)
    return valid, rejected


# --------------------------------------------------------------------------- statsd and signing


def statsd_datagrams(records, first):
    # type: (list[Record], bool) -> list[bytes]
    """The lines popularity-contest sends: one per library (its first record, whatever the
    cause), and one per report."""
    prefix = statsd_prefix(os.environ.get("POPCON_STATSD_PREFIX", ""))
    lines = []
    for name, _version, level, _origin, _importer in records:
        if level in core.FIRST_LEVELS:
            lines.append(f"{prefix}.library_used.{name}:1|c")
    if first:
        lines.append(f"{prefix}.reports:1|c")
    return [chunk.encode("utf-8") for chunk in core.chunks(lines, core.MAX_DATAGRAM)]


def statsd_prefix(text):
    # type: (str) -> str
    """``POPCON_STATSD_PREFIX`` without surrounding dots, if it is a usable one."""
    prefix = text.strip().strip(".")
    if prefix and all(c.isalnum() or c in "_.-" for c in prefix) and len(prefix) <= 100:
        return prefix
    return DEFAULT_STATSD_PREFIX


def sign(key, payload):
    # type: (bytes, bytes) -> bytes
    """``payload`` followed by its signature line (HMAC-SHA256 with ``key``)."""
    import hashlib
    import hmac

    digest = hmac.new(key, payload, hashlib.sha256).hexdigest()[:32]
    return payload + b"sig " + digest.encode("ascii") + b"\n"


def time_line():
    # type: () -> str
    """The ``t`` line a signed datagram ends with, before its signature line: the minute
    (since the epoch) and this process's nonce, 16 hex digits drawn once per process (again
    in a forked child), so that identical datagrams of two processes differ."""
    global _nonce
    import time

    pid = os.getpid()
    if _nonce is None or _nonce[0] != pid:
        _nonce = (pid, os.urandom(8).hex())
    return f"t {int(time.time()) // 60} {_nonce[1]}\n"


# --------------------------------------------------------------------------- the inventory


def send_inventory(config, inventories, inventory_id, stamp, sent=0):
    # type: (Config, list[Inventory], str, str, int) -> None
    """Send the environment's installed distributions, each with why it is installed where its
    metadata says (``dist`` lines with ``<requested>`` and ``<requires>``; the plain lines
    when those need more than ``MAX_INVENTORY_PARTS``), and stamp when (the core decided that
    it is due); the stamp's size counts the sends (``sent`` before this one), up to
    ``core.YOUNG_SENDS``."""
    if not write_atomically(stamp, b"." * min(sent + 1, core.YOUNG_SENDS)):
        return  # nowhere to remember it: better never than every process
    _remove_other_stamps(stamp)
    entries = sorted({pair for _id, dists in inventories for pair in dists})
    base = f"{core.PROTOCOL_VERSION} inv {inventory_id} %d %d\n"
    stamp = "" if config.key is None else time_line()
    room = len(config.header.encode("utf-8")) + core.HEAD_ROOM + len(base) + len(stamp)
    budget = core.MAX_DATAGRAM - room
    texts = core.chunks(dist_lines(entries, installed_reasons(), budget), budget)
    if len(texts) > MAX_INVENTORY_PARTS:
        texts = core.chunks([f"dist {name} {version}" for name, version in entries], budget)
    if len(texts) > MAX_INVENTORY_PARTS:
        return  # cannot be said in one inventory: documented limit
    total = len(texts)
    core.emit(
        config,
        [
            core.signed(
                config, ((base % (part, total)) + config.header + text + stamp).encode("utf-8")
            )
            for part, text in enumerate(texts, 1)
        ],
    )


def dist_lines(entries, reasons, budget):
    # type: (list[tuple[str, str]], dict[str, tuple[str, list[str]]], int) -> list[str]
    """An inventory's ``dist`` lines: ``dist <name> <version> <requested> <requires>`` where
    ``reasons`` (``map.installed_reasons``) knows the distribution, with at most
    ``MAX_REQUIRES`` of its requirements that are installed (in ``entries``), fewer where the
    line would not fit in ``budget`` bytes; else ``dist <name> <version>``."""
    installed = {name for name, _version in entries}
    lines = []
    for name, version in entries:
        line = f"dist {name} {version}"
        reason = reasons.get(name)
        if reason is not None:
            requested, names = reason
            kept = [required for required in names if required in installed][:MAX_REQUIRES]
            room = budget - len(line) - len(requested) - 3  # two spaces and the newline
            while kept and len(",".join(kept)) > room:
                kept.pop()
            line = f"{line} {requested} {','.join(kept) or REQUIRES_NONE}"
        lines.append(line)
    return lines


def installed_reasons():
    # type: () -> dict[str, tuple[str, list[str]]]
    """Why each distribution of the environment's site-packages (the inventory's directories,
    not the user site) is installed, the directory first on ``sys.path`` winning."""
    import site

    try:
        directories = site.getsitepackages()
    except AttributeError:  # very old virtualenv
        directories = [p for p in sys.path if p.endswith("site-packages")]
    mapper = core.sibling("map")
    found = {}  # type: dict[str, tuple[str, list[str]]]
    for directory in reversed(directories):
        found.update(mapper.installed_reasons(directory))
    return found


def _remove_other_stamps(stamp):
    # type: (str) -> None
    """Stamps of earlier inventories of the same environment and collector are done with."""
    directory, name = os.path.split(stamp)
    prefix = name.rsplit("-", 1)[0] + "-"
    try:
        for other in os.listdir(directory):
            if other.startswith(prefix) and other != name:
                os.unlink(os.path.join(directory, other))
    except OSError:
        pass


# --------------------------------------------------------------------------- output not sent


def show(config, datagrams):
    # type: (Config, list[bytes]) -> None
    """``popcon preview`` collects the datagrams in a file; ``POPCON_DEBUG`` prints them."""
    if config.preview:
        _write_preview(config.preview, datagrams)
        return
    for datagram in datagrams:
        sys.stderr.write(
            f"popcon: {len(datagram)} bytes to {config.mode}://{config.host}:{config.port}\n"
            + datagram.decode("utf-8", "replace")
        )


def _write_preview(path, datagrams):
    # type: (str, list[bytes]) -> None
    """Append each datagram, length-prefixed, to the file; O_APPEND keeps the writes of
    several processes whole."""
    data = b"".join(b"%d\n%s" % (len(d), d) for d in datagrams)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, data)
    finally:
        os.close(descriptor)


# --------------------------------------------------------------------------- host names


def resolve(config):
    # type: (Config) -> None
    """The collector is named by a host name: use the address cached on disk by an earlier
    process, else look it up in a short-lived thread, never on the import path."""
    config.address = _cached_address(config.host, config.port)
    if config.address is not None:
        core.send_queued(config)
        return
    import _thread

    config.resolving = True
    _thread.start_new_thread(_resolve_in_background, (config,))


def _resolve_in_background(config):
    # type: (Config) -> None
    try:
        import _socket

        infos = _socket.getaddrinfo(config.host, config.port, 0, _socket.SOCK_DGRAM)
        found = infos[0][4] if infos else None
        config.address = (str(found[0]), int(found[1])) if found else None
    except Exception:
        config.address = None
    try:
        if config.address is not None:
            _store_address(config.host, config.address[0])
            core.send_queued(config)
        else:
            config.mode = None  # unresolvable: stay silent for the rest of the process
            del config.queue[:]
    except Exception:
        pass
    config.resolving = False


def _address_file(host):
    # type: (str) -> str | None
    cache = core.cache_directory()
    return os.path.join(cache, f"address-{core.path_key(host)}") if cache else None


def _cached_address(host, port):
    # type: (str, int) -> tuple[str, int] | None
    path = _address_file(host)
    if path is None:
        return None
    import time

    try:
        if time.time() - os.stat(path).st_mtime > _RESOLVE_TTL:
            return None
        with open(path, encoding="ascii") as stream:
            address = stream.read().strip()
    except (OSError, ValueError):
        return None
    return (address, port) if address and core.is_address(address) else None


def _store_address(host, address):
    # type: (str, str) -> None
    path = _address_file(host)
    if path is not None:
        write_atomically(path, address.encode("ascii"))


def await_resolution(config):
    # type: (Config) -> None
    """At exit, give a look-up under way a moment (bounded) to deliver what is queued."""
    import time

    deadline = time.monotonic() + 0.2
    while config.resolving and time.monotonic() < deadline:
        time.sleep(0.01)


# --------------------------------------------------------------------------- IPython


def hook_ipython():
    # type: () -> bool
    """After each notebook cell, look for upgrades; True once registered (or impossible)."""
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    if shell is None:
        return False
    try:
        shell.events.register("post_execute", _after_cell)
    except Exception:
        pass
    return True


def _after_cell():
    # type: () -> None
    try:
        core.after_cell()
    except Exception:
        pass
