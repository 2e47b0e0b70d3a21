"""Fixtures of the protocol's tests: the recorder's files loaded by path, as they run in
site-packages, so that their copies of the vocabulary and their datagrams meet the collector's
side (``popcon.protocol``) in one process."""

from __future__ import annotations

from recorder_by_path import recorder  # noqa: F401  (the fixture, offered to this folder)
