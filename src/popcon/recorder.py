"""The recorder's core: classifies imports, keeps the module map, builds and sends datagrams.

``popcon/recorder_hook.py`` loads it (as ``_popcon_recorder``, a verbatim copy placed beside
the hook by ``popcon enable``) on the first import that the hook cannot settle by itself, so a
process that imports no third-party library never loads it. Standard library only; nothing it
sends names a user, a host, a path, a time or a user's own module.

The wire format is documented in ``docs/protocol.md``; the behaviour in ``docs/recording.md``.
"""

from __future__ import annotations

import os
import sys

_VERSION = "0.1.0"  # the popcon version this copy came from; checked by `popcon status`

_MAP_FORMAT = 3  # bump when the cached map's layout changes
_MAX_DATAGRAM = 1400
_MAX_LABELS = 8
_MAX_INVENTORY_PARTS = 64
_RESOLVE_TTL = 600.0  # seconds a resolved collector address stays cached on disk
_SCAN_LIMIT = 20000  # namespace entries looked at per user module by the upgrade scan
_DISTRIBUTION_SUFFIXES = (".dist-info", ".egg-info")
_NEVER_RECORDED = frozenset({"popcon"})  # distributions that are never reported


# Per-process state. ``_settled`` is the hook's set of top-level names whose imports need no
# further thought (standard library, user modules, distributions already direct); the hook
# hands it over in ``attach``.
_settled: set = set()
_map: _ModuleMap | None = None
_levels: dict = {}  # distribution index -> "direct" | "transitive"
_transitive: set = set()  # distribution indexes reported transitive and not upgraded yet
_user_tops: set = set()  # top-level names of user modules seen (never sent anywhere)
_pending: list = []  # record lines not sent yet
_seq = 0  # datagrams sent by this process
_config: _Config | None = None
_ipython_hooked = False
_last_scan = -1e9  # time.monotonic() of the last upgrade scan
_lock = None  # the hook's lock: one thread at a time in here
_OWN_MODULES = frozenset({"_popcon_hook", "_popcon_recorder", "popcon"})
_STDLIB: frozenset = frozenset()


def attach(settled: set, lock) -> None:
    """Called once by the hook, on the first import it cannot settle by itself."""
    global _settled, _lock, _STDLIB
    _settled = settled
    _lock = lock
    _STDLIB = _standard_library_names()


def _standard_library_names() -> frozenset:
    names = getattr(sys, "stdlib_module_names", None)
    if names is not None:
        return names | frozenset(sys.builtin_module_names)
    # Python 3.9: what lives in the standard library's directories.
    found = set(sys.builtin_module_names)
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


def at_exit() -> None:
    """Send what is still pending: upgrades found by a last look at user namespaces."""
    if _transitive:
        _scan_user_namespaces()
    _flush()
    _await_resolution()


def after_fork_in_child() -> None:
    """A forked child is a new process that already knows what its parent reported."""
    global _seq, _config
    _seq = 0
    del _pending[:]
    if _config is not None:
        _config = _config.for_child()


# --------------------------------------------------------------------------- classification


def on_import(fullname: str, top: str) -> None:
    """The slow path: the first import of a top-level name, or of a non-direct distribution.

    The hook calls it under its lock for every import it has not settled.
    """
    global _map
    if _map is None:
        _map = _load_map()
    dist = _map.lookup(fullname, top)
    if dist is None:
        if not _map.is_namespace(top):
            _settled.add(top)
            _user_tops.add(top)
        return
    level = _levels.get(dist)
    if level == "direct":
        if not _map.is_namespace(top):
            _settled.add(top)
        return
    importer = _importing_distribution(sys._getframe(1))
    if importer == dist:
        return  # a distribution importing its own modules says nothing new
    if level is None:
        _record(dist, importer)
    elif importer is None:
        _upgrade(dist)
    else:
        return
    if importer is None and not _map.is_namespace(top):
        _settled.add(top)
    _scan_user_namespaces(throttle=True)
    _flush()


def _importing_distribution(frame) -> int | None:
    """The distribution whose code is importing, or None when user code is.

    Walks out from the import machinery, looking through standard-library frames (importlib,
    runpy, pickle, ...) and the recorder's own. The first other frame decides: a module of an
    installed distribution makes the import transitive; anything else is user code. A script,
    ``-c`` and a notebook cell run as ``__main__``; ``python -m pkg`` runs as ``__main__`` with
    ``__spec__.name == "pkg"``, which makes ``pkg``'s distribution the importer.
    """
    while frame is not None:
        module_globals = frame.f_globals
        name = module_globals.get("__name__")
        if type(name) is str:
            if name == "__main__":
                spec = module_globals.get("__spec__")
                name = getattr(spec, "name", None) if spec is not None else None
                if type(name) is not str or name == "__main__":
                    return None
            top = name.partition(".")[0]
            if top not in _STDLIB and top not in _OWN_MODULES:
                return _map.lookup(name, top) if _map is not None else None
        frame = frame.f_back
    return None


def _record(dist: int, importer: int | None) -> None:
    name, version, origin = _map.dists[dist]
    if importer is None:
        _levels[dist] = "direct"
        _pending.append(f"lib {name} {version} direct {origin}")
    else:
        _levels[dist] = "transitive"
        _transitive.add(dist)
        _pending.append(f"lib {name} {version} transitive {origin} {_map.dists[importer][0]}")


def _upgrade(dist: int) -> None:
    name, version, origin = _map.dists[dist]
    _levels[dist] = "direct"
    _transitive.discard(dist)
    _pending.append(f"lib {name} {version} upgrade {origin}")


def _scan_user_namespaces(*, throttle: bool = False) -> None:
    """Upgrade transitive distributions that user code holds: modules, functions, classes.

    An ``import numpy`` of an already loaded numpy reaches no finder, so the recorder looks at
    what ``__main__`` and the user's own modules hold instead: after each notebook cell, at
    exit, and (at most once a second, as a notebook namespace can be large) on new imports.
    """
    global _ipython_hooked, _last_scan
    if not _ipython_hooked and "IPython" in sys.modules:
        _ipython_hooked = _hook_ipython()
    if not _transitive or _map is None:
        return
    import time

    now = time.monotonic()
    if throttle and now - _last_scan < 1.0:
        return
    _last_scan = now
    module_type = type(sys)
    module_dict = module_type.__dict__["__dict__"].__get__
    function_types = (type(_scan_user_namespaces), type(len))
    names = ["__main__", *_user_tops]
    for module_name in names:
        module = sys.modules.get(module_name)
        if module is None or not issubclass(type(module), module_type):
            continue
        values = list(module_dict(module).values())[:_SCAN_LIMIT]
        for value in values:
            kind = type(value)
            if issubclass(kind, module_type):
                held = module_dict(value).get("__name__")
            elif kind in function_types or issubclass(kind, type):
                held = getattr(value, "__module__", None)
            else:
                continue
            if type(held) is not str:
                continue
            dist = _map.lookup(held, held.partition(".")[0])
            if dist in _transitive:
                _upgrade(dist)
                if not _transitive:
                    return


def _hook_ipython() -> bool:
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


def _after_cell() -> None:
    try:
        with _lock:
            _scan_user_namespaces()
            _flush()
    except Exception:
        pass


# --------------------------------------------------------------------------- the module map


class _ModuleMap:
    """Top-level (and, under shared namespace packages, second-level) module names mapped to
    indexes in ``dists``, a list of ``(canonical name, version, origin)``.

    A value >= 0 is a distribution index; -1 marks a namespace shared by several distributions
    (look one level deeper); -2 - i does the same but says that a bare ``import top`` belongs
    to distribution i.
    """

    __slots__ = ("dists", "inventories", "names")

    def __init__(self, dists: list, names: dict, inventories: list) -> None:
        self.dists = dists
        self.names = names
        self.inventories = inventories  # [(inventory id, [(name, version)])] per env site

    def lookup(self, fullname: str, top: str) -> int | None:
        index = self.names.get(top)
        if index is None or index >= 0:
            return index
        second = fullname.split(".", 2)
        if len(second) > 1:
            deeper = self.names.get(top + "." + second[1])
            if deeper is not None:
                return deeper
        return -2 - index if index <= -2 else None

    def is_namespace(self, top: str) -> bool:
        index = self.names.get(top)
        return index is not None and index < 0


def _site_directories() -> list:
    """``(path, origin)`` of the directories to map, highest import priority first."""
    import site

    found = []
    seen = set()
    candidates = []
    if getattr(site, "ENABLE_USER_SITE", False):
        user_site = getattr(site, "USER_SITE", None)
        if user_site:
            candidates.append((user_site, "user"))
    try:
        env_sites = site.getsitepackages()
    except AttributeError:  # very old virtualenv
        env_sites = [p for p in sys.path if p.endswith("site-packages")]
    candidates.extend((p, "env") for p in env_sites)
    for path, origin in candidates:
        if not os.path.isdir(path):
            continue
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            found.append((path, origin))
    return found


def _load_map() -> _ModuleMap:
    try:
        return _merge_site_maps([(_site_map(p), origin) for p, origin in _site_directories()])
    except Exception:
        return _ModuleMap([], {}, [])


def _merge_site_maps(site_maps: list) -> _ModuleMap:
    """One map over all site directories; the directory first on ``sys.path`` wins."""
    dists: list = []
    names: dict = {}
    inventories = []
    for site_map, origin in reversed(site_maps):
        if site_map is None:
            continue
        base = len(dists)
        dists.extend((name, version, origin) for name, version in site_map["dists"])
        if origin == "env":
            inventories.append((site_map["inventory_id"], site_map["dists"]))
        for key, index in site_map["names"].items():
            if index >= 0:
                index += base
            elif index <= -2:
                index -= base
            elif names.get(key, 0) < 0:
                continue  # a bare namespace does not hide a lower directory's owner
            names[key] = index
    return _ModuleMap(dists, names, inventories)


def _cache_directory() -> str | None:
    environ = os.environ
    explicit = environ.get("POPCON_CACHE_DIR")
    if explicit:
        return explicit
    base = environ.get("XDG_CACHE_HOME") or (
        environ.get("HOME") and os.path.join(environ["HOME"], ".cache")
    )
    return os.path.join(base, "popcon") if base else None


def _site_cache_files(site_path: str) -> list:
    """Where a site directory's map may be stored: beside it (written by ``popcon enable``,
    shared by every user) first, then in the user's cache directory."""
    files = []
    beside = os.path.join(site_path, "popcon-cache")
    if os.path.isdir(beside):
        files.append(os.path.join(beside, "map.marshal"))
    cache = _cache_directory()
    if cache:
        files.append(os.path.join(cache, f"map-{_path_key(site_path)}.marshal"))
    return files


def _path_key(text: str) -> str:
    """A short stable key for a path or label (FNV-1a, 64 bits): file names, not security."""
    value = 0xCBF29CE484222325
    for byte in text.encode("utf-8", "surrogateescape"):
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{value:016x}"


def _site_map(site_path: str, *, write: bool = True) -> dict | None:
    """The cached map of one site directory, rebuilt when the directory changed."""
    import marshal

    try:
        mtime = os.stat(site_path).st_mtime_ns
    except OSError:
        return None
    files = _site_cache_files(site_path)
    for path in files:
        try:
            with open(path, "rb") as stream:
                cached = marshal.load(stream)
        except Exception:
            continue
        if (
            type(cached) is dict
            and cached.get("format") == _MAP_FORMAT
            and cached.get("site") == site_path
            and cached.get("mtime") == mtime
        ):
            return cached
    built = build_site_map(site_path)
    built["mtime"] = mtime
    if write:
        for path in files:
            if _write_atomically(path, marshal.dumps(built)):
                break
    return built


def _write_atomically(path: str, data: bytes) -> bool:
    directory = os.path.dirname(path)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        with open(temporary, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
        return True
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        return False


def canonical_name(name: str) -> str:
    """PEP 503 normalisation: lower case, each run of ``-``, ``_`` and ``.`` becomes ``-``."""
    out = []
    in_separator = False
    for char in name.strip().lower():
        if char in "-_.":
            if not in_separator:
                out.append("-")
            in_separator = True
        else:
            out.append(char)
            in_separator = False
    return "".join(out)


def _valid_name(name: str) -> bool:
    return (
        0 < len(name) <= 100
        and name[0] != "-"
        and name[-1] != "-"
        and all(c in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in name)
    )


def _valid_version(version: str) -> bool:
    return 0 < len(version) <= 64 and all(33 <= ord(c) < 127 for c in version)


def build_site_map(site_path: str) -> dict:
    """Scan one site directory: every ``*.dist-info`` and ``*.egg-info`` in it.

    Returns ``{"format", "site", "dists": [(name, version)], "names": {module: index},
    "inventory_id"}``. Only called when no fresh cached map exists.
    """
    dists: list = []
    claims: dict = {}  # top -> [(dist index, has __init__, second-level names, mtime)]
    try:
        entries = sorted(os.scandir(site_path), key=lambda e: e.name)
    except OSError:
        entries = []
    for entry in entries:
        if not entry.name.endswith(_DISTRIBUTION_SUFFIXES):
            continue
        try:
            described = _describe_distribution(site_path, entry)
        except Exception:
            continue
        if described is None:
            continue
        name, version, tops, mtime = described
        if name in _NEVER_RECORDED:
            continue
        index = len(dists)
        dists.append((name, version))
        for top, (has_init, second_level) in tops.items():
            claims.setdefault(top, []).append((index, has_init, second_level, mtime))
    names: dict = {}
    for top, claimants in claims.items():
        if len(claimants) == 1:
            names[top] = claimants[0][0]
            continue
        # Several distributions install this name: a shared namespace package, or one module
        # shipped twice. Map one level deeper; where they collide, the last installed wins.
        claimants.sort(key=lambda claim: claim[3])
        owners = [claim[0] for claim in claimants if claim[1]]
        names[top] = -2 - owners[-1] if owners else -1
        for index, _has_init, second_level, _mtime in claimants:
            for second in second_level:
                names[top + "." + second] = index
    inventory = sorted(set(dists))
    return {
        "format": _MAP_FORMAT,
        "site": site_path,
        "dists": dists,
        "names": names,
        "inventory_id": _path_key("\n".join(f"{n} {v}" for n, v in inventory))[:8],
    }


def _describe_distribution(site_path: str, entry) -> tuple | None:
    """``(canonical name, version, {top: (has_init, second-level names)}, mtime)``."""
    is_dir = entry.is_dir()
    if is_dir:
        metadata_file = os.path.join(
            entry.path, "METADATA" if entry.name.endswith(".dist-info") else "PKG-INFO"
        )
    else:
        metadata_file = entry.path  # a distutils-era single-file .egg-info
    name, version = _read_name_and_version(metadata_file)
    stem = entry.name.rsplit(".", 1)[0]
    if not name:
        name = stem.split("-")[0]
    if not version:
        parts = stem.split("-")
        version = parts[1] if len(parts) > 1 else "-"
    name = canonical_name(name)
    if not _valid_name(name):
        return None
    if not _valid_version(version):
        version = "-"
    tops = _distribution_tops(site_path, entry.path, name) if is_dir else {}
    if not tops:
        tops = _guess_tops(site_path, name)
    return name, version, tops, entry.stat().st_mtime_ns


def _read_name_and_version(path: str) -> tuple:
    name = version = ""
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            for line in stream:
                if not line.strip():
                    break
                if line.startswith("Name:"):
                    name = line[5:].strip()
                elif line.startswith("Version:"):
                    version = line[8:].strip()
                if name and version:
                    break
    except OSError:
        pass
    return name, version


_MODULE_SUFFIXES = (".py", ".pyc", ".so", ".pyd")


def _add_path(tops: dict, relative: str) -> None:
    """Note what one installed file (a path relative to the site directory) provides."""
    parts = relative.replace("\\", "/").split("/")
    first = parts[0]
    if len(parts) == 1:
        if first.endswith(_MODULE_SUFFIXES):
            top = first.split(".", 1)[0]
            if top.isidentifier():
                tops.setdefault(top, (True, set()))
        return
    if not first.isidentifier() or first == "__pycache__":
        return
    has_init, second_level = tops.get(first, (False, set()))
    second = parts[1]
    if second.startswith("__init__."):
        has_init = True
    elif second != "__pycache__":
        if len(parts) == 2:
            if not second.endswith(_MODULE_SUFFIXES):
                second = ""
            second = second.split(".", 1)[0]
        if second.isidentifier():
            second_level.add(second)
    tops[first] = (has_init, second_level)


def _distribution_tops(site_path: str, info_path: str, name: str) -> dict:
    tops: dict = {}
    pth_files = []
    record = os.path.join(info_path, "RECORD")
    installed_files = os.path.join(info_path, "installed-files.txt")
    if os.path.exists(record):
        for relative in _record_paths(record):
            if relative.endswith(".pth") and "/" not in relative:
                pth_files.append(os.path.join(site_path, relative))
            elif not relative.startswith(("/", "..")):
                _add_path(tops, relative)
    elif os.path.exists(installed_files):
        info_name = os.path.basename(info_path)
        for relative in _lines(installed_files):
            normal = os.path.normpath(os.path.join(info_name, relative)).replace("\\", "/")
            if not normal.startswith(("/", "..")):
                _add_path(tops, normal)
    for pth in pth_files:
        _add_editable(tops, site_path, pth)
    if not tops:
        for top in _lines(os.path.join(info_path, "top_level.txt")):
            top = top.strip().replace("/", ".").split(".")[0]
            if top.isidentifier():
                tops.setdefault(top, (True, set()))
    return tops


def _record_paths(record: str) -> list:
    paths = []
    for line in _lines(record):
        if line.startswith('"'):  # a path with a comma in it, CSV-quoted: rare, so lazy
            import csv

            paths.extend(row[0] for row in csv.reader([line]) if row)
        else:
            paths.append(line.split(",", 1)[0])
    return paths


def _lines(path: str) -> list:
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            return [line.rstrip("\r\n") for line in stream if line.strip()]
    except OSError:
        return []


def _add_editable(tops: dict, site_path: str, pth: str) -> None:
    """An editable install: a ``.pth`` that adds a source directory to ``sys.path``, or one
    that installs setuptools' finder, whose ``MAPPING`` names the packages."""
    for line in _lines(pth):
        if line.startswith(("import ", "import\t")):
            for word in line.replace(";", " ").split():
                if word.startswith("__editable___") and word.endswith("_finder"):
                    _add_finder_mapping(tops, os.path.join(site_path, word + ".py"))
                    break
        elif not line.startswith("#"):
            directory = line if os.path.isabs(line) else os.path.join(site_path, line)
            _add_directory_modules(tops, directory)


def _add_finder_mapping(tops: dict, finder_file: str) -> None:
    try:
        with open(finder_file, encoding="utf-8") as stream:
            source = stream.read()
    except OSError:
        return
    start = source.find("MAPPING")
    start = source.find("{", start) if start >= 0 else -1
    end = source.find("}", start)
    if start < 0 or end < 0:
        return
    import ast

    try:
        mapping = ast.literal_eval(source[start : end + 1])
    except (ValueError, SyntaxError):
        return
    for key in mapping:
        top = str(key).split(".")[0]
        if top.isidentifier():
            tops.setdefault(top, (True, set()))


def _add_directory_modules(tops: dict, directory: str) -> None:
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        base = entry.name
        if base.startswith(("test", "setup", "conftest", ".", "_")):
            continue
        if entry.is_dir():
            if base.isidentifier() and os.path.exists(os.path.join(entry.path, "__init__.py")):
                tops.setdefault(base, (True, set()))
        elif base.endswith(".py") and base[:-3].isidentifier():
            tops.setdefault(base[:-3], (True, set()))


def _guess_tops(site_path: str, name: str) -> dict:
    """No file list at all: trust a module named like the distribution, if there is one."""
    guess = name.replace("-", "_")
    for candidate in (guess, guess + ".py"):
        if os.path.exists(os.path.join(site_path, candidate)):
            return {guess: (True, set())}
    return {}


# --------------------------------------------------------------------------- configuration


class _Config:
    """Settings from ``POPCON_*`` variables, read at the first send (see docs/recording.md)."""

    __slots__ = (
        "address",
        "debug",
        "header",
        "host",
        "inventory_interval",
        "key",
        "mode",
        "port",
        "prefix",
        "preview",
        "queue",
        "resolving",
        "socket",
    )

    def __init__(self, environ) -> None:
        collector = environ.get("POPCON_COLLECTOR") or "udp://127.0.0.1:8137"
        self.mode, self.host, self.port = _parse_collector(collector)
        self.header = _header(environ)
        self.key = environ.get("POPCON_KEY", "").encode("utf-8") or None
        self.prefix = _statsd_prefix(environ.get("POPCON_STATSD_PREFIX", ""))
        self.debug = environ.get("POPCON_DEBUG", "") not in ("", "0")
        self.preview = environ.get("POPCON_PREVIEW") or None
        try:
            self.inventory_interval = float(environ.get("POPCON_INVENTORY_INTERVAL", "3600"))
        except ValueError:
            self.inventory_interval = 3600.0
        self.address = None
        self.socket = None
        self.resolving = False
        self.queue: list = []

    def for_child(self) -> _Config:
        child = _Config.__new__(_Config)
        for slot in _Config.__slots__:
            setattr(child, slot, getattr(self, slot))
        child.socket = None
        child.resolving = False
        child.queue = []
        return child


def _parse_collector(url: str) -> tuple:
    """``udp://host:port`` or ``statsd://host:port`` -> (mode, host, port); mode None if bad."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in ("udp", "statsd"):
        return None, "", 0
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]")
        port = port[1:] if port.startswith(":") else ""
    else:
        host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None, "", 0
    return scheme, host, int(port)


_LABEL_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
_LABEL_VALUE_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:/@+-"
)


def parse_labels(text: str) -> tuple:
    """``"k=v,k=v"`` -> (valid [(key, value)], rejected [entry]); at most 8 are kept."""
    valid: list = []
    rejected: list = []
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
            and 0 < len(key) <= 32
            and key[0] not in "0123456789"
            and set(key) <= _LABEL_KEY_CHARS
            and 0 < len(value) <= 64
            and set(value) <= _LABEL_VALUE_CHARS
            and key not in seen
            and len(valid) < _MAX_LABELS
        ):
            seen.add(key)
            valid.append((key, value))
        else:
            rejected.append(item)
    return valid, rejected


def environment_label(environ) -> str:
    label = (
        environ.get("POPCON_ENV")
        or environ.get("JUPYTER_IMAGE_SPEC")
        or environ.get("JUPYTER_IMAGE")
        or ""
    )
    if not label:
        label = sys.prefix
        home = environ.get("HOME")
        if home and home != "/" and (label == home or label.startswith(home.rstrip("/") + "/")):
            label = "~" + label[len(home.rstrip("/")) :]
    label = "".join(c for c in label if c.isprintable())[:200].strip()
    return label or "unknown"


def _header(environ) -> str:
    lines = [
        "env " + environment_label(environ),
        f"py {sys.version_info[0]}.{sys.version_info[1]}",
    ]
    labels, _rejected = parse_labels(environ.get("POPCON_LABELS", ""))
    lines.extend(f"label {key}={value}" for key, value in labels)
    return "\n".join(lines) + "\n"


def _statsd_prefix(text: str) -> str:
    prefix = text.strip().strip(".")
    if prefix and all(c.isalnum() or c in "_.-" for c in prefix) and len(prefix) <= 100:
        return prefix
    return "python_popcon"


# --------------------------------------------------------------------------- sending


def _flush() -> None:
    """Send the pending records now, in as few datagrams as fit."""
    global _config
    if not _pending:
        return
    if _config is None:
        _config = _Config(os.environ)
    config = _config
    records = _pending[:]
    del _pending[:]
    first = _seq == 0
    if config.mode == "statsd":
        _emit(config, _statsd_datagrams(config, records, first))
    elif config.mode == "udp":
        _emit(config, _use_datagrams(config, records))
        if first and not config.preview:
            _send_inventory_if_due(config)


def _use_datagrams(config: _Config, records: list) -> list:
    global _seq
    datagrams = []
    for chunk in _chunks(records, _MAX_DATAGRAM - len(config.header.encode("utf-8")) - 64):
        head = f"popcon/1 use {_seq}\n"
        _seq += 1
        datagrams.append(_sign(config, (head + config.header + chunk).encode("utf-8")))
    return datagrams


def _statsd_datagrams(config: _Config, records: list, first: bool) -> list:
    global _seq
    lines = []
    for record in records:
        fields = record.split(" ")
        if fields[3] != "upgrade":
            lines.append(f"{config.prefix}.library_used.{fields[1]}:1|c")
    if first:
        lines.append(f"{config.prefix}.reports:1|c")
    _seq += 1
    return [chunk.encode("utf-8") for chunk in _chunks(lines, _MAX_DATAGRAM)]


def _chunks(lines: list, budget: int) -> list:
    """Join lines (each ending in a newline) into texts of at most ``budget`` bytes."""
    chunks = []
    current: list = []
    size = 0
    for line in lines:
        length = len(line.encode("utf-8")) + 1
        if current and size + length > budget:
            chunks.append("".join(current))
            current = []
            size = 0
        current.append(line + "\n")
        size += length
    if current:
        chunks.append("".join(current))
    return chunks


def _sign(config: _Config, payload: bytes) -> bytes:
    if config.key is None:
        return payload
    import hashlib
    import hmac

    digest = hmac.new(config.key, payload, hashlib.sha256).hexdigest()[:32]
    return payload + b"sig " + digest.encode("ascii") + b"\n"


def _send_inventory_if_due(config: _Config) -> None:
    """At most every ``POPCON_INVENTORY_INTERVAL`` seconds per environment and user."""
    if config.inventory_interval <= 0 or _map is None or not _map.inventories:
        return
    entries: list = []
    ids = []
    for inventory_id, dists in _map.inventories:
        ids.append(inventory_id)
        entries.extend(dists)
    inventory_id = ids[0] if len(ids) == 1 else _path_key(" ".join(ids))[:8]
    stamp = _inventory_stamp(config, inventory_id)
    if stamp is None:
        return
    import time

    try:
        if time.time() - os.stat(stamp).st_mtime < config.inventory_interval:
            return
    except OSError:
        pass
    if not _write_atomically(stamp, b""):
        return
    lines = [f"dist {name} {version}" for name, version in sorted(set(entries))]
    base = f"popcon/1 inv {inventory_id} %d %d\n"
    header_size = len(config.header.encode("utf-8"))
    chunks = _chunks(lines, _MAX_DATAGRAM - header_size - 64 - len(base))
    if len(chunks) > _MAX_INVENTORY_PARTS:
        return  # cannot be said in one inventory: documented limit
    total = len(chunks)
    _emit(
        config,
        [
            _sign(config, ((base % (part, total)) + config.header + chunk).encode("utf-8"))
            for part, chunk in enumerate(chunks, 1)
        ],
    )


def _inventory_stamp(config: _Config, inventory_id: str) -> str | None:
    key = _path_key(config.header + config.host + str(config.port))[:12]
    name = f"inventory-{inventory_id}-{key}"
    for site_path, origin in _site_directories():
        beside = os.path.join(site_path, "popcon-cache")
        if origin == "env" and os.access(beside, os.W_OK):
            return os.path.join(beside, name)
    cache = _cache_directory()
    return os.path.join(cache, name) if cache else None


def _emit(config: _Config, datagrams: list) -> None:
    if config.preview:
        _write_preview(config.preview, datagrams)
        return
    if config.debug:
        for datagram in datagrams:
            sys.stderr.write(
                f"popcon: {len(datagram)} bytes to {config.mode}://{config.host}:{config.port}\n"
                + datagram.decode("utf-8", "replace")
            )
    if config.address is None:
        config.queue.extend(datagrams)
        del config.queue[:-256]
        _resolve(config)
        return
    _send(config, datagrams)


def _send(config: _Config, datagrams: list) -> None:
    import _socket

    if config.socket is None:
        family = _socket.AF_INET6 if ":" in config.address[0] else _socket.AF_INET
        config.socket = _socket.socket(family, _socket.SOCK_DGRAM)
        config.socket.setblocking(False)
    for datagram in datagrams:
        try:
            config.socket.sendto(datagram, config.address)
        except OSError:
            pass


def _write_preview(path: str, datagrams: list) -> None:
    """Preview mode: append each datagram, length-prefixed, to the file; O_APPEND keeps the
    writes of several processes whole."""
    data = b"".join(b"%d\n%s" % (len(d), d) for d in datagrams)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, data)
    finally:
        os.close(descriptor)


def _is_address(host: str) -> bool:
    if ":" in host:
        return True  # an IPv6 literal (the brackets were removed)
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


def _resolve(config: _Config) -> None:
    """Find the collector's address without a DNS look-up on the import path."""
    if config.mode is None or config.resolving:
        return
    if _is_address(config.host):
        config.address = (config.host, config.port)
    else:
        config.address = _cached_address(config.host, config.port)
    if config.address is not None:
        queued = config.queue[:]
        del config.queue[:]
        _send(config, queued)
        return
    import _thread

    config.resolving = True
    _thread.start_new_thread(_resolve_in_background, (config,))


def _resolve_in_background(config: _Config) -> None:
    try:
        import _socket

        infos = _socket.getaddrinfo(config.host, config.port, 0, _socket.SOCK_DGRAM)
        config.address = infos[0][4][:2] if infos else None
    except Exception:
        config.address = None
    try:
        if config.address is not None:
            _store_address(config.host, config.address[0])
            queued = config.queue[:]
            del config.queue[:]
            _send(config, queued)
        else:
            config.mode = None  # unresolvable: stay silent for the rest of the process
            del config.queue[:]
    except Exception:
        pass
    config.resolving = False


def _address_file(host: str) -> str | None:
    cache = _cache_directory()
    return os.path.join(cache, f"address-{_path_key(host)}") if cache else None


def _cached_address(host: str, port: int) -> tuple | None:
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
    return (address, port) if address and _is_address(address) else None


def _store_address(host: str, address: str) -> None:
    path = _address_file(host)
    if path is not None:
        _write_atomically(path, address.encode("ascii"))


def _await_resolution() -> None:
    """At exit, give a look-up under way a moment (bounded) to deliver what is queued."""
    if _config is None or not _config.resolving:
        return
    import time

    deadline = time.monotonic() + 0.2
    while _config.resolving and time.monotonic() < deadline:
        time.sleep(0.01)


# --------------------------------------------------------------------------- introspection


def map_status(site_path: str) -> dict:
    """For ``popcon status``: is this site directory's cached map fresh, and where is it."""
    import marshal

    try:
        mtime = os.stat(site_path).st_mtime_ns
    except OSError:
        return {"site": site_path, "state": "missing site directory", "cache": None}
    for path in _site_cache_files(site_path):
        try:
            with open(path, "rb") as stream:
                cached = marshal.load(stream)
        except Exception:
            continue
        if type(cached) is dict and cached.get("format") == _MAP_FORMAT:
            state = "fresh" if cached.get("mtime") == mtime else "stale"
            return {
                "site": site_path,
                "state": state,
                "cache": path,
                "distributions": len(cached.get("dists", ())),
            }
    return {"site": site_path, "state": "not built", "cache": None}


def build_caches(site_paths: list) -> list:
    """For ``popcon enable``: build and store the maps of these site directories now."""
    for site_path in site_paths:
        _site_map(site_path)
    return [map_status(p) for p in site_paths]
