"""What the recorder reads from the environment (docs/recording.md): the collector's address,
the labels, the environment label, the opt-out, and the other ``POPCON_*`` settings."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("udp://127.0.0.1:8137", ("udp", "127.0.0.1", 8137)),
        ("statsd://stats.example.org:8125", ("statsd", "stats.example.org", 8125)),
        ("udp://[::1]:9000", ("udp", "::1", 9000)),
        ("udp://[fd00::a:b]:1", ("udp", "fd00::a:b", 1)),
        ("udp://host:65535", ("udp", "host", 65535)),
        ("udp://a:b:7", ("udp", "a:b", 7)),  # the last colon separates the port
    ],
)
def test_collector_addresses(recorder, url: str, expected: tuple) -> None:
    assert recorder.core.parse_collector(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "",
        "127.0.0.1:8137",
        "tcp://127.0.0.1:8137",
        "UDP://127.0.0.1:8137",
        "udp://127.0.0.1",
        "udp://127.0.0.1:",
        "udp://127.0.0.1:0",
        "udp://127.0.0.1:65536",
        "udp://127.0.0.1:-1",
        "udp://127.0.0.1:80a",
        "udp://:8137",
        "udp://[::1]",
        "udp://[::1]8137",
        "udp://[]:8137",
    ],
)
def test_bad_collector_addresses_turn_sending_off(recorder, url: str) -> None:
    assert recorder.core.parse_collector(url) == (None, "", 0)


def test_default_collector(recorder) -> None:
    core = recorder.core
    assert core.DEFAULT_COLLECTOR == "udp://127.0.0.1:8137"
    for environ in ({}, {"POPCON_COLLECTOR": ""}):
        config = core.config_of(environ)
        assert (config.mode, config.host, config.port) == ("udp", "127.0.0.1", 8137)


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", True), ("10.0.0.255", True), ("::1", True), ("256.0.0.1", False),
     ("1.2.3", False), ("collector", False), ("collector.example.org", False), ("", False)],
)  # fmt: skip
def test_addresses_need_no_look_up(recorder, host: str, expected: bool) -> None:
    assert recorder.core.is_address(host) is expected


def test_other_settings(recorder) -> None:
    config = recorder.core.config_of(
        {"POPCON_KEY": "é", "POPCON_DEBUG": "0", "POPCON_INVENTORY_INTERVAL": "soon"}
    )
    assert (config.key, config.debug, config.inventory_interval) == ("é".encode(), False, 3600.0)
    config = recorder.core.config_of({"POPCON_DEBUG": "yes", "POPCON_INVENTORY_INTERVAL": "2.5"})
    assert (config.key, config.debug, config.inventory_interval) == (None, True, 2.5)


# --------------------------------------------------------------------------- labels


def test_labels_in_order(recorder) -> None:
    text = " hub=jupyter.example.org , team=ml_ops,x=A-Z_0.9:/@+ ,,"
    assert recorder.rare.parse_labels(text) == (
        [("hub", "jupyter.example.org"), ("team", "ml_ops"), ("x", "A-Z_0.9:/@+")],
        [],
    )


@pytest.mark.parametrize(
    "item",
    ["novalue", "=v", "k=", "Key=v", "1k=v", "k-y=v", "k y=v", "k=v w", "k=a=b", "k=ü", "k=v;",
     "k" * 33 + "=v", "k=" + "v" * 65],
)  # fmt: skip
def test_bad_labels_are_rejected_whole(recorder, item: str) -> None:
    assert recorder.rare.parse_labels(f"good=1,{item}") == ([("good", "1")], [item])


def test_label_limits_are_inclusive(recorder) -> None:
    rare = recorder.rare
    key, value = "k" * rare.MAX_LABEL_KEY, "v" * rare.MAX_LABEL_VALUE
    assert (rare.MAX_LABEL_KEY, rare.MAX_LABEL_VALUE) == (32, 64)
    assert rare.parse_labels(f"{key}={value},_x=1") == ([(key, value), ("_x", "1")], [])


def test_a_duplicate_key_keeps_the_first(recorder) -> None:
    assert recorder.rare.parse_labels("a=1,b=2,a=3") == ([("a", "1"), ("b", "2")], ["a=3"])


def test_at_most_eight_labels(recorder) -> None:
    text = ",".join(f"k{i}=v{i}" for i in range(10))
    valid, rejected = recorder.rare.parse_labels(text)
    assert recorder.rare.MAX_LABELS == 8
    assert valid == [(f"k{i}", f"v{i}") for i in range(8)]
    assert rejected == ["k8=v8", "k9=v9"]


# --------------------------------------------------------------------------- environment label


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"POPCON_ENV": "team-a", "JUPYTER_IMAGE_SPEC": "img:1"}, "team-a"),
        ({"JUPYTER_IMAGE_SPEC": "img:1", "JUPYTER_IMAGE": "img:2"}, "img:1"),
        ({"JUPYTER_IMAGE": "img:2"}, "img:2"),
        ({"POPCON_ENV": "  spaced label \t"}, "spaced label"),
        ({"POPCON_ENV": "a\nb\x00c\x7fd"}, "abcd"),
        ({"POPCON_ENV": "\n\t "}, "unknown"),
        ({"POPCON_ENV": "é" * 250}, "é" * 200),
    ],
)
def test_environment_label(recorder, environ: dict, expected: str) -> None:
    assert recorder.core.environment_label(environ) == expected


# --------------------------------------------------------------------------- opting out


def test_opting_out(recorder, tmp_path: Path) -> None:
    opted_out = recorder.hook.opted_out
    assert not opted_out({})
    assert not opted_out({"POPCON_DISABLE": "0"})
    assert opted_out({"POPCON_DISABLE": "1"})
    assert not opted_out({"POPCON_DISABLE": "1", "POPCON_PREVIEW": "/tmp/file"})
    home = tmp_path / "home"
    (home / ".config" / "popcon").mkdir(parents=True)
    assert not opted_out({"HOME": str(home)})
    (home / ".config" / "popcon" / "disable").write_text("")
    assert opted_out({"HOME": str(home)})
    assert not opted_out({"HOME": str(home), "XDG_CONFIG_HOME": str(tmp_path / "elsewhere")})
    assert opted_out({"HOME": "/nowhere", "XDG_CONFIG_HOME": str(home / ".config")})
