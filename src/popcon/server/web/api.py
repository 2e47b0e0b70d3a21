"""The JSON API of ``popcon serve``, under ``<prefix>api/v1/``.

Handlers stay thin: they turn the query string into a mapping, run an
:mod:`~popcon.server.query.answers` function on a reader thread (SQLite reads never block the
event loop) and write JSON (:class:`~popcon.server.web.base.BaseHandler`). Who may read is
decided by the context's API :class:`~popcon.server.web.auth.Auth`, chosen once at start-up.
:func:`api_routes` gives the API's routes under a URL prefix; ``popcon.server.serve`` serves them
beside the other faces'.
"""

from __future__ import annotations

import re

from popcon.server.query import answers
from popcon.server.web.auth import Route, send_error
from popcon.server.web.base import BaseHandler, ServerContext, normalize_prefix

API_PREFIX = "api/v1/"
#: Every endpoint ``popcon serve`` answers, as documented in docs/collector.md (a test keeps
#: them in step); the API's index lists them.
ENDPOINTS = (
    "/api/v1/libraries",
    "/api/v1/libraries/<name>",
    "/api/v1/programs",
    "/api/v1/unused",
    "/api/v1/user-installed",
    "/api/v1/environments",
    "/metrics",
)
#: The endpoints answered by one function of ``answers.ANSWERS`` each (a pattern group).
_ANSWERED = "(" + "|".join(map(re.escape, answers.ANSWERS)) + ")"


class AnswerHandler(BaseHandler):
    """``/api/v1/libraries``, ``/programs``, ``/unused``, ``/user-installed``,
    ``/environments``."""

    async def get(self, endpoint: str) -> None:
        settings = {"quiet_after": self.ctx.quiet_after} if endpoint == "environments" else {}
        await self.answer(answers.ANSWERS[endpoint], **settings)


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


def api_routes(ctx: ServerContext, prefix: str = "/") -> list[Route]:
    """The API's routes under ``prefix``; anything else under ``<prefix>api/v1/`` is a 404."""
    api = normalize_prefix(prefix) + API_PREFIX
    return [
        (api, IndexHandler, {"ctx": ctx}),
        (api + _ANSWERED, AnswerHandler, {"ctx": ctx}),
        (api + r"libraries/([^/]+)", LibraryHandler, {"ctx": ctx}),
        (api + ".*", NotFoundHandler, {"ctx": ctx}),
    ]
