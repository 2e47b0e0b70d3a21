"""The recorder's core: classifies imports, keeps the module map, builds and sends datagrams.

The start-up hook (``hook.py``) loads it (as ``_popcon_recorder``, a verbatim copy placed beside
the hook by ``popcon enable``) on the first import that the hook cannot settle by itself, so a
process that imports no third-party library never loads it. Standard library only; nothing it
sends names a user, a host, a path or a user's own module (signed datagrams carry the
minute they were sent, for the collector's replay check).

What it offers the others: to the hook, ``attach(hook)`` and ``report(fullname, top, spec)``; to
``map`` and ``rare``, the protocol's terms (``PROTOCOL_VERSION``, ``MAX_DATAGRAM``, ``LEVELS``,
``NO_PERSON``, ...), ``chunks``, ``signed``, ``emit``, ``send_queued``, ``path_key``,
``is_address``, ``cache_directory``, ``site_cache_files``, ``site_map``, ``sibling``,
``after_cell``, ``PROG`` and the settings (``config_of``) they are given; to ``popcon status`` and
``preview``, ``environment_label``, ``ENV_LABEL_VARIABLES`` and ``secret_path``.

The wire format is documented in ``docs/protocol.md``; the behaviour in ``docs/recording.md``.
Notes below are comments rather than docstrings, and types are comments too: every process
that imports a library loads this module, and docstrings or evaluated annotations would make
that load longer (rarely needed parts live in ``rare.py`` for the same reason). It is longer
than the recorder's other modules because splitting it would make every such process load one
more file.
"""

import _thread
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # never true when it runs: the type comments' names (see _types.pyi)
    from ._types import *  # noqa: F403


_VERSION = "0.1.0"  # the popcon version this copy came from; checked by `popcon status`

# The protocol's terms (docs/protocol.md), for the recorder's side of the copy boundary.
PROTOCOL_VERSION = "popcon/2"
MAX_DATAGRAM = 1400  # bytes, the signature line included
DEFAULT_COLLECTOR = "udp://127.0.0.1:8137"
LEVELS = ("direct", "transitive", "upgrade", "program", "claimed")
ORIGINS = ("env", "user")
NO_PERSON = "-"  # the person field of a process that has no person (no usable secret)
SKETCH_PRECISION = 14  # the high bits of a person's hash that pick its register
MAX_ENV_LABEL = 200  # characters of the environment label
HEAD_ROOM = 64  # bytes of a datagram kept for its first line and its signature line
YOUNG_SENDS = 7  # inventories sent at shorter waits before POPCON_INVENTORY_INTERVAL

_DIRECT, _TRANSITIVE, _UPGRADE, _PROGRAM, _CLAIMED = LEVELS
FIRST_LEVELS = (_DIRECT, _TRANSITIVE, _PROGRAM)  # of a library's first record in a process
PROG = "prog"  # the level field of a pending record that is the process's program
_ENV, _USER = ORIGINS

MAP_FORMAT = 3  # bump when the cached map's layout changes
CONTRIBUTIONS_FORMAT = b"popcon-contributions-1"  # the first word of ``contributions``
_SCAN_LIMIT = 20000  # namespace entries looked at per user module by the upgrade scan
_SCAN_THROTTLE_SIZE = 2000  # above this many entries, scans on new imports wait a second
# The module map and the settings are records of plain attributes, of this type: a class of the
# core's own would cost each recording process about 40,000 instructions to create (a new type
# fills in every special method's slot), as much as loading 1.5 KB more of the core's code.
Namespace = type(sys.implementation)  # type: Callable[..., Any]  # types.SimpleNamespace


# Per-process state. ``_settled`` is the hook's set of top-level names whose finds need no
# further report (user modules, distributions already recorded); ``attach`` shares it.
_hook = None  # type: ModuleType | None  # the start-up hook module
_settled = set()  # type: set[str]
_map = None  # type: ModuleMap | None  # loaded on the first import that needs it
_levels = {}  # type: dict[str, str]  # distribution name -> one of FIRST_LEVELS, or direct
_transitive = set()  # type: set[str]  # reported transitive and not upgraded yet
_program_only = set()  # type: set[str]  # reported program and not claimed yet
_program = None  # type: Dist | None  # the process's program, once known
_user_tops = set()  # type: set[str]  # top-level names of user modules (never sent anywhere)
_frame_kinds = {}  # type: dict[str, Dist]  # module name -> what its frames say (_frame_kind)
_console_script = None  # type: tuple[str, bool] | None  # __main__'s file: in a scripts dir?
_pending = []  # type: list[Record]  # records not sent yet
_people = None  # type: dict[str, str] | None  # distribution name -> this user's person field
_kept = b""  # the contributions kept beside the secret, when they are the current secret's
_kept_head = None  # type: bytes | None  # their first line for the current secret
_key = None  # type: bytes | None  # the secret once read; b"" when there is none to use
_people_added = False  # contributions computed that the cache beside the secret lacks
_seq = 0  # datagrams sent by this process
_config = None  # type: Config | None  # read at the first send
_ipython_hooked = False
_last_scan = -1e9  # time.monotonic() of the last upgrade scan
_last_scan_size = 0  # how many namespace entries it looked at
_lock = _thread.RLock()  # one thread at a time in here
_attached = False
_OWN_MODULES = frozenset(
    {"_popcon_hook", "_popcon_recorder", "_popcon_recorder_map", "_popcon_recorder_rare", "popcon"}
)
_STDLIB = frozenset()  # type: frozenset[str]


def attach(hook):
    # type: (ModuleType) -> None
    # Called by the hook on its first report: share its state, and only now take on exit and
    # fork duties (a process that never gets here has nothing to send).
    global _hook, _settled, _STDLIB, _attached, _OWN_MODULES
    import atexit

    with _lock:
        if _attached:
            return
        _attached = True
        _hook = hook
        _settled = hook.settled
        _OWN_MODULES = _OWN_MODULES | {hook.__name__}  # "sitecustomize" where it is that
        _STDLIB = _standard_library_names()
        atexit.register(_at_exit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)


def report(fullname, top, spec):
    # type: (str, str, ModuleSpec | None) -> None
    # The hook's hand-over: ``spec`` is what the path finder found, None when no sys.path
    # directory had the module (a later meta path finder may). Bounded wait: a thread in here
    # could wait for a module lock held by the thread waiting here.
    if not _lock.acquire(True, 0.5):
        return
    try:
        if on_import(fullname, top) and spec is not None:
            _watch_namespace(spec.submodule_search_locations or ())
    finally:
        _lock.release()


def _watch_namespace(portions):
    # type: (Iterable[str]) -> None
    # A namespace package shared by several distributions: the hook is to watch its
    # directories too, to report the modules found there (the second level names the
    # distribution). A finder the path finder made for one already is dropped from its cache,
    # for the hook's path hook to make it again, watched.
    if _hook is None:
        return
    watched = _hook.watched
    cache = sys.path_importer_cache
    for portion in portions:
        if portion not in watched:
            watched.add(portion)
            cache.pop(portion, None)


def _at_exit():
    # type: () -> None
    if _lock.acquire(True, 0.5):
        try:
            at_exit()
        except Exception:
            pass
        finally:
            _lock.release()


def _after_fork_in_child():
    # type: () -> None
    global _lock
    _lock = _thread.RLock()  # another thread may have held it at the fork
    try:
        after_fork_in_child()
    except Exception:
        pass


def _standard_library_names():
    # type: () -> frozenset[str]
    # sys.stdlib_module_names lists the built-in modules too (but for a test module or two)
    names = getattr(sys, "stdlib_module_names", None)  # type: frozenset[str] | None
    if names is None:
        names = sibling("rare").standard_library_names_before_3_10()
    return names


def at_exit():
    # type: () -> None
    # Send what is still pending (upgrades found by a last look at user namespaces), then
    # close the socket, so that no ResourceWarning reaches the user at shutdown.
    if _transitive or _program_only:
        _scan_user_namespaces()
    _flush()
    config = _config
    if config is not None:
        if config.resolving:
            sibling("rare").await_resolution(config)
        config.mode = None  # later imports (other exit handlers) send nothing
        if config.socket is not None:
            config.socket.close()
            config.socket = None


def after_fork_in_child():
    # type: () -> None
    # A forked child is a new process that already knows what its parent reported.
    global _seq, _config
    _seq = 0
    del _pending[:]
    if _config is not None:
        # the socket is shared with the parent: UDP does not mind
        _config = Namespace(**{**vars(_config), "resolving": False, "queue": []})


def after_cell():
    # type: () -> None
    # For rare's IPython hook, after each notebook cell: upgrades of what the cell used.
    with _lock:
        _scan_user_namespaces()
        _flush()


# --------------------------------------------------------------------------- classification


def on_import(fullname, top):
    # type: (str, str) -> bool
    # A module found under a top-level name the hook has not settled; True when it is a
    # namespace package shared by several distributions (``report`` then has the hook watch
    # its directories, to report the modules found one level deeper).
    #
    # Called under the lock. Once a name is classified it is settled; a distribution that
    # people's code imports later, once loaded, is found by ``_scan_user_namespaces``.
    global _map
    if top in _STDLIB:  # Python 3.9 only: the hook has no list of the standard library
        _settled.add(top)
        return False
    if _map is None:
        _map = _load_map()
    dist = dist_of(_map, fullname, top)
    if dist is None and is_stale(_map):
        _map = _load_map()  # pip changed the environment while this process ran
        _frame_kinds.clear()
        dist = dist_of(_map, fullname, top)
    namespace = is_namespace(_map, top)
    if dist is None:
        if not namespace:
            _settled.add(top)
            _user_tops.add(top)
        return namespace and fullname == top
    if dist[0] not in _levels:
        causes = _causes(sys._getframe(1))
        if causes is None:
            return False  # a .pth file or sitecustomize importing: nobody's use (yet)
        importer, people = causes
        if importer is not None and importer[0] == dist[0]:
            return False  # its own code, loaded before the recorder started: not a use yet
        if importer is None and not people and _program is None:
            _set_program(dist)  # what the program's entry point imports first
        _record(dist, importer, people)
        _scan_user_namespaces(throttle=True)
        _flush()
    if not namespace:
        _settled.add(top)
    return namespace and fullname == top


# What a frame says of an import (``_frame_kind``), besides the distribution whose code runs.
_LOOKED_THROUGH = ("(looked through)", "-", _ENV)  # type: Dist
_PEOPLE = ("(people's code)", "-", _ENV)  # type: Dist
_ENTRY = ("(the program's entry point)", "-", _ENV)  # type: Dist


def _causes(frame):
    # type: (FrameType | None) -> tuple[Dist | None, bool] | None
    # Who imports: ``(importer, people)``, the distribution whose code imports (None for people's
    # code or the program's entry point) and whether people's code is running (else the
    # program's machinery is); None when the import runs under ``site`` (a ``.pth`` file,
    # ``sitecustomize``).
    #
    # Walks out from the import machinery, looking through standard-library frames (importlib,
    # runpy, pickle, ...) and the recorder's own. The first other frame decides the importer;
    # people's code is running when that frame or any further out is people's, the program's
    # when the program's entry point is further out. The walk goes on to the outermost frame,
    # to see whether ``site`` is running. Neither people's frame nor the entry point is the
    # interpreter or the standard library acting on their own (``python -m timeit``, a thread):
    # the program's, in a process that has one; else people's, except while ``python -m``
    # looks for its module (``sys.argv[0]`` is ``-m`` until runpy runs it): that is the
    # program's entry point being found.
    decided = False
    people = False
    entry = False
    importer = None
    while frame is not None:
        module_globals = frame.f_globals
        name = module_globals.get("__name__")
        if name == "site":
            return None
        if not people and type(name) is str:
            kind = _frame_kinds.get(name) or _frame_kind(module_globals, name)
            if kind is not _LOOKED_THROUGH:
                if kind is _PEOPLE:
                    people = True
                elif kind is _ENTRY:
                    entry = True
                elif not decided:
                    importer = kind
                decided = True
        frame = frame.f_back
    if not (people or entry) and _program is None:
        people = getattr(sys, "argv", [""])[:1] != ["-m"]
    return importer, people


def _frame_kind(module_globals, name):
    # type: (dict[str, object], str) -> Dist
    # A frame of module ``name``: looked through (the standard library, the recorder), people's
    # code (a module of no installed distribution, not the standard library; ``__main__`` as
    # ``_main_kind`` says), the program's entry point, or the distribution whose code runs.
    # Kept per module name, but for ``__main__``.
    if name == "__main__":
        return _main_kind(module_globals)
    top = name.partition(".")[0]
    if top in _STDLIB or top in _OWN_MODULES:
        kind = _LOOKED_THROUGH
    else:
        kind = (dist_of(_map, name, top) if _map is not None else None) or _PEOPLE
        if kind is _PEOPLE:
            _user_tops.add(top)  # a module of the user's that no finder reported (pytest's)
    _frame_kinds[name] = kind
    return kind


def _main_kind(module_globals):
    # type: (dict[str, object]) -> Dist
    # ``__main__`` is the program's entry point when it is ``python -m`` of an installed
    # distribution's module (its spec names the module; that distribution is the program) or a
    # console script (a file in a scripts directory); ``python -m`` of a standard-library
    # module is looked through; anything else is people's code: a script of the user's,
    # ``-c``, the interactive prompt, IPython's and notebooks' cells, ``python -m`` of a user's
    # module.
    spec = module_globals.get("__spec__")
    if spec is not None:
        name = getattr(spec, "name", None)
        if type(name) is not str or name == "__main__":
            return _PEOPLE  # a directory or a zip file run as the main program
        top = name.partition(".")[0]
        if top in _STDLIB:
            return _LOOKED_THROUGH
        dist = dist_of(_map, name, top) if _map is not None else None
        if dist is None:
            return _PEOPLE
        if _program is None:
            _set_program(dist)
        return _ENTRY
    path = module_globals.get("__file__")
    if type(path) is str and _is_console_script(path):
        return _ENTRY
    return _PEOPLE


def _is_console_script(path):
    # type: (str) -> bool
    # Is ``__main__``'s file in a scripts directory, where installers put the console scripts
    # of distributions: that of ``sys.executable``, or the user scheme's? Kept for the one file.
    global _console_script
    if _console_script is not None and _console_script[0] == path:
        return _console_script[1]
    directories = [os.path.dirname(sys.executable)] if sys.executable else []
    user_base = getattr(sys.modules.get("site"), "USER_BASE", None)
    if type(user_base) is str:
        if os.name == "nt":
            version = "Python%d%d" % sys.version_info[:2]
            directories.append(os.path.join(user_base, version, "Scripts"))
        else:
            directories.append(os.path.join(user_base, "bin"))
    found = os.path.dirname(path) in directories
    if not found and os.path.islink(path):  # a link to a script, from a directory on PATH
        real = os.path.realpath
        found = os.path.dirname(real(path)) in [real(d) for d in directories]
    _console_script = (path, found)
    return found


def _set_program(dist):
    # type: (Dist) -> None
    global _program
    _program = dist
    name, version, origin = dist
    _pending.append((name, version, PROG, origin, ""))


def _record(dist, importer, people):
    # type: (Dist, Dist | None, bool) -> None
    name, version, origin = dist
    if not people:
        level = _PROGRAM
        _program_only.add(name)
    elif importer is None:
        level = _DIRECT
    else:
        level = _TRANSITIVE
        _transitive.add(name)
    _levels[name] = level
    _pending.append((name, version, level, origin, importer[0] if importer is not None else ""))


def _now_direct(dist, level):
    # type: (Dist, str) -> None
    # An ``upgrade`` of a transitive distribution, or a ``claimed`` one of the program's.
    name, version, origin = dist
    _levels[name] = _DIRECT
    _transitive.discard(name)
    _program_only.discard(name)
    _pending.append((name, version, level, origin, ""))


def _scan_user_namespaces(throttle=False):
    # type: (bool) -> None
    # Upgrade transitive distributions, and claim the program's, that people's code holds:
    # modules, functions, classes. An ``import numpy`` of an already loaded numpy reaches no
    # finder, so the recorder looks at what people's ``__main__`` (a script, ``-c``, the cells)
    # and the user's own modules hold instead: after each notebook cell, at exit, and on each
    # new distribution (at most once a second where the namespaces hold more than
    # ``_SCAN_THROTTLE_SIZE`` entries, as a notebook's can).
    global _ipython_hooked, _last_scan, _last_scan_size
    if not _ipython_hooked and "IPython" in sys.modules:
        _ipython_hooked = sibling("rare").hook_ipython()
    if not (_transitive or _program_only) or _map is None:
        return
    import time

    now = time.monotonic()
    if throttle and _last_scan_size > _SCAN_THROTTLE_SIZE and now - _last_scan < 1.0:
        return
    _last_scan = now
    _last_scan_size = 0
    module_type = type(sys)
    module_dict = vars(module_type)["__dict__"].__get__
    function_types = (type(_scan_user_namespaces), type(len))
    names = ["__main__", *_user_tops]
    for module_name in names:
        module = sys.modules.get(module_name)
        if module is None or not issubclass(type(module), module_type):
            continue
        namespace = module_dict(module)
        if module_name == "__main__" and _main_kind(namespace) is not _PEOPLE:
            continue  # the program's entry point: what it holds is the program's
        values = list(namespace.values())[:_SCAN_LIMIT]
        _last_scan_size += len(values)
        for value in values:
            kind = type(value)
            if issubclass(kind, module_type):
                held = module_dict(value).get("__name__")
            elif kind in function_types or issubclass(kind, type):
                held = getattr(value, "__module__", None)
            elif kind.__dictoffset__:
                # Function-like objects (numpy's array-function dispatchers) keep __module__
                # in their own __dict__; read it without running any __getattr__.
                try:
                    held = object.__getattribute__(value, "__dict__").get("__module__")
                except Exception:
                    continue
            else:
                continue
            if type(held) is not str:
                continue
            dist = dist_of(_map, held, held.partition(".")[0])
            if dist is None:
                continue
            if dist[0] not in _levels:
                _record(dist, None, True)  # loaded at start-up (by a .pth), used by people
            elif dist[0] in _transitive:
                _now_direct(dist, _UPGRADE)
            elif dist[0] in _program_only:
                _now_direct(dist, _CLAIMED)
            else:
                continue
            if not (_transitive or _program_only):
                return


# --------------------------------------------------------------------------- the module map


def module_map(dists, names, inventories, stamps):
    # type: (list[Dist], dict[str, int], list[Inventory], list[tuple[str, int]]) -> ModuleMap
    # Top-level (and, under shared namespace packages, second-level) module names mapped to
    # indexes in ``dists``, a list of ``(canonical name, version, origin)``; the inventories
    # per env site; ``stamps``, ``[(site directory, its st_mtime_ns when mapped)]``.
    #
    # A value >= 0 is a distribution index; -1 marks a namespace shared by several distributions
    # (look one level deeper); -2 - i does the same but says that a bare ``import top`` belongs
    # to distribution i.
    made = Namespace(
        dists=dists,
        names=names,
        inventories=inventories,
        stamps=stamps,
    )  # type: ModuleMap
    return made


def dist_of(module_map, fullname, top):
    # type: (ModuleMap, str, str) -> Dist | None
    # ``(name, version, origin)`` of the distribution that provides ``fullname``.
    names = module_map.names
    index = names.get(top)
    if index is not None and index < 0:
        second = fullname.split(".", 2)
        deeper = names.get(top + "." + second[1]) if len(second) > 1 else None
        index = deeper if deeper is not None else (-2 - index if index <= -2 else None)
    return None if index is None else module_map.dists[index]


def is_namespace(module_map, top):
    # type: (ModuleMap, str) -> bool
    index = module_map.names.get(top)
    return index is not None and index < 0


def is_stale(module_map):
    # type: (ModuleMap) -> bool
    # Has a site directory changed since it was mapped (one stat per directory)?
    for path, mtime in module_map.stamps:
        try:
            if os.stat(path).st_mtime_ns != mtime:
                return True
        except OSError:
            return True
    return False


def _site_directories():
    # type: () -> list[tuple[str, str]]
    # ``(path, origin)`` of the directories to map, highest import priority first.
    import site

    found = []
    seen = set()
    candidates = []
    if getattr(site, "ENABLE_USER_SITE", False):
        user_site = getattr(site, "USER_SITE", None)
        if user_site:
            candidates.append((user_site, _USER))
    try:
        env_sites = site.getsitepackages()
    except AttributeError:  # very old virtualenv
        env_sites = [p for p in sys.path if p.endswith("site-packages")]
    candidates.extend((p, _ENV) for p in env_sites)
    for path, origin in candidates:
        try:
            status = os.stat(path)
        except OSError:
            continue
        identity = (status.st_dev, status.st_ino)  # lib64 -> lib links name one directory
        if identity not in seen:
            seen.add(identity)
            found.append((path, origin))
    return found


def _load_map():
    # type: () -> ModuleMap
    try:
        return merge_site_maps([(site_map(p), origin) for p, origin in _site_directories()])
    except Exception:
        return module_map([], {}, [], [])


def merge_site_maps(site_maps):
    # type: (list[tuple[SiteMap | None, str]]) -> ModuleMap
    # One map over all site directories, given highest import priority first: the directory
    # first on ``sys.path`` wins.
    dists = []  # type: list[Dist]
    names = {}  # type: dict[str, int]
    inventories = []
    stamps = []
    for one, origin in reversed(site_maps):
        if one is None:
            continue
        stamps.append((one["site"], one["mtime"]))
        base = len(dists)
        dists.extend((name, version, origin) for name, version in one["dists"])
        if origin == _ENV:
            inventories.append((one["inventory_id"], one["dists"]))
        for key, index in one["names"].items():
            if index >= 0:
                index += base
            elif index <= -2:
                index -= base
            elif key in names:
                continue  # a bare namespace does not hide a lower directory's owner
            names[key] = index
    return module_map(dists, names, inventories, stamps)


def cache_directory():
    # type: () -> str | None
    # The user's cache directory for the recorder, if there is one (POPCON_CACHE_DIR).
    environ = os.environ
    explicit = environ.get("POPCON_CACHE_DIR")
    if explicit:
        return explicit
    home = environ.get("HOME")
    base = environ.get("XDG_CACHE_HOME") or (os.path.join(home, ".cache") if home else None)
    return os.path.join(base, "popcon") if base else None


def site_cache_files(site_path):
    # type: (str) -> Iterator[str]
    # Where a site directory's map may be stored: beside it (written by ``popcon enable``,
    # shared by every user) first, then in the user's cache directory (named only if asked).
    beside = os.path.join(site_path, "popcon-cache")
    if os.path.isdir(beside):
        yield os.path.join(beside, "map.marshal")
    cache = cache_directory()
    if cache:
        yield os.path.join(cache, f"map-{path_key(site_path)}.marshal")


def path_key(text):
    # type: (str) -> str
    # A short stable key for a path, a label or an inventory (the text's bytes as a number,
    # modulo the largest 64-bit prime): for file names and change detection, not security.
    value = int.from_bytes(text.encode("utf-8", "surrogateescape"), "little")
    return f"{value % 0xFFFFFFFFFFFFFFC5:016x}"


def site_map(site_path, write=True):
    # type: (str, bool) -> SiteMap | None
    # The cached map of one site directory, rebuilt (and stored, when ``write``) when the
    # directory changed; None when it is not there.
    import marshal

    try:
        mtime = os.stat(site_path).st_mtime_ns
    except OSError:
        return None
    for path in site_cache_files(site_path):
        try:
            with open(path, "rb") as stream:
                cached = marshal.loads(stream.read())  # type: SiteMap
        except Exception:
            continue
        if (
            type(cached) is dict
            and cached.get("format") == MAP_FORMAT
            and cached.get("site") == site_path
            and cached.get("mtime") == mtime
        ):
            return cached
    built = sibling("map").rebuild_site_map(site_path, mtime, write)  # type: SiteMap
    return built


def sibling(kind):
    # type: (str) -> ModuleType
    # The recorder's module ``map`` (the map builder) or ``rare`` (rarely needed parts),
    # loaded on first need: by the hook, from this file's directory, in a recording process;
    # else imported (popcon's own package, or the scripts of ``popcon enable`` and ``status``,
    # which put site-packages on sys.path).
    name = ("popcon.recorder." if __name__.startswith("popcon.") else "_popcon_recorder_") + kind
    module = sys.modules.get(name)
    if module is None:
        if _hook is not None:
            loaded = _hook.load_beside(name)  # type: ModuleType
            return loaded
        __import__(name)
        module = sys.modules[name]
    return module


# --------------------------------------------------------------------------- configuration


# What names the environment, the first one set (else ``prefix_label``); and every variable
# config_of reads.
ENV_LABEL_VARIABLES = ("POPCON_ENV", "JUPYTER_IMAGE_SPEC", "JUPYTER_IMAGE")
_SETTINGS = (
    "POPCON_COLLECTOR",
    "POPCON_KEY",
    "POPCON_DEBUG",
    "POPCON_PREVIEW",
    "POPCON_INVENTORY_INTERVAL",
    *ENV_LABEL_VARIABLES,
    "POPCON_LABELS",
    "XDG_CONFIG_HOME",
    "HOME",
)


def _settings():
    # type: () -> dict[str, str]
    # The variables config_of reads, as a plain dict. os.environ.get raises and catches a
    # KeyError for each absent name, which adds up at every first send; the dict os.environ
    # keeps underneath is read directly where it is there (CPython's os module).
    environ = os.environ
    data = getattr(environ, "_data", None)
    encode = getattr(environ, "encodekey", None)
    decode = getattr(environ, "decodevalue", None)
    if type(data) is not dict or encode is None or decode is None:
        return {name: environ[name] for name in _SETTINGS if name in environ}
    found = {}
    for name in _SETTINGS:
        value = data.get(encode(name))
        if value is not None:
            found[name] = decode(value)
    return found


def config_of(environ):
    # type: (Mapping[str, str]) -> Config
    # Settings from ``POPCON_*`` variables, read at the first send (see docs/recording.md),
    # and the socket and queue of the process's sending.
    collector = environ.get("POPCON_COLLECTOR") or DEFAULT_COLLECTOR
    mode, host, port = parse_collector(collector)
    try:
        inventory_interval = float(environ.get("POPCON_INVENTORY_INTERVAL", "3600"))
    except ValueError:
        inventory_interval = 3600.0
    config = Namespace(
        mode=mode,
        host=host,
        port=port,
        header=_header(environ),
        key=environ.get("POPCON_KEY", "").encode("utf-8") or None,
        debug=environ.get("POPCON_DEBUG", "") not in ("", "0"),
        preview=environ.get("POPCON_PREVIEW") or None,
        inventory_interval=inventory_interval,
        secret=secret_path(environ),
        address=None,
        socket=None,
        resolving=False,
        queue=[],
    )  # type: Config
    return config


def secret_path(environ):
    # type: (Mapping[str, str]) -> str | None
    # Where the user's secret is (``$XDG_CONFIG_HOME/popcon/secret``, else
    # ``~/.config/popcon/secret``); None when neither variable is set.
    home = environ.get("HOME")
    base = environ.get("XDG_CONFIG_HOME") or (os.path.join(home, ".config") if home else None)
    return os.path.join(base, "popcon", "secret") if base else None


def parse_collector(url):
    # type: (str) -> tuple[str | None, str, int]
    # ``udp://host:port`` or ``statsd://host:port`` -> (mode, host, port); mode None if bad.
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


def environment_label(environ):
    # type: (Mapping[str, str]) -> str
    # The ``env`` line's label: the first of ENV_LABEL_VARIABLES set, else ``prefix_label``.
    for name in ENV_LABEL_VARIABLES:
        label = environ.get(name, "")
        if label:
            break
    else:
        label = default_label()
    label = "".join(c for c in label if c.isprintable())[:MAX_ENV_LABEL].strip()
    return label or "unknown"


def default_label():
    # type: () -> str
    # ``rare.prefix_label(sys.prefix)``, kept in a file so that loading the hash module (0.5 M
    # instructions, more than the rest of a first send) is paid once per environment and
    # user, not by every process: in ``popcon-cache`` beside a site directory (shared by every
    # user, written by the first process that may), else in the user's cache directory.
    name = "label-" + path_key(sys.prefix)
    shared = [
        os.path.join(site_path, "popcon-cache", name)
        for site_path, _mtime in (_map.stamps if _map is not None else ())
    ]
    cache = cache_directory()
    own = [os.path.join(cache, name)] if cache else []
    for path in shared + own:
        try:
            with open(path, "rb") as stream:
                text = stream.read(32).decode("ascii")
        except (OSError, UnicodeError):
            continue
        if len(text) == 16 and text[:4] == "env:" and all(c in _HEX for c in text[4:]):
            return text
    new_label = sibling("rare").keep_default_label(shared, own)  # type: str
    return new_label


_HEX = frozenset("0123456789abcdef")


def _header(environ):
    # type: (Mapping[str, str]) -> str
    lines = [
        "env " + environment_label(environ),
        f"py {sys.version_info[0]}.{sys.version_info[1]}",
    ]
    text = environ.get("POPCON_LABELS", "")
    if text:
        labels, _rejected = sibling("rare").parse_labels(text)
        lines.extend(f"label {key}={value}" for key, value in labels)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- sending


def _flush():
    # type: () -> None
    # Send the pending records now, in as few datagrams as fit.
    global _config, _seq
    if not _pending:
        return
    if _config is None:
        _config = config_of(_settings())
    config = _config
    records = _pending[:]
    del _pending[:]
    first = _seq == 0
    if config.mode == "udp":
        emit(config, _use_datagrams(config, [_line(config, record) for record in records]))
        if _people_added:
            _keep_people(config)
        if first and not config.preview:
            _send_inventory_if_due(config)
    elif config.mode == "statsd":
        _seq += 1
        emit(config, sibling("rare").statsd_datagrams(records, first))


def _line(config, record):
    # type: (Config, Record) -> str
    name, version, level, origin, importer = record
    if level == PROG:
        return f"prog {name} {version} {origin} {person(config, name)}"
    line = f"lib {name} {version} {level} {origin} {person(config, name)}"
    return line + " " + importer if importer else line


def _use_datagrams(config, lines):
    # type: (Config, list[str]) -> list[bytes]
    global _seq
    datagrams = []
    stamp = "" if config.key is None else sibling("rare").time_line()  # type: str
    budget = MAX_DATAGRAM - len(config.header.encode("utf-8")) - HEAD_ROOM - len(stamp)
    for chunk in chunks(lines, budget):
        head = f"{PROTOCOL_VERSION} use {_seq}\n"
        _seq += 1
        datagrams.append(signed(config, (head + config.header + chunk + stamp).encode("utf-8")))
    return datagrams


# --------------------------------------------------------------------------- people


def person(config, name):
    # type: (Config, str) -> str
    # This user's person field for the library (or program) ``name``: ``contribution`` of the
    # user's secret, NO_PERSON without a usable one. What earlier processes computed is kept
    # beside the secret (``contributions``), so that a process whose libraries were all seen
    # before neither reads the secret nor loads the hash module.
    global _people, _key, _people_added
    people = _people
    if people is None:
        people = _people = {}
        _read_kept(config.secret)
    value = people.get(name)
    if value is None:
        value = _kept_field(name)
        if value is None:
            if _key is None:
                _key = sibling("rare").read_secret(config.secret)
            value = sibling("rare").contribution(_key, name) if _key else NO_PERSON
            _people_added = _people_added or value != NO_PERSON
        people[name] = value
    return value


def _kept_field(name):
    # type: (str) -> str | None
    # The field kept for ``name``: its line, found in the kept text as it is, without parsing
    # the others, so that a long history costs a warm process nothing more.
    key = b"\n" + name.encode("utf-8") + b" "
    at = _kept.find(key)
    if at < 0:
        return None
    at += len(key)
    end = _kept.find(b"\n", at)
    try:
        return _kept[at:end].decode("ascii") if end > at else None
    except UnicodeDecodeError:
        return None  # not a field this recorder wrote: computed again


def _read_kept(path):
    # type: (str | None) -> None
    # The contributions kept beside the secret, if they are the current secret's (its file's
    # identity in their first line: a new secret, or one whose mode changed, starts over); the
    # secret is made here when there is none yet. No secret to be had: no person, and nothing
    # more is asked; nor is a secret that is not the user's own file, or that others may read,
    # one to be had.
    global _key, _kept, _kept_head
    if path is None:
        _key = b""
        return
    try:
        status = os.stat(path)
    except OSError:
        if not sibling("rare").create_secret(path):
            _key = b""
            return
        try:
            status = os.stat(path)
        except OSError:
            _key = b""
            return
    uid = getattr(os, "getuid", None)
    if status.st_mode & 0o077 or (uid is not None and status.st_uid != uid()):
        _key = b""
        return
    _kept_head = b"%s %d %d %d %d\n" % (
        CONTRIBUTIONS_FORMAT,
        status.st_dev,
        status.st_ino,
        status.st_ctime_ns,
        status.st_size,
    )
    try:
        kept = _read_small(os.path.join(os.path.dirname(path), "contributions"))
    except OSError:
        return
    if kept.startswith(_kept_head):
        _kept = kept


def _read_small(path):
    # type: (str) -> bytes
    # A small file's bytes (at most 256 KiB), in three system calls.
    descriptor = os.open(path, os.O_RDONLY)
    try:
        return os.read(descriptor, 1 << 18)
    finally:
        os.close(descriptor)


def _keep_people(config):
    # type: (Config) -> None
    global _people_added
    _people_added = False
    if config.secret is not None and _kept_head is not None and _people is not None:
        path = os.path.join(os.path.dirname(config.secret), "contributions")
        sibling("rare").keep_contributions(path, _kept_head, _kept, _people)


def chunks(lines, budget):
    # type: (list[str], int) -> list[str]
    # Join lines (each given without its newline) into texts of at most ``budget`` bytes
    # (UTF-8, newlines included); a line longer than that makes a text of its own.
    texts = []
    current = []  # type: list[str]
    size = 0
    for line in lines:
        length = len(line.encode("utf-8")) + 1
        if current and size + length > budget:
            texts.append("".join(current))
            current = []
            size = 0
        current.append(line + "\n")
        size += length
    if current:
        texts.append("".join(current))
    return texts


def signed(config, payload):
    # type: (Config, bytes) -> bytes
    # The payload with its signature line where POPCON_KEY is set, else as it is.
    if config.key is None:
        return payload
    with_signature = sibling("rare").sign(config.key, payload)  # type: bytes
    return with_signature


def _send_inventory_if_due(config):
    # type: (Config) -> None
    # At most every ``POPCON_INVENTORY_INTERVAL`` seconds per environment and user, and when
    # the inventory changed; the check costs one ``stat``. While young (the stamp's size counts
    # the sends, up to YOUNG_SENDS) the wait doubles from 1/64 of the interval, so that a
    # collector started after the first processes gets the inventory within about an hour.
    module_map = _map
    if config.inventory_interval <= 0 or module_map is None or not module_map.inventories:
        return
    ids = [inventory_id for inventory_id, _dists in module_map.inventories]
    inventory_id = ids[0] if len(ids) == 1 else path_key(" ".join(ids))[:8]
    stamp = _inventory_stamp(config, module_map, inventory_id)
    if stamp is None:
        return  # nowhere to remember when it was sent: better never than every process
    import time

    try:
        found = os.stat(stamp)
        sent = found.st_size
        wait = config.inventory_interval
        if sent < YOUNG_SENDS:
            wait /= 1 << (YOUNG_SENDS - sent)
        if time.time() - found.st_mtime < wait:
            return
    except OSError:
        sent = 0
    sibling("rare").send_inventory(config, module_map.inventories, inventory_id, stamp, sent)


def _inventory_stamp(config, module_map, inventory_id):
    # type: (Config, ModuleMap, str) -> str | None
    # An empty file whose name says what was sent (per environment label, labels and
    # collector, and inventory id) and whose age says when: beside site-packages if writable,
    # else in the user's cache directory.
    key = path_key(config.header + config.host + str(config.port))[:12]
    name = f"inventory-{key}-{inventory_id}"
    for site_path, _mtime in module_map.stamps:
        beside = os.path.join(site_path, "popcon-cache")
        if os.access(beside, os.W_OK):
            return os.path.join(beside, name)
    cache = cache_directory()
    return os.path.join(cache, name) if cache else None


def emit(config, datagrams):
    # type: (Config, list[bytes]) -> None
    # Send datagrams (or show them: POPCON_PREVIEW, POPCON_DEBUG); queued while the
    # collector's address is being found.
    if config.preview or config.debug:
        sibling("rare").show(config, datagrams)
        if config.preview:
            return
    if config.address is None:
        config.queue.extend(datagrams)
        del config.queue[:-256]
        _resolve(config)
        return
    _send(config, config.address, datagrams)


def send_queued(config):
    # type: (Config) -> None
    # The collector's address is known now: send what waited for it.
    queued = config.queue[:]
    del config.queue[:]
    if config.address is not None:
        _send(config, config.address, queued)


def _send(config, address, datagrams):
    # type: (Config, tuple[str, int], list[bytes]) -> None
    import _socket

    sock = config.socket
    if sock is None:
        family = _socket.AF_INET6 if ":" in address[0] else _socket.AF_INET
        sock = config.socket = _socket.socket(family, _socket.SOCK_DGRAM)
        sock.setblocking(False)
    for datagram in datagrams:
        try:
            sock.sendto(datagram, address)
        except OSError:
            pass


def is_address(host):
    # type: (str) -> bool
    # An IP address rather than a host name to look up.
    if ":" in host:
        return True  # an IPv6 literal (the brackets were removed)
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


def _resolve(config):
    # type: (Config) -> None
    # Find the collector's address without a DNS look-up on the import path.
    if config.mode is None or config.resolving:
        return
    if not is_address(config.host):
        sibling("rare").resolve(config)
        return
    config.address = (config.host, config.port)
    send_queued(config)
