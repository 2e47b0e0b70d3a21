"""The HTTP side of ``popcon serve``: the JSON API under ``/api/v1/`` and ``/metrics``.

Handlers stay thin: they turn the query string into a mapping, run an ``answers`` function on a
reader thread (SQLite reads never block the event loop) and write JSON. Who may read is decided
by the :class:`~popcon.server.web.auth.Auth` objects in the :class:`ServerContext`, chosen once at
start-up. :func:`make_routes` builds every route under a URL prefix (``/`` standalone, the
``JUPYTERHUB_SERVICE_PREFIX`` behind a Hub), so a dashboard adds its own routes beside them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from tornado.web import Application, RequestHandler

from popcon.server.query import answers, queries
from popcon.server.query.params import BadParameter
from popcon.server.web.auth import Auth, OpenAuth, send_error

access_log = logging.getLogger("popcon.http")

API_PREFIX = "api/v1/"
#: Every endpoint of the API, as documented in docs/collector.md (a test keeps them in step).
ENDPOINTS = (
    "/api/v1/libraries",
    "/api/v1/libraries/<name>",
    "/api/v1/unused",
    "/api/v1/user-installed",
    "/api/v1/environments",
    "/metrics",
)


class Reader:
    """Read-only SQLite connections, one per reader thread, used off the event loop."""

    def __init__(self, db_path: str, workers: int = 2) -> None:
        self.db_path = db_path
        self._local = threading.local()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="popcon-read")
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = queries.connect_readonly(self.db_path)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(connection, *args, **kwargs)`` on a reader thread."""

        def call() -> Any:
            return fn(self.connection(), *args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()


@dataclass
class ServerContext:
    """What every handler needs; built once by ``popcon serve`` (or a test)."""

    reader: Reader
    min_count: int = 3
    api_auth: Auth = field(default_factory=OpenAuth)
    metrics_auth: Auth = field(default_factory=OpenAuth)
    #: The clock; the one seam tests use to move time.
    now: Callable[[], float] = time.time
    #: The metrics registry served at /metrics (``metrics.make_registry``); None: no /metrics.
    registry: Any = None


class BaseHandler(RequestHandler):
    """Asks the context's ``Auth`` in ``prepare`` and answers errors as one-line JSON."""

    ctx: ServerContext
    auth: Auth

    def initialize(self, ctx: ServerContext, auth: Auth | None = None) -> None:
        self.ctx = ctx
        self.auth = auth if auth is not None else ctx.api_auth

    async def prepare(self) -> None:
        user = await self.auth.authenticate(self)
        if user is None:
            self.auth.refuse(self)
            return
        self.current_user = user

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        send_error(self, status_code, self._reason or "error")

    def query_params(self) -> dict[str, str]:
        """The query string as a mapping; a parameter given twice is a bad request."""
        params = {}
        for name, values in self.request.query_arguments.items():
            if len(values) > 1:
                raise BadParameter(name, "given more than once")
            params[name] = self.decode_argument(values[0], name=name)
        return params

    def write_json(self, answer: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(answer) + "\n")

    async def answer(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run an ``answers`` function and write its JSON, or a 400/404/503 with a reason."""
        try:
            params = self.query_params()
            result = await self.ctx.reader.run(
                fn, *args, params, now=self.ctx.now(), min_count=self.ctx.min_count
            )
        except BadParameter as error:
            send_error(self, 400, str(error))
            return
        except queries.QueryError as error:
            send_error(self, 400, str(error))
            return
        except FileNotFoundError as error:
            send_error(self, 503, str(error))
            return
        except sqlite3.Error as error:
            send_error(self, 503, f"database unavailable: {error}")
            return
        if result is None:
            send_error(self, 404, f"library: never seen in this window: {args[0] if args else ''}")
            return
        self.write_json(result)


class AnswerHandler(BaseHandler):
    """``/api/v1/libraries``, ``/unused``, ``/user-installed``, ``/environments``."""

    def initialize(self, ctx: ServerContext, endpoint: str) -> None:  # type: ignore[override]
        super().initialize(ctx)
        self.endpoint = endpoint

    async def get(self) -> None:
        await self.answer(answers.ANSWERS[self.endpoint])


class LibraryHandler(BaseHandler):
    """``/api/v1/libraries/<name>``."""

    async def get(self, name: str) -> None:
        await self.answer(answers.library_answer, name)


class IndexHandler(BaseHandler):
    """``/api/v1/``: the endpoints, so a person with a token can find their way."""

    def get(self) -> None:
        self.write_json({"endpoints": list(ENDPOINTS)})


class NotFoundHandler(BaseHandler):
    async def prepare(self) -> None:
        send_error(self, 404, f"no such endpoint: {self.request.path}")


def normalize_prefix(prefix: str) -> str:
    """``""``, ``"/"``, ``"services/popcon"`` → ``"/"``, ``"/"``, ``"/services/popcon/"``."""
    prefix = "/" + prefix.strip("/")
    return prefix if prefix.endswith("/") else prefix + "/"


def make_routes(ctx: ServerContext, prefix: str = "/") -> list[tuple]:
    """The API and /metrics under ``prefix``; a dashboard or an auth adds routes beside them."""
    from popcon.server.web.metrics import MetricsHandler

    base = normalize_prefix(prefix)
    api = base + API_PREFIX
    routes: list[tuple] = [
        (api, IndexHandler, {"ctx": ctx}),
        (api + "libraries", AnswerHandler, {"ctx": ctx, "endpoint": "libraries"}),
        (api + r"libraries/([^/]+)", LibraryHandler, {"ctx": ctx}),
        (api + "unused", AnswerHandler, {"ctx": ctx, "endpoint": "unused"}),
        (api + "user-installed", AnswerHandler, {"ctx": ctx, "endpoint": "user-installed"}),
        (api + "environments", AnswerHandler, {"ctx": ctx, "endpoint": "environments"}),
        (api + ".*", NotFoundHandler, {"ctx": ctx}),
    ]
    if ctx.registry is not None:
        routes.append((base + "metrics", MetricsHandler, {"ctx": ctx, "auth": ctx.metrics_auth}))
    routes.extend(ctx.api_auth.routes(base))
    from popcon.server.web.dashboard import dashboard_routes  # the dashboard (issue 4)

    routes.extend(dashboard_routes(ctx, base))
    return routes


def log_request(handler: RequestHandler) -> None:
    """Access log: failures at INFO/WARNING, successes (every scrape) only at DEBUG."""
    status = handler.get_status()
    level = logging.DEBUG if status < 400 else logging.INFO if status < 500 else logging.WARNING
    request = handler.request
    access_log.log(
        level,
        "%d %s %s %.1fms",
        status,
        request.method,
        request.path,  # never the query string: it may hold ?token=
        1000.0 * request.request_time(),
    )


def make_app(
    ctx: ServerContext, prefix: str = "/", extra_routes: Sequence[tuple] = (), **settings: Any
) -> Application:
    """The tornado application: ``extra_routes`` first, then :func:`make_routes`."""
    settings.setdefault("log_function", log_request)
    return Application([*extra_routes, *make_routes(ctx, prefix)], **settings)
