"""The recorder's map builder: which installed distribution provides which module.

Scans one site directory's ``*.dist-info`` and ``*.egg-info`` and returns the map that the
recorder (``core.py``) caches with ``marshal``; ``popcon enable`` and ``status`` build and
inspect those caches through it too. A module of its own because most processes
never need it: they find a fresh cached map. ``popcon enable`` copies it into site-packages as
``_popcon_recorder_map.py``. Standard library only; it uses the core's public names only, and
like the core, keeps its types in comments.

What it offers the others: to the core, ``rebuild_site_map``; to ``rare`` (the inventory),
``installed_reasons``; to ``popcon enable`` and ``status``, ``build_caches`` and
``map_status``; and the protocol's rules for names and versions (``canonical_name``,
``valid_name``, ``valid_version``, ``MAX_NAME``, ``MAX_VERSION``) and the ``<requested>``
field's values (``REQUESTED_FIELDS``).
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

# The protocol's rules for a distribution's name and version (docs/protocol.md).
MAX_NAME = 100  # characters
MAX_VERSION = 64  # characters
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")

# A ``dist`` line's ``<requested>``: the installer's REQUESTED marker, none, not known.
REQUESTED_FIELDS = ("r", "-", "?")
_REQUESTED, _NOT_REQUESTED, _REQUESTED_UNKNOWN = REQUESTED_FIELDS

_DISTRIBUTION_SUFFIXES = (".dist-info", ".egg-info")
_NEVER_RECORDED = frozenset({"popcon"})  # distributions that are never reported


def canonical_name(name):
    # type: (str) -> str
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


def valid_name(name):
    # type: (str) -> bool
    """A canonical name as the protocol takes it: 1 to ``MAX_NAME`` characters of ``a-z``,
    ``0-9`` and ``-``, neither first nor last a ``-``."""
    return (
        0 < len(name) <= MAX_NAME
        and name[0] != "-"
        and name[-1] != "-"
        and set(name) <= _NAME_CHARS
    )


def valid_version(version):
    # type: (str) -> bool
    """1 to ``MAX_VERSION`` printable ASCII characters, no space."""
    return 0 < len(version) <= MAX_VERSION and all(33 <= ord(c) < 127 for c in version)


def build_site_map(site_path):
    # type: (str) -> tuple[list[tuple[str, str]], dict[str, int]]
    """Scan one site directory: every ``*.dist-info`` and ``*.egg-info`` in it.

    Returns ``([(name, version)], {module: index})``, where an index >= 0 names a
    distribution, -1 a namespace shared by several (look one level deeper), and -2 - i such a
    namespace whose bare ``import`` belongs to distribution i. Only called when no fresh cached
    map exists.
    """
    dists = []  # type: list[tuple[str, str]]
    claims = {}  # type: dict[str, list[tuple[int, bool, set[str], int]]]
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
    names = {}  # type: dict[str, int]
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
    return dists, names


def rebuild_site_map(site_path, mtime, write):
    # type: (str, int, bool) -> SiteMap
    """The core found no fresh map of this directory: build it, stamp it with the directory's
    modification time and store it where the core looks first (when ``write``)."""
    import marshal

    dists, names = build_site_map(site_path)
    inventory = "\n".join(f"{name} {version}" for name, version in sorted(set(dists)))
    built = {
        "format": core.MAP_FORMAT,
        "site": site_path,
        "mtime": mtime,
        "dists": dists,
        "names": names,
        "inventory_id": core.path_key(inventory)[:8],
    }  # type: SiteMap
    if write:
        rare = core.sibling("rare")
        for path in core.site_cache_files(site_path):
            if rare.write_atomically(path, marshal.dumps(dict(built))):
                break
    return built


def _describe_distribution(site_path, entry):
    # type: (str, DirEntry[str]) -> tuple[str, str, Tops, int] | None
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
    if not valid_name(name):
        return None
    if not valid_version(version):
        version = "-"
    tops = _distribution_tops(site_path, entry.path, name) if is_dir else {}
    if not tops:
        tops = _guess_tops(site_path, name)
    return name, version, tops, entry.stat().st_mtime_ns


def _read_name_and_version(path):
    # type: (str) -> tuple[str, str]
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


# --------------------------------------------------------------------------- why installed


def installed_reasons(site_path):
    # type: (str) -> dict[str, tuple[str, list[str]]]
    """For the inventory: each distribution of one site directory by canonical name, with its
    ``<requested>`` field (``r``: its ``.dist-info`` holds the installer's ``REQUESTED``
    marker; ``-``: it holds none; ``?``: an ``.egg-info``, which has no such marker) and the
    canonical names of what it requires (``Requires-Dist``, or an ``.egg-info``'s
    ``requires.txt``), sorted, itself and what only an extra requires left out."""
    found = {}  # type: dict[str, tuple[str, list[str]]]
    try:
        entries = sorted(os.scandir(site_path), key=lambda e: e.name)
    except OSError:
        return found
    for entry in entries:
        if not entry.name.endswith(_DISTRIBUTION_SUFFIXES):
            continue
        try:
            described = _describe_reason(entry)
        except Exception:
            continue
        if described is not None:
            found[described[0]] = (described[1], described[2])
    return found


def _describe_reason(entry):
    # type: (DirEntry[str]) -> tuple[str, str, list[str]] | None
    is_dir = entry.is_dir()
    if entry.name.endswith(".dist-info") and is_dir:
        metadata = os.path.join(entry.path, "METADATA")
        marker = os.path.join(entry.path, "REQUESTED")
        requested = _REQUESTED if os.path.exists(marker) else _NOT_REQUESTED
    else:
        metadata = os.path.join(entry.path, "PKG-INFO") if is_dir else entry.path
        requested = _REQUESTED_UNKNOWN
    name, requirements = _read_name_and_requirements(metadata)
    if not name:
        name = entry.name.rsplit(".", 1)[0].split("-")[0]
    name = canonical_name(name)
    if not valid_name(name):
        return None
    if is_dir and entry.name.endswith(".egg-info"):
        requirements.extend(_egg_requirements(os.path.join(entry.path, "requires.txt")))
    names = {_requirement_name(text) for text in requirements}
    names.discard(name)
    names.discard("")
    return name, requested, sorted(names)


def _read_name_and_requirements(path):
    # type: (str) -> tuple[str, list[str]]
    """The ``Name`` and the ``Requires-Dist`` values of a metadata file's headers."""
    name = ""
    requirements = []
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            for line in stream:
                if not line.strip():
                    break
                if line.startswith("Name:"):
                    name = line[5:].strip()
                elif line.startswith("Requires-Dist:"):
                    requirements.append(line[14:].strip())
    except OSError:
        pass
    return name, requirements


def _egg_requirements(path):
    # type: (str) -> list[str]
    """The lines of an ``.egg-info``'s ``requires.txt`` outside its extras' sections
    (``[name]``, ``[name:marker]``); a ``[:marker]`` section's are kept."""
    found = []
    keep = True
    for line in _lines(path):
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
            keep = section.startswith(":") and not _mentions_extra(section[1:])
        elif keep and not line.startswith("#"):
            found.append(line)
    return found


def _requirement_name(text):
    # type: (str) -> str
    """The canonical name a requirement (``name[extras] (spec) ; marker``) names, or ``""``
    when it is invalid or only an extra's (its marker mentions ``extra``)."""
    spec, _separator, marker = text.partition(";")
    if marker and _mentions_extra(marker):
        return ""
    spec = spec.strip()
    end = 0
    while end < len(spec) and (spec[end].isalnum() or spec[end] in "-_."):
        end += 1
    name = canonical_name(spec[:end])
    return name if valid_name(name) else ""


def _mentions_extra(marker):
    # type: (str) -> bool
    for char in "=!<>~()\"'":
        marker = marker.replace(char, " ")
    return "extra" in marker.split()


_MODULE_SUFFIXES = (".py", ".pyc", ".so", ".pyd")


def _add_path(tops, relative):
    # type: (Tops, str) -> None
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


def _distribution_tops(site_path, info_path, name):
    # type: (str, str, str) -> Tops
    tops = {}  # type: Tops
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


def _record_paths(record):
    # type: (str) -> list[str]
    paths = []  # type: list[str]
    for line in _lines(record):
        if line.startswith('"'):  # a path with a comma in it, CSV-quoted: rare, so lazy
            import csv

            try:
                paths.extend(row[0] for row in csv.reader([line]) if row)
            except csv.Error:
                continue  # one broken line does not lose the distribution
        else:
            paths.append(line.split(",", 1)[0])
    return paths


def _lines(path):
    # type: (str) -> list[str]
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            return [line.rstrip("\r\n") for line in stream if line.strip()]
    except OSError:
        return []


def _add_editable(tops, site_path, pth):
    # type: (Tops, str, str) -> None
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


def _add_finder_mapping(tops, finder_file):
    # type: (Tops, str) -> None
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


def _add_directory_modules(tops, directory):
    # type: (Tops, str) -> None
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


def _guess_tops(site_path, name):
    # type: (str, str) -> Tops
    """No file list at all: trust a module named like the distribution, if there is one."""
    guess = name.replace("-", "_")
    for candidate in (guess, guess + ".py"):
        if os.path.exists(os.path.join(site_path, candidate)):
            return {guess: (True, set())}
    return {}


# --------------------------------------------------------------------------- introspection


def map_status(site_path):
    # type: (str) -> dict[str, object]
    """For ``popcon status``: is this site directory's cached map fresh, and where is it."""
    import marshal

    try:
        mtime = os.stat(site_path).st_mtime_ns
    except OSError:
        return {"site": site_path, "state": "missing site directory", "cache": None}
    for path in core.site_cache_files(site_path):
        try:
            with open(path, "rb") as stream:
                cached = marshal.loads(stream.read())
        except Exception:
            continue
        if type(cached) is dict and cached.get("format") == core.MAP_FORMAT:
            state = "fresh" if cached.get("mtime") == mtime else "stale"
            return {
                "site": site_path,
                "state": state,
                "cache": path,
                "distributions": len(cached.get("dists", ())),
            }
    return {"site": site_path, "state": "not built", "cache": None}


def build_caches(site_paths):
    # type: (list[str]) -> list[dict[str, object]]
    """For ``popcon enable``: build and store the maps of these site directories now."""
    for site_path in site_paths:
        core.site_map(site_path)
    return [map_status(p) for p in site_paths]
