"""The wire protocol, ``popcon/2`` (and ``popcon/1``, still accepted), in code: one definition
of each term of ``docs/protocol.md``.

Every part of popcon that reads or builds datagrams takes its vocabulary from here: the
collector's decoder (:mod:`popcon.protocol.decode`), the server's receiving, storage and query
rooms, ``popcon preview``, the fuzzer and the benchmarks. The recorder cannot: it is copied into
site-packages and imports nothing but the standard library, so it keeps its own copies of these
names, and ``tests/protocol/test_vocabulary.py`` pins each of them to this module.
"""

from __future__ import annotations

import hmac
import re
from hashlib import sha256

# -- datagrams ---------------------------------------------------------------------------------

#: The first word of every datagram's first line: the versions a collector accepts, and the
#: one recorders send. ``popcon/1`` records carry no person and no ``prog`` record, and only
#: the levels of :data:`LEVELS_1`.
PROTOCOL_VERSIONS = ("popcon/1", "popcon/2")
PROTOCOL_VERSION = "popcon/2"
#: ``popcon/2 use <seq>``: libraries a process imported.
USE = "use"
#: ``popcon/2 inv <id> <part> <parts>``: one part of an environment's inventory.
INVENTORY = "inv"
KINDS = (USE, INVENTORY)

#: Largest datagram, in bytes, signature line included.
MAX_DATAGRAM = 1400
#: Most ``label`` lines in one datagram.
MAX_LABELS = 8
#: Most parts of one inventory.
MAX_INVENTORY_PARTS = 64
#: Longest environment label (``env`` line), in characters.
MAX_ENV_LABEL = 200
#: Longest label key and label value, in characters.
MAX_LABEL_KEY = 32
MAX_LABEL_VALUE = 64
#: Longest distribution name and version, in characters.
MAX_NAME = 100
MAX_VERSION = 64
#: The version field of a distribution whose version is unknown.
UNKNOWN_VERSION = "-"
#: Most names in a ``dist`` line's ``<requires>`` field.
MAX_REQUIRES = 32

# -- record fields -----------------------------------------------------------------------------

#: ``direct``: people's code imported it first; ``transitive``: a distribution imported it
#: while running for people's code; ``program``: the program's machinery imported it first;
#: ``upgrade``: reported ``transitive`` before, now imported by people's code directly;
#: ``claimed``: reported ``program`` before, now imported by people's code directly.
DIRECT = "direct"
TRANSITIVE = "transitive"
UPGRADE = "upgrade"
PROGRAM = "program"
CLAIMED = "claimed"
LEVELS = (DIRECT, TRANSITIVE, UPGRADE, PROGRAM, CLAIMED)
#: The levels a ``popcon/1`` record may carry.
LEVELS_1 = (DIRECT, TRANSITIVE, UPGRADE)
#: The levels whose record names an importer (``program``'s only when a distribution's code of
#: the program imported it).
IMPORTER_LEVELS = (TRANSITIVE, PROGRAM)
#: ``env``: the environment's site-packages; ``user``: the user site (``pip install --user``).
ORIGINS = ("env", "user")
#: A ``dist`` line's ``<requested>`` field: installed on request (its ``.dist-info`` holds
#: the installer's ``REQUESTED`` marker), not on request (a ``.dist-info`` without one), or
#: not known (an ``.egg-info``, which has no such marker).
REQUESTED = "r"
NOT_REQUESTED = "-"
REQUESTED_UNKNOWN = "?"
REQUESTED_FIELDS = (REQUESTED, NOT_REQUESTED, REQUESTED_UNKNOWN)
#: A ``dist`` line's ``<requires>`` field when it requires no installed distribution.
REQUIRES_NONE = "-"
#: The collector's level and origin of a statsd line, which carries neither (never on the
#: wire).
UNKNOWN = "unknown"

# -- people ------------------------------------------------------------------------------------

#: The person field of a record whose process has no person (no usable secret).
NO_PERSON = "-"
#: HyperLogLog precision of the person field: ``2 ** SKETCH_PRECISION`` registers.
SKETCH_PRECISION = 14
#: Largest rank of a person field: ``64 - SKETCH_PRECISION + 1`` (the hash's low 50 bits all 0).
MAX_RANK = 64 - SKETCH_PRECISION + 1
#: ``<register>:<rank>`` (register 0..16383, rank 1..51, decimal without leading zeros) or ``-``.
PERSON_RE = re.compile(
    r"(?:-|(?:0|[1-9][0-9]{0,3}|1[0-5][0-9]{3}|16[0-2][0-9]{2}|163[0-7][0-9]|1638[0-3])"
    r":(?:[1-9]|[1-4][0-9]|5[01]))\Z"
)

# -- field patterns (each matches a whole field) -----------------------------------------------

#: A canonical distribution name (PEP 503), 1 to :data:`MAX_NAME` characters.
NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?\Z")
#: A version: 1 to :data:`MAX_VERSION` printable ASCII characters, no space.
VERSION_RE = re.compile(r"[!-~]{1,64}\Z")
#: ``py <major>.<minor>``.
PY_RE = re.compile(r"[0-9]{1,2}\.[0-9]{1,3}\Z")
#: An environment label: 1 to :data:`MAX_ENV_LABEL` characters, no control character (C0, DEL,
#: C1) and none of the bidirectional marks, embeddings, overrides and isolates that could make
#: it show as something else (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069).
ENV_LABEL_RE = re.compile(
    r"[^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]{1,200}\Z"
)
#: ``label <key>=<value>``: the key (at most :data:`MAX_LABEL_KEY`) and the value (at most
#: :data:`MAX_LABEL_VALUE` characters).
LABEL_KEY_RE = re.compile(r"[a-z_][a-z0-9_]{0,31}\Z")
LABEL_VALUE_RE = re.compile(r"[A-Za-z0-9_.:/@+-]{1,64}\Z")
#: A ``use`` datagram's ``<seq>``: 0, 1, 2, ... (at most 10 digits).
SEQ_RE = re.compile(r"(?:0|[1-9][0-9]{0,9})\Z")
#: An inventory's ``<id>``: 8 lower-case hex digits.
INVENTORY_ID_RE = re.compile(r"[0-9a-f]{8}\Z")
#: A ``dist`` line's ``<requires>``: 1 to :data:`MAX_REQUIRES` canonical names separated by
#: ``,``, or :data:`REQUIRES_NONE`.
REQUIRES_RE = re.compile(
    r"(?:-|(?:[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?)(?:,[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?)"
    r"{0,31})\Z"
)

_SEPARATORS_RE = re.compile(r"[-_.]+")


def canonical_name(name: str) -> str:
    """PEP 503 normalisation: ``Scikit_Learn`` → ``scikit-learn``."""
    return _SEPARATORS_RE.sub("-", name).lower()


# -- signature ---------------------------------------------------------------------------------

#: Hex digits of HMAC-SHA256 in a ``sig`` line.
SIGNATURE_DIGITS = 32
#: Bytes of a ``sig`` line, its ``\n`` included.
SIGNATURE_LINE = len("sig ") + SIGNATURE_DIGITS + 1
#: Hex digits of the nonce of a ``t`` line (8 random bytes a recorder draws once per process).
NONCE_DIGITS = 16
#: Minutes a signed datagram's ``t`` line may be away from the collector's clock, either way.
TIME_WINDOW = 5


def sign(key: bytes, payload: bytes) -> bytes:
    """The signature line for ``payload`` (which ends with ``\\n``): ``b"sig <32 hex>\\n"``."""
    digest = hmac.new(key, payload, sha256).hexdigest()[:SIGNATURE_DIGITS]
    return b"sig " + digest.encode("ascii") + b"\n"


def time_line(minute: int, nonce: str) -> bytes:
    """The ``t`` line a signed datagram carries before its ``sig`` line:
    ``b"t <unix minutes> <nonce>\\n"``."""
    return f"t {minute} {nonce}\n".encode("ascii")


# -- statsd lines ------------------------------------------------------------------------------

#: ``<prefix>`` of ``<prefix>.library_used.<name>:1|c`` and ``<prefix>.reports:1|c``.
DEFAULT_STATSD_PREFIX = "python_popcon"
STATSD_LIBRARY_USED = "library_used"
STATSD_REPORTS = "reports"
#: Largest counter value the collector accepts on a statsd line (``name:3|c``: 3 processes).
MAX_STATSD_VALUE = 10
#: Largest sum of the counter values of one datagram's statsd lines.
MAX_STATSD_TOTAL = 100

# -- addresses ---------------------------------------------------------------------------------

#: The collector's UDP port (``POPCON_COLLECTOR`` defaults to ``udp://127.0.0.1:8137``).
DEFAULT_COLLECTOR_PORT = 8137
#: The collector's HTTP port (API, dashboard, ``/metrics``).
DEFAULT_HTTP_PORT = 8138

# -- validation --------------------------------------------------------------------------------

#: The result of a ``use`` datagram without records, ``popcon check``'s: verified like any
#: other (its signature too), counted as ``popcon_datagrams_total{result="check"}`` and dropped,
#: so that it counts no process, no library and no environment.
CHECK = "check"
#: Every reason the collector's decoder drops a whole datagram for
#: (``popcon_datagrams_total{result="<reason>"}``).
REJECTIONS = (
    CHECK,
    "too_long",  # more than MAX_DATAGRAM bytes
    "empty",
    "not_utf8",
    "unknown_format",  # neither popcon/ nor a statsd line with the configured prefix
    "version",  # popcon/<n> with n not 1 or 2
    "kind",  # a first line of an unknown kind
    "truncated",  # no final newline
    "missing_env",
    "missing_py",
    "too_many_labels",
    "bad_label",
    "bad_name",  # a library name that is not a canonical distribution name
    "malformed",  # any other malformed line
    "unsigned",  # the collector has a key and the datagram carries no signature
    "bad_signature",
    "unstamped",  # the collector has a key and the signed datagram carries no t line
    "stale",  # its t line is more than TIME_WINDOW minutes from the collector's clock
    "replay",  # a signature the collector took already
    "replay_cap",  # the memory of signatures taken is full (REPLAY_MEMORY in decode)
    "statsd_malformed",
    "statsd_cap",  # a value over MAX_STATSD_VALUE, or values adding up over MAX_STATSD_TOTAL
)
