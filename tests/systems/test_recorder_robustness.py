"""The recorder never hurts the user: collector down, bad host names, unwritable caches, no
HOME, broken metadata, a changing environment, a 1,000-distribution environment. Every
process here must exit 0, print nothing it was not asked to, and still report right."""

from __future__ import annotations

import os
import textwrap

import pytest
from recorder_testlib import (
    BASE_PYTHON,
    Lib,
    Venv,
    build_wheel,
    clean_environ,
    create_venv,
    first_records,
    free_udp_port,
    pip_install,
    popcon_cli,
    run,
    unwritable,
    use_libs,
    write_dist_info,
)

pytestmark = pytest.mark.slow

IMPORT_MANY = "import requests, yaml, bs4\nimport pandas\nprint('ok')\n"


@pytest.mark.parametrize(
    "collector",
    [
        pytest.param("udp://127.0.0.1:{free}", id="collector-down"),
        pytest.param("statsd://127.0.0.1:{free}", id="statsd-collector-down"),
        pytest.param("udp://no-such-collector.invalid:8137", id="unresolvable-host"),
        pytest.param("udp://[::1]:{free}", id="ipv6-loopback-down"),
        pytest.param("udp://127.0.0.1:99999", id="port-out-of-range"),
        pytest.param("tcp://127.0.0.1:8137", id="unknown-scheme"),
        pytest.param("nonsense", id="not-a-url"),
    ],
)
def test_unreachable_or_bad_collector_never_hurts(workload_venv, recorder_env, workdir, collector):
    env = recorder_env(POPCON_COLLECTOR=collector.format(free=free_udp_port()))
    for flags in ([], ["-X", "dev"]):
        result = run(
            [workload_venv.python, *flags, "-c", IMPORT_MANY], env=env, cwd=workdir, timeout=60
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")


def test_host_name_collector_is_resolved_and_reached(
    workload_venv, recorder_env, listener, workdir
):
    """``localhost`` resolves (outside the import path) and the datagrams still arrive, for a
    first process and for the next one (which may use the cached address)."""
    env = recorder_env(POPCON_COLLECTOR=f"udp://localhost:{listener.port}")
    for _ in range(2):
        result = run([workload_venv.python, "-c", "import yaml"], env=env, cwd=workdir)
        assert (result.returncode, result.stderr) == (0, "")
        assert listener.wait_for(lambda raws: len(raws) >= 1, timeout=10)
        assert set(first_records(use_libs(listener.datagrams()))) == {"pyyaml"}
        listener.clear()


@pytest.mark.parametrize(
    "home_setting",
    ["unset", "empty", "missing-directory", "a-file"],
)
def test_no_usable_home(workload_venv, recorder_env, listener, workdir, tmp_path, home_setting):
    home = {
        "unset": None,
        "empty": "",
        "missing-directory": str(tmp_path / "does-not-exist"),
        "a-file": str(tmp_path / "home-is-a-file"),
    }[home_setting]
    (tmp_path / "home-is-a-file").write_text("")
    env = recorder_env(HOME=home)
    result = run([workload_venv.python, "-c", IMPORT_MANY], env=env, cwd=workdir)
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")
    first = first_records(use_libs(listener.datagrams()))
    assert {"requests", "pyyaml", "beautifulsoup4", "pandas", "numpy"} <= set(first)


def test_unwritable_caches_everywhere(
    new_venv, wheelhouse, recorder_env, listener, workdir, tmp_path
):
    """The map is stale (pip installed something after enable), and it can be written neither
    beside site-packages nor in POPCON_CACHE_DIR: the map is built in memory, every time."""
    venv = new_venv()
    wheel = build_wheel(wheelhouse, "fresh-arrival", "1.5", {"fresh_arrival/__init__.py": ""})
    pip_install(venv, "--no-index", "--no-deps", wheel)
    cache = tmp_path / "readonly-cache"
    cache.mkdir()
    env = recorder_env(POPCON_CACHE_DIR=str(cache), POPCON_INVENTORY_INTERVAL="60")
    with unwritable(venv.site_packages, venv.site_packages / "popcon-cache", cache):
        for _ in range(2):
            result = run([venv.python, "-c", "import fresh_arrival"], env=env, cwd=workdir)
            assert (result.returncode, result.stderr) == (0, "")
            datagrams = listener.datagrams()
            assert first_records(use_libs(datagrams)) == {
                "fresh-arrival": Lib("fresh-arrival", "1.5", "direct", "env")
            }
            listener.clear()
    assert list(cache.iterdir()) == []


def test_cache_dir_under_a_file(new_venv, wheelhouse, recorder_env, listener, workdir, tmp_path):
    """POPCON_CACHE_DIR that cannot be a directory, site-packages not writable."""
    venv = new_venv()
    pip_install(
        venv, "--no-index", "--no-deps", build_wheel(wheelhouse, "abc-x", "1", {"abcx.py": ""})
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = recorder_env(POPCON_CACHE_DIR=str(blocker / "cache"))
    with unwritable(venv.site_packages, venv.site_packages / "popcon-cache"):
        result = run([venv.python, "-c", "import abcx"], env=env, cwd=workdir)
    assert (result.returncode, result.stderr) == (0, "")
    assert set(first_records(use_libs(listener.datagrams()))) == {"abc-x"}


def test_cache_dir_is_used_when_site_packages_is_read_only(
    new_venv, wheelhouse, recorder_env, listener, workdir, tmp_path
):
    venv = new_venv()
    pip_install(
        venv,
        "--no-index",
        "--no-deps",
        build_wheel(wheelhouse, "cached-one", "1", {"cached_one.py": ""}),
    )
    cache = tmp_path / "user-cache"
    env = recorder_env(POPCON_CACHE_DIR=str(cache))
    with unwritable(venv.site_packages, venv.site_packages / "popcon-cache"):
        result = run([venv.python, "-c", "import cached_one"], env=env, cwd=workdir)
    assert (result.returncode, result.stderr) == (0, "")
    assert set(first_records(use_libs(listener.datagrams()))) == {"cached-one"}
    assert any(cache.iterdir()), "the rebuilt map was not stored in POPCON_CACHE_DIR"


def test_broken_distribution_metadata(new_venv, wheelhouse, recorder_env, listener, workdir):
    venv = new_venv(enable=False)
    site = venv.site_packages
    write_dist_info(site, "good-one", "1.0", {"good_one.py": "import broken_record_mod\n"})
    write_dist_info(site, "broken-record", "2.0", {"broken_record_mod.py": ""})
    # One valid row among broken ones: the valid row must still map the module.
    (site / "broken_record-2.0.dist-info" / "RECORD").write_bytes(
        b'"unterminated,\x00\xff\xfe,,\n\n,,,,,,\nbroken_record_mod.py,,\n'
        b"../../../../etc/passwd,,\n"
    )
    empty = site / "empty_metadata-1.0.dist-info"
    empty.mkdir()
    (empty / "METADATA").write_text("")
    (site / "garbage-1.0.dist-info").mkdir()
    (site / "garbage-1.0.dist-info" / "METADATA").write_bytes(b"\xff\xfe\x00garbage\n\n\x80")
    (site / "no_metadata-3.0.dist-info").mkdir()
    (site / "a_file-1.0.dist-info").write_text("not a directory")
    (site / "weird name!-x.dist-info").mkdir()
    (site / "weird name!-x.dist-info" / "METADATA").write_text("Name: weird name!\nVersion: x y\n")
    (site / "old_style-0.1-py3.11.egg-info").write_text("Metadata-Version: 1.0\nName: old-style\n")
    result = popcon_cli("enable", "--python", venv.python, env=recorder_env())
    assert (result.returncode, result.stderr) == (0, "")
    result = run(
        [venv.python, "-c", "import good_one; print('ok')"], env=recorder_env(), cwd=workdir
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")
    first = first_records(use_libs(listener.datagrams()))
    assert first["good-one"] == Lib("good-one", "1.0", "direct", "env")
    assert first["broken-record"] == Lib("broken-record", "2.0", "transitive", "env", "good-one")


def test_environment_changed_by_pip_after_enable(
    new_venv, wheelhouse, recorder_env, listener, workdir
):
    """Install, upgrade and remove distributions after ``popcon enable``: the next processes
    see the change without anyone running popcon again."""
    venv = new_venv()
    old = build_wheel(wheelhouse, "evolving", "1.0", {"evolving/__init__.py": ""})
    new = build_wheel(wheelhouse, "evolving", "2.0", {"evolving/__init__.py": "import newcomer\n"})
    newcomer = build_wheel(wheelhouse, "newcomer", "0.9", {"newcomer.py": ""})
    pip_install(venv, "--no-index", "--no-deps", old)
    first = _imports(venv, "import evolving", recorder_env, listener, workdir)
    assert first == {"evolving": Lib("evolving", "1.0", "direct", "env")}

    pip_install(venv, "--no-index", "--no-deps", new, newcomer)
    first = _imports(venv, "import evolving", recorder_env, listener, workdir)
    assert first == {
        "evolving": Lib("evolving", "2.0", "direct", "env"),
        "newcomer": Lib("newcomer", "0.9", "transitive", "env", "evolving"),
    }

    # A module whose distribution was uninstalled but whose file stayed is the user's own.
    uninstall = [
        BASE_PYTHON,
        "-m",
        "pip",
        "--python",
        venv.python,
        "uninstall",
        "-y",
        "newcomer",
    ]
    assert run(uninstall, env={**os.environ, "POPCON_DISABLE": "1"}).returncode == 0
    (venv.site_packages / "newcomer.py").write_text("")
    first = _imports(venv, "import newcomer", recorder_env, listener, workdir)
    assert first == {}


def _imports(venv, code, recorder_env, listener, workdir) -> dict:
    result = run([venv.python, "-c", code], env=recorder_env(), cwd=workdir)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    datagrams = listener.datagrams()
    listener.clear()
    return first_records(use_libs(datagrams))


def test_pth_imports_of_other_distributions_are_not_direct(
    new_venv, wheelhouse, recorder_env, listener, workdir
):
    """A distribution's own .pth that imports its module at start-up (like setuptools'
    distutils-precedence.pth) is not the user importing it: no process may report it as a
    direct use."""
    venv = new_venv()
    wheel = build_wheel(
        wheelhouse,
        "startup-hooker",
        "1.0",
        {"zz-startup-hooker.pth": "import startup_hooker\n", "startup_hooker.py": ""},
    )
    pip_install(venv, "--no-index", "--no-deps", wheel)
    result = run([venv.python, "-c", "pass"], env=recorder_env(), cwd=workdir)
    assert (result.returncode, result.stderr) == (0, "")
    levels = [lib.level for lib in use_libs(listener.datagrams())]
    assert "direct" not in levels, levels


# --------------------------------------------------------------------------- what is read

AUDIT_PREFIX = """
import os, sys
def _watch(event, args):
    if event == "open" and isinstance(args[0], str):
        path = args[0]
    elif event in ("os.scandir", "os.listdir") and args and isinstance(args[0], str):
        path = event + " " + args[0]
    else:
        return
    if WATCHED(path):
        os.write(2, ("READ " + path + "\\n").encode())
sys.addaudithook(_watch)
"""


def test_stdlib_only_process_never_reads_the_map(workload_venv, recorder_env, listener, workdir):
    """A process that imports no third-party library never reads the map (or scans anything),
    including at exit. sysconfig pulls in the generated ``_sysconfigdata_*`` module."""
    code = AUDIT_PREFIX.replace(
        "WATCHED(path)",
        '("popcon" in path or "dist-info" in path or path.endswith("site-packages"))',
    )
    code += "import json, sysconfig, email.message, asyncio, sqlite3\nsysconfig.get_paths()\n"
    result = run([workload_venv.python, "-c", code], env=recorder_env(), cwd=workdir)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert listener.settle() == []


# --------------------------------------------------------------------------- 1,000 distributions

MANY = 1000


@pytest.fixture(scope="module")
def crowded_venv(tmp_path_factory) -> Venv:
    """A venv with 1,000 installed distributions (laid out as pip leaves them), enabled."""
    root = tmp_path_factory.mktemp("crowded")
    venv = create_venv(root / "venv")
    for number in range(MANY):
        name = f"crowd-distribution-with-a-rather-long-name-{number:04d}"
        module = f"crowd_module_{number:04d}"
        write_dist_info(venv.site_packages, name, f"{number}.0.{number % 7}", {f"{module}.py": ""})
    home = root / "home"
    home.mkdir()
    result = popcon_cli("enable", "--python", venv.python, env=clean_environ(home))
    assert result.returncode == 0, result.stderr
    return venv


def test_thousand_distributions_many_imports_split_into_small_datagrams(
    crowded_venv, recorder_env, listener, workdir
):
    imported = range(0, MANY, 3)  # 334 distributions, far more than one datagram holds
    code = "".join(f"import crowd_module_{n:04d}\n" for n in imported)
    result = run([crowded_venv.python, "-c", code], env=recorder_env(), cwd=workdir)
    assert (result.returncode, result.stderr) == (0, "")
    datagrams = listener.datagrams()  # the parser enforces <= 1,400 bytes each
    assert len(datagrams) > 1
    assert sorted(d.seq for d in datagrams) == list(range(len(datagrams)))
    first = first_records(use_libs(datagrams))
    assert first == {
        f"crowd-distribution-with-a-rather-long-name-{n:04d}": Lib(
            f"crowd-distribution-with-a-rather-long-name-{n:04d}",
            f"{n}.0.{n % 7}",
            "direct",
            "env",
        )
        for n in imported
    }


def test_thousand_distributions_one_big_import_burst(crowded_venv, recorder_env, listener, workdir):
    """A user module that imports everything at once: all 1,000 in datagrams <= 1,400 bytes."""
    (workdir / "everything.py").write_text(
        "".join(f"import crowd_module_{n:04d}\n" for n in range(MANY))
    )
    result = run([crowded_venv.python, "-c", "import everything"], env=recorder_env(), cwd=workdir)
    assert (result.returncode, result.stderr) == (0, "")
    assert len(first_records(use_libs(listener.datagrams()))) == MANY


def test_thousand_distributions_inventory(crowded_venv, recorder_env, listener, workdir):
    env = recorder_env(POPCON_INVENTORY_INTERVAL="3600")
    result = run([crowded_venv.python, "-c", "import crowd_module_0001"], env=env, cwd=workdir)
    assert (result.returncode, result.stderr) == (0, "")
    inventories = [d for d in listener.datagrams() if d.kind == "inv"]
    assert inventories, "no inventory sent"
    assert len({d.inv_id for d in inventories}) == 1
    parts = inventories[0].parts
    assert sorted(d.part for d in inventories) == list(range(1, parts + 1))
    dists = [dist for d in inventories for dist in d.dists]
    assert len(dists) == len(set(dists)) == MANY
    assert ("crowd-distribution-with-a-rather-long-name-0999", "999.0.5") in dists
    listener.clear()

    # Within the interval, the next process sends no inventory again.
    result = run([crowded_venv.python, "-c", "import crowd_module_0002"], env=env, cwd=workdir)
    assert (result.returncode, result.stderr) == (0, "")
    kinds = [d.kind for d in listener.datagrams()]
    assert kinds == ["use"]


def test_fresh_map_means_no_scan_in_user_processes(crowded_venv, recorder_env, listener, workdir):
    """With the map fresh, a user process reads the map, not 1,000 distributions' metadata."""
    code = AUDIT_PREFIX.replace(
        "WATCHED(path)",
        '(".dist-info" in path or ".egg-info" in path or path.startswith("os.scandir"))',
    )
    code += "import crowd_module_0007, crowd_module_0500\n"
    result = run([crowded_venv.python, "-c", code], env=recorder_env(), cwd=workdir)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert len(first_records(use_libs(listener.datagrams()))) == 2


def test_user_processes_agree_with_a_fresh_enable(crowded_venv, home):
    result = popcon_cli(
        "status", "--json", "--python", crowded_venv.python, env=clean_environ(home)
    )
    assert result.returncode == 0
    assert '"fresh"' in result.stdout and f'"distributions": {MANY}' in result.stdout


def test_scripts_may_not_see_the_recorder(workload_venv, recorder_env, listener, workdir):
    """The recorder does not change what user code observes: a missing module still raises
    the same ModuleNotFoundError, and real modules are loaded by their own finders."""
    code = textwrap.dedent(
        """
        import sys
        try:
            import this_module_does_not_exist_anywhere
        except ModuleNotFoundError as error:
            assert error.name == "this_module_does_not_exist_anywhere"
        import yaml
        assert yaml.__spec__.loader is not None
        """
    )
    result = run([workload_venv.python, "-c", code], env=recorder_env(), cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert set(first_records(use_libs(listener.datagrams()))) == {"pyyaml"}


def test_import_system_tools_keep_working(workload_venv, recorder_env, listener, workdir):
    """The recorder watches site-packages through the path finder's own finders, still of
    type FileFinder: pkgutil still lists what is installed, and clearing the importer cache
    or invalidating caches neither breaks imports nor stops the recording."""
    code = textwrap.dedent(
        """
        import importlib, importlib.machinery, pkgutil, sys
        site = [p for p in sys.path if p.endswith("site-packages")][0]
        finder = sys.path_importer_cache[site]
        assert type(finder) is importlib.machinery.FileFinder, type(finder)
        listed = {module.name for module in pkgutil.iter_modules([site])}
        assert {"yaml", "requests", "pandas"} <= listed, sorted(listed)
        import yaml
        sys.path_importer_cache.clear()
        importlib.invalidate_caches()
        import requests
        print("ok")
        """
    )
    result = run([workload_venv.python, "-c", code], env=recorder_env(), cwd=workdir)
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")
    records = first_records(use_libs(listener.datagrams()))
    assert {"pyyaml", "requests", "urllib3"} <= set(records)
    assert records["requests"].level == "direct"
    assert records["urllib3"] == Lib(
        "urllib3", records["urllib3"].version, "transitive", "env", "requests"
    )
