"""The recorder's types, for the type checker alone.

The recorder's files import this stub under ``if TYPE_CHECKING:``, which is never true when they
run, and write their types as comments, which the interpreter never evaluates: so typing costs
a recording process nothing. There is no ``_types.py``; ``popcon enable`` copies nothing of this.
"""

from _socket import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib.machinery import FileFinder, ModuleSpec
from os import DirEntry
from types import FrameType, ModuleType
from typing import Any, TypedDict

from _typeshed.importlib import PathEntryFinderProtocol

__all__ = [
    "Any",
    "Callable",
    "Config",
    "DirEntry",
    "Dist",
    "FileFinder",
    "FrameType",
    "Inventory",
    "Iterable",
    "Iterator",
    "Mapping",
    "ModuleMap",
    "ModuleSpec",
    "ModuleType",
    "PathEntryFinderProtocol",
    "Record",
    "SiteMap",
    "Tops",
    "socket",
]

#: (canonical name, version, origin) of an installed distribution
Dist = tuple[str, str, str]
#: a record not sent yet: (name, version, level or core.PROG, origin, importer or "")
Record = tuple[str, str, str, str, str]
#: (inventory id, [(name, version)]) of one site directory
Inventory = tuple[str, list[tuple[str, str]]]
#: a top-level name -> (has __init__, second-level names), for one distribution
Tops = dict[str, tuple[bool, set[str]]]

class SiteMap(TypedDict):
    """One site directory's map, as cached with marshal (built by ``map.rebuild_site_map``)."""

    format: int
    site: str
    mtime: int
    dists: list[tuple[str, str]]
    names: dict[str, int]
    inventory_id: str

class ModuleMap:
    """What ``core.module_map`` makes (a ``types.SimpleNamespace`` at run time)."""

    dists: list[Dist]
    names: dict[str, int]
    inventories: list[Inventory]
    stamps: list[tuple[str, int]]

class Config:
    """What ``core.config_of`` makes (a ``types.SimpleNamespace`` at run time)."""

    mode: str | None
    host: str
    port: int
    header: str
    key: bytes | None
    debug: bool
    preview: str | None
    inventory_interval: float
    secret: str | None
    address: tuple[str, int] | None
    socket: socket | None
    resolving: bool
    queue: list[bytes]
