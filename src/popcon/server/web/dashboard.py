"""The dashboard: one HTML page, its static files, and two JSON answers only it needs.

Routes (under the URL prefix, ``/`` standalone or ``JUPYTERHUB_SERVICE_PREFIX`` behind a Hub):

- ``<prefix>``, ``<prefix>library/<name>``, ``<prefix>programs``, ``<prefix>unused``,
  ``<prefix>user-installed``, ``<prefix>environments``: the same page (``static/index.html``);
  the script draws the view the path names. The query string is the API's
  (``?since=24h&env=…&label.hub=…&include=programs``), so a view's address is also the
  question it asks.
- ``<prefix>static/…``: the script, the style sheet and the charting library (Chart.js, MIT,
  shipped in the package with its licence): nothing is loaded from anywhere else.
- ``<prefix>dashboard/api/rows``: per library, a trend (processes per slice of the window, for
  the sparklines) and the versions in use.
- ``<prefix>dashboard/api/version-history/<name>``: versions in use per slice of the window.

Both answers are built from the API's own answer functions (:mod:`popcon.server.query.answers`) over
consecutive sub-windows, so they count and hide small counts exactly like the API does.

Who may see what is the API's :class:`~popcon.server.web.auth.Auth`. The page itself holds no data:
with token auth it is served to anybody and its script asks for the token when the API answers
401; with any other policy (a Hub login) the page needs the same login as the API.
"""

from __future__ import annotations

import html
import re
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tornado.web import HTTPError, StaticFileHandler

from popcon import __version__
from popcon.server.query import answers
from popcon.server.query.params import (
    LABEL_PARAM_PREFIX,
    BadParameter,
    canonical_library,
    check_known,
    iso,
    parse_time,
)
from popcon.server.web.auth import Auth, Route
from popcon.server.web.base import BaseHandler, ServerContext, normalize_prefix

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The views the page draws; each is also a path the page is served at.
VIEWS = ("", "programs", "unused", "user-installed", "environments")
#: About this many points in a sparkline or a version history.
TARGET_SLICES = 24
#: Slice widths (seconds) a chart's time labels read well at, shortest first.
ROUND_STEPS = (60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 14400, 21600, 28800,
               43200, 86400, 2 * 86400, 7 * 86400)  # fmt: skip
#: Most libraries one ``rows`` request may name.
MAX_ROW_NAMES = 100
_WINDOW_PARAMS = ("since", "from", "until")
_ROWS_PARAMS = (*_WINDOW_PARAMS, "env", "label", "level", "origin", "include", "names")
_HISTORY_PARAMS = (*_WINDOW_PARAMS, "env", "include")


# -- answers (plain functions: connection and parameters in, JSON-ready dicts out) ------------


def slice_edges(start: int, end: int, width: int, target: int = TARGET_SLICES) -> list[int]:
    """Edges of about ``target`` (at most) consecutive slices covering ``[start, end)``.

    Every slice is a whole number of ``width`` (the bucket width the window is counted in), so
    no slice resolves time more finely than the answer for the whole window, and as long as a
    round span (:data:`ROUND_STEPS`: 20 minutes, 1 hour, 8 hours, a day...) when one fits, so
    that charts can be labelled at round intervals; the last slice may be shorter.
    ``[a, b, c]`` means the slices ``[a, b)`` and ``[b, c)``.
    """
    if end <= start or width <= 0:
        raise ValueError("slice_edges: expected start < end and a positive width")
    buckets = -(-(end - start) // width)
    least = max(1, -(-buckets // target)) * width
    step = next((r for r in ROUND_STEPS if r >= least and r % width == 0), least)
    edges = list(range(start, end, step))
    edges.append(end)
    return edges


def _api_params(params: Mapping[str, str], allowed: tuple[str, ...]) -> dict[str, str]:
    """The parameters an API answer takes, out of a dashboard request's."""
    keep = {}
    for key, value in params.items():
        if key in allowed or ("label" in allowed and key.startswith(LABEL_PARAM_PREFIX)):
            keep[key] = value
    return keep


def _slices(answer: Mapping[str, Any], step: int) -> list[tuple[int, int]]:
    start = int(parse_time(answer["from"], "from"))
    end = int(parse_time(answer["until"], "until"))
    edges = slice_edges(start, max(end, start + step), step)
    return list(zip(edges, edges[1:]))


def _slice_params(params: Mapping[str, str], start: int, end: int) -> dict[str, str]:
    sliced = {k: v for k, v in params.items() if k not in _WINDOW_PARAMS}
    sliced["from"] = iso(start)
    sliced["until"] = iso(end)
    return sliced


def _names(params: Mapping[str, str]) -> list[str]:
    text = params.get("names", "")
    names = [canonical_library(part) for part in text.split(",") if part.strip()]
    if not names:
        raise BadParameter("names", "expected one or more library names, comma separated")
    if len(names) > MAX_ROW_NAMES:
        raise BadParameter("names", f"at most {MAX_ROW_NAMES} libraries per request")
    return list(dict.fromkeys(names))


def rows_answer(
    conn: sqlite3.Connection,
    params: Mapping[str, str],
    *,
    now: float,
    min_count: int,
    min_users: int,
) -> dict[str, Any]:
    """``GET dashboard/api/rows``: a trend and the versions in use for each library in
    ``names``.

    The trend is the ``processes`` of ``/api/v1/libraries`` (same window and filters) in each
    slice of the window; the versions are those of ``/api/v1/libraries/<name>``, which only
    an ``env`` filter narrows (versions are stored per environment, not per label set).
    ``{"from", "until", "times": [slice starts], "step", "rows": {name: {"trend": [...],
    "versions": [{"version", "users", "processes"}]}}, "versions_filter": [...], "min_count",
    "min_users"}``.
    """
    check_known(params, (*_ROWS_PARAMS, "token"))
    names = _names(params)
    library_params = _api_params(params, answers.ENDPOINT_PARAMS["libraries"])
    whole = answers.libraries_answer(
        conn, library_params, now=now, min_count=min_count, min_users=min_users
    )
    step = int(whole["step"])
    slices = _slices(whole, step)
    trends: dict[str, list[Any]] = {name: [] for name in names}
    for start, end in slices:
        part = answers.libraries_answer(
            conn,
            _slice_params(library_params, start, end),
            now=now,
            min_count=min_count,
            min_users=min_users,
        )
        counts = {row["name"]: row["processes"] for row in part["libraries"]}
        for name in names:
            trends[name].append(counts.get(name, 0))
    detail_params = _api_params(params, (*_HISTORY_PARAMS,))
    rows = {}
    for name in names:
        detail = answers.library_answer(
            conn, name, detail_params, now=now, min_count=min_count, min_users=min_users
        )
        rows[name] = {
            "trend": trends[name],
            "versions": detail["versions"] if detail else [],
        }
    return {
        "from": whole["from"],
        "until": whole["until"],
        "step": slices[0][1] - slices[0][0] if slices else step,
        "times": [iso(start) for start, _ in slices],
        "rows": rows,
        "versions_filter": ["env"],
        "min_count": min_count,
        "min_users": min_users,
    }


def version_history_answer(
    conn: sqlite3.Connection,
    name: str,
    params: Mapping[str, str],
    *,
    now: float,
    min_count: int,
    min_users: int,
) -> dict[str, Any] | None:
    """``GET dashboard/api/version-history/<name>``: the versions in use, and the processes
    (direct and transitive), in each slice of the window (``None`` when the library was never
    seen), so that a library's two charts share one time axis.

    ``{"name", "from", "until", "step", "times": [...], "versions": {version: [processes per
    slice]}, "series": [{"time", "processes", "direct", "transitive"}], "min_count"}``; a count
    below ``min_count`` is "fewer than N", as in the API.
    The versions are those the API lists for the whole window; the others are summed in
    every slice as ``answers.OTHER_VERSIONS``, so the answer stays small.
    """
    check_known(params, (*_HISTORY_PARAMS, "token"))
    name = canonical_library(name)
    params = _api_params(params, _HISTORY_PARAMS)
    whole = answers.library_answer(
        conn, name, params, now=now, min_count=min_count, min_users=min_users
    )
    if whole is None:
        return None
    step = int(whole["step"])
    slices = _slices(whole, step)
    history: dict[str, list[Any]] = {row["version"]: [] for row in whole["versions"]}
    listed = set(history) - {answers.OTHER_VERSIONS}
    series = []
    for index, (start, end) in enumerate(slices):
        part = answers.library_answer(
            conn,
            name,
            _slice_params(params, start, end),
            now=now,
            min_count=min_count,
            min_users=min_users,
            versions=listed,
        )
        counts = {row["version"]: row["processes"] for row in (part or {}).get("versions", [])}
        point: dict[str, Any] = {"time": iso(start)}
        for key in ("processes", "direct", "transitive"):
            point[key] = part[key] if part else 0
        series.append(point)
        for version in counts:
            history.setdefault(version, [0] * index)
        for version, values in history.items():
            values.append(counts.get(version, 0))
    return {
        "name": name,
        "from": whole["from"],
        "until": whole["until"],
        "step": slices[0][1] - slices[0][0] if slices else step,
        "times": [iso(start) for start, _ in slices],
        "versions": history,
        "series": series,
        "min_count": min_count,
        "min_users": min_users,
    }


# -- the page ----------------------------------------------------------------------------------


def render_page(template: str, prefix: str) -> str:
    """``index.html`` with the URL prefix and the version filled in."""
    return template.replace("{{prefix}}", html.escape(prefix, quote=True)).replace(
        "{{version}}", html.escape(__version__, quote=True)
    )


class PageHandler(BaseHandler):
    """The dashboard page, for every view path."""

    #: A Hub login sends this page's visitors through the Hub instead of answering 401.
    serves_page = True

    def initialize(self, ctx: ServerContext, auth: Auth | None = None, prefix: str = "/") -> None:
        super().initialize(ctx, auth)
        self.prefix = prefix

    async def prepare(self) -> None:
        if self.auth.mode == "token":
            # The page holds no data; its script asks for the token the API wants.
            return
        await super().prepare()

    def set_default_headers(self) -> None:
        super().set_default_headers()
        # Everything the page uses comes from here; nothing may be loaded from elsewhere.
        self.set_header(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; "
            "script-src 'self'; connect-src 'self'; frame-ancestors 'self'",
        )
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")

    def get(self, *_args: str) -> None:
        template = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(render_page(template, self.prefix))


class RowsHandler(BaseHandler):
    async def get(self) -> None:
        await self.answer(rows_answer)


class VersionHistoryHandler(BaseHandler):
    async def get(self, name: str) -> None:
        await self.answer(version_history_answer, name)


class StaticHandler(StaticFileHandler):
    """The page's files; public (they are the same for everybody and hold no data)."""

    def parse_url_path(self, url_path: str) -> str:
        if "\x00" in url_path:  # no file has it, and os.stat would raise
            raise HTTPError(404)
        return super().parse_url_path(url_path)

    def set_extra_headers(self, path: str) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", f"max-age={self.get_cache_time(path, self.modified, '')}")


_NAME = r"([^/?#]+)"


def dashboard_routes(ctx: ServerContext, prefix: str = "/") -> list[Route]:
    """The dashboard's routes under ``prefix``."""
    base = normalize_prefix(prefix)
    page = {"ctx": ctx, "prefix": base}
    routes: list[Route] = [
        (base + re.escape(view) if view else base, PageHandler, page) for view in VIEWS
    ]
    routes.append((base + "library/" + _NAME, PageHandler, page))
    routes.append((base + "static/(.*)", StaticHandler, {"path": str(STATIC_DIR)}))
    api = base + "dashboard/api/"
    routes.append((api + "rows", RowsHandler, {"ctx": ctx}))
    routes.append((api + "version-history/" + _NAME, VersionHistoryHandler, {"ctx": ctx}))
    return routes


__all__ = [
    "STATIC_DIR",
    "dashboard_routes",
    "render_page",
    "rows_answer",
    "slice_edges",
    "version_history_answer",
]
