"""The recorder's copies of the protocol's vocabulary are the protocol's (``popcon.protocol``).

The recorder is copied into site-packages and imports nothing of popcon, so it spells each term
again. These tests load its files by path, as they run there, and pin every copy to the one
definition; and they check that each pattern of the protocol says what its limit says.
"""

from __future__ import annotations

import string
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from recorder_by_path import load_recorder, unload

from popcon import protocol
from popcon.protocol import (
    ENV_LABEL_RE,
    LABEL_KEY_RE,
    LABEL_VALUE_RE,
    MAX_ENV_LABEL,
    MAX_LABEL_KEY,
    MAX_LABEL_VALUE,
    MAX_NAME,
    MAX_VERSION,
    NAME_RE,
    VERSION_RE,
)

#: Every character up to U+07FF, and a few beyond: what a label could be made of.
CHARACTERS = [chr(code) for code in range(0x800)] + ["\u2028", "\ufeff", "😀", "\U0010ffff"]
NAME_TEXT = st.text(string.ascii_letters + string.digits + "-_. \t\n\x00é!~", max_size=110)


def test_the_core_spells_the_datagram_and_its_fields_as_the_protocol(recorder) -> None:
    core = recorder.core
    assert core.PROTOCOL_VERSION == protocol.PROTOCOL_VERSION
    assert core.MAX_DATAGRAM == protocol.MAX_DATAGRAM
    collector = f"udp://127.0.0.1:{protocol.DEFAULT_COLLECTOR_PORT}"
    assert collector == core.DEFAULT_COLLECTOR
    assert core.LEVELS == protocol.LEVELS
    assert core.ORIGINS == protocol.ORIGINS
    assert core.MAX_ENV_LABEL == protocol.MAX_ENV_LABEL
    assert core.NO_PERSON == protocol.NO_PERSON
    assert core.SKETCH_PRECISION == protocol.SKETCH_PRECISION


@given(key=st.binary(min_size=32, max_size=32), name=NAME_TEXT)
def test_the_recorders_person_fields_are_the_protocols(copies, key: bytes, name: str) -> None:
    assert protocol.PERSON_RE.match(copies.rare.contribution(key, name))


def test_the_rare_parts_spell_labels_inventories_and_statsd_as_the_protocol(recorder) -> None:
    rare = recorder.rare
    assert rare.MAX_LABELS == protocol.MAX_LABELS
    assert rare.MAX_INVENTORY_PARTS == protocol.MAX_INVENTORY_PARTS
    assert rare.MAX_LABEL_KEY == protocol.MAX_LABEL_KEY
    assert rare.MAX_LABEL_VALUE == protocol.MAX_LABEL_VALUE
    assert rare.DEFAULT_STATSD_PREFIX == protocol.DEFAULT_STATSD_PREFIX
    assert rare.MAX_REQUIRES == protocol.MAX_REQUIRES
    assert rare.REQUIRES_NONE == protocol.REQUIRES_NONE


def test_the_map_builder_spells_names_and_versions_as_the_protocol(recorder) -> None:
    assert recorder.map.MAX_NAME == protocol.MAX_NAME
    assert recorder.map.MAX_VERSION == protocol.MAX_VERSION
    assert recorder.map.REQUESTED_FIELDS == protocol.REQUESTED_FIELDS


def test_label_characters_are_the_protocols(recorder) -> None:
    key_chars, value_chars = recorder.rare.LABEL_KEY_CHARS, recorder.rare.LABEL_VALUE_CHARS
    assert key_chars and value_chars
    for char in CHARACTERS:
        # a key's first character is one of these but no digit; the others any of them
        assert bool(LABEL_KEY_RE.match("a" + char)) == (char in key_chars), repr(char)
        assert bool(LABEL_KEY_RE.match(char)) == (char in key_chars and not char.isdigit())
        assert bool(LABEL_VALUE_RE.match(char)) == (char in value_chars), repr(char)


@pytest.fixture(scope="module")
def copies() -> Iterator[SimpleNamespace]:
    """The recorder's modules, once for the property tests below (pure functions only)."""
    yield load_recorder()
    unload()


def _labels_the_decoder_takes(text: str) -> list[tuple[str, str]]:
    """``POPCON_LABELS`` read as docs/recording.md says, with the protocol's patterns."""
    labels: dict[str, str] = {}
    for item in text.split(","):
        key, separator, value = item.strip().partition("=")
        key, value = key.strip(), value.strip()
        if not separator or key in labels or len(labels) == protocol.MAX_LABELS:
            continue
        if LABEL_KEY_RE.match(key) and LABEL_VALUE_RE.match(value):
            labels[key] = value
    return list(labels.items())


@given(text=st.text(string.ascii_letters + string.digits + "_.:/@+-=, é\t", max_size=120))
def test_the_recorder_keeps_exactly_the_labels_the_decoder_takes(copies, text: str) -> None:
    valid, _rejected = copies.rare.parse_labels(text)
    assert valid == _labels_the_decoder_takes(text)


@given(key=st.binary(max_size=64), payload=st.binary(max_size=protocol.MAX_DATAGRAM))
def test_the_recorders_signature_is_the_protocols(copies, key: bytes, payload: bytes) -> None:
    assert copies.rare.sign(key, payload) == payload + protocol.sign(key, payload)


@given(name=NAME_TEXT | st.text(max_size=40))
def test_the_recorders_canonical_names_are_the_protocols(copies, name: str) -> None:
    name = name.strip()  # the recorder strips what it reads from metadata; the collector not
    assert copies.map.canonical_name(name) == protocol.canonical_name(name)


@given(text=NAME_TEXT | st.from_regex(r"[a-z0-9][a-z0-9-]{0,100}", fullmatch=True))
def test_the_recorders_name_and_version_checks_are_the_protocols(copies, text: str) -> None:
    assert copies.map.valid_name(text) == bool(NAME_RE.match(text))
    assert copies.map.valid_version(text) == bool(VERSION_RE.match(text))


@pytest.mark.parametrize(
    ("pattern", "char", "limit"),
    [
        (NAME_RE, "a", MAX_NAME),
        (VERSION_RE, "1", MAX_VERSION),
        (LABEL_KEY_RE, "k", MAX_LABEL_KEY),
        (LABEL_VALUE_RE, "v", MAX_LABEL_VALUE),
        (ENV_LABEL_RE, "e", MAX_ENV_LABEL),
    ],
)
def test_each_pattern_takes_up_to_its_limit(pattern, char: str, limit: int) -> None:
    assert pattern.match(char)
    assert pattern.match(char * limit)
    assert not pattern.match(char * (limit + 1))
    assert not pattern.match("")
    assert not pattern.match(char + "\n")


def test_the_recorders_time_line_is_the_protocols(recorder, monkeypatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_793_577_659.9)
    line = recorder.rare.time_line()
    minute, nonce = line.split()[1:]
    assert int(minute) == 1_793_577_600 // 60
    assert len(nonce) == protocol.NONCE_DIGITS and set(nonce) <= set(string.hexdigits.lower())
    assert line.encode() == protocol.time_line(int(minute), nonce)
