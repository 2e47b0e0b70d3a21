# popcon's start-up hook: the only recorder code every Python process of an environment runs.
#
# `popcon enable` copies this file into site-packages as `sitecustomize.py` where the environment
# has no sitecustomize of its own: site imports that module at every start-up, after searching
# for it whether or not it exists, so loading this one adds little. Elsewhere it is copied as
# `_popcon_hook.py`, with a `popcon.pth` whose line `import _popcon_hook` Python runs at
# start-up. Imported under either name, this module starts itself. Either way the recorder's
# core (recorder.py, copied as `_popcon_recorder.py`) stays beside it. The hook stays tiny, and
# its notes are comments rather than docstrings, because every process pays for loading it.
#
# It watches the directories of sys.path outside the standard library (site-packages, the user
# site, the script's directory, PYTHONPATH): the path finder's per-directory finders there get
# a find_spec that reports each top-level module they find. Standard-library and submodule
# imports never reach them, so importing numpy's hundreds of submodules costs nothing here.
# Finders that come after the path finder in sys.meta_path (setuptools' editable installs) are
# covered by this module itself, placed just before them as a finder that finds nothing.
# The core is imported on the first report; the path finder calls finders under the import
# lock, and the core takes its own lock for the rest.

import os
import sys

_STDLIB = getattr(sys, "stdlib_module_names", frozenset())

# Top-level names the core has settled (a distribution already recorded, a user module): later
# finds of them need no report. Namespace packages stay out, to be looked at one level deeper.
_settled = {
    "sitecustomize",  # start-up probes
    "usercustomize",
    "_popcon_hook",
    "_popcon_recorder",
    "_popcon_recorder_map",
    "_popcon_recorder_rare",
    "popcon",
}
_watched = set()  # directories whose new finders report: sys.path entries, namespace portions
_unwatched = set()  # the standard library's directories
_started = False
_core = None
_finder_type = None  # FileFinder
_find_spec = None  # FileFinder.find_spec
_new_finder = None  # the standard path hook, which makes FileFinders
_cwd = None  # the current directory, once the "" entry of sys.path needed it


def start():
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
                finder.find_spec = _watched_find_spec.__get__(finder)
        meta_path = sys.meta_path
        meta_path.insert(meta_path.index(external.PathFinder) + 1, sys.modules[__name__])
    except Exception:
        pass


def _start_environ():
    # The variables opted_out reads, from the plain dict os.environ was made from: os.environ
    # raises and catches a KeyError for each absent name, which costs more than all the rest.
    raw = getattr(sys.modules.get("posix"), "environ", None)
    if raw is None:
        return os.environ
    found = {}
    for name in (b"POPCON_PREVIEW", b"POPCON_DISABLE", b"XDG_CONFIG_HOME", b"HOME"):
        value = raw.get(name)
        if value is not None:
            found[name.decode()] = os.fsdecode(value)
    return found


def opted_out(environ):
    # POPCON_DISABLE=1, or ~/.config/popcon/disable exists; `popcon preview` records anyway,
    # since it sends nothing.
    if environ.get("POPCON_PREVIEW"):
        return False
    if environ.get("POPCON_DISABLE", "") not in ("", "0"):
        return True
    config_home = environ.get("XDG_CONFIG_HOME") or (
        environ.get("HOME") and environ["HOME"] + "/.config"
    )
    return bool(config_home) and os.access(config_home + "/popcon/disable", os.F_OK)


def _popcon_path_hook(path):
    # Called once per new directory the path finder meets: each sys.path entry and each
    # package's directory. Only the first kind (and namespace portions) is watched.
    global _cwd
    finder = _new_finder(path)
    if path in _watched or (path in sys.path and path not in _unwatched):
        finder.find_spec = _watched_find_spec.__get__(finder)
    elif "" in sys.path:  # python -c, -m, notebooks: "" stands for the current directory
        if _cwd is None:
            try:
                _cwd = os.getcwd()
            except OSError:
                return finder
        if path == _cwd:
            finder.find_spec = _watched_find_spec.__get__(finder)
    return finder


def _watched_find_spec(finder, fullname, target=None):
    spec = _find_spec(finder, fullname, target)
    if spec is not None:
        top = fullname.partition(".")[0]
        if top not in _settled:
            _report(fullname, top, spec)
    return spec


def find_spec(fullname, path=None, target=None):
    # As a meta path finder right after the path finder: modules no sys.path directory has,
    # which a later finder (an editable install's) may find. Finds nothing itself.
    top = fullname.partition(".")[0]
    if top not in _settled and top not in _STDLIB:
        _report(fullname, top, None)


def _report(fullname, top, spec):
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
            _core.report(fullname, top, spec)
    except Exception:
        pass


def load_beside(name):
    # One of the recorder's modules, from this file's directory, by path: searching sys.path
    # would cost more, and the current directory could hold a namesake. The core loads its
    # own rarely needed modules with it too.
    import _frozen_importlib as bootstrap
    import _frozen_importlib_external as external

    path = __file__.rpartition(os.sep)[0] + os.sep + name + ".py"
    spec = external.spec_from_file_location(name, path)
    module = bootstrap.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


if __name__ in ("_popcon_hook", "sitecustomize"):
    start()
