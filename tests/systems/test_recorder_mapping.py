"""Module -> distribution mapping on real layouts: real PyPI packages whose module names differ
from their distribution names, shared namespace packages, single-file modules and extensions,
and layouts built here (editable installs, no RECORD, egg-info, one module in two
distributions, the user site)."""

from __future__ import annotations

import json

import pytest
from recorder_testlib import (
    Lib,
    build_wheel,
    clean_environ,
    first_records,
    pip_install,
    popcon_cli,
    run,
    use_libs,
    with_oracle,
)

pytestmark = pytest.mark.slow

# (code, {distribution: (level, importer)} that must be among the records)
REAL_LAYOUTS = {
    "sklearn": ("import sklearn", {"scikit-learn": ("direct", None)}),
    "sklearn-submodule": (
        "from sklearn.linear_model import LinearRegression",
        {"scikit-learn": ("direct", None), "scipy": ("transitive", "scikit-learn")},
    ),
    "bs4": (
        "from bs4 import BeautifulSoup",
        {"beautifulsoup4": ("direct", None), "soupsieve": ("transitive", "beautifulsoup4")},
    ),
    "yaml": ("import yaml", {"pyyaml": ("direct", None)}),
    "PIL": ("from PIL import Image", {"pillow": ("direct", None)}),
    "google.protobuf": ("import google.protobuf.message", {"protobuf": ("direct", None)}),
    "google.api": (
        "from google.api import annotations_pb2",
        {
            "googleapis-common-protos": ("direct", None),
            "protobuf": ("transitive", "googleapis-common-protos"),
        },
    ),
    "google-both": (
        "from google.type import date_pb2\nfrom google.protobuf import json_format",
        {"googleapis-common-protos": ("direct", None), "protobuf": ("upgrade-or-direct", None)},
    ),
    "six-single-file": ("import six", {"six": ("direct", None)}),
    "typing_extensions-single-file": (
        "import typing_extensions",
        {"typing-extensions": ("direct", None)},
    ),
    "ujson-compiled-single-file": ("import ujson", {"ujson": ("direct", None)}),
    "_cffi_backend-compiled-single-file": ("import _cffi_backend", {"cffi": ("direct", None)}),
    "importlib-import_module": (
        "import importlib\nimportlib.import_module('yaml')",
        {"pyyaml": ("direct", None)},
    ),
}


@pytest.mark.parametrize("case", sorted(REAL_LAYOUTS))
def test_real_layouts(
    case, workload_venv, workload_versions, recorder_env, run_script, listener, workdir
):
    code, expected = REAL_LAYOUTS[case]
    oracle = workdir / "loaded.json"
    result = run_script(workload_venv, with_oracle(code, oracle), recorder_env())
    assert (result.returncode, result.stderr) == (0, "")
    libs = use_libs(listener.datagrams())
    first = first_records(libs)
    loaded = json.loads(oracle.read_text())
    assert set(first) == set(loaded), "reported distributions differ from those loaded"
    for name, (level, importer) in expected.items():
        if level == "upgrade-or-direct":
            levels = [lib.level for lib in libs if lib.name == name]
            assert levels in (["direct"], ["transitive", "upgrade"]), levels
            continue
        assert first[name] == Lib(name, workload_versions[name], level, "env", importer)
    for lib in first.values():
        assert lib.version == workload_versions[lib.name]


# --------------------------------------------------------------------------- built layouts


def _run_imports(venv, code, recorder_env, listener, workdir) -> dict:
    result = run([venv.python, "-c", code], env=recorder_env(), cwd=workdir)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    first = first_records(use_libs(listener.datagrams()))
    listener.clear()
    return first


def test_module_in_two_distributions_last_installed_wins(
    new_venv, wheelhouse, recorder_env, listener, workdir
):
    venv = new_venv()
    first_wheel = build_wheel(wheelhouse, "dup-mod-a", "1.0", {"dupmod.py": "A = 1\n"})
    second_wheel = build_wheel(wheelhouse, "dup-mod-b", "2.0", {"dupmod.py": "B = 1\n"})
    pip_install(venv, "--no-index", "--no-deps", first_wheel)
    pip_install(venv, "--no-index", "--no-deps", second_wheel)
    first = _run_imports(venv, "import dupmod; dupmod.B", recorder_env, listener, workdir)
    assert first == {"dup-mod-b": Lib("dup-mod-b", "2.0", "direct", "env")}

    pip_install(venv, "--no-index", "--no-deps", "--force-reinstall", first_wheel)
    first = _run_imports(venv, "import dupmod; dupmod.A", recorder_env, listener, workdir)
    assert first == {"dup-mod-a": Lib("dup-mod-a", "1.0", "direct", "env")}


def test_distribution_without_record(new_venv, wheelhouse, recorder_env, listener, workdir):
    venv = new_venv(enable=False)
    wheels = [
        build_wheel(
            wheelhouse,
            "No-Record.Dist",
            "0.3",
            {"norecord_mod/__init__.py": "", "norecord_mod/sub.py": ""},
            top_level=["norecord_mod"],
        ),
        build_wheel(wheelhouse, "bare_guess", "0.4", {"bare_guess/__init__.py": ""}),
    ]
    pip_install(venv, "--no-index", "--no-deps", *wheels)
    for info in venv.site_packages.glob("*.dist-info"):
        (info / "RECORD").unlink()
    result = popcon_cli("enable", "--python", venv.python, env=recorder_env())
    assert result.returncode == 0, result.stderr
    first = _run_imports(
        venv, "import norecord_mod.sub, bare_guess", recorder_env, listener, workdir
    )
    assert first == {
        "no-record-dist": Lib("no-record-dist", "0.3", "direct", "env"),
        "bare-guess": Lib("bare-guess", "0.4", "direct", "env"),
    }


def test_egg_info_with_installed_files(new_venv, recorder_env, listener, workdir):
    """A distribution installed the setup.py way: egg-info with installed-files.txt."""
    venv = new_venv(enable=False)
    site = venv.site_packages
    (site / "legacy_code").mkdir()
    (site / "legacy_code" / "__init__.py").write_text("import legacy_code.inner\n")
    (site / "legacy_code" / "inner.py").write_text("")
    info = site / "Legacy_Thing-2.0-py3.11.egg-info"
    info.mkdir()
    (info / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: Legacy_Thing\nVersion: 2.0\n")
    (info / "installed-files.txt").write_text(
        "../legacy_code/__init__.py\n../legacy_code/inner.py\nPKG-INFO\ninstalled-files.txt\n"
    )
    assert popcon_cli("enable", "--python", venv.python, env=recorder_env()).returncode == 0
    first = _run_imports(venv, "import legacy_code", recorder_env, listener, workdir)
    assert first == {"legacy-thing": Lib("legacy-thing", "2.0", "direct", "env")}


def test_namespace_package_shared_by_tiny_distributions(
    new_venv, wheelhouse, recorder_env, listener, workdir
):
    venv = new_venv()
    wheels = [
        build_wheel(wheelhouse, "nsorg-alpha", "1.0", {"nsorg/alpha/__init__.py": ""}),
        build_wheel(
            wheelhouse, "nsorg-beta", "2.0", {"nsorg/beta/__init__.py": "import nsorg.alpha\n"}
        ),
    ]
    pip_install(venv, "--no-index", "--no-deps", *wheels)
    assert _run_imports(venv, "import nsorg.alpha", recorder_env, listener, workdir) == {
        "nsorg-alpha": Lib("nsorg-alpha", "1.0", "direct", "env")
    }
    assert _run_imports(venv, "import nsorg.beta", recorder_env, listener, workdir) == {
        "nsorg-beta": Lib("nsorg-beta", "2.0", "direct", "env"),
        "nsorg-alpha": Lib("nsorg-alpha", "1.0", "transitive", "env", "nsorg-beta"),
    }


def test_single_file_module_with_an_unnormalised_name(
    new_venv, wheelhouse, recorder_env, listener, workdir
):
    venv = new_venv()
    wheel = build_wheel(wheelhouse, "Odd_Name.For-Module", "1.0rc1", {"oddmod.py": ""})
    pip_install(venv, "--no-index", "--no-deps", wheel)
    assert _run_imports(venv, "import oddmod", recorder_env, listener, workdir) == {
        "odd-name-for-module": Lib("odd-name-for-module", "1.0rc1", "direct", "env")
    }


def test_editable_installs(new_venv, tmp_path, recorder_env, listener, workdir):
    """``pip install -e`` of two real projects: a src layout (a .pth with a path) and a flat
    layout (setuptools' editable finder)."""
    venv = new_venv()
    src_project = tmp_path / "src-project"
    (src_project / "src" / "edsrc").mkdir(parents=True)
    (src_project / "src" / "edsrc" / "__init__.py").write_text("import edflat\n")
    (src_project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "Ed-Src-Project"\nversion = "1.2"\n'
    )
    flat_project = tmp_path / "flat-project"
    (flat_project / "edflat").mkdir(parents=True)
    (flat_project / "edflat" / "__init__.py").write_text("")
    (flat_project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "ed_flat_project"\nversion = "3.4"\n'
        '[tool.setuptools]\npackages = ["edflat"]\n'
    )
    pip_install(venv, "-e", src_project, "-e", flat_project)
    assert any(venv.site_packages.glob("__editable___*finder.py")), "no finder-based install"
    first = _run_imports(venv, "import edsrc", recorder_env, listener, workdir)
    assert first == {
        "ed-src-project": Lib("ed-src-project", "1.2", "direct", "env"),
        "ed-flat-project": Lib("ed-flat-project", "3.4", "transitive", "env", "ed-src-project"),
    }


def test_user_site_origin(tmp_path, home, wheelhouse, recorder_env, listener, workdir):
    """A venv that sees the user site: what ``pip install --user`` put there has origin user."""
    from recorder_testlib import create_venv

    venv = create_venv(tmp_path / "venv", system_site_packages=True)
    user_base = home / ".local"
    assert popcon_cli("enable", "--python", venv.python, env=clean_environ(home)).returncode == 0
    env_wheel = build_wheel(wheelhouse, "in-the-env", "1.0", {"in_the_env.py": ""})
    user_wheel = build_wheel(
        wheelhouse, "mine-only", "0.1", {"mine_only.py": "import in_the_env\n"}
    )
    pip_install(venv, "--no-index", "--no-deps", env_wheel)
    pip_install(
        venv,
        "--no-index",
        "--no-deps",
        "--user",
        user_wheel,
        env_extra={"PYTHONUSERBASE": str(user_base), "HOME": str(home)},
    )
    assert list(user_base.glob("lib/python*/site-packages/mine_only.py"))
    first = _run_imports(venv, "import mine_only", recorder_env, listener, workdir)
    # The base interpreter's own .pth files may import things at start-up (see
    # test_pth_imports_of_other_distributions_are_not_direct); only ours matter here.
    first = {name: lib for name, lib in first.items() if name in ("mine-only", "in-the-env")}
    assert first == {
        "mine-only": Lib("mine-only", "0.1", "direct", "user"),
        "in-the-env": Lib("in-the-env", "1.0", "transitive", "env", "mine-only"),
    }


def test_modules_on_pythonpath_are_user_code(
    workload_venv, recorder_env, listener, workdir, tmp_path
):
    """A module found through PYTHONPATH belongs to no distribution: never reported, and what
    it imports is direct."""
    elsewhere = tmp_path / "on-path"
    elsewhere.mkdir()
    (elsewhere / "team_tools_abc.py").write_text("import yaml\n")
    env = recorder_env(PYTHONPATH=str(elsewhere))
    result = run([workload_venv.python, "-c", "import team_tools_abc"], env=env, cwd=workdir)
    assert (result.returncode, result.stderr) == (0, "")
    datagrams = listener.datagrams()
    assert set(first_records(use_libs(datagrams))) == {"pyyaml"}
    assert first_records(use_libs(datagrams))["pyyaml"].level == "direct"
    assert not any(b"team_tools" in d.raw for d in datagrams)
