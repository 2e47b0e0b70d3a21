"""The module map the core looks imports up in: distributions by top-level name, shared
namespace packages one level deeper, several site directories merged, and staleness."""

from __future__ import annotations

import os
from pathlib import Path

ENV, USER = "env", "user"


def _site_map(site: str, dists: list, names: dict, inventory_id: str = "0a1b2c3d") -> dict:
    return {"format": 3, "site": site, "mtime": 1, "dists": dists, "names": names,
            "inventory_id": inventory_id}  # fmt: skip


def test_lookup_by_top_level_name(recorder) -> None:
    core = recorder.core
    module_map = core.merge_site_maps(
        [
            (
                _site_map(
                    "/s", [("pyyaml", "6.0"), ("scikit-learn", "1.4")], {"yaml": 0, "sklearn": 1}
                ),
                ENV,
            )
        ]
    )
    assert core.dist_of(module_map, "yaml", "yaml") == ("pyyaml", "6.0", ENV)
    assert core.dist_of(module_map, "sklearn.linear_model", "sklearn") == (
        "scikit-learn",
        "1.4",
        ENV,
    )
    assert core.dist_of(module_map, "numpy", "numpy") is None
    assert not core.is_namespace(module_map, "yaml")
    assert not core.is_namespace(module_map, "numpy")


def test_a_shared_namespace_is_looked_up_one_level_deeper(recorder) -> None:
    """-1: a namespace several distributions share, with no owner of its own."""
    core = recorder.core
    dists = [("nsorg-alpha", "1.0"), ("nsorg-beta", "2.0")]
    names = {"nsorg": -1, "nsorg.alpha": 0, "nsorg.beta": 1}
    module_map = core.merge_site_maps([(_site_map("/s", dists, names), ENV)])
    assert core.is_namespace(module_map, "nsorg")
    assert core.dist_of(module_map, "nsorg.alpha", "nsorg") == ("nsorg-alpha", "1.0", ENV)
    assert core.dist_of(module_map, "nsorg.beta.deep.er", "nsorg") == ("nsorg-beta", "2.0", ENV)
    assert core.dist_of(module_map, "nsorg", "nsorg") is None
    assert core.dist_of(module_map, "nsorg.gamma", "nsorg") is None


def test_a_namespace_whose_bare_import_has_an_owner(recorder) -> None:
    """-2 - i: one level deeper, but ``import google`` itself belongs to distribution i."""
    core = recorder.core
    dists = [("protobuf", "5.0"), ("googleapis-common-protos", "1.6")]
    names = {"google": -2 - 0, "google.protobuf": 0, "google.api": 1}
    module_map = core.merge_site_maps([(_site_map("/s", dists, names), ENV)])
    assert core.is_namespace(module_map, "google")
    assert core.dist_of(module_map, "google", "google") == ("protobuf", "5.0", ENV)
    assert core.dist_of(module_map, "google.api.annotations_pb2", "google") == (
        "googleapis-common-protos", "1.6", ENV)  # fmt: skip
    assert core.dist_of(module_map, "google.type", "google") == ("protobuf", "5.0", ENV)


def test_merged_sites_the_first_on_sys_path_wins(recorder) -> None:
    core = recorder.core
    user = _site_map("/user", [("six", "1.17"), ("mine", "0.1")], {"six": 0, "mine": 1}, "11111111")
    env = _site_map("/env", [("six", "1.16"), ("yaml-ish", "1")], {"six": 0, "yamlish": 1})
    module_map = core.merge_site_maps([(user, USER), (env, ENV)])
    assert core.dist_of(module_map, "six", "six") == ("six", "1.17", USER)
    assert core.dist_of(module_map, "mine", "mine") == ("mine", "0.1", USER)
    assert core.dist_of(module_map, "yamlish", "yamlish") == ("yaml-ish", "1", ENV)
    assert module_map.inventories == [("0a1b2c3d", [("six", "1.16"), ("yaml-ish", "1")])]
    assert module_map.stamps == [("/env", 1), ("/user", 1)]


def test_merged_namespace_indexes_are_shifted(recorder) -> None:
    """-2 - i and second-level entries of a later site still name that site's distributions."""
    core = recorder.core
    first = _site_map("/a", [("zope-event", "5")], {"zope": -2 - 0, "zope.event": 0})
    second = _site_map("/b", [("other", "1"), ("zope-interface", "6")],
                       {"other": 0, "zope": -2 - 1, "zope.interface": 1})  # fmt: skip
    module_map = core.merge_site_maps([(first, ENV), (second, ENV)])
    assert core.dist_of(module_map, "zope", "zope") == ("zope-event", "5", ENV)
    assert core.dist_of(module_map, "zope.interface", "zope") == ("zope-interface", "6", ENV)
    assert core.dist_of(module_map, "other", "other") == ("other", "1", ENV)


def test_a_bare_namespace_does_not_hide_a_lower_site_s_owner(recorder) -> None:
    core = recorder.core
    higher = _site_map("/a", [("ns-extra", "1")], {"ns": -1, "ns.extra": 0})
    lower = _site_map("/b", [("ns", "2")], {"ns": 0})
    module_map = core.merge_site_maps([(higher, ENV), (lower, ENV)])
    assert core.dist_of(module_map, "ns", "ns") == ("ns", "2", ENV)
    assert not core.is_namespace(module_map, "ns")  # a regular package: Python imports that one
    assert core.dist_of(module_map, "ns.extra", "ns") == ("ns", "2", ENV)


def test_missing_sites_are_skipped(recorder) -> None:
    core = recorder.core
    only = _site_map("/a", [("six", "1")], {"six": 0})
    module_map = core.merge_site_maps([(None, USER), (only, ENV), (None, ENV)])
    assert core.dist_of(module_map, "six", "six") == ("six", "1", ENV)
    assert module_map.stamps == [("/a", 1)]


def test_staleness_is_one_stat_per_site(recorder, tmp_path: Path) -> None:
    core = recorder.core
    site = tmp_path / "site"
    site.mkdir()
    mtime = os.stat(site).st_mtime_ns
    module_map = core.module_map([], {}, [], [(str(site), mtime)])
    assert not core.is_stale(module_map)
    os.utime(site, ns=(mtime, mtime + 1_000_000))
    assert core.is_stale(module_map)
    gone = core.module_map([], {}, [], [(str(tmp_path / "gone"), mtime)])
    assert core.is_stale(gone)
