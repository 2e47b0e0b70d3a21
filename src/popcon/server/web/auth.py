"""Who may read the collector's answers: one ``Auth`` object chosen at start-up.

The HTTP handlers ask their ``Auth`` for the current user in ``prepare()`` and, when there is
none, let it refuse the request. Two policies live here:

- ``TokenAuth``: a shared token (``POPCON_API_TOKEN``) given as ``Authorization: token …``,
  ``Authorization: Bearer …`` (what Prometheus sends) or ``?token=…``;
- ``OpenAuth``: anybody on the network may read (the operator asked for it with ``--open``).

A JupyterHub mode (login through ``jupyterhub.services.auth.HubOAuth``) plugs in the same way:
it subclasses ``Auth``, returns the Hub user from ``authenticate``, redirects browsers to the
Hub in ``refuse``, adds its OAuth callback in ``routes`` and registers itself in
``AUTH_MODES``.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Callable

from tornado.web import RequestHandler

#: A tornado route: (URL pattern, handler class, the handler's ``initialize`` arguments).
Route = tuple[str, type[RequestHandler], dict[str, Any]]

#: The user an ``OpenAuth`` or ``TokenAuth`` request runs as (there are no accounts).
ANONYMOUS = {"name": "anonymous"}
TOKEN_USER = {"name": "token"}


class Auth:
    """A policy deciding who may read. Subclasses override ``authenticate`` and ``refuse``."""

    #: The policy's name, as ``make_auth`` takes it and the start-up log line shows it.
    mode = "closed"

    async def authenticate(self, handler: RequestHandler) -> dict[str, Any] | None:
        """The user making this request, or ``None`` when the request may not read."""
        return None

    def refuse(self, handler: RequestHandler) -> None:
        """Answer a request that ``authenticate`` turned down (status and one-line reason)."""
        send_error(handler, 403, "the API is closed: set POPCON_API_TOKEN or start with --open")

    def routes(self, prefix: str) -> list[Route]:
        """Extra routes this policy needs (an OAuth callback), under ``prefix``."""
        return []

    def describe(self) -> str:
        return self.mode


class OpenAuth(Auth):
    mode = "open"

    async def authenticate(self, handler: RequestHandler) -> dict[str, Any] | None:
        return ANONYMOUS


class TokenAuth(Auth):
    """Requests must carry the shared token. Without a configured token nothing may read."""

    mode = "token"

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def authenticate(self, handler: RequestHandler) -> dict[str, Any] | None:
        given = request_token(handler)
        if given is not None and self._token and hmac.compare_digest(given.encode(), self._token):
            return TOKEN_USER
        return None

    def refuse(self, handler: RequestHandler) -> None:
        if not self._token:
            Auth.refuse(self, handler)
        elif request_token(handler) is None:
            handler.set_header("WWW-Authenticate", 'Bearer realm="popcon"')
            send_error(handler, 401, "a token is required: Authorization: token <POPCON_API_TOKEN>")
        else:
            send_error(handler, 403, "the token is not valid")

    def describe(self) -> str:
        return "token" if self._token else "closed (POPCON_API_TOKEN is not set)"


def request_token(handler: RequestHandler) -> str | None:
    """The token a request carries in its Authorization header or ``?token=``."""
    header = handler.request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("token", "bearer") and value.strip():
        return value.strip()
    token = handler.get_query_argument("token", None)
    return token or None


def send_error(handler: RequestHandler, status: int, reason: str) -> None:
    """A JSON error body with a one-line reason: ``{"error": "since: expected …"}``."""
    handler.set_status(status)
    handler.set_header("Content-Type", "application/json; charset=UTF-8")
    handler.finish(json.dumps({"error": reason.splitlines()[0] if reason else ""}) + "\n")


#: Auth policies by name (``popcon serve`` picks one at start-up). Each factory receives the API
#: token from the environment (possibly empty).
AUTH_MODES: dict[str, Callable[[str], Auth]] = {
    "token": TokenAuth,
    "open": lambda _token: OpenAuth(),
}


def make_auth(mode: str, token: str) -> Auth:
    try:
        factory = AUTH_MODES[mode]
    except KeyError:
        raise ValueError(
            f"auth: unknown mode {mode!r}; expected one of {', '.join(sorted(AUTH_MODES))}"
        ) from None
    return factory(token)
