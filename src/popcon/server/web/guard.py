"""What keeps the HTTP side answering under hostile clients, and its logs free of tokens.

- :class:`GuardedHTTPServer`: tornado's HTTP server with timeouts (a connection waiting for a
  request's headers, idle between requests included, is closed after ``idle_timeout``; a body
  slower than ``body_timeout`` too), a limit on open connections (at the limit, the connection
  idle longest is closed to make room, or the new one when none is idle), and an accept loop
  that, when the system refuses a descriptor (``EMFILE``), pauses instead of spinning and says
  so at most once per :data:`LOG_EVERY` seconds;
- :func:`raise_descriptor_limit`: the soft ``RLIMIT_NOFILE`` raised to the hard one, and
  :func:`connection_limit`, the limit kept well under it;
- :func:`redact_tornado_logs`: a filter on tornado's and asyncio's loggers that takes the
  query string (which may hold ``?token=``) out of every line they write.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from typing import Any, Callable

from tornado import httputil
from tornado.http1connection import HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream

log = logging.getLogger("popcon.http")

#: At most one line per this many seconds about refused or closed connections.
LOG_EVERY = 10.0
#: How long accepting pauses when the system has no descriptor to give.
ACCEPT_PAUSE = 0.5
#: Connections accepted per wake-up of the listening socket (tornado's backlog).
ACCEPTS_PER_WAKE = 128
#: A request may not carry a body larger than this (the API only answers GET and HEAD).
MAX_BODY_SIZE = 64 * 1024
#: Loggers whose lines may carry a request's URI.
REDACTED_LOGGERS = ("tornado.access", "tornado.application", "tornado.general", "asyncio")


class RateLimitedLog:
    """Warnings about one thing, at most one line per ``every`` seconds; the line says how
    many events it stands for."""

    def __init__(self, every: float = LOG_EVERY, clock: Callable[[], float] = time.monotonic):
        self.every = every
        self.clock = clock
        self._last: float | None = None
        self._events = 0

    def warning(self, message: str, *args: Any) -> None:
        self._events += 1
        now = self.clock()
        if self._last is not None and now - self._last < self.every:
            return
        log.warning(message + " (%d time(s) since the last such line)", *args, self._events)
        self._last = now
        self._events = 0


def raise_descriptor_limit() -> int:
    """Raise the soft limit on open descriptors to the hard one; the soft limit in force."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # pragma: no cover - a hard limit the system caps
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_limit(wanted: int, descriptors: int) -> int:
    """``wanted``, but at most half the descriptors (the rest: the database, UDP, logs)."""
    return max(1, min(wanted, descriptors // 2))


class _Watched(httputil.HTTPMessageDelegate):
    """A request's delegate that tells the server when its headers have arrived."""

    def __init__(self, inner: httputil.HTTPMessageDelegate, on_headers: Callable[[], None]) -> None:
        self.inner = inner
        self.on_headers = on_headers

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Any:
        self.on_headers()
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        self.inner.finish()

    def on_connection_close(self) -> None:
        self.inner.on_connection_close()


class GuardedHTTPServer(HTTPServer):
    """An HTTP server with timeouts, a connection limit and an accept loop that cannot spin."""

    def initialize(  # type: ignore[override]  # tornado's takes every HTTPServer option
        self,
        request_callback: Any,
        *,
        max_connections: int,
        idle_timeout: float,
        body_timeout: float,
    ) -> None:
        super().initialize(
            request_callback,
            idle_connection_timeout=idle_timeout,
            body_timeout=body_timeout,
            max_body_size=MAX_BODY_SIZE,
        )
        self.max_connections = max_connections
        #: Connections waiting for a request's headers, the one waiting longest first.
        self._idle: dict[HTTP1ServerConnection, None] = {}
        #: Connections closed to make room whose close tornado has not yet noticed.
        self._closing: set[HTTP1ServerConnection] = set()
        self._full_log = RateLimitedLog()
        self._accept_log = RateLimitedLog()

    @property
    def open_connections(self) -> int:
        return len(self._connections) - len(self._closing)

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        if self.open_connections >= self.max_connections:
            if not self._idle:
                stream.close()
                self._full_log.warning(
                    "http: %d connections open, all busy: refused a new one", self.max_connections
                )
                return
            oldest = next(iter(self._idle))
            del self._idle[oldest]
            self._closing.add(oldest)
            oldest.stream.close()
            self._full_log.warning(
                "http: %d connections open: closed the one idle longest", self.max_connections
            )
        super().handle_stream(stream, address)

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        conn = server_conn
        assert isinstance(conn, HTTP1ServerConnection)
        self._idle.pop(conn, None)
        self._idle[conn] = None
        delegate = super().start_request(server_conn, request_conn)
        return _Watched(delegate, lambda: self._idle.pop(conn, None))

    def on_close(self, server_conn: object) -> None:
        assert isinstance(server_conn, HTTP1ServerConnection)
        self._idle.pop(server_conn, None)
        self._closing.discard(server_conn)
        super().on_close(server_conn)

    def add_sockets(self, sockets: Any) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = self._accept_on(sock)

    def _accept_on(self, sock: socket.socket) -> Callable[[], None]:
        """Accept connections on ``sock``; the callable returned stops it (``stop()``)."""
        loop = IOLoop.current()
        state: dict[str, Any] = {"stopped": False, "resume": None}

        def readable(_fd: Any, _events: int) -> None:
            for _ in range(ACCEPTS_PER_WAKE):
                if state["stopped"]:
                    return
                try:
                    connection, address = sock.accept()
                except BlockingIOError:
                    return
                except ConnectionAbortedError:
                    continue
                except OSError as error:
                    self._accept_log.warning(
                        "http: cannot accept a connection (%s); pausing %.1f s",
                        error.strerror or error,
                        ACCEPT_PAUSE,
                    )
                    loop.remove_handler(sock)
                    state["resume"] = loop.call_later(ACCEPT_PAUSE, resume)
                    return
                self._handle_connection(connection, address)

        def resume() -> None:
            state["resume"] = None
            if not state["stopped"]:
                loop.add_handler(sock, readable, IOLoop.READ)

        def stop() -> None:
            state["stopped"] = True
            if state["resume"] is not None:
                loop.remove_timeout(state["resume"])
            loop.remove_handler(sock)

        loop.add_handler(sock, readable, IOLoop.READ)
        return stop


# -- nothing secret in the logs ----------------------------------------------------------------

#: A URI's query string (``/api/v1/libraries?token=…`` → ``/api/v1/libraries?…``), to the
#: next white space (a request line has none; a quote may be part of the query), and a
#: ``token=`` wherever else it shows.
_QUERY_RE = re.compile(r"(/[^\s?'\"]*)\?\S*")
_TOKEN_RE = re.compile(r"(token=)[^\s&'\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every query string and ``token=`` value taken out."""
    return _TOKEN_RE.sub(r"\1…", _QUERY_RE.sub(r"\1?…", text))


class RedactQueries(logging.Filter):
    """Rewrites a record's message (and traceback) without query strings."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_REDACT = RedactQueries()


def redact_tornado_logs() -> None:
    """Put the redacting filter on every logger that writes a request's URI (once)."""
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if _REDACT not in logger.filters:
            logger.addFilter(_REDACT)
