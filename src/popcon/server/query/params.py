"""Query parameters shared by the HTTP API and the CLI: time windows and filters.

Everything here is a plain function of its inputs (the current time is passed in), so the HTTP
handlers, ``popcon top --db`` and the tests all parse the same way and fail with the same
one-line reasons.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from popcon.protocol import (
    DIRECT,
    ENV_LABEL_RE,
    LABEL_KEY_RE,
    LABEL_VALUE_RE,
    NAME_RE,
    ORIGINS,
    TRANSITIVE,
    UNKNOWN,
    canonical_name,
)

#: Units accepted by ``since``: minutes, hours, days, weeks.
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SINCE_RE = re.compile(r"^([1-9][0-9]{0,5})([mhdw])$")
#: The longest duration ``since`` and ``step`` take: 100 years.
MAX_DURATION_DAYS = 36_500
#: Times a window may start or end at: from 1970 to the year 9000, so that a window widened to
#: whole buckets and stepped through stays inside what a date can show.
EARLIEST = 0
LATEST = int(datetime(9000, 1, 1, tzinfo=timezone.utc).timestamp())

#: ``unknown`` is the level of statsd lines (no level on the wire).
LEVELS = (DIRECT, TRANSITIVE, UNKNOWN)
#: The prefix of a label filter in a query string: ``?label.hub=research``.
LABEL_PARAM_PREFIX = "label."


class BadParameter(ValueError):
    """A query parameter or CLI option that cannot be used; ``str()`` is a one-line reason."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class QueryError(ValueError):
    """A query that cannot be answered as asked; ``str()`` is a one-line reason."""


@dataclass(frozen=True)
class Window:
    """A half-open time window ``[start, end)`` in epoch seconds, aligned to bucket edges."""

    start: int
    end: int

    def as_json(self) -> dict[str, str]:
        return {"from": iso(self.start), "until": iso(self.end)}


@dataclass(frozen=True)
class Filters:
    """Which reports an answer counts. ``None`` means "any"."""

    env: str | None = None
    labels: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    level: str | None = None
    origin: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "env": self.env,
            "labels": dict(self.labels),
            "level": self.level,
            "origin": self.origin,
        }


def iso(epoch: float) -> str:
    """ISO-8601 in UTC with a ``Z``, to the second: ``2026-11-26T14:40:00Z``."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_duration(text: str, name: str = "since") -> int:
    """``"6h"`` → 21600. Accepts ``<n>m``, ``<n>h``, ``<n>d``, ``<n>w``."""
    match = _SINCE_RE.match(text.strip())
    if not match:
        raise BadParameter(name, f"expected a duration like 6h, 24h, 7d, 2w or 30d, got {text!r}")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_DURATION_DAYS * _UNITS["d"]:
        raise BadParameter(name, f"expected at most {MAX_DURATION_DAYS}d, got {text!r}")
    return seconds


def parse_time(text: str, name: str) -> float:
    """An ISO-8601 date or date-time from 1970 to the year 9000; a time without a zone is
    UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        epoch = moment.timestamp()
    except ValueError:
        raise BadParameter(
            name, f"expected an ISO-8601 time like 2026-11-26T14:00:00Z, got {text!r}"
        ) from None
    except OverflowError:  # a zone offset that moves the time before the year 1
        epoch = EARLIEST - 1.0
    if not EARLIEST <= epoch < LATEST:
        raise BadParameter(name, f"expected a time from 1970 to the year 9000, got {text!r}")
    return epoch


def floor_to(epoch: float, width: int) -> int:
    return int(epoch // width) * width


def ceil_to(epoch: float, width: int) -> int:
    return -int(-epoch // width) * width


def parse_window(
    params: Mapping[str, str],
    *,
    now: float,
    bucket_width: int,
    default_since: str,
) -> Window:
    """The window asked for by ``since`` or ``from``/``until``, widened to whole buckets.

    ``since`` counts back from ``until`` (default: now), not past 1970. ``from`` and
    ``since`` exclude each other. The end is rounded up and the start down to a bucket edge,
    so no answer resolves time more finely than the bucket width.
    """
    since = params.get("since")
    start_text = params.get("from")
    end_text = params.get("until")
    if since is not None and start_text is not None:
        raise BadParameter("since", "give either since or from, not both")
    end = parse_time(end_text, "until") if end_text is not None else now
    if start_text is not None:
        start = parse_time(start_text, "from")
    else:
        start = max(EARLIEST, end - parse_duration(since if since is not None else default_since))
    if start >= end:
        raise BadParameter("from", "must be earlier than until")
    window = Window(floor_to(start, bucket_width), ceil_to(end, bucket_width))
    if window.end == window.start:  # pragma: no cover - start < end makes this impossible
        window = Window(window.start, window.start + bucket_width)
    return window


def parse_filters(
    params: Mapping[str, str], *, allowed: Iterable[str] = ("env", "label", "level", "origin")
) -> Filters:
    """``env``, ``label.<key>=<value>`` (repeatable with different keys), ``level``, ``origin``."""
    allowed = set(allowed)
    env = params.get("env")
    if env is not None and "env" in allowed and not ENV_LABEL_RE.match(env):
        raise BadParameter("env", "expected 1-200 characters without control characters")
    labels = []
    for name, value in params.items():
        if not name.startswith(LABEL_PARAM_PREFIX):
            continue
        key = name[len(LABEL_PARAM_PREFIX) :]
        if "label" not in allowed:
            raise BadParameter(name, "label filters do not apply here")
        if not LABEL_KEY_RE.match(key):
            raise BadParameter(name, "a label key matches [a-z_][a-z0-9_]{0,31}")
        if not LABEL_VALUE_RE.match(value):
            raise BadParameter(name, "a label value is 1-64 characters of [A-Za-z0-9_.:/@+-]")
        labels.append((key, value))
    level = params.get("level")
    if level is not None and level not in LEVELS:
        raise BadParameter("level", f"expected one of {', '.join(LEVELS)}, got {level!r}")
    origin = params.get("origin")
    if origin is not None and origin not in ORIGINS:
        raise BadParameter("origin", f"expected one of {', '.join(ORIGINS)}, got {origin!r}")
    return Filters(
        env=env if "env" in allowed else None,
        labels=tuple(sorted(labels)),
        level=level if "level" in allowed else None,
        origin=origin if "origin" in allowed else None,
    )


def check_known(params: Iterable[str], known: Iterable[str]) -> None:
    """Reject a parameter the endpoint does not know, so a typo is not silently ignored."""
    known = set(known)
    for name in params:
        if name in known or (name.startswith(LABEL_PARAM_PREFIX) and "label" in known):
            continue
        raise BadParameter(name, "unknown parameter")


def canonical_library(name: str) -> str:
    """The PEP 503 name the protocol carries (``Scikit_Learn`` → ``scikit-learn``), checked."""
    canonical = canonical_name(name.strip())
    if not NAME_RE.match(canonical):
        raise BadParameter(
            "library", f"expected a distribution name like scikit-learn, got {name!r}"
        )
    return canonical
