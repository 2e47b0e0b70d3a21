"""The map builder on fake site directories (dist-info with and without RECORD, egg-info,
namespaces, editable installs), and the marshal cache the core keeps of each site's map."""

from __future__ import annotations

import marshal
import os
from pathlib import Path

import pytest


def _lookup(recorder, site_path: Path, fullname: str):
    module_map = recorder.core.merge_site_maps([(recorder.core.site_map(str(site_path)), "env")])
    return recorder.core.dist_of(module_map, fullname, fullname.partition(".")[0])


def test_record_lists_packages_modules_and_extensions(recorder, site) -> None:
    site.add("PyYAML", "6.0.1", {"yaml/__init__.py": "", "_yaml/__init__.py": ""})
    site.add("six", "1.16.0", {"six.py": "", "__pycache__/six.cpython-311.pyc": ""})
    site.add("ujson", "5.9", {"ujson.cpython-311-x86_64-linux-gnu.so": ""})
    site.add("Odd_Name.For-Module", "1.0rc1", {"oddmod.py": "", "odd-data/x.txt": ""})
    dists, names = recorder.map.build_site_map(str(site.path))
    assert dists == [("odd-name-for-module", "1.0rc1"), ("pyyaml", "6.0.1"), ("six", "1.16.0"),
                     ("ujson", "5.9")]  # fmt: skip
    assert names == {"oddmod": 0, "yaml": 1, "_yaml": 1, "six": 2, "ujson": 3}


def test_a_csv_quoted_record_line(recorder, site) -> None:
    info = site.add("comma", "1", {"comma_pkg/__init__.py": ""})
    (info / "RECORD").write_text('"comma_pkg/a,b.py",sha256=x,1\ncomma_pkg/__init__.py,,\n')
    assert recorder.map.build_site_map(str(site.path))[1] == {"comma_pkg": 0}


def test_without_record_top_level_txt_then_the_name(recorder, site) -> None:
    site.add("No-Record.Dist", "0.3", {"norecord_mod/__init__.py": ""}, record=False,
             top_level=["norecord_mod"])  # fmt: skip
    site.add("bare_guess", "0.4", {"bare_guess/__init__.py": ""}, record=False)
    site.add("nothing-here", "1", {}, record=False)
    dists, names = recorder.map.build_site_map(str(site.path))
    # in the order of the directory's sorted entries: "No_Record.Dist-0.3.dist-info" first
    assert dists == [("no-record-dist", "0.3"), ("bare-guess", "0.4"), ("nothing-here", "1")]
    assert names == {"norecord_mod": 0, "bare_guess": 1}


def test_egg_info_with_installed_files_and_a_single_file_egg_info(recorder, site) -> None:
    (site.path / "legacy_code").mkdir()
    (site.path / "legacy_code" / "__init__.py").write_text("")
    info = site.path / "Legacy_Thing-2.0-py3.11.egg-info"
    info.mkdir()
    (info / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: Legacy_Thing\nVersion: 2.0\n")
    (info / "installed-files.txt").write_text("../legacy_code/__init__.py\nPKG-INFO\n")
    (site.path / "old_single.py").write_text("")
    (site.path / "old_single-0.9.egg-info").write_text("Name: old_single\nVersion: 0.9\n\n")
    dists, names = recorder.map.build_site_map(str(site.path))
    assert dists == [("legacy-thing", "2.0"), ("old-single", "0.9")]
    assert names == {"legacy_code": 0, "old_single": 1}


def test_bad_names_are_skipped_and_bad_versions_become_a_dash(recorder, site) -> None:
    site.add("-bad-", "1", {"bad_mod.py": ""})
    site.add("popcon", "0.1", {"popcon/__init__.py": ""})  # never recorded
    site.add("spaced", "1 0", {"spaced.py": ""})
    dists, names = recorder.map.build_site_map(str(site.path))
    assert dists == [("spaced", "-")]
    assert names == {"spaced": 0}


def test_shared_namespace_without_owner(recorder, site) -> None:
    site.add("nsorg-alpha", "1.0", {"nsorg/alpha/__init__.py": ""})
    site.add("nsorg-beta", "2.0", {"nsorg/beta/__init__.py": "", "nsorg/gamma.py": ""})
    dists, names = recorder.map.build_site_map(str(site.path))
    assert dists == [("nsorg-alpha", "1.0"), ("nsorg-beta", "2.0")]
    assert names == {"nsorg": -1, "nsorg.alpha": 0, "nsorg.beta": 1, "nsorg.gamma": 1}
    assert _lookup(recorder, site.path, "nsorg.gamma") == ("nsorg-beta", "2.0", "env")


def test_shared_namespace_whose_owner_was_installed_last(recorder, site) -> None:
    site.add("google-extra", "1", {"google/extra/__init__.py": ""})
    site.add("protobuf", "5.0", {"google/__init__.py": "", "google/protobuf/__init__.py": ""})
    names = recorder.map.build_site_map(str(site.path))[1]
    assert names["google"] == -2 - 1  # protobuf's index
    assert _lookup(recorder, site.path, "google") == ("protobuf", "5.0", "env")
    assert _lookup(recorder, site.path, "google.extra") == ("google-extra", "1", "env")


def test_a_module_in_two_distributions_last_installed_wins(recorder, site) -> None:
    first = site.add("dup-mod-a", "1.0", {"dupmod.py": ""})
    site.add("dup-mod-b", "2.0", {"dupmod.py": ""})
    assert _lookup(recorder, site.path, "dupmod") == ("dup-mod-b", "2.0", "env")
    os.utime(first, (1_800_000_000, 1_800_000_000))  # reinstalled
    os.utime(site.path, (1_800_000_000, 1_800_000_000))
    assert _lookup(recorder, site.path, "dupmod") == ("dup-mod-a", "1.0", "env")


def test_editable_installs(recorder, site, tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "edsrc").mkdir(parents=True)
    (source / "edsrc" / "__init__.py").write_text("")
    (source / "test_helpers.py").write_text("")  # skipped: tests, setup, private names
    (source / "tool.py").write_text("")
    site.add("Ed-Src-Project", "1.2", {"__editable__.ed_src.pth": f"{source}\n"})
    finder = site.path / "__editable___ed_flat_finder.py"
    finder.write_text("MAPPING = {'edflat': '/somewhere/edflat', 'edflat2.sub': '/x'}\n")
    pth = "import __editable___ed_flat_finder; __editable___ed_flat_finder.install()\n"
    site.add("ed_flat_project", "3.4", {"__editable__.ed_flat.pth": pth})
    dists, names = recorder.map.build_site_map(str(site.path))
    assert dists == [("ed-src-project", "1.2"), ("ed-flat-project", "3.4")]
    assert names == {"edsrc": 0, "tool": 0, "edflat": 1, "edflat2": 1}


# --------------------------------------------------------------------------- the cache


def test_the_cache_beside_the_site_is_written_and_then_read(recorder, site) -> None:
    site.add("six", "1.16.0", {"six.py": ""})
    (site.path / "popcon-cache").mkdir()
    built = recorder.core.site_map(str(site.path))
    cache = site.path / "popcon-cache" / "map.marshal"
    stored = marshal.loads(cache.read_bytes())
    assert stored == built
    assert stored["format"] == recorder.core.MAP_FORMAT
    assert stored["mtime"] == os.stat(site.path).st_mtime_ns
    assert stored["dists"] == [("six", "1.16.0")] and len(stored["inventory_id"]) == 8
    stored["dists"] = [("cached", "9")]  # a fresh cache is read, not rebuilt
    cache.write_bytes(marshal.dumps(stored))
    assert recorder.core.site_map(str(site.path))["dists"] == [("cached", "9")]


@pytest.mark.parametrize("change", ["site changed", "other format", "other site", "garbage"])
def test_a_cache_that_does_not_fit_is_rebuilt(recorder, site, change: str) -> None:
    site.add("six", "1.16.0", {"six.py": ""})
    (site.path / "popcon-cache").mkdir()
    cache = site.path / "popcon-cache" / "map.marshal"
    stored = recorder.core.site_map(str(site.path))
    stored["dists"] = [("cached", "9")]
    if change == "other format":
        stored["format"] += 1
    elif change == "other site":
        stored["site"] += "-elsewhere"
    cache.write_bytes(b"\x00garbage" if change == "garbage" else marshal.dumps(stored))
    if change == "site changed":
        mtime = os.stat(site.path).st_mtime_ns
        os.utime(site.path, ns=(mtime, mtime + 1_000_000_000))
    assert recorder.core.site_map(str(site.path))["dists"] == [("six", "1.16.0")]
    assert marshal.loads(cache.read_bytes())["dists"] == [("six", "1.16.0")]


def test_without_a_cache_beside_the_user_s_cache_is_used(recorder, site, tmp_path: Path) -> None:
    site.add("six", "1.16.0", {"six.py": ""})
    recorder.core.site_map(str(site.path))
    key = recorder.core.path_key(str(site.path))
    assert [p.name for p in (tmp_path / "user-cache").iterdir()] == [f"map-{key}.marshal"]
    assert not (site.path / "popcon-cache").exists()


def test_the_user_s_cache_directory(recorder, monkeypatch) -> None:
    core = recorder.core
    monkeypatch.delenv("POPCON_CACHE_DIR")
    monkeypatch.setenv("HOME", "/home/ada")
    assert core.cache_directory() == "/home/ada/.cache/popcon"
    monkeypatch.setenv("XDG_CACHE_HOME", "/var/cache/ada")
    assert core.cache_directory() == "/var/cache/ada/popcon"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", "")
    assert core.cache_directory() is None
    assert list(core.site_cache_files("/nonexistent/site")) == []


def test_status_and_enable_s_view_of_the_caches(recorder, site, tmp_path: Path) -> None:
    mapper = recorder.map
    site.add("six", "1.16.0", {"six.py": ""})
    (site.path / "popcon-cache").mkdir()
    assert mapper.map_status(str(site.path)) == {"site": str(site.path), "state": "not built",
                                                 "cache": None}  # fmt: skip
    cache = str(site.path / "popcon-cache" / "map.marshal")
    assert mapper.build_caches([str(site.path)]) == [
        {"site": str(site.path), "state": "fresh", "cache": cache, "distributions": 1}
    ]
    mtime = os.stat(site.path).st_mtime_ns
    os.utime(site.path, ns=(mtime, mtime + 1_000_000_000))
    assert mapper.map_status(str(site.path))["state"] == "stale"
    missing = str(tmp_path / "missing")
    assert mapper.map_status(missing)["state"] == "missing site directory"


def test_canonical_names_and_the_protocol_s_rules(recorder) -> None:
    mapper = recorder.map
    assert mapper.canonical_name(" Scikit_Learn ") == "scikit-learn"
    assert mapper.canonical_name("A__B--C..d") == "a-b-c-d"
    assert (mapper.MAX_NAME, mapper.MAX_VERSION) == (100, 64)
    assert mapper.valid_name("a" * 100) and not mapper.valid_name("a" * 101)
    assert (
        not mapper.valid_name("") and not mapper.valid_name("-a") and not mapper.valid_name("a_b")
    )
    assert mapper.valid_version("1.0+local!x~") and mapper.valid_version("v" * 64)
    assert not mapper.valid_version("v" * 65) and not mapper.valid_version("1 0")
    assert not mapper.valid_version("") and not mapper.valid_version("1.0é")
