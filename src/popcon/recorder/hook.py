# popcon's start-up hook: the only recorder code every Python process of an environment runs.
#
# `popcon enable` copies this file into site-packages as `sitecustomize.py` where the environment
# has no sitecustomize of its own: site imports that module at every start-up, after searching
# for it whether or not it exists, so loading this one adds little. Elsewhere it is copied as
# `_popcon_hook.py`, with a `popcon.pth` whose line `import _popcon_hook` Python runs at
# start-up. Imported under either name, this module starts itself. Either way the recorder's
# core (core.py, copied as `_popcon_recorder.py`) stays beside it. The hook stays tiny, and its
# notes are comments rather than docstrings, because every process pays for loading it; its
# types are comments too, which the type checker reads and the interpreter never evaluates
# (the names in them come from _types.pyi, imported for the type checker alone).
#
# It watches the directories of sys.path outside the standard library (site-packages, the user
# site, the script's directory, PYTHONPATH): the path finder's per-directory finders there get
# a find_spec that reports each top-level module they find. Standard-library and submodule
# imports never reach them, so importing numpy's hundreds of submodules costs nothing here.
# Finders that come after the path finder in sys.meta_path (setuptools' editable installs) are
# covered by this module itself, placed just before them as a finder that finds nothing.
# The core is imported on the first report; the path finder calls finders under the import
# lock, and the core takes its own lock for the rest.
#
# What it offers the others: to the core (given this module by core.attach), `settled` (the
# top-level names whose finds need no report), `watched` (the directories whose new finders
# report what they find) and `load_beside(name)` (a recorder module from this file's
# directory); to `popcon status`, `opted_out(environ)`.

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # never true when it runs (one star import: the least to load)
    from ._types import *  # noqa: F403

_STDLIB = getattr(sys, "stdlib_module_names", frozenset())  # type: frozenset[str]

# Top-level names the core has settled (a distribution already recorded, a user module): later
# finds of them need no report. Namespace packages stay out, to be looked at one level deeper.
settled = {
    "sitecustomize",  # start-up probes
    "usercustomize",
    "_popcon_hook",
    "_popcon_recorder",
    "_popcon_recorder_map",
    "_popcon_recorder_rare",
    "popcon",
}
watched = set()  # type: set[str]  # namespace portions (beside sys.path) whose finders report
_unwatched = set()  # type: set[str]  # the standard library's directories
_started = False
_core = None  # type: ModuleType | bool | None  # False once loading it failed
_finder_type = None  # type: type[FileFinder] | None
_find_spec = None  # type: Callable[[FileFinder, str, ModuleType | None], ModuleSpec | None] | None
_new_finder = None  # type: Callable[[str], PathEntryFinderProtocol] | None  # makes FileFinders
_cwd = None  # type: str | None  # the current directory, once the "" entry of sys.path needed it


def start():
    # type: () -> None
    # A .pth line can run twice in a virtual environment (cpython#75723): only the first call
    # does anything, and a second copy of the hook in the same process stands aside.
    global _started, _finder_type, _find_spec, _new_finder
    if _started:
        return
    _started = True
    try:
        if opted_out(_start_environ()):
            return
        import _frozen_importlib_external as external

        hooks = sys.path_hooks
        for hook in hooks:
            name = getattr(hook, "__name__", "")
            if name == "_popcon_path_hook":
                return
            if name == "path_hook_for_FileFinder":
                _new_finder = hook
        if _new_finder is None:
            return
        _finder_type = external.FileFinder
        _find_spec = _finder_type.find_spec
        stdlib = os.__file__.rpartition(os.sep)[0]
        _unwatched.update((stdlib, stdlib + os.sep + "lib-dynload"))
        hooks.insert(hooks.index(_new_finder), _popcon_path_hook)
        cache = sys.path_importer_cache
        for path in sys.path:
            finder = cache.get(path)
            if type(finder) is _finder_type and path not in _unwatched:
                finder.find_spec = _watched_find_spec.__get__(finder)  # type: ignore[method-assign]  # the instance's own find_spec is the whole mechanism
        meta_path = sys.meta_path
        meta_path.insert(meta_path.index(external.PathFinder) + 1, sys.modules[__name__])
    except Exception:
        pass


def _start_environ():
    # type: () -> Mapping[str, str]
    # The variables opted_out reads, from the plain dict os.environ was made from: os.environ
    # raises and catches a KeyError for each absent name, which costs more than all the rest.
    raw = getattr(sys.modules.get("posix"), "environ", None)  # type: dict[bytes, bytes] | None
    if raw is None:
        return os.environ
    found = {}
    for name in (b"POPCON_PREVIEW", b"POPCON_DISABLE", b"XDG_CONFIG_HOME", b"HOME"):
        value = raw.get(name)
        if value is not None:
            found[name.decode()] = os.fsdecode(value)
    return found


def opted_out(environ):
    # type: (Mapping[str, str]) -> bool
    # POPCON_DISABLE=1, or ~/.config/popcon/disable exists; `popcon preview` records anyway,
    # since it sends nothing.
    if environ.get("POPCON_PREVIEW"):
        return False
    if environ.get("POPCON_DISABLE", "") not in ("", "0"):
        return True
    home = environ.get("HOME")
    config_home = environ.get("XDG_CONFIG_HOME") or (home + "/.config" if home else "")
    return bool(config_home) and os.access(config_home + "/popcon/disable", os.F_OK)


def _popcon_path_hook(path):
    # type: (str) -> PathEntryFinderProtocol
    # Called once per new directory the path finder meets: each sys.path entry and each
    # package's directory. Only the first kind (and namespace portions) is watched.
    global _cwd
    finder = _new_finder(path)  # type: ignore[misc]  # set by start() before this hook is added
    if path in watched or (path in sys.path and path not in _unwatched):
        finder.find_spec = _watched_find_spec.__get__(finder)  # type: ignore[method-assign]  # as in start()
    elif "" in sys.path:  # python -c, -m, notebooks: "" stands for the current directory
        if _cwd is None:
            try:
                _cwd = os.getcwd()
            except OSError:
                return finder
        if path == _cwd:
            finder.find_spec = _watched_find_spec.__get__(finder)  # type: ignore[method-assign]  # as in start()
    return finder


def _watched_find_spec(finder, fullname, target=None):
    # type: (FileFinder, str, ModuleType | None) -> ModuleSpec | None
    spec = _find_spec(finder, fullname, target)  # type: ignore[misc]  # set by start()
    if spec is not None:
        top = fullname.partition(".")[0]
        if top not in settled:
            _report(fullname, top, spec)
    return spec


def find_spec(fullname, path=None, target=None):
    # type: (str, object, object) -> None
    # As a meta path finder right after the path finder: modules no sys.path directory has,
    # which a later finder (an editable install's) may find. Finds nothing itself.
    top = fullname.partition(".")[0]
    if top not in settled and top not in _STDLIB:
        _report(fullname, top, None)


def _report(fullname, top, spec):
    # type: (str, str, ModuleSpec | None) -> None
    # Hand a found module to the core, loaded on the first report (once: if that fails, the
    # process records nothing).
    global _core
    try:
        if _core is None:
            _core = False
            core = load_beside("_popcon_recorder")
            core.attach(sys.modules[__name__])
            _core = core
        if _core:
            _core.report(fullname, top, spec)  # type: ignore[union-attr]  # a module once truthy
    except Exception:
        pass


def load_beside(name):
    # type: (str) -> ModuleType
    # One of the recorder's modules, from this file's directory, by path: searching sys.path
    # would cost more, and the current directory could hold a namesake. The core loads its
    # own rarely needed modules with it too.
    import _frozen_importlib as bootstrap
    import _frozen_importlib_external as external

    path = __file__.rpartition(os.sep)[0] + os.sep + name + ".py"
    spec = external.spec_from_file_location(name, path)
    module = bootstrap.module_from_spec(spec)  # type: ignore[arg-type]  # a .py path always has a spec
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]  # as above: it has a loader
    except BaseException:
        del sys.modules[name]
        raise
    return module


if __name__ in ("_popcon_hook", "sitecustomize"):
    start()
