"""Every URL of the root hub, derived from the one setting: the root's public URL."""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit


def normalized(url: str) -> str:
    """``url`` with exactly one trailing slash: ``https://root.example.org/prefix/``."""
    url = url.strip()
    if not url:
        return url
    if "://" not in url:
        raise ValueError(f"{url!r} is not a URL: it needs a scheme, e.g. https://{url}")
    return url.rstrip("/") + "/"


def hub_api(root_url: str, path: str = "") -> str:
    """The root's REST API, e.g. ``hub_api(root, "user")`` is ``<root>/hub/api/user``."""
    return normalized(root_url) + "hub/api/" + path


def authorize_url(root_url: str) -> str:
    return hub_api(root_url, "oauth2/authorize")


def token_url(root_url: str) -> str:
    return hub_api(root_url, "oauth2/token")


def userdata_url(root_url: str) -> str:
    return hub_api(root_url, "user")


def logout_url(root_url: str) -> str:
    return normalized(root_url) + "hub/logout"


def service_url(root_url: str, name: str) -> str:
    return hub_api(root_url, "services/" + quote(name, safe=""))


def callback_url(child_url: str) -> str:
    """The child's OAuth redirect URI, from its public URL (which includes its base_url)."""
    return normalized(child_url) + "hub/oauth_callback"


def child_name_from_url(child_url: str) -> str:
    """A service name for a child from its public URL: host, port and path joined by ``-``,
    e.g. ``https://hub-a.example.org/`` gives ``hub-a.example.org``."""
    parts = urlsplit(normalized(child_url))
    name = (parts.hostname or "") + (f"-{parts.port}" if parts.port else "") + parts.path
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-").lower()
