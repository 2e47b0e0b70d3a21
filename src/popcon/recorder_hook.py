"""popcon's start-up hook: the only recorder code every Python process of an environment runs.

``popcon enable`` copies this file into site-packages as ``_popcon_hook.py`` (and the recorder's
core, ``recorder.py``, as ``_popcon_recorder.py``) and writes ``popcon.pth``, whose line
``import _popcon_hook`` Python runs at start-up; imported under that name, this module starts
itself (a shorter ``.pth`` line is cheaper to compile at every start). It stays tiny:
it installs a meta path finder whose ``find_spec`` finds nothing and, for a module whose
top-level name it has not settled yet, hands over to the core, loaded on first need.
"""

import os
import sys

_CORE = "popcon.recorder" if __name__.startswith("popcon.") else "_popcon_recorder"
_STDLIB = getattr(sys, "stdlib_module_names", frozenset())

# Top-level names whose imports need no thought: standard library is checked apart, these are
# the recorder itself, start-up probes, user modules and distributions already seen as direct.
_settled = {
    "__main__",
    "sitecustomize",
    "usercustomize",
    "_popcon_hook",
    "_popcon_recorder",
    "_popcon_recorder_map",
    "popcon",
}
_started = False
_core = None
_lock = None


def start() -> None:
    """Install the finder, unless the user opted out.

    A ``.pth`` line can run twice in a virtual environment (cpython#75723): only the first call
    does anything, and a second copy of the recorder in the same process stands aside.
    """
    global _started, _lock
    if _started:
        return
    _started = True
    try:
        if opted_out(os.environ):
            return
        if any(type(finder).__name__ == "PopconFinder" for finder in sys.meta_path):
            return
        import _thread

        _lock = _thread.RLock()
        sys.meta_path.insert(0, PopconFinder())
    except Exception:
        pass


def opted_out(environ) -> bool:
    """``POPCON_DISABLE=1``, or ``~/.config/popcon/disable`` exists; ``popcon preview`` records
    anyway, since it sends nothing."""
    if environ.get("POPCON_PREVIEW"):
        return False
    if environ.get("POPCON_DISABLE", "") not in ("", "0"):
        return True
    config_home = environ.get("XDG_CONFIG_HOME") or (
        environ.get("HOME") and environ["HOME"] + "/.config"
    )
    return bool(config_home) and os.path.exists(config_home + "/popcon/disable")


class PopconFinder:
    """Finds nothing; watches which modules start importing."""

    __slots__ = ()

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if top in _settled or top in _STDLIB or top.startswith("_sysconfigdata"):
            return None  # (sysconfig's per-platform data module is missing from the list)
        # Bounded wait: on Python 3.9, where stdlib imports reach this point too, a thread in
        # the slow path could wait for a module lock held by the thread waiting here.
        lock = _lock
        if lock is None or not lock.acquire(True, 0.5):
            return None
        try:
            (_core or _load_core()).on_import(fullname, top)
        except Exception:
            pass
        finally:
            lock.release()
        return None

    @staticmethod
    def invalidate_caches() -> None:
        pass


def _load_core():
    """The first import the hook cannot settle: load the core, and only now take on exit and
    fork duties (a process that never gets here has nothing to send)."""
    global _core
    import atexit

    core = sys.modules.get(_CORE) or load_beside(_CORE)
    core.attach(_settled, _lock, load_beside)
    atexit.register(_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
    _core = core
    return core


def load_beside(name: str):
    """Load one of the recorder's modules from this file's directory, by path: searching
    sys.path would cost more, and its first entry (the current directory) could be large or
    hold a file of the same name."""
    if __name__.startswith("popcon."):  # running from the popcon package itself
        __import__(name)
        return sys.modules[name]
    import _frozen_importlib as bootstrap
    import _frozen_importlib_external as external

    path = os.path.join(os.path.dirname(__file__), name + ".py")
    spec = external.spec_from_file_location(name, path)
    module = bootstrap.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _at_exit() -> None:
    if _core is not None:
        try:
            with _lock:
                _core.at_exit()
        except Exception:
            pass


def _after_fork_in_child() -> None:
    global _lock
    import _thread

    _lock = _thread.RLock()  # another thread may have held it at the fork
    if _core is not None:
        try:
            _core._lock = _lock
            _core.after_fork_in_child()
        except Exception:
            pass


if __name__ == "_popcon_hook":
    start()
