"""Why each distribution is installed, as the inventory says it: pip's ``REQUESTED`` marker and
the ``Requires-Dist`` lines of its metadata (``map.installed_reasons``), put in ``dist`` lines
(``rare.dist_lines``) within the protocol's limits (docs/protocol.md, "inv datagrams")."""

from __future__ import annotations

import site as site_module
from pathlib import Path

import pytest
from recorder_by_path import previewed


def _metadata(info: Path, *headers: str, body: str = "") -> None:
    text = (info / "METADATA").read_text() + "".join(h + "\n" for h in headers)
    (info / "METADATA").write_text(text + ("\n" + body if body else ""))


def test_the_requested_marker_and_the_requirements_an_extra_does_not_need(recorder, site) -> None:
    requests = site.add("requests", "2.32.3", {"requests/__init__.py": ""})
    (requests / "REQUESTED").write_text("")
    _metadata(
        requests,
        "Requires-Dist: charset_normalizer<4,>=2",
        "Requires-Dist: idna (<4,>=2.5)",
        "Requires-Dist: urllib3<3,>=1.21.1",
        "Requires-Dist: Certifi>=2017.4.17",
        'Requires-Dist: PySocks!=1.5.7,>=1.5.6; extra == "socks"',
        "Requires-Dist: chardet<6,>=3.0.2 ; extra=='use-chardet-on-py3'",
        'Requires-Dist: tomli; python_version < "3.11"',
        "Requires-Dist: requests[security]",  # itself, with an extra
        "Requires-Dist: ???",
        body="Requires-Dist: in-the-body-not-a-header\n",
    )
    site.add("urllib3", "2.2.3", {"urllib3/__init__.py": ""})
    reasons = recorder.map.installed_reasons(str(site.path))
    assert reasons == {
        "requests": ("r", ["certifi", "charset-normalizer", "idna", "tomli", "urllib3"]),
        "urllib3": ("-", []),
    }


def test_an_egg_info_says_its_requirements_but_not_whether_requested(recorder, site) -> None:
    info = site.path / "legacy_thing-0.1-py3.12.egg-info"
    info.mkdir(parents=True)
    (info / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: Legacy.Thing\nVersion: 0.1\n")
    (info / "requires.txt").write_text(
        "six>=1.0\n\n[:sys_platform == 'win32']\ncolorama\n\n[docs]\nsphinx\n\n"
        "[tests:python_version < '3.8']\nmock\n"
    )
    (site.path / "old_single-1.0.egg-info").write_text("Name: old_single\nVersion: 1.0\n")
    assert recorder.map.installed_reasons(str(site.path)) == {
        "legacy-thing": ("?", ["colorama", "six"]),
        "old-single": ("?", []),
    }


def test_a_missing_site_directory_says_nothing(recorder, tmp_path: Path) -> None:
    assert recorder.map.installed_reasons(str(tmp_path / "nowhere")) == {}


def test_dist_lines_name_only_installed_requirements(recorder) -> None:
    entries = [("certifi", "1"), ("pandas", "2"), ("requests", "3"), ("unknown-to-map", "4")]
    reasons = {
        "certifi": ("-", []),
        "pandas": ("r", ["numpy", "tzdata"]),  # neither installed
        "requests": ("r", ["certifi", "idna"]),
    }
    assert recorder.rare.dist_lines(entries, reasons, 1000) == [
        "dist certifi 1 - -",
        "dist pandas 2 r -",
        "dist requests 3 r certifi",
        "dist unknown-to-map 4",
    ]


def test_dist_lines_keep_at_most_max_requires_and_fit_the_budget(recorder) -> None:
    rare = recorder.rare
    names = [f"dependency-number-{i:03d}" for i in range(50)]
    entries = [("big", "1"), *[(name, "1") for name in names]]
    reasons = {"big": ("r", names)}
    line = rare.dist_lines(entries, reasons, 5000)[0]
    assert line.split(" ")[4].split(",") == names[: rare.MAX_REQUIRES]
    for budget in (300, 100, 20):
        line = rare.dist_lines(entries, reasons, budget)[0]
        kept = line.split(" ")[4]
        assert len(line) + 1 <= budget or kept == rare.REQUIRES_NONE
        assert kept == rare.REQUIRES_NONE or kept.split(",") == names[: kept.count(",") + 1]
    assert rare.dist_lines(entries, reasons, 20)[0] == "dist big 1 r -"


def _send(recorder, tmp_path: Path, dists: list[tuple[str, str]]) -> list[str]:
    preview = tmp_path / "preview"
    preview.unlink(missing_ok=True)
    config = recorder.core.config_of({"POPCON_ENV": "lab", "POPCON_PREVIEW": str(preview)})
    stamp = tmp_path / "stamps" / "inventory-0123456789ab-0a1b2c3d"
    recorder.rare.send_inventory(config, [("0a1b2c3d", dists)], "0a1b2c3d", str(stamp))
    datagrams = previewed(preview) if preview.exists() else []
    for datagram in datagrams:
        assert len(datagram) <= recorder.core.MAX_DATAGRAM
    return [line for d in datagrams for line in d.decode().splitlines() if line.startswith("dist ")]


def test_the_inventory_sent_says_why(recorder, site, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(site_module, "getsitepackages", lambda: [str(site.path)])
    pandas = site.add("pandas", "2.2.3", {"pandas/__init__.py": ""})
    (pandas / "REQUESTED").write_text("")
    _metadata(pandas, "Requires-Dist: numpy>=1.26", "Requires-Dist: tzdata>=2022.7")
    site.add("numpy", "2.1.3", {"numpy/__init__.py": ""})
    dists = [("numpy", "2.1.3"), ("pandas", "2.2.3"), ("gone", "1")]
    assert _send(recorder, tmp_path, dists) == [
        "dist gone 1",  # in the map, no longer in the directory
        "dist numpy 2.1.3 - -",
        "dist pandas 2.2.3 r numpy",
    ]


@pytest.mark.parametrize("count", [900])
def test_an_inventory_too_long_with_reasons_is_sent_without(
    recorder, site, tmp_path, monkeypatch, count
) -> None:
    """Lines with reasons that need more than MAX_INVENTORY_PARTS parts: the plain lines, which
    fit, are sent instead."""
    monkeypatch.setattr(site_module, "getsitepackages", lambda: [str(site.path)])
    names = [f"package-with-a-long-name-{i:04d}" for i in range(count)]
    for name in names:
        info = site.path / f"{name}-1.dist-info"
        info.mkdir(parents=True)
        requires = "".join(f"Requires-Dist: {other}\n" for other in names[:20])
        (info / "METADATA").write_text(f"Name: {name}\nVersion: 1\n{requires}")
    dists = [(name, "1") for name in names]
    with_reasons = recorder.rare.dist_lines(dists, recorder.rare.installed_reasons(), 1300)
    assert len(recorder.core.chunks(with_reasons, 1300)) > recorder.rare.MAX_INVENTORY_PARTS
    assert _send(recorder, tmp_path, dists) == [f"dist {name} 1" for name in names]
