"""The protocol oracle: datagrams built from ``docs/protocol.md`` alone, and the sample data of
the collector's and the faces' tests.

Nothing here imports popcon: a decoder that drifted from the written protocol would disagree
with these builders, and the tests would notice.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Iterable, Sequence
from hashlib import sha256

from timing import DAY, HOUR, NOW

#: A ``lib`` record: (name, version, level, origin[, importer]).
Lib = Sequence[str]

#: One process importing pandas, which pulls in numpy and python-dateutil.
PANDAS_PROCESS: list[Lib] = [
    ("pandas", "2.2.2", "direct", "env"),
    ("numpy", "1.26.4", "transitive", "env", "pandas"),
    ("python-dateutil", "2.9.0", "transitive", "env", "pandas"),
]


def person_of(secret: bytes, name: str) -> str:
    """A person field, ``<register>:<rank>``, as docs/protocol.md defines it: the first 8 bytes
    of BLAKE2b keyed with the secret over the library's name; the high 14 bits the register,
    the rank one more than the leading zeros of the low 50."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8, key=secret).digest()
    value = int.from_bytes(digest, "big")
    return f"{value >> 50}:{51 - (value & (2**50 - 1)).bit_length()}"


def sign(data: bytes, key: bytes, *, minute: int | None = None, nonce: str | None = None) -> bytes:
    """``data`` with its ``t <minute> <nonce>`` line (the minute since the epoch, now unless
    given; a fresh random nonce unless given, as from another process) and its last line
    ``sig <first 32 hex digits of HMAC-SHA256(key, everything before it)>``."""
    if minute is None:
        minute = int(time.time()) // 60
    data += f"t {minute} {nonce or os.urandom(8).hex()}\n".encode()
    return data + b"sig " + hmac.new(key, data, sha256).hexdigest()[:32].encode() + b"\n"


def _datagram(lines: list[str], key: bytes | None) -> bytes:
    data = ("\n".join(lines) + "\n").encode()
    return sign(data, key) if key else data


def use_datagram(
    env: str,
    libs: Iterable[Lib],
    *,
    seq: int = 0,
    py: str = "3.11",
    labels: Iterable[tuple[str, str]] = (),
    key: bytes | None = None,
) -> bytes:
    """A ``popcon/1 use`` datagram of ``libs``, signed with ``key`` if given."""
    lines = [f"popcon/1 use {seq}", f"env {env}", f"py {py}"]
    lines += [f"label {k}={v}" for k, v in labels]
    lines += ["lib " + " ".join(lib) for lib in libs]
    return _datagram(lines, key)


def use_datagram_2(
    env: str,
    libs: Iterable[Lib],
    secret: bytes | None,
    *,
    program: tuple[str, str, str] | None = None,
    seq: int = 0,
    py: str = "3.11",
    labels: Iterable[tuple[str, str]] = (),
    key: bytes | None = None,
) -> bytes:
    """A ``popcon/2 use`` datagram of ``libs`` ((name, version, level, origin[, importer])) and,
    if given, the ``prog`` record of ``program`` ((name, version, origin)), each with the person
    field of ``secret`` for its name (``-`` when ``secret`` is None); signed with ``key`` if
    given."""

    def person(name: str) -> str:
        return "-" if secret is None else person_of(secret, name)

    lines = [f"popcon/2 use {seq}", f"env {env}", f"py {py}"]
    lines += [f"label {k}={v}" for k, v in labels]
    for lib in libs:
        name, version, level, origin, *importer = lib
        lines.append(" ".join(["lib", name, version, level, origin, person(name), *importer]))
    if program is not None:
        name, version, origin = program
        lines.append(f"prog {name} {version} {origin} {person(name)}")
    return _datagram(lines, key)


def inventory_datagrams(
    env: str,
    dists: Sequence[tuple[str, str]],
    *,
    inventory_id: str = "0badcafe",
    parts: int = 1,
    py: str = "3.11",
    key: bytes | None = None,
) -> list[bytes]:
    """The ``popcon/1 inv`` datagrams listing (name, version) pairs, split into ``parts``."""
    out = []
    for part in range(parts):
        lines = [f"popcon/1 inv {inventory_id} {part + 1} {parts}", f"env {env}", f"py {py}"]
        lines += [f"dist {name} {version}" for name, version in dists[part::parts]]
        out.append(_datagram(lines, key))
    return out


def statsd_datagram(*libraries: str, reports: bool = False, prefix: str = "python_popcon") -> bytes:
    """The statsd lines of the older ``popularity-contest``: one ``library_used`` counter per
    library, then ``reports`` if asked."""
    lines = [f"{prefix}.library_used.{name}:1|c" for name in libraries]
    if reports:
        lines.append(f"{prefix}.reports:1|c")
    return ("\n".join(lines) + "\n").encode()


def sample_datagrams(now: int = NOW) -> list[tuple[int, bytes]]:
    """The faces' sample, as (arrival time, datagram) pairs: two environments with known counts
    (tests/faces/test_http.py's docstring tells them)."""
    a = ("img:a", (("hub", "research"),))
    b = ("img:b", (("hub", "teaching"),))
    recent, old = now - HOUR, now - 3 * DAY
    out = []
    for _ in range(5):
        out.append((recent, use_datagram(a[0], PANDAS_PROCESS, labels=a[1])))
    # one of those processes later used numpy from user code: an upgrade record
    out.append(
        (recent, use_datagram(a[0], [("numpy", "1.26.4", "upgrade", "env")], seq=1, labels=a[1]))
    )
    for _ in range(2):
        out.append(
            (recent, use_datagram(a[0], [("requests", "2.32.3", "direct", "env")], labels=a[1]))
        )
    out.append((recent, use_datagram(a[0], [("scipy", "1.14.1", "direct", "user")], labels=a[1])))
    for _ in range(4):
        out.append((recent, use_datagram(b[0], [("numpy", "2.1.0", "direct", "env")], labels=b[1])))
    for _ in range(3):
        out.append((old, use_datagram(b[0], [("numpy", "2.0.0", "direct", "env")], labels=b[1])))
    inventory = [
        ("attrs", "24.2.0"),
        ("numpy", "1.26.4"),
        ("pandas", "2.2.2"),
        ("python-dateutil", "2.9.0"),
        ("requests", "2.32.3"),
        ("six", "1.16.0"),
    ]
    (listing,) = inventory_datagrams(a[0], inventory, inventory_id="0000beef")
    out.append((recent, listing))
    out.append((recent, b"this is not a datagram"))
    return out
