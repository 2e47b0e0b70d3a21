"""The person field (docs/protocol.md, docs/recording.md#people): the user's secret, made once
with mode 0600, the HyperLogLog contribution derived from it, the contributions kept beside it,
and no person where there is no secret to be had."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest


def expected_person(key: bytes, name: str) -> str:
    """``<register>:<rank>`` as docs/protocol.md defines it, with hashlib's BLAKE2b."""
    value = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8, key=key).digest(), "big")
    return f"{value >> 50}:{51 - (value & (2**50 - 1)).bit_length()}"


def _config(recorder, home: Path | None, **settings: str):
    environ = {"POPCON_ENV": "lab", **settings}
    if home is not None:
        environ["HOME"] = str(home)
    return recorder.core.config_of(environ)


def test_contribution_is_the_documented_hash(recorder) -> None:
    key = bytes(range(32))
    for name in ("pandas", "numpy", "scikit-learn", "jupyterhub", "é-x"):
        assert recorder.rare.contribution(key, name) == expected_person(key, name)
    assert recorder.rare.contribution(key, "pandas") != recorder.rare.contribution(
        bytes(32), "pandas"
    )


def test_rank_counts_leading_zeros_of_the_low_50_bits(recorder) -> None:
    """Rank 1 to 51 over many names: each register:rank as the formula says."""
    key = os.urandom(32)
    ranks = set()
    for number in range(3000):
        register, rank = map(int, recorder.rare.contribution(key, f"lib-{number}").split(":"))
        assert 0 <= register < 2**14 and 1 <= rank <= 51
        ranks.add(rank)
    assert {1, 2, 3, 4} <= ranks  # half the hashes have rank 1, a quarter rank 2, ...


def test_the_secret_is_made_once_private_and_used(recorder, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = _config(recorder, home)
    first = recorder.core.person(config, "pandas")
    secret = home / ".config" / "popcon" / "secret"
    text = secret.read_text()
    assert len(text.strip()) == 64 and set(text.strip()) <= set("0123456789abcdef")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
    assert first == expected_person(bytes.fromhex(text.strip()), "pandas")
    assert recorder.core.person(config, "numpy") == expected_person(
        bytes.fromhex(text.strip()), "numpy"
    )
    assert sorted(p.name for p in secret.parent.iterdir()) == ["secret"]  # kept at flush


def test_xdg_config_home_is_honoured(recorder, tmp_path: Path) -> None:
    config = _config(recorder, tmp_path / "home", XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    assert config.secret == str(tmp_path / "xdg" / "popcon" / "secret")
    recorder.core.person(config, "pandas")
    assert (tmp_path / "xdg" / "popcon" / "secret").exists()
    assert not (tmp_path / "home").exists()


def test_an_existing_secret_is_never_replaced(recorder, tmp_path: Path) -> None:
    secret = tmp_path / "xdg" / "popcon" / "secret"
    secret.parent.mkdir(parents=True)
    key = "ab" * 32
    secret.write_text(key + "\n")
    secret.chmod(0o600)
    assert recorder.rare.create_secret(str(secret)) is True
    assert secret.read_text() == key + "\n"
    assert sorted(p.name for p in secret.parent.iterdir()) == ["secret"]
    config = _config(recorder, None, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    assert recorder.core.person(config, "six") == expected_person(bytes.fromhex(key), "six")


@pytest.mark.parametrize(
    "case", ["no HOME", "unwritable", "not a secret", "a directory", "no blake2", "readable"]
)
def test_no_usable_secret_is_no_person(recorder, tmp_path: Path, monkeypatch, case) -> None:
    home = tmp_path / "home"
    home.mkdir()
    if case == "unwritable":
        (home / ".config").write_text("a file where the directory would be\n")
    elif case == "not a secret":
        (home / ".config" / "popcon").mkdir(parents=True)
        (home / ".config" / "popcon" / "secret").write_text("password1\n")
    elif case == "a directory":
        (home / ".config" / "popcon" / "secret").mkdir(parents=True)
    elif case == "readable":  # a secret others may read is no secret
        secret = home / ".config" / "popcon" / "secret"
        secret.parent.mkdir(parents=True)
        secret.write_text("ab" * 32 + "\n")
        secret.chmod(0o644)
    elif case == "no blake2":
        monkeypatch.setitem(__import__("sys").modules, "_blake2", None)
        monkeypatch.setitem(__import__("sys").modules, "hashlib", None)
    config = _config(recorder, None if case == "no HOME" else home)
    assert recorder.core.person(config, "pandas") == recorder.core.NO_PERSON == "-"
    assert recorder.core.person(config, "numpy") == "-"
    if case == "not a secret":
        assert (home / ".config" / "popcon" / "secret").read_text() == "password1\n"


def test_contributions_are_kept_beside_the_secret(recorder, tmp_path: Path, monkeypatch) -> None:
    """A later process whose libraries were all seen takes them from ``contributions``,
    reading neither the secret nor loading the hash; a new secret starts over."""
    home = tmp_path / "home"
    home.mkdir()
    config = _config(recorder, home)
    sent = {name: recorder.core.person(config, name) for name in ("pandas", "numpy")}
    recorder.core._keep_people(config)
    kept = home / ".config" / "popcon" / "contributions"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600

    from recorder_by_path import load_recorder

    later = load_recorder()

    def no_secret_read(path):
        raise AssertionError("the secret was read")

    monkeypatch.setattr(later.rare, "read_secret", no_secret_read)
    monkeypatch.setattr(later.rare, "contribution", no_secret_read)
    again = _config(later, home)
    assert {name: later.core.person(again, name) for name in sent} == sent

    secret = home / ".config" / "popcon" / "secret"
    secret.unlink()
    renewed = load_recorder()
    fresh = _config(renewed, home)
    value = renewed.core.person(fresh, "pandas")
    assert value == expected_person(bytes.fromhex(secret.read_text().strip()), "pandas")


def test_a_long_history_is_kept_bounded_and_found_without_the_secret(
    recorder, tmp_path: Path, monkeypatch
) -> None:
    """``contributions`` keeps the latest 4,000 fields (and at most 128 KiB), those used again
    last; a later process finds any of them in it, reading neither the secret nor the rest."""
    from recorder_by_path import load_recorder

    home = tmp_path / "home"
    home.mkdir()
    config = _config(recorder, home)
    names = [f"lib-{number:04d}" for number in range(4100)]
    for name in names:
        recorder.core.person(config, name)
    recorder.core._keep_people(config)
    kept = home / ".config" / "popcon" / "contributions"
    secret = home / ".config" / "popcon" / "secret"
    key = bytes.fromhex(secret.read_text().strip())
    lines = kept.read_bytes().split(b"\n")
    assert lines[0].startswith(b"popcon-contributions-1 ") and lines[-1] == b""
    assert len(lines) - 2 == 4000 and kept.stat().st_size <= 1 << 17
    assert lines[1].split(b" ")[0] == b"lib-0100"  # the oldest 100 went

    later = load_recorder()

    def no_secret_read(*args: object) -> str:
        raise AssertionError("the secret was read")

    monkeypatch.setattr(later.rare, "read_secret", no_secret_read)
    monkeypatch.setattr(later.rare, "contribution", no_secret_read)
    again = _config(later, home)
    for name in ("lib-0100", "lib-2500", "lib-4099"):
        assert later.core.person(again, name) == expected_person(key, name)
    monkeypatch.undo()
    assert later.core.person(again, "lib-0000") == expected_person(key, "lib-0000")  # computed
    later.core._keep_people(again)
    names_kept = [line.split(b" ")[0] for line in kept.read_bytes().split(b"\n")[1:-1]]
    assert len(names_kept) == 4000
    assert names_kept[-4:] == [b"lib-0100", b"lib-2500", b"lib-4099", b"lib-0000"]
    assert b"lib-0101" not in names_kept  # the oldest one not used again went


@pytest.mark.parametrize("case", ["another secret", "truncated", "old format", "not ascii"])
def test_contributions_not_of_this_secret_or_cut_short_are_not_used(
    recorder, tmp_path: Path, case: str
) -> None:
    """Fields are taken only from a whole line of contributions whose first line names the
    secret file as it is now; anything else is computed again from the secret."""
    from recorder_by_path import load_recorder

    home = tmp_path / "home"
    home.mkdir()
    config = _config(recorder, home)
    recorder.core.person(config, "pandas")
    recorder.core._keep_people(config)
    kept = home / ".config" / "popcon" / "contributions"
    secret = home / ".config" / "popcon" / "secret"
    right = expected_person(bytes.fromhex(secret.read_text().strip()), "pandas")
    head, _, _ = kept.read_bytes().partition(b"\n")
    if case == "another secret":
        fields = head.split(b" ")
        fields[2] = b"%d" % (int(fields[2]) + 1)  # another inode
        kept.write_bytes(b" ".join(fields) + b"\npandas 1:1\n")
    elif case == "truncated":
        kept.write_bytes(head + b"\npandas 1:")
    elif case == "not ascii":
        kept.write_bytes(head + b"\npandas 1:\xff\n")
    else:
        kept.write_bytes(b"\xfb\x02pandas 1:1\n")  # not a contributions file of this recorder
    later = load_recorder()
    assert later.core.person(_config(later, home), "pandas") == right
