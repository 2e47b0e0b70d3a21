"""A child's registration at the root hub: the root's runtime services API
(``/hub/api/services/{name}``, JupyterHub >= 5.0) and the file that keeps the client secret.

Plain functions over tornado's HTTP client; the authenticator and the CLI both call them. Each
failure is a :class:`RegistrationError` whose message names the cause in one line.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from . import urls

# What every child asks of the root, and where its registration says it is a child.
CHILD_INFO_KEY = "roothub"
REQUEST_TIMEOUT = 10.0


class RegistrationError(Exception):
    """A registration that failed; ``str()`` is the one log line naming its cause."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class RootUnreachable(RegistrationError):
    """The root hub did not answer (refused, timed out, unknown host)."""


@dataclass(frozen=True)
class ClientRecord:
    """What a child keeps of its registration: enough to log in users, and to tell whether
    the registration still fits this hub (root, name and redirect URI)."""

    root_url: str
    name: str
    client_id: str
    client_secret: str
    redirect_uri: str

    def fits(self, root_url: str, name: str, redirect_uri: str) -> bool:
        return (self.root_url, self.name, self.redirect_uri) == (
            urls.normalized(root_url),
            name,
            redirect_uri,
        )


def client_id_for(name: str) -> str:
    """The OAuth client id of a child: the root requires the ``service-`` prefix."""
    return f"service-{name}"


def read_record(path: Path) -> ClientRecord | None:
    """The record kept at ``path``; None when there is none or it cannot be read."""
    try:
        data = json.loads(path.read_text())
        return ClientRecord(**{key: str(data[key]) for key in ClientRecord.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_record(path: Path, record: ClientRecord) -> None:
    """Keep ``record`` at ``path``, readable by this user only (mode 0600 from creation on)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(record), out, indent=1)
    os.chmod(partial, 0o600)
    os.replace(partial, path)


def _root_message(error: HTTPClientError) -> str:
    body = error.response.body if error.response is not None else b""
    try:
        message = json.loads(body).get("message", "")
    except (ValueError, AttributeError):
        message = body.decode("utf-8", "replace")[:200]
    return str(message or error.message or "").strip()


def _explain(error: Exception, root_url: str, name: str, action: str) -> RegistrationError:
    """The one-line cause of a failed request to the root's services API."""
    if isinstance(error, OSError) or (isinstance(error, HTTPClientError) and error.code == 599):
        return RootUnreachable(f"the root hub at {root_url} cannot be reached ({error})")
    if not isinstance(error, HTTPClientError):
        return RegistrationError(f"{action} {name} at {root_url} failed: {error!r}")
    message = _root_message(error)
    if error.code == 403 and "credentials" in message.lower():
        return RegistrationError(
            f"the root hub at {root_url} does not accept the registration token (403: "
            f"{message}): it is wrong, expired or revoked",
            retry=False,
        )
    # A token whose scopes are filtered to other names gets 404 "No access to resources or
    # resources not found": JupyterHub does not tell it whether the name exists.
    if error.code == 403 or (error.code == 404 and message.startswith("No access to resources")):
        return RegistrationError(
            f"the registration token may not {action} {name} at {root_url} "
            f"({error.code}: {message}): it needs the scope admin:services or "
            f"admin:services!service={name}",
            retry=False,
        )
    if error.code == 404 and action == "unregister":
        return RegistrationError(f"{name} is not registered at {root_url}", retry=False)
    if error.code == 404 and action == "register":
        return RegistrationError(
            f"the root hub at {root_url} has no services API there (404: {message}): its proxy "
            "may still be starting, or root_url lacks the root's base URL"
        )
    if error.code == 405 and action == "register":
        return RegistrationError(
            f"the root hub at {root_url} cannot register services at runtime "
            f"(405: {message}): it needs JupyterHub 5.0 or later",
            retry=False,
        )
    if error.code == 405:
        return RegistrationError(
            f"{name} is a service of the root's configuration file, not a registered child "
            f"(405: {message})",
            retry=False,
        )
    retry = error.code >= 500
    return RegistrationError(
        f"the root hub at {root_url} refused to {action} {name} ({error.code}: {message})",
        retry=retry,
    )


async def _call(
    method: str,
    url: str,
    token: str,
    body: Mapping[str, Any] | None = None,
    http: AsyncHTTPClient | None = None,
) -> Any:
    request = HTTPRequest(
        url,
        method=method,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        body=json.dumps(body) if body is not None else None,
        connect_timeout=REQUEST_TIMEOUT,
        request_timeout=REQUEST_TIMEOUT,
        follow_redirects=False,
    )
    response = await (http or AsyncHTTPClient()).fetch(request)
    return json.loads(response.body) if response.body else None


def registration_model(name: str, redirect_uri: str, child_url: str, secret: str) -> dict[str, Any]:
    """The service the root keeps for a child: an OAuth client and nothing else."""
    return {
        "oauth_client_id": client_id_for(name),
        "oauth_redirect_uri": redirect_uri,
        "api_token": secret,
        "oauth_no_confirm": True,
        "display": False,
        "info": {
            CHILD_INFO_KEY: "child",
            "url": urls.normalized(child_url),
            "redirect_uri": redirect_uri,
        },
    }


async def registered(
    root_url: str, token: str, name: str, *, http: AsyncHTTPClient | None = None
) -> dict[str, Any] | None:
    """The root's model of the service ``name``; None when the root has no such service."""
    root_url = urls.normalized(root_url)
    try:
        model: dict[str, Any] = await _call(
            "GET", urls.service_url(root_url, name), token, None, http
        )
    except HTTPClientError as error:
        # The root's own answer for a name it does not have, not a proxy's 404 while the root
        # is still starting.
        if error.code == 404 and _root_message(error).startswith("No such service"):
            return None
        raise _explain(error, root_url, name, "read") from None
    except Exception as error:
        raise _explain(error, root_url, name, "read") from None
    return model


def registered_url(model: Mapping[str, Any]) -> str | None:
    """The child URL a roothub registration carries in its ``info``; None for a service that
    roothub did not register."""
    info = model.get("info")
    if not isinstance(info, dict) or CHILD_INFO_KEY not in info:
        return None
    return str(info.get("url", ""))


async def register(
    root_url: str,
    token: str,
    name: str,
    child_url: str,
    *,
    replace: bool = True,
    earlier_url: str | None = None,
    take_over: bool = False,
    http: AsyncHTTPClient | None = None,
) -> tuple[ClientRecord, bool]:
    """Register the child ``name`` (public URL ``child_url``) at the root with a new secret.

    Returns the record and whether an earlier registration of that name was replaced. With
    ``replace``, a registration of the same name is replaced when it is for ``child_url`` (a
    secret this hub lost) or for ``earlier_url`` (this hub's URL before it moved); a name held
    by another hub (unless ``take_over``), or by a service roothub did not register, is an
    error. Without ``replace`` an existing name is an error."""
    root_url = urls.normalized(root_url)
    redirect_uri = urls.callback_url(child_url)
    secret = secrets.token_hex(32)
    model = registration_model(name, redirect_uri, child_url, secret)
    record = ClientRecord(root_url, name, client_id_for(name), secret, redirect_uri)
    url = urls.service_url(root_url, name)
    try:
        await _call("POST", url, token, model, http)
    except HTTPClientError as error:
        if error.code != 409:
            raise _explain(error, root_url, name, "register") from None
    except Exception as error:
        raise _explain(error, root_url, name, "register") from None
    else:
        return record, False
    if not replace:
        raise RegistrationError(
            f"{name} is already registered at {root_url} (409): unregister it first, or "
            "register again with --replace",
            retry=False,
        )
    existing = await registered(root_url, token, name, http=http)
    held_by = registered_url(existing) if existing is not None else ""
    ours = {urls.normalized(child_url)} | ({urls.normalized(earlier_url)} if earlier_url else set())
    if held_by is None:
        raise RegistrationError(
            f"the root hub at {root_url} has a service named {name} that roothub did not "
            "register: give this hub another name (RootHubAuthenticator.child_name)",
            retry=False,
        )
    if held_by and not take_over and urls.normalized(held_by) not in ours:
        raise RegistrationError(
            f"{name} is registered at {root_url} for {held_by}, whose redirect URI does not "
            f"match this hub's {redirect_uri}: give this hub another name "
            "(RootHubAuthenticator.child_name), or unregister the other one",
            retry=False,
        )
    if existing is not None:
        await unregister(root_url, token, name, http=http)
    try:
        await _call("POST", url, token, model, http)
    except Exception as again:
        raise _explain(again, root_url, name, "register") from None
    return record, True


async def unregister(
    root_url: str, token: str, name: str, *, http: AsyncHTTPClient | None = None
) -> None:
    """Remove the child ``name`` from the root: its OAuth client, so every token it had."""
    root_url = urls.normalized(root_url)
    try:
        await _call("DELETE", urls.service_url(root_url, name), token, None, http)
    except Exception as error:
        raise _explain(error, root_url, name, "unregister") from None


async def list_children(
    root_url: str, token: str, *, http: AsyncHTTPClient | None = None
) -> dict[str, dict[str, Any]]:
    """The registered children the token may see, by name: each service whose ``info``
    carries the ``roothub`` mark."""
    root_url = urls.normalized(root_url)
    try:
        services = await _call("GET", urls.hub_api(root_url, "services"), token, None, http)
    except Exception as error:
        raise _explain(error, root_url, "the services", "list") from None
    return {
        name: model
        for name, model in sorted((services or {}).items())
        if isinstance(model.get("info"), dict) and CHILD_INFO_KEY in model["info"]
    }
