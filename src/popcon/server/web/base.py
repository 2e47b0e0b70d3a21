"""What every face of ``popcon serve`` shares: reading, the context, the base handler.

- :class:`Reader`: read-only SQLite connections on reader threads, so a read never blocks the
  event loop;
- :class:`ServerContext`: what every handler needs, built once at start-up (or by a test);
- :class:`BaseHandler`: asks its :class:`~popcon.server.web.auth.Auth` in ``prepare()``, runs
  an answer function on the reader and writes JSON, answers errors as one-line JSON, and
  answers HEAD wherever it answers GET;
- :func:`normalize_prefix`, the URL prefix every route is served under (``/`` standalone, the
  ``JUPYTERHUB_SERVICE_PREFIX`` behind a Hub), and :func:`log_request`, the access log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from tornado.web import RequestHandler

from popcon.server.query.connection import connect_readonly
from popcon.server.query.environments import QUIET_AFTER
from popcon.server.query.params import BadParameter, QueryError
from popcon.server.web.auth import Auth, OpenAuth, send_error

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

access_log = logging.getLogger("popcon.http")

T = TypeVar("T")


class Reader:
    """Read-only SQLite connections, one per reader thread, used off the event loop."""

    def __init__(self, db_path: str, workers: int = 2) -> None:
        self.db_path = db_path
        self._local = threading.local()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="popcon-read")
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect_readonly(self.db_path)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(connection, *args, **kwargs)`` on a reader thread."""

        def call() -> T:
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
    min_users: int = 3
    api_auth: Auth = field(default_factory=OpenAuth)
    metrics_auth: Auth = field(default_factory=OpenAuth)
    #: The clock; the one seam tests use to move time.
    now: Callable[[], float] = time.time
    #: The registry served at /metrics (``metrics.make_registry``); None: no /metrics.
    registry: CollectorRegistry | None = None
    #: Seconds without a report after which an environment is flagged quiet.
    quiet_after: float = QUIET_AFTER


class BaseHandler(RequestHandler):
    """Asks its ``Auth`` (the context's API auth unless the route names another) in
    ``prepare`` and answers errors as one-line JSON."""

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

    async def head(self, *args: str) -> None:
        """HEAD wherever GET is: the same status and headers; tornado leaves out the body."""
        answered = self.get(*args)
        if answered is not None:
            await answered

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

    async def answer(
        self, fn: Callable[..., dict[str, Any] | None], *args: str, **settings: Any
    ) -> None:
        """Run an answer function (connection, ``*args``, parameters, ``now=``,
        ``min_count=``, ``min_users=`` and ``settings``) and write its JSON, or a 400/404/503
        with a reason."""
        try:
            params = self.query_params()
            result = await self.ctx.reader.run(
                fn,
                *args,
                params,
                now=self.ctx.now(),
                min_count=self.ctx.min_count,
                min_users=self.ctx.min_users,
                **settings,
            )
        except BadParameter as error:
            send_error(self, 400, str(error))
            return
        except QueryError as error:
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


def normalize_prefix(prefix: str) -> str:
    """``""``, ``"/"``, ``"services/popcon"`` → ``"/"``, ``"/"``, ``"/services/popcon/"``."""
    prefix = "/" + prefix.strip("/")
    return prefix if prefix.endswith("/") else prefix + "/"


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
