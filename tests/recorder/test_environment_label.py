"""The default environment label (docs/recording.md#privacy): no path and no user name, however
the process was started, the same for every user and process of one environment."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys

import pytest
from recorder_by_path import RECORDER_DIR

LABEL = re.compile(r"env:[0-9a-f]{12}")


def blake2b_label(prefix: str) -> str:
    return "env:" + hashlib.blake2b(prefix.encode(), digest_size=6).hexdigest()


@pytest.mark.parametrize(
    ("prefix", "environ", "users"),
    [
        (
            "/home/alicewu/venv",
            {"HOME": "/home/bobsmith", "USER": "bobsmith"},
            ["alicewu", "bobsmith"],
        ),
        ("/home/alicewu/venv", {}, ["alicewu"]),
        ("/home/alicewu/venv", {"HOME": "//home/alicewu"}, ["alicewu"]),
        ("/home/alicewu/venv", {"HOME": "/home/alicewu/"}, ["alicewu"]),
        ("/home/alicewu", {"HOME": "/home/alicewu"}, ["alicewu"]),
        ("/home/alicewu/venv", {"HOME": "/"}, ["alicewu"]),
        ("/scratch/alicewu/envs/torch", {"HOME": "/home/alicewu"}, ["alicewu"]),
        ("/project/alicewu/conda", {"HOME": "/home/alicewu"}, ["alicewu"]),
        ("/opt/conda/envs/alicewu-gpu", {"HOME": "/home/alicewu"}, ["alicewu"]),
    ],
    ids=[
        "another-users-venv",
        "home-unset",
        "home-with-double-slash",
        "home-with-trailing-slash",
        "prefix-is-home",
        "home-is-root",
        "scratch",
        "project",
        "user-in-the-last-component",
    ],
)
def test_the_default_label_names_no_path_and_no_user(
    recorder, monkeypatch, prefix: str, environ: dict, users: list
) -> None:
    monkeypatch.setattr(sys, "prefix", prefix)
    label = recorder.core.environment_label(environ)
    assert LABEL.fullmatch(label), label
    assert "/" not in label and "~" not in label
    for user in users:
        assert user not in label
    assert label == blake2b_label(prefix)


def test_every_user_of_an_environment_sends_the_same_label(recorder, monkeypatch) -> None:
    monkeypatch.setattr(sys, "prefix", "/srv/envs/shared")
    environs = [{}, {"HOME": "/home/alicewu"}, {"HOME": "/home/bobsmith", "USER": "bobsmith"}]
    labels = {recorder.core.environment_label(environ) for environ in environs}
    assert labels == {blake2b_label("/srv/envs/shared")}
    monkeypatch.setattr(sys, "prefix", "/srv/envs/other")
    assert recorder.core.environment_label({}) not in labels


def test_a_given_label_wins_over_the_hash(recorder, monkeypatch) -> None:
    monkeypatch.setattr(sys, "prefix", "/home/alicewu/venv")
    core = recorder.core
    assert core.environment_label({"JUPYTER_IMAGE": "img:2"}) == "img:2"
    assert core.environment_label({"POPCON_ENV": "team analysis"}) == "team analysis"
    assert core.environment_label({"POPCON_ENV": ""}) == blake2b_label("/home/alicewu/venv")
    assert core.config_of({}).header.splitlines()[0] == "env " + blake2b_label("/home/alicewu/venv")


def test_a_long_or_undecodable_prefix_gives_a_short_label(recorder, monkeypatch) -> None:
    core = recorder.core
    monkeypatch.setattr(sys, "prefix", "/opt/" + "x" * 300)
    assert LABEL.fullmatch(core.environment_label({}))
    monkeypatch.setattr(sys, "prefix", "/home/\udcffalicewu/venv")  # a byte not UTF-8
    label = core.environment_label({})
    assert label == "env:" + hashlib.blake2b(b"/home/\xffalicewu/venv", digest_size=6).hexdigest()


def test_without_the_built_in_blake2_hashlib_gives_one(recorder, monkeypatch) -> None:
    monkeypatch.setattr(sys, "prefix", "/home/alicewu/venv")
    monkeypatch.setitem(sys.modules, "_blake2", None)  # its import raises ImportError
    expected = "env:" + hashlib.sha256(b"/home/alicewu/venv").hexdigest()[:12]
    assert recorder.core.environment_label({}) == expected


def test_the_label_loads_no_openssl() -> None:
    """Computed at the first send of a recording process (by the core's rarely needed parts):
    the built-in hash, not hashlib (which loads OpenSSL), and the same in a fresh process."""
    code = (
        "import importlib.util, sys\n"
        f"where = {str(RECORDER_DIR)!r} + '/'\n"
        "for name, file in [('_popcon_recorder', 'core'), ('_popcon_recorder_rare', 'rare')]:\n"
        "    spec = importlib.util.spec_from_file_location(name, where + file + '.py')\n"
        "    sys.modules[name] = importlib.util.module_from_spec(spec)\n"
        "    spec.loader.exec_module(sys.modules[name])\n"
        "sys.prefix = '/home/alicewu/venv'\n"
        "label = sys.modules['_popcon_recorder'].environment_label({})\n"
        "print(label, 'hashlib' in sys.modules, '_hashlib' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == [blake2b_label("/home/alicewu/venv"), "False", "False"]


def test_the_label_is_hashed_once_and_then_read_from_the_cache(recorder, monkeypatch, tmp_path):
    """Loading the hash module costs more than the rest of a first send: the first process
    keeps the label in the user's cache directory, later ones read it."""
    core = recorder.core
    monkeypatch.setattr(core.sys, "prefix", "/home/alicewu/venv")
    first = core.environment_label({})
    assert first == blake2b_label("/home/alicewu/venv")
    (kept,) = (tmp_path / "user-cache").glob("label-*")
    assert kept.read_text() == first

    def no_hashing(prefix: str) -> str:
        raise AssertionError("hashed again")

    hashing = recorder.rare.prefix_label
    monkeypatch.setattr(recorder.rare, "prefix_label", no_hashing)
    assert core.environment_label({}) == first
    kept.write_text("env:not-a-label")  # a damaged file is not believed
    monkeypatch.setattr(recorder.rare, "prefix_label", hashing)
    assert core.environment_label({}) == first
    assert kept.read_text() == first
