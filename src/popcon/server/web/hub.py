"""``popcon serve`` as a JupyterHub service: the Hub decides who may look.

When the Hub starts popcon as a managed service (or an operator sets the same variables for
an external one), ``JUPYTERHUB_API_TOKEN`` and ``JUPYTERHUB_SERVICE_PREFIX`` are present and
:func:`hub_service` returns where to listen and which prefix to serve under. The dashboard,
the API and ``/metrics`` then use :class:`HubLoginAuth`:

- a browser without a login is sent through the Hub's OAuth (``HubOAuth`` from
  ``jupyterhub.services.auth`` and its ``HubOAuthCallbackHandler`` at the callback URL the Hub
  gave, ``JUPYTERHUB_OAUTH_CALLBACK_URL``);
- a Hub user or token is let in only with the access scope of this service
  (``JUPYTERHUB_OAUTH_ACCESS_SCOPES``: ``access:services!service=popcon``), which the documented
  configuration gives to admins only; anybody else gets 403;
- scripts and Prometheus send ``Authorization: token|Bearer <POPCON_API_TOKEN>`` or a Hub API
  token that carries the access scope; without either, a non-browser request gets 401, never a
  redirect. ``--metrics-open`` still opens ``/metrics`` alone.

``jupyterhub`` is imported only when this mode is used; without it the mode fails with a
one-line error naming the package.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import urlparse

from tornado.httputil import url_concat
from tornado.web import RequestHandler

from popcon.server.web.auth import AUTH_MODES, TOKEN_USER, Auth, Route, request_token, send_error

HUB_MODE = "hub"
#: The variables whose presence means "running as a Hub service".
HUB_VARIABLES = ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_SERVICE_PREFIX")
#: The attribute a refused Hub user is kept under on the handler, for ``refuse``.
_REFUSED = "_popcon_hub_refused"


@dataclass(frozen=True)
class HubService:
    """What the Hub told a service about itself through its environment."""

    name: str
    prefix: str
    url: str

    @property
    def http(self) -> str | None:
        """``HOST:PORT`` of ``JUPYTERHUB_SERVICE_URL``, the address the proxy sends to."""
        if not self.url:
            return None
        parsed = urlparse(self.url)
        if not parsed.hostname or not parsed.port:
            return None
        host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
        return f"{host}:{parsed.port}"


def hub_service(environ: Mapping[str, str] | None = None) -> HubService | None:
    """The Hub service popcon runs as, or ``None`` when the ``JUPYTERHUB_*`` variables are
    absent (standalone)."""
    environ = os.environ if environ is None else environ
    if not all(environ.get(name) for name in HUB_VARIABLES):
        return None
    return HubService(
        name=environ.get("JUPYTERHUB_SERVICE_NAME", "popcon"),
        prefix=environ["JUPYTERHUB_SERVICE_PREFIX"],
        url=environ.get("JUPYTERHUB_SERVICE_URL", ""),
    )


def access_scopes(environ: Mapping[str, str] | None = None) -> set[str]:
    """The scopes that grant access, as the Hub gave them (a JSON list), else the service's."""
    environ = os.environ if environ is None else environ
    text = environ.get("JUPYTERHUB_OAUTH_ACCESS_SCOPES", "")
    if text:
        try:
            scopes = json.loads(text)
        except ValueError:
            scopes = None
        if isinstance(scopes, list) and scopes:
            return {str(scope) for scope in scopes}
    name = environ.get("JUPYTERHUB_SERVICE_NAME", "popcon")
    return {f"access:services!service={name}"}


def make_hub_oauth() -> Any:
    """A ``HubOAuth`` configured from the ``JUPYTERHUB_*`` variables."""
    try:
        from jupyterhub.services.auth import HubOAuth
    except ImportError:
        raise ValueError(
            "auth: running as a JupyterHub service needs the jupyterhub package "
            "(pip install jupyterhub)"
        ) from None
    return HubOAuth(access_scopes=access_scopes(), cache_max_age=60)


def wants_html(handler: RequestHandler) -> bool:
    """Whether the request comes from a browser navigating (so a redirect to log in helps)."""
    if handler.request.method not in ("GET", "HEAD"):
        return False
    if getattr(handler, "serves_page", False):
        return True
    if handler.request.headers.get("Sec-Fetch-Mode", "navigate") != "navigate":
        return False
    return "text/html" in handler.request.headers.get("Accept", "")


class HubLoginAuth(Auth):
    """Hub login (OAuth cookie or Hub token) with the access scope, or ``POPCON_API_TOKEN``."""

    mode = HUB_MODE

    def __init__(self, api_token: str = "", hub_auth: Any = None) -> None:
        self._token = api_token.encode()
        self.hub_auth = hub_auth if hub_auth is not None else make_hub_oauth()
        #: Signs the OAuth state and login cookies; new at each start (a restart only means
        #: another silent round through the Hub, whose own login is unchanged).
        self.cookie_secret = secrets.token_hex(32)

    def ensure_cookie_secret(self, handler: RequestHandler) -> None:
        """HubOAuth keeps its state and token in signed cookies: the app needs a secret."""
        handler.application.settings.setdefault("cookie_secret", self.cookie_secret)

    async def authenticate(self, handler: RequestHandler) -> dict[str, Any] | None:
        given = request_token(handler)
        if given is not None and self._token and hmac.compare_digest(given.encode(), self._token):
            return TOKEN_USER
        self.ensure_cookie_secret(handler)
        model = await self.hub_auth.get_user(handler, sync=False)
        if not model:
            return None
        if not self.hub_auth.check_scopes(self.hub_auth.access_scopes, model):
            setattr(handler, _REFUSED, model)
            return None
        return {"name": model["name"], "kind": model.get("kind", "user")}

    def refuse(self, handler: RequestHandler) -> None:
        refused = getattr(handler, _REFUSED, None)
        scopes = " or ".join(sorted(self.hub_auth.access_scopes))
        if refused is not None:
            kind = refused.get("kind", "user")
            send_error(
                handler,
                403,
                f"{kind} {refused['name']} may not read popcon: it needs the Hub scope {scopes}",
            )
        elif wants_html(handler):
            handler.redirect(self.login_url(handler))
        else:
            handler.set_header("WWW-Authenticate", 'Bearer realm="popcon"')
            send_error(
                handler,
                401,
                "log in through JupyterHub, or send Authorization: token <a Hub token with "
                f"{scopes}, or POPCON_API_TOKEN>",
            )

    def login_url(self, handler: RequestHandler) -> str:
        """The Hub's OAuth authorize URL, with a fresh state (and PKCE) stored in a cookie;
        after login the Hub sends the browser back to the page asked for."""
        params = {}
        verifier = None
        if getattr(self.hub_auth, "pkce_enabled", False):
            verifier, challenge, method = self.hub_auth.generate_pkce_code_challenge()
            params["code_challenge"] = challenge
            params["code_challenge_method"] = method
        extra = {"code_verifier": verifier} if verifier else {}
        params["state"] = self.hub_auth.set_state_cookie(
            handler, next_url=handler.request.uri, **extra
        )
        return url_concat(self.hub_auth.login_url, params)

    def routes(self, prefix: str) -> list[Route]:
        """The OAuth callback, at the path of the callback URL the Hub registered."""
        path = urlparse(self.hub_auth.oauth_redirect_uri).path or prefix + "oauth_callback"
        return [(path, oauth_callback_handler(), {"auth": self})]

    def describe(self) -> str:
        scopes = ", ".join(sorted(self.hub_auth.access_scopes))
        token = " or POPCON_API_TOKEN" if self._token else ""
        return f"JupyterHub login with {scopes}{token}"


def oauth_callback_handler() -> type[RequestHandler]:
    """``HubOAuthCallbackHandler`` bound to our ``HubOAuth`` (imported only in Hub mode)."""
    from jupyterhub.services.auth import HubOAuthCallbackHandler

    class OAuthCallbackHandler(HubOAuthCallbackHandler):  # type: ignore[misc]  # jupyterhub is untyped
        def initialize(self, auth: HubLoginAuth) -> None:
            self.hub_auth = auth.hub_auth
            auth.ensure_cookie_secret(self)

    return OAuthCallbackHandler


def configure_from_hub(app: Any, environ: Mapping[str, str] | None = None) -> str | None:
    """Point a ``PopconServe`` app at what the Hub gave it: listen at the service URL and serve
    under the service prefix (unless ``--http``/``--base-url`` or the config file say
    otherwise). Returns the auth mode to use (``"hub"``, or ``None`` standalone or when the
    operator opened the API with ``--open``)."""
    service = hub_service(environ)
    if service is None:
        return None
    chosen = app.config.get(type(app).__name__, {})
    if "http" not in chosen and service.http:
        app.http = service.http
    if "base_url" not in chosen:
        app.base_url = service.prefix
    return None if app.open else HUB_MODE


@cache
def shared_hub_login_auth(api_token: str) -> HubLoginAuth:
    """One ``HubLoginAuth`` per process for the API and ``/metrics``: one OAuth state store."""
    return HubLoginAuth(api_token)


AUTH_MODES[HUB_MODE] = shared_hub_login_auth

__all__ = [
    "HUB_MODE",
    "HUB_VARIABLES",
    "HubLoginAuth",
    "HubService",
    "access_scopes",
    "configure_from_hub",
    "hub_service",
    "make_hub_oauth",
]
