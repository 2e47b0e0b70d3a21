"""``popcon serve``: the collector's application, which only gathers settings.

:class:`PopconServe` is a thin traitlets application: every setting is a trait with ``help=``,
flags map onto them, ``popcon_config.py`` can set them (``--generate-config`` writes one),
secrets come from the environment. Its :meth:`~PopconServe.start` resolves them into a
:class:`~popcon.server.settings.ServeSettings` and calls :func:`popcon.server.serve.run`, which
wires the rooms together and does the work.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
from pathlib import Path
from typing import Any

from traitlets import Bool, Float, Int, TraitError, Unicode, default, validate
from traitlets.config import Application
from traitlets.config.loader import ArgumentError

from popcon import __version__
from popcon.protocol import DEFAULT_COLLECTOR_PORT, DEFAULT_HTTP_PORT, DEFAULT_STATSD_PREFIX
from popcon.protocol.decode import DEFAULT_STATSD_ENV
from popcon.server.query.environments import QUIET_AFTER
from popcon.server.receive.receiver import parse_address
from popcon.server.serve import run
from popcon.server.settings import (
    API_TOKEN_ENV,
    KEY_ENV,
    HttpLimits,
    ServeSettings,
    check_flags,
    check_token,
    default_db_path,
    flag_reason,
    one_line,
    trait_reason,
)
from popcon.server.storage.schema import DAY, StoreSettings
from popcon.server.web.auth import OpenAuth, make_auth
from popcon.server.web.hub import configure_from_hub

log = logging.getLogger("popcon.serve")


class PopconServe(Application):
    """The settings of ``popcon serve``; :meth:`start` runs the collector."""

    name = "popcon-serve"
    description = (
        "Receive popcon datagrams (and popularity-contest statsd lines) on UDP, store them in "
        "SQLite, and answer over HTTP: the JSON API under /api/v1/ and Prometheus /metrics. "
        f"Secrets come from the environment: {API_TOKEN_ENV} (the API token) and {KEY_ENV} "
        "(the shared key datagrams must be signed with)."
    )
    version = __version__

    udp = Unicode(
        f"127.0.0.1:{DEFAULT_COLLECTOR_PORT}",
        help="Address to receive datagrams on, HOST:PORT ([::1]:PORT for IPv6; port 0 picks a "
        "free one).",
    ).tag(config=True)
    http = Unicode(
        f"127.0.0.1:{DEFAULT_HTTP_PORT}",
        help="Address to serve the HTTP API and /metrics on, HOST:PORT (port 0 picks a free one).",
    ).tag(config=True)
    db = Unicode(
        help="Path of the SQLite database (created if missing). Default: "
        "$XDG_DATA_HOME/popcon/popcon.sqlite, else ~/.local/share/popcon/popcon.sqlite.",
    ).tag(config=True)
    bucket_width = Int(
        600,
        help="Width of the finest time bucket in seconds (60-86400, dividing a day). No answer "
        "resolves time more finely. Fixed when the database is created.",
    ).tag(config=True)
    retention_days = Int(400, help="Days of history kept; older buckets are deleted.").tag(
        config=True
    )
    min_count = Int(
        3,
        help='Counts below this are shown as "fewer than N" in every answer (API, CLI, '
        "metrics) except unused; 1 shows every count.",
    ).tag(config=True)
    min_users = Int(
        3,
        help="A row that fewer people than this used has its counts hidden in every answer "
        '(API, CLI, dashboard) as "fewer than N people"; rows whose people are unknown are '
        "left to min_count; 1 shows every row.",
    ).tag(config=True)
    max_environments = Int(
        500, help="Most distinct environments stored; datagrams of further ones are dropped."
    ).tag(config=True)
    max_label_sets_per_env = Int(64, help="Most distinct label sets stored per environment.").tag(
        config=True
    )
    max_libraries_per_env = Int(5000, help="Most distinct libraries stored per environment.").tag(
        config=True
    )
    max_libraries = Int(50_000, help="Most distinct libraries stored over all environments.").tag(
        config=True
    )
    max_versions_per_library = Int(
        32, help="Most distinct versions stored per library and environment."
    ).tag(config=True)
    max_versions = Int(
        100_000,
        help="Most distinct versions stored over all libraries, beyond the first of each.",
    ).tag(config=True)
    max_importers_per_library = Int(
        1000, help="Most distinct importers stored per library and environment."
    ).tag(config=True)
    max_importers = Int(
        100_000,
        help="Most distinct importers stored over all libraries, beyond the first of each.",
    ).tag(config=True)
    quiet_after = Float(
        QUIET_AFTER / 3600,
        help="Hours without a report after which an environment that reported before is "
        "flagged quiet (in the Environments view and popcon envs); /metrics has each "
        "environment's last report time for alerts.",
    ).tag(config=True)
    max_connections = Int(
        HttpLimits.max_connections,
        help="Most HTTP connections open at once (at most half the descriptor limit); beyond "
        "it the connection idle longest is closed, or the new one when none is idle.",
    ).tag(config=True)
    idle_timeout = Float(
        HttpLimits.idle_timeout,
        help="Seconds an HTTP connection may wait for a request's headers, idle keep-alive "
        "included, before it is closed.",
    ).tag(config=True)
    body_timeout = Float(
        HttpLimits.body_timeout,
        help="Seconds an HTTP request's body may take to arrive.",
    ).tag(config=True)
    open = Bool(
        False,
        help=f"Serve the API and /metrics to anybody, without a token ({API_TOKEN_ENV} is "
        "then not needed). Only on a trusted network.",
    ).tag(config=True)
    metrics_open = Bool(
        False,
        help="Serve /metrics without a token even when the API needs one (for a Prometheus "
        "on a trusted network).",
    ).tag(config=True)
    statsd_prefix = Unicode(
        DEFAULT_STATSD_PREFIX,
        help="Prefix of the statsd lines of popularity-contest clients "
        "(PREFIX.library_used.NAME:1|c).",
    ).tag(config=True)
    statsd_env = Unicode(
        DEFAULT_STATSD_ENV,
        help="Environment label given to statsd lines, which carry none.",
    ).tag(config=True)
    base_url = Unicode(
        "/",
        help="URL prefix every route is served under (e.g. /services/popcon/ behind a proxy).",
    ).tag(config=True)
    config_file = Unicode(
        "popcon_config.py",
        help="Configuration file to load if it exists (a Python file setting c.PopconServe.*).",
    ).tag(config=True)
    generate_config = Bool(
        False, help="Write a commented configuration file to --config and exit."
    ).tag(config=True)

    aliases = {  # noqa: RUF012 - traitlets declares it an instance attribute, not a ClassVar
        "udp": "PopconServe.udp",
        "http": "PopconServe.http",
        "db": "PopconServe.db",
        "bucket-width": "PopconServe.bucket_width",
        "retention-days": "PopconServe.retention_days",
        "min-count": "PopconServe.min_count",
        "min-users": "PopconServe.min_users",
        "max-environments": "PopconServe.max_environments",
        "max-label-sets-per-env": "PopconServe.max_label_sets_per_env",
        "max-libraries-per-env": "PopconServe.max_libraries_per_env",
        "max-libraries": "PopconServe.max_libraries",
        "max-versions-per-library": "PopconServe.max_versions_per_library",
        "max-versions": "PopconServe.max_versions",
        "max-importers-per-library": "PopconServe.max_importers_per_library",
        "max-importers": "PopconServe.max_importers",
        "max-connections": "PopconServe.max_connections",
        "idle-timeout": "PopconServe.idle_timeout",
        "body-timeout": "PopconServe.body_timeout",
        "quiet-after": "PopconServe.quiet_after",
        "statsd-prefix": "PopconServe.statsd_prefix",
        "statsd-env": "PopconServe.statsd_env",
        "base-url": "PopconServe.base_url",
        "config": "PopconServe.config_file",
        "log-level": "Application.log_level",
    }
    flags = {  # noqa: RUF012 - traitlets declares it an instance attribute, not a ClassVar
        "open": ({"PopconServe": {"open": True}}, open.help),
        "metrics-open": ({"PopconServe": {"metrics_open": True}}, metrics_open.help),
        "generate-config": ({"PopconServe": {"generate_config": True}}, generate_config.help),
        "debug": ({"Application": {"log_level": logging.DEBUG}}, "Log everything."),
    }

    @default("db")
    def _db_default(self) -> str:
        return default_db_path()

    @default("log_level")
    def _log_level_default(self) -> int:
        return logging.INFO

    @default("log_format")
    def _log_format_default(self) -> str:
        return "[%(levelname)1.1s %(asctime)s %(name)s] %(message)s"

    @default("log")
    def _log_default(self) -> logging.Logger:
        return logging.getLogger("popcon")

    def get_default_logging_config(self) -> dict[str, Any]:
        config = super().get_default_logging_config()
        if "loggers" in config:
            config["loggers"] = {
                "popcon": {"level": "DEBUG", "handlers": ["console"]},
                # tornado's own errors (an exception in a handler) in the same format
                "tornado": {"level": "WARNING", "handlers": ["console"], "propagate": False},
            }
        return config

    @validate("min_count", "min_users")
    def _check_threshold(self, proposal: Any) -> int:
        value: int = proposal["value"]
        if value < 1:
            raise ValueError(f"--{proposal['trait'].name.replace('_', '-')}: expected at least 1")
        return value

    @validate("max_connections", "idle_timeout", "body_timeout", "quiet_after")
    def _check_positive(self, proposal: Any) -> float:
        value: float = proposal["value"]
        if not value > 0:
            raise ValueError(f"--{proposal['trait'].name.replace('_', '-')}: expected more than 0")
        return value

    @validate("udp", "http")
    def _check_address(self, proposal: Any) -> str:
        value: str = proposal["value"]
        try:
            parse_address(value, 0)
        except ValueError as error:
            raise ValueError(f"--{proposal['trait'].name}: {error}") from None
        return value

    def initialize(self, argv: list[str] | None = None) -> None:
        """Parse the flags, then load the configuration file (the flags win over it).

        A bad flag raises ``ValueError`` naming it, where traitlets would log and exit.
        """
        argv = list(sys.argv[1:] if argv is None else argv)
        check_flags(argv, self.aliases, self.flags)
        try:
            inspect.unwrap(Application.parse_command_line)(self, argv)
        except (TraitError, ArgumentError) as error:
            raise ValueError(trait_reason(str(error))) from None
        if self.extra_args:
            raise ValueError(f"unexpected argument {self.extra_args[0]!r}")
        if self.config_file and os.path.exists(self.config_file) and not self.generate_config:
            self.load_config_file(self.config_file)

    def start(self) -> None:
        """Write the configuration file (``--generate-config``), or run the collector."""
        if self.generate_config:
            self.write_config_file()
        else:
            run(self.serve_settings())

    def serve_settings(self) -> ServeSettings:
        """The settings resolved into what :func:`serve` takes; ``ValueError`` names the flag."""
        try:
            store = StoreSettings(
                bucket_width=self.bucket_width,
                retention=self.retention_days * DAY,
                max_environments=self.max_environments,
                max_label_sets_per_env=self.max_label_sets_per_env,
                max_libraries_per_env=self.max_libraries_per_env,
                max_libraries=self.max_libraries,
                max_versions_per_library=self.max_versions_per_library,
                max_versions=self.max_versions,
                max_importers_per_library=self.max_importers_per_library,
                max_importers=self.max_importers,
            )
            store.check()
        except ValueError as error:
            raise ValueError(flag_reason(str(error))) from None
        token = check_token(os.environ.get(API_TOKEN_ENV, ""))
        key = os.environ.get(KEY_ENV, "")
        mode = configure_from_hub(self) or ("open" if self.open else "token")
        return ServeSettings(
            udp=parse_address(self.udp, DEFAULT_COLLECTOR_PORT),
            http=parse_address(self.http, DEFAULT_HTTP_PORT),
            db=os.path.expanduser(self.db),
            store=store,
            min_count=self.min_count,
            min_users=self.min_users,
            api_auth=make_auth(mode, token),
            metrics_auth=OpenAuth() if self.metrics_open else make_auth(mode, token),
            key=key.encode() if key else None,
            statsd_prefix=self.statsd_prefix,
            statsd_env=self.statsd_env,
            base_url=self.base_url,
            http_limits=HttpLimits(self.max_connections, self.idle_timeout, self.body_timeout),
            quiet_after=self.quiet_after * 3600,
        )

    def write_config_file(self) -> None:
        """Write the commented configuration of every setting; refuse to overwrite a file."""
        target = Path(self.config_file)
        if target.exists():
            raise FileExistsError(f"--generate-config: {target} exists; remove it or pass --config")
        target.write_text(self.generate_config_file() + "\n", encoding="utf-8")
        print(f"wrote {target}")


#: How ``settings_markdown`` shows defaults computed at run time.
_SHOWN_DEFAULTS = {"db": "`$XDG_DATA_HOME/popcon/popcon.sqlite`", "log_level": "`INFO`"}


def settings_markdown() -> str:
    """The settings table of docs/collector.md, generated from the traits (a test compares)."""
    flags_of: dict[str, list[str]] = {}
    for flag, target in PopconServe.aliases.items():
        flags_of.setdefault(target.split(".")[-1], []).append(f"--{flag}")
    for flag, (config, _help) in PopconServe.flags.items():
        for section in config.values():
            for name in section:
                flags_of.setdefault(name, []).append(f"--{flag}")
    rows = ["| setting | flag | default | meaning |", "|---|---|---|---|"]
    traits = dict(sorted(PopconServe.class_own_traits(config=True).items()))
    traits["log_level"] = PopconServe.class_traits()["log_level"]
    for name, trait in traits.items():
        owner = "Application" if name == "log_level" else "PopconServe"
        if name in _SHOWN_DEFAULTS:
            shown = _SHOWN_DEFAULTS[name]
        elif isinstance(trait.default_value, str):
            shown = f"`{trait.default_value}`"
        else:
            shown = f"`{trait.default_value!r}`"
        flag = ", ".join(f"`{f}`" for f in flags_of.get(name, []))
        text = " ".join((trait.help or "").split()).replace("|", "\\|")
        rows.append(f"| `c.{owner}.{name}` | {flag} | {shown} | {text} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``popcon serve [flags]``: the exit status; a bad flag or setting is one line on stderr
    (status 2), an address or database that cannot be used too (status 1), and so are rows
    that could not be written at stop (status 1)."""
    try:
        PopconServe.launch_instance(argv)
    except (ValueError, OSError) as error:
        print(f"popcon serve: {one_line(error)}", file=sys.stderr)
        return 2 if isinstance(error, ValueError) else 1
    finally:
        PopconServe.clear_instance()  # one application per call (tests call main again)
    return 0
