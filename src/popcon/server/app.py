"""``popcon serve``: the collector as a traitlets application.

The application only gathers settings (every one a trait with ``help=``, flags map onto them,
``popcon_config.py`` can set them, secrets come from the environment) and then calls
:func:`serve`, which starts the :class:`~popcon.server.receive.receiver.Collector` (UDP receiver and
SQLite writer) and the tornado HTTP server, logs one line, and waits for SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

from traitlets import Bool, Int, TraitError, Unicode, default, validate
from traitlets.config import Application
from traitlets.config.loader import ArgumentError

from popcon import __version__
from popcon.protocol.decode import DEFAULT_STATSD_ENV, DEFAULT_STATSD_PREFIX
from popcon.server.receive.receiver import Collector, parse_address
from popcon.server.storage.schema import DAY, StoreSettings
from popcon.server.web.auth import AUTH_MODES, Auth, OpenAuth, make_auth
from popcon.server.web.hub import configure_from_hub

log = logging.getLogger("popcon.serve")

#: Environment variables ``popcon serve`` reads (secrets never come from flags or files).
API_TOKEN_ENV = "POPCON_API_TOKEN"
KEY_ENV = "POPCON_KEY"
UDP_PORT = 8137
HTTP_PORT = 8138


def default_db_path(environ: dict[str, str] | None = None) -> str:
    """``$XDG_DATA_HOME/popcon/popcon.sqlite``, else ``~/.local/share/popcon/popcon.sqlite``."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "popcon", "popcon.sqlite")


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
        f"127.0.0.1:{UDP_PORT}",
        help="Address to receive datagrams on, HOST:PORT ([::1]:PORT for IPv6; port 0 picks a "
        "free one).",
    ).tag(config=True)
    http = Unicode(
        f"127.0.0.1:{HTTP_PORT}",
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

    aliases: ClassVar[dict[str, Any]] = {
        "udp": "PopconServe.udp",
        "http": "PopconServe.http",
        "db": "PopconServe.db",
        "bucket-width": "PopconServe.bucket_width",
        "retention-days": "PopconServe.retention_days",
        "min-count": "PopconServe.min_count",
        "max-environments": "PopconServe.max_environments",
        "max-label-sets-per-env": "PopconServe.max_label_sets_per_env",
        "max-libraries-per-env": "PopconServe.max_libraries_per_env",
        "max-libraries": "PopconServe.max_libraries",
        "statsd-prefix": "PopconServe.statsd_prefix",
        "statsd-env": "PopconServe.statsd_env",
        "base-url": "PopconServe.base_url",
        "config": "PopconServe.config_file",
        "log-level": "Application.log_level",
    }
    flags: ClassVar[dict[str, Any]] = {
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

    @validate("min_count")
    def _check_min_count(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise ValueError("--min-count: expected at least 1")
        return proposal["value"]

    @validate("udp", "http")
    def _check_address(self, proposal: Any) -> str:
        name = proposal["trait"].name
        try:
            parse_address(proposal["value"], 0)
        except ValueError as error:
            raise ValueError(f"--{name}: {error}") from None
        return proposal["value"]

    def initialize(self, argv: Sequence[str] | None = None) -> None:
        """Parse flags (``ValueError`` names a bad one) and load the configuration file."""
        argv = list(sys.argv[1:] if argv is None else argv)
        check_flags(argv, self.aliases, self.flags)
        try:
            # undecorated: traitlets would log and exit instead of raising
            Application.parse_command_line.__wrapped__(self, argv)  # type: ignore[attr-defined]
        except (TraitError, ArgumentError) as error:
            raise ValueError(trait_reason(str(error))) from None
        if self.extra_args:
            raise ValueError(f"unexpected argument {self.extra_args[0]!r}")
        if self.config_file and os.path.exists(self.config_file) and not self.generate_config:
            self.load_config_file(self.config_file)
            # the command line wins over the file
            self.update_config(self.cli_config)

    def start(self) -> None:
        if self.generate_config:
            write_config_file(self, self.config_file)
            return
        self.exit(run(self.serve_settings()))

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
            )
            store.check()
        except ValueError as error:
            raise ValueError(flag_reason(str(error))) from None
        token = os.environ.get(API_TOKEN_ENV, "")
        key = os.environ.get(KEY_ENV, "")
        mode = configure_from_hub(self) or ("open" if self.open else "token")  # issue 4: Hub
        return ServeSettings(
            udp=parse_address(self.udp, UDP_PORT),
            http=parse_address(self.http, HTTP_PORT),
            db=os.path.expanduser(self.db),
            store=store,
            min_count=self.min_count,
            api_auth=make_auth(mode, token),
            metrics_auth=OpenAuth() if self.metrics_open else make_auth(mode, token),
            key=key.encode() if key else None,
            statsd_prefix=self.statsd_prefix,
            statsd_env=self.statsd_env,
            base_url=self.base_url,
        )


def check_flags(argv: Sequence[str], aliases: dict[str, Any], flags: dict[str, Any]) -> None:
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


#: How ``settings_markdown`` shows defaults computed at run time.
_SHOWN_DEFAULTS = {"db": "`$XDG_DATA_HOME/popcon/popcon.sqlite`"}


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
        elif name == "log_level":
            shown = "`INFO`"
        elif isinstance(trait.default_value, str):
            shown = f"`{trait.default_value}`"
        else:
            shown = f"`{trait.default_value!r}`"
        flag = ", ".join(f"`{f}`" for f in flags_of.get(name, []))
        text = " ".join((trait.help or "").split()).replace("|", "\\|")
        rows.append(f"| `c.{owner}.{name}` | {flag} | {shown} | {text} |")
    return "\n".join(rows) + "\n"


def flag_reason(reason: str) -> str:
    """``"bucket_width: expected …"`` → ``"--bucket-width: expected …"``."""
    name, sep, rest = reason.partition(":")
    if sep and name.isidentifier():
        flag = {"retention": "retention-days"}.get(name, name.replace("_", "-"))
        return f"--{flag}:{rest}"
    return reason


def write_config_file(app: Application, path: str) -> None:
    """Write the commented configuration of every setting; refuse to overwrite a file."""
    target = Path(path)
    if target.exists():
        raise FileExistsError(f"--generate-config: {target} exists; remove it or pass --config")
    target.write_text(app.generate_config_file() + "\n", encoding="utf-8")
    print(f"wrote {target}")


@dataclass
class ServeSettings:
    """Everything :func:`serve` needs, resolved (addresses parsed, secrets read)."""

    udp: tuple
    http: tuple
    db: str
    store: StoreSettings
    min_count: int
    api_auth: Auth
    metrics_auth: Auth
    key: bytes | None
    statsd_prefix: str
    statsd_env: str
    base_url: str = "/"


def _bind_http(address: tuple) -> list[socket.socket]:
    from tornado.netutil import bind_sockets

    host, port = address
    return bind_sockets(port, host)


def format_address(address: tuple) -> str:
    return f"{url_host(address[0])}:{address[1]}"


def reason_of(error: BaseException) -> str:
    return getattr(error, "strerror", None) or one_line(error)


def start_collector(collector: Collector, settings: ServeSettings) -> None:
    """Start the writer and the receiver; an error names the flag it comes from."""
    try:
        collector.writer.start()
    except (OSError, sqlite3.Error) as error:
        raise OSError(f"--db {settings.db}: {reason_of(error)}") from None
    try:
        collector.receiver.start()
    except OSError as error:
        collector.writer.stop()
        raise OSError(f"--udp {format_address(settings.udp)}: {reason_of(error)}") from None


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def serve(
    settings: ServeSettings,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[dict[str, str]], None] | None = None,
    extra_routes: Sequence[tuple] = (),
) -> None:
    """Run the collector until ``stop`` is set (or SIGTERM/SIGINT), then stop cleanly.

    ``on_ready`` receives the addresses actually bound (``udp``, ``http``, ``db``) once both
    sides listen; the log line says the same.
    """
    from tornado.httpserver import HTTPServer

    from popcon.server.web.api import Reader, ServerContext, make_app, normalize_prefix
    from popcon.server.web.metrics import make_registry

    stop = stop or asyncio.Event()
    collector = Collector(
        settings.db,
        settings.udp,
        settings.store,
        key=settings.key,
        statsd_prefix=settings.statsd_prefix,
        statsd_env=settings.statsd_env,
    )
    start_collector(collector, settings)
    reader = Reader(settings.db)
    server = None
    try:
        ctx = ServerContext(
            reader=reader,
            min_count=settings.min_count,
            api_auth=settings.api_auth,
            metrics_auth=settings.metrics_auth,
            registry=make_registry(reader.connection, settings.min_count),
        )
        try:
            sockets = _bind_http(settings.http)
        except OSError as error:
            raise OSError(f"--http {format_address(settings.http)}: {reason_of(error)}") from None
        server = HTTPServer(make_app(ctx, settings.base_url, extra_routes))
        server.add_sockets(sockets)
        udp_host, udp_port = collector.address[:2]
        http_host, http_port = sockets[0].getsockname()[:2]
        where = {
            "udp": f"udp://{url_host(udp_host)}:{udp_port}",
            "http": f"http://{url_host(http_host)}:{http_port}{normalize_prefix(settings.base_url)}",
            "db": str(Path(settings.db).resolve()),
        }
        key_note = "signed datagrams only" if settings.key else "unsigned datagrams accepted"
        log.info(
            "popcon %s listening on %s and %s, storing in %s (api: %s, metrics: %s, %s)",
            __version__,
            where["udp"],
            where["http"],
            where["db"],
            settings.api_auth.describe(),
            settings.metrics_auth.describe(),
            key_note,
        )
        if on_ready is not None:
            on_ready(where)
        await stop.wait()
    finally:
        if server is not None:
            server.stop()
        collector.stop()
        reader.close()
    log.info("popcon stopped; everything received was written to %s", settings.db)


def run(settings: ServeSettings) -> int:
    """``serve`` in a new event loop, stopped by SIGTERM or SIGINT; the exit status."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, stop.set)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
                signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
        await serve(settings, stop=stop)

    asyncio.run(main())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``popcon serve [flags]``: the exit status; a bad flag or setting is one line on stderr."""
    app = PopconServe()
    try:
        app.initialize(list(argv) if argv is not None else None)
        if app.generate_config:
            write_config_file(app, app.config_file)
            return 0
        settings = app.serve_settings()
        return run(settings)
    except (ValueError, OSError) as error:
        print(f"popcon serve: {one_line(error)}", file=sys.stderr)
        return 2 if isinstance(error, ValueError) else 1


def one_line(error: BaseException) -> str:
    text = str(error).strip() or error.__class__.__name__
    return text.splitlines()[0]


__all__ = ["AUTH_MODES", "PopconServe", "ServeSettings", "default_db_path", "main", "serve"]
