"""The one place that wires the collector's rooms together, and runs them.

:func:`serve` starts the :class:`~popcon.server.receive.receiver.Collector` (UDP receiver and
SQLite writer), a :class:`~popcon.server.web.base.Reader` and the HTTP server with every face's
routes (:func:`make_app`), logs one line, and waits to be stopped; :func:`run` does that in a
new event loop until SIGTERM or SIGINT. Both take the resolved
:class:`~popcon.server.settings.ServeSettings` (:class:`~popcon.server.app.PopconServe` makes
them from flags, a config file and the environment).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
from pathlib import Path

from tornado.netutil import bind_sockets
from tornado.web import Application as WebApplication

from popcon import __version__
from popcon.server.receive.receiver import Collector, collect_garbage_rarely
from popcon.server.settings import ServeSettings, one_line, os_reason
from popcon.server.web.api import api_routes
from popcon.server.web.auth import Route
from popcon.server.web.base import Reader, ServerContext, log_request, normalize_prefix
from popcon.server.web.dashboard import dashboard_routes
from popcon.server.web.guard import (
    GuardedHTTPServer,
    connection_limit,
    raise_descriptor_limit,
    redact_tornado_logs,
)
from popcon.server.web.metrics import make_registry, metrics_routes

log = logging.getLogger("popcon.serve")


def make_app(ctx: ServerContext, prefix: str = "/") -> WebApplication:
    """Every face under ``prefix``: the API, /metrics, what the auth policy needs (a Hub
    OAuth callback) and the dashboard."""
    base = normalize_prefix(prefix)
    routes: list[Route] = [
        *api_routes(ctx, base),
        *metrics_routes(ctx, base),
        *ctx.api_auth.routes(base),
        *dashboard_routes(ctx, base),
    ]
    redact_tornado_logs()
    return WebApplication(routes, log_function=log_request)


def start_collector(settings: ServeSettings) -> Collector:
    """The receiver and the writer, started; an error names the flag of the part that failed
    (the store's errors are SQLite's or name a file; the receiver's are its socket's)."""
    collector = Collector(
        settings.db,
        settings.udp,
        settings.store,
        key=settings.key,
        statsd_prefix=settings.statsd_prefix,
        statsd_env=settings.statsd_env,
    )
    try:
        collector.start()
    except sqlite3.Error as error:
        raise OSError(f"--db {settings.db}: {one_line(error)}") from None
    except OSError as error:
        flag = f"--db {settings.db}" if error.filename else f"--udp {host_port(settings.udp)}"
        raise OSError(f"{flag}: {os_reason(error)}") from None
    return collector


def host_port(address: tuple[str, int]) -> str:
    """``127.0.0.1:8137``, ``[::1]:8137``."""
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve(settings: ServeSettings, *, stop: asyncio.Event | None = None) -> None:
    """Run the collector until ``stop`` is set, then stop cleanly: receive no more, write
    everything received, close. Raises ``OSError`` naming ``--db`` when rows could not be
    written by then (a full disk, a database locked by another program)."""
    stop = stop or asyncio.Event()
    collect_garbage_rarely()
    collector = start_collector(settings)
    reader = Reader(settings.db)
    server = None
    try:
        ctx = ServerContext(
            reader=reader,
            min_count=settings.min_count,
            min_users=settings.min_users,
            api_auth=settings.api_auth,
            metrics_auth=settings.metrics_auth,
            registry=make_registry(reader.connection, settings.min_count, settings.min_users),
            quiet_after=settings.quiet_after,
        )
        try:
            sockets = bind_sockets(settings.http[1], settings.http[0])
        except OSError as error:
            raise OSError(f"--http {host_port(settings.http)}: {os_reason(error)}") from None
        limits = settings.http_limits
        server = GuardedHTTPServer(
            make_app(ctx, settings.base_url),
            max_connections=connection_limit(limits.max_connections, raise_descriptor_limit()),
            idle_timeout=limits.idle_timeout,
            body_timeout=limits.body_timeout,
        )
        server.add_sockets(sockets)
        log.info(
            "popcon %s listening on udp://%s and http://%s%s, storing in %s (api: %s, "
            "metrics: %s, %s)",
            __version__,
            host_port(collector.address),
            host_port(sockets[0].getsockname()),
            normalize_prefix(settings.base_url),
            Path(settings.db).resolve(),
            settings.api_auth.describe(),
            settings.metrics_auth.describe(),
            "signed datagrams only" if settings.key else "unsigned datagrams accepted",
        )
        await stop.wait()
    finally:
        if server is not None:
            server.stop()
        unwritten = collector.stop()
        reader.close()
    if unwritten:
        last_error = collector.writer.last_error
        raise OSError(
            f"--db {settings.db}: stopped with {unwritten} rows not written"
            + (f" (last error: {last_error})" if last_error else "")
        )
    log.info("popcon stopped; everything received was written to %s", settings.db)


def run(settings: ServeSettings) -> None:
    """:func:`serve` in a new event loop, stopped by SIGTERM or SIGINT."""

    async def until_signalled() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, stop.set)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
                signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
        await serve(settings, stop=stop)

    asyncio.run(until_signalled())
