"""What ``popcon serve`` runs with, and the one line that names a bad flag.

:class:`ServeSettings` is everything :func:`popcon.server.serve.serve` needs, resolved: addresses
parsed, secrets read from the environment, the auth policies chosen. The functions below turn
what traitlets says about a command line into one line naming the flag: traitlets only warns
about a flag it does not know, and its errors name a trait, not the flag.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from popcon.server.query.environments import QUIET_AFTER
from popcon.server.storage.schema import StoreSettings

if TYPE_CHECKING:  # the CLI reads API_TOKEN_ENV here without importing tornado
    from popcon.server.web.auth import Auth

#: Environment variables ``popcon serve`` reads (secrets never come from flags or files).
API_TOKEN_ENV = "POPCON_API_TOKEN"
KEY_ENV = "POPCON_KEY"
#: The shortest API token ``popcon serve`` accepts.
MIN_TOKEN_LENGTH = 16


def default_db_path(environ: Mapping[str, str] | None = None) -> str:
    """``$XDG_DATA_HOME/popcon/popcon.sqlite``, else ``~/.local/share/popcon/popcon.sqlite``."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "popcon", "popcon.sqlite")


@dataclass(frozen=True)
class HttpLimits:
    """What one HTTP client may hold: open connections, and seconds to send a request."""

    #: Most connections open at once (kept to at most half the descriptor limit).
    max_connections: int = 1000
    #: Seconds a connection may wait for a request's headers (idle keep-alive included).
    idle_timeout: float = 60.0
    #: Seconds a request's body may take to arrive.
    body_timeout: float = 10.0


@dataclass
class ServeSettings:
    """Everything :func:`~popcon.server.serve.serve` needs, resolved."""

    udp: tuple[str, int]
    http: tuple[str, int]
    db: str
    store: StoreSettings
    min_count: int
    min_users: int
    api_auth: Auth
    metrics_auth: Auth
    #: The shared key datagrams must be signed with; None accepts unsigned datagrams.
    key: bytes | None
    statsd_prefix: str
    statsd_env: str
    base_url: str
    http_limits: HttpLimits = field(default_factory=HttpLimits)
    #: Seconds without a report after which an environment that reported is flagged quiet.
    quiet_after: float = QUIET_AFTER


def check_token(token: str) -> str:
    """The API token from the environment, refused when blank, holding white space or
    shorter than :data:`MIN_TOKEN_LENGTH` (no request could carry it, or one could guess it);
    an empty one means "not set"."""
    if token and (len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token)):
        raise ValueError(
            f"{API_TOKEN_ENV}: expected at least {MIN_TOKEN_LENGTH} characters without white "
            "space (python -c 'import secrets; print(secrets.token_hex(16))' makes one)"
        )
    return token


def check_flags(argv: Sequence[str], aliases: Mapping[str, Any], flags: Mapping[str, Any]) -> None:
    """Refuse a flag ``popcon serve`` does not know (traitlets would only warn)."""
    known = {"help", "help-all", "version", *aliases, *flags}
    for arg in argv:
        if arg == "--":
            break
        if not arg.startswith("-") or arg == "-":
            continue
        name = arg.lstrip("-").split("=", 1)[0]
        if name in flags and "=" in arg:
            raise ValueError(f"--{name}: takes no value")
        if name in known or ("." in name and name.split(".")[0] in ("PopconServe", "Application")):
            continue
        raise ValueError(f"{arg.split('=', 1)[0]}: unknown flag (see popcon serve --help)")


def trait_reason(message: str) -> str:
    """traitlets' "The 'min_count' trait of a PopconServe instance expected an int, not the
    str 'abc'." → "--min-count: expected an int, not the str 'abc'"."""
    match = re.search(r"The '(\w+)' trait of an? \w+ instance (.*?)\.?$", message.strip())
    if match:
        return f"--{match.group(1).replace('_', '-')}: {match.group(2)}"
    return message.strip().splitlines()[0] if message.strip() else "bad flag"


def flag_reason(reason: str) -> str:
    """``"bucket_width: expected …"`` (a :class:`StoreSettings` check) →
    ``"--bucket-width: expected …"``."""
    name, sep, rest = reason.partition(":")
    if sep and name.isidentifier():
        flag = {"retention": "retention-days"}.get(name, name.replace("_", "-"))
        return f"--{flag}:{rest}"
    return reason


def one_line(error: BaseException) -> str:
    """The first line of an error's message (its class name when it has none)."""
    text = str(error).strip() or error.__class__.__name__
    return text.splitlines()[0]


def os_reason(error: BaseException) -> str:
    """What the system said (``Address already in use``), else the message's first line."""
    return getattr(error, "strerror", None) or one_line(error)
