"""``RootHubAuthenticator``: a JupyterHub (a child) that signs its users in at another
JupyterHub (the root), built on oauthenticator's ``GenericOAuthenticator``.

The root's URL is the one required setting; every OAuth URL is derived from it. With no client
secret configured and a registration token in the environment, the child registers itself at
the root when it starts (``registration.register``) and keeps the secret beside its database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthLoginHandler
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Bool, Float, Unicode, default

from . import registration, urls

CLIENT_FILE_NAME = "roothub-client.json"
ROOT_PROBE_TIMEOUT = 3.0


def page_error(status: int, message: str) -> web.HTTPError:
    """An error JupyterHub shows on its error page with ``message`` as the text."""
    error = web.HTTPError(status, "%s", message)
    error.jupyterhub_message = message  # type: ignore[attr-defined]
    return error


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` means the root did not answer at all (as opposed to an HTTP answer)."""
    if isinstance(error, HTTPClientError):
        return error.code == 599
    return isinstance(error, OSError)


def database_folder(db_url: str) -> Path:
    """The folder of a SQLite database URL (``sqlite:///jupyterhub.sqlite``), else the
    working directory."""
    prefix = "sqlite:///"
    if db_url.startswith(prefix) and db_url[len(prefix) :] not in ("", ":memory:"):
        return Path(db_url[len(prefix) :]).parent.resolve()
    return Path.cwd()


class RootHubLoginHandler(OAuthLoginHandler):  # type: ignore[misc]
    """Sends the browser to the root's authorize endpoint, or says plainly why it cannot."""

    async def get(self) -> None:
        problem = await self.authenticator.login_problem()
        if problem:
            raise page_error(503, problem)
        super().get()


class RootHubAuthenticator(GenericOAuthenticator):  # type: ignore[misc]
    """Sign users in at a root JupyterHub: usernames, groups and admin status are the root's."""

    login_handler = RootHubLoginHandler

    root_url = Unicode(
        config=True,
        help="""The root hub's public URL, with its base_url, e.g. https://hub.example.org/.
        Required; default: $ROOTHUB_URL. Every OAuth URL is derived from it.""",
    )

    @default("root_url")
    def _root_url_default(self) -> str:
        return os.environ.get("ROOTHUB_URL", "")

    child_url = Unicode(
        config=True,
        help="""This hub's public URL, with its base_url; the root sends browsers back to
        <child_url>hub/oauth_callback. Default: $ROOTHUB_CHILD_URL, else JupyterHub.public_url.""",
    )

    @default("child_url")
    def _child_url_default(self) -> str:
        return os.environ.get("ROOTHUB_CHILD_URL", "") or str(
            getattr(self.parent, "public_url", "") or ""
        )

    child_name = Unicode(
        config=True,
        help="""This hub's name at the root: the service it registers (OAuth client id
        service-<child_name>). Default: $ROOTHUB_CHILD_NAME, else the host, port and path of
        child_url joined by '-'.""",
    )

    @default("child_name")
    def _child_name_default(self) -> str:
        from_env = os.environ.get("ROOTHUB_CHILD_NAME", "")
        if from_env or not self.child_url:
            return from_env
        return urls.child_name_from_url(self.child_url)

    registration_token = Unicode(
        config=True,
        help="""A root token holding admin:services (or admin:services!service=<child_name>),
        used to register this hub when no client_secret is configured.
        Default: $ROOTHUB_REGISTRATION_TOKEN. Keep it in the environment, not in a file.""",
    )

    @default("registration_token")
    def _registration_token_default(self) -> str:
        return os.environ.get("ROOTHUB_REGISTRATION_TOKEN", "")

    client_file = Unicode(
        config=True,
        help=f"""Where the registration (client id and secret) is kept, mode 0600.
        Default: {CLIENT_FILE_NAME} beside the SQLite database (JupyterHub.db_url), else in the
        working directory. Deleting it makes the hub register again.""",
    )

    @default("client_file")
    def _client_file_default(self) -> str:
        db_url = str(getattr(self.parent, "db_url", "") or "")
        return str(database_folder(db_url) / CLIENT_FILE_NAME)

    admin_from_root = Bool(
        True,
        config=True,
        help="""Admins of the root are admins here, and others are not (unless in
        admin_users or admin_groups). False: admin status here is this hub's own.""",
    )

    logout_from_root = Bool(
        False,
        config=True,
        help="""Logging out of this hub logs out of the root too (and so of every child that
        relies on it at its next refresh).""",
    )

    registration_retry_max = Float(
        60.0,
        config=True,
        help="""Longest wait, in seconds, between attempts to register while the root cannot be
        reached; the wait starts at 1 s and doubles.""",
    )

    @default("authorize_url")
    def _authorize_url_default(self) -> str:
        return urls.authorize_url(self.root_url) if self.root_url else ""

    @default("token_url")
    def _token_url_default(self) -> str:
        return urls.token_url(self.root_url) if self.root_url else ""

    @default("userdata_url")
    def _userdata_url_default(self) -> str:
        return urls.userdata_url(self.root_url) if self.root_url else ""

    @default("oauth_callback_url")
    def _oauth_callback_url_default(self) -> str:
        from_env = os.environ.get("OAUTH_CALLBACK_URL", "")
        return from_env or (urls.callback_url(self.child_url) if self.child_url else "")

    @default("logout_redirect_url")
    def _logout_redirect_url_default(self) -> str:
        return urls.logout_url(self.root_url) if self.logout_from_root and self.root_url else ""

    @default("client_id")
    def _client_id_default(self) -> str:
        from_env = os.environ.get("OAUTH_CLIENT_ID", "")
        if from_env or not self.child_name:
            return from_env
        return registration.client_id_for(self.child_name)

    @default("login_service")
    def _login_service_default(self) -> str:
        return "the root hub"

    @default("username_claim")
    def _username_claim_default(self) -> str:
        return "name"

    @default("manage_groups")
    def _manage_groups_default(self) -> bool:
        return True

    @default("auth_state_groups_key")
    def _auth_state_groups_key_default(self) -> str:
        return f"{self.user_auth_state_key}.groups"

    @default("enable_auth_state")
    def _enable_auth_state_default(self) -> bool:
        return True

    @default("auto_login")
    def _auto_login_default(self) -> bool:
        return True

    @default("custom_403_message")
    def _custom_403_message_default(self) -> str:
        groups = ", ".join(sorted(self.allowed_groups))
        who = f" It lets in members of the groups {groups}." if groups else ""
        return (
            "You are signed in at the root hub, but your account may not use this hub."
            f"{who} Ask this hub's administrators if you need it."
        )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._registration_problem: str | None = None
        self._registration_task: asyncio.Task[None] | None = None
        self._retry_now: asyncio.Event | None = None

    # Start-up: JupyterHub asks for the handlers once, in its running event loop.

    def get_handlers(self, app: Any) -> list[tuple[str, Any]]:
        if not self.root_url:
            raise ValueError(
                "RootHubAuthenticator.root_url is not set (nor $ROOTHUB_URL): "
                "it is the root hub's public URL, e.g. https://hub.example.org/"
            )
        self.start_registration()
        handlers: list[tuple[str, Any]] = super().get_handlers(app)
        return handlers

    def start_registration(self) -> None:
        """Make sure this hub has a client at the root: configured, kept, or registered now
        (in the background, retried with back-off while the root cannot be reached)."""
        if self.client_secret or self._registration_task is not None:
            return
        self._registration_problem = "it has not registered yet"
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._retry_now = asyncio.Event()
        self._registration_task = loop.create_task(self._keep_registering())

    async def _keep_registering(self) -> None:
        """Register until it works or fails for good. A cause is logged once, when it first
        appears (the retries that follow are logged at debug level), and so is the recovery."""
        delay = 1.0
        attempts = 0
        last_cause = ""
        while True:
            attempts += 1
            try:
                await self.register_once()
            except registration.RegistrationError as error:
                self._registration_problem = str(error)
                if not error.retry:
                    self.log.error("roothub: %s; fix it and restart this hub", error)
                    return
                log = self.log.debug if str(error) == last_cause else self.log.warning
                log(
                    "roothub: %s; trying again with back-off (at most %.0f s)",
                    error,
                    self.registration_retry_max,
                )
                last_cause = str(error)
            else:
                self._registration_problem = None
                if attempts > 1:
                    self.log.info("roothub: registration succeeded after %d attempts", attempts)
                return
            assert self._retry_now is not None
            self._retry_now.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._retry_now.wait(), delay)
            delay = min(delay * 2, self.registration_retry_max)

    async def register_once(self) -> None:
        """Use the kept registration if it fits this hub (and the root still has it, when a
        registration token can tell), else register and keep it."""
        if not self.child_url:
            raise registration.RegistrationError(
                "this hub does not know its public URL, which the root needs as its redirect "
                "URI: set JupyterHub.public_url (or RootHubAuthenticator.child_url)",
                retry=False,
            )
        path = Path(self.client_file)
        redirect_uri = urls.callback_url(self.child_url)
        kept = registration.read_record(path)
        if kept is not None and kept.fits(self.root_url, self.child_name, redirect_uri):
            if await self._kept_is_gone(kept):
                self.log.warning(
                    "roothub: %s is no longer registered at %s (unregistered there): "
                    "registering again",
                    kept.name,
                    kept.root_url,
                )
            else:
                self.log.info(
                    "roothub: using the registration kept in %s (%s at %s)",
                    path,
                    kept.client_id,
                    kept.root_url,
                )
                self._use(kept)
                return
        if not self.registration_token:
            raise registration.RegistrationError(
                f"no client_secret is configured and no registration is kept in {path}, and "
                "there is no registration token ($ROOTHUB_REGISTRATION_TOKEN) to register with",
                retry=False,
            )
        earlier_url = None
        if kept is not None and kept.root_url == urls.normalized(self.root_url):
            earlier_url = kept.redirect_uri[: -len("hub/oauth_callback")]
            if kept.redirect_uri != redirect_uri:
                self.log.warning(
                    "roothub: the registration kept in %s has the redirect URI %s, not %s: "
                    "registering again",
                    path,
                    kept.redirect_uri,
                    redirect_uri,
                )
        record, replaced = await registration.register(
            self.root_url,
            self.registration_token,
            self.child_name,
            self.child_url,
            earlier_url=earlier_url,
        )
        registration.write_record(path, record)
        self.log.info(
            "roothub: registered at %s as %s with redirect URI %s%s; secret kept in %s",
            record.root_url,
            record.client_id,
            record.redirect_uri,
            " (replacing the earlier registration of that name)" if replaced else "",
            path,
        )
        self._use(record)

    async def _kept_is_gone(self, kept: registration.ClientRecord) -> bool:
        """Whether the root says it no longer has the kept registration. Without a
        registration token, or while the root cannot say, the kept one is trusted."""
        if not self.registration_token:
            return False
        try:
            model = await registration.registered(kept.root_url, self.registration_token, kept.name)
        except registration.RegistrationError as error:
            self.log.debug("roothub: cannot check the kept registration: %s", error)
            return False
        return model is None

    def _use(self, record: registration.ClientRecord) -> None:
        self.client_id = record.client_id
        self.client_secret = record.client_secret

    async def login_problem(self) -> str | None:
        """Why a login cannot start now, in words for the user; None when it can."""
        root = urls.normalized(self.root_url)
        if self._registration_problem is not None:
            if self._retry_now is not None:
                self._retry_now.set()
            return (
                f"This hub cannot sign you in yet: it is not registered with its root hub at "
                f"{root} ({self._registration_problem}). It keeps trying; reload this page in "
                "a minute."
            )
        try:
            await AsyncHTTPClient().fetch(
                HTTPRequest(
                    urls.hub_api(root),
                    connect_timeout=ROOT_PROBE_TIMEOUT,
                    request_timeout=ROOT_PROBE_TIMEOUT,
                ),
                raise_error=False,
            )
        except Exception as error:
            if not unreachable(error):
                raise
            self.log.warning("roothub: the root hub at %s cannot be reached (%s)", root, error)
            return (
                f"The root hub at {root}, where you sign in to this hub, cannot be reached "
                "right now. Whoever is signed in already keeps working; try again in a few "
                "minutes."
            )
        return None

    async def update_auth_model(self, auth_model: dict[str, Any]) -> dict[str, Any]:
        """Admin status from the root, unless admin_users made the user an admin here."""
        if self.admin_from_root and not auth_model.get("admin"):
            user_info = auth_model["auth_state"][self.user_auth_state_key]
            auth_model["admin"] = bool(user_info.get("admin"))
        return auth_model

    async def refresh_user(self, user: Any, handler: Any = None, **kwargs: Any) -> Any:
        """Ask the root again, every auth_refresh_age: a user logged out or removed there
        must log in again; groups and admin status follow the root's. While the root cannot
        be reached, sessions here go on."""
        try:
            return await super().refresh_user(user, handler, **kwargs)
        except Exception as error:
            if not unreachable(error):
                raise
            self.log.warning(
                "roothub: cannot check %s at the root hub (%s); the session goes on",
                user.name,
                error,
            )
            return True
