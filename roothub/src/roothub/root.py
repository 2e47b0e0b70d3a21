"""The root hub's side: one call in its ``jupyterhub_config.py``.

    from roothub.root import configure_root
    configure_root(c, registration_tokens=[os.environ["ROOTHUB_REGISTRATION_TOKEN"]])

Call it after your own ``c.JupyterHub.services``, ``service_tokens`` and ``load_roles``, which
it extends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import jupyterhub

REGISTRAR = "roothub-registrar"
REGISTRATION_ROLE = "roothub-registration"


def registration_scopes(children: Iterable[str] | None = None) -> list[str]:
    """The smallest scopes a registration token needs: ``admin:services`` (which holds
    ``list:services`` and ``read:services``), or, to let a token register only the named
    children, ``admin:services!service=<name>`` for each."""
    if children is None:
        return ["admin:services"]
    return [f"admin:services!service={name}" for name in children]


def access_scopes(children: Iterable[str] | None = None) -> list[str]:
    """What a user of the root needs to log in to children: ``access:services`` (every service
    of the root), or ``access:services!service=<name>`` for each of the named children."""
    if children is None:
        return ["access:services"]
    return [f"access:services!service={name}" for name in children]


def registrar_name(token: str, registrar: str = REGISTRAR) -> str:
    """The service that holds one registration token: ``<registrar>-<12 hex digits of the
    token's SHA-256>``. One service per token, so that a token removed from the configuration
    takes its service, and with it the token, out of the root's database at the next start
    (JupyterHub deletes services of the configuration file that are no longer in it; the
    tokens of ``service_tokens`` would otherwise stay valid)."""
    return f"{registrar}-{hashlib.sha256(token.encode()).hexdigest()[:12]}"


def _extend(config: Any, name: str, value: Any) -> None:
    """Extend a list or dict setting of ``config`` (a traitlets section such as
    ``c.JupyterHub``), whether the file has set it already or not."""
    current = config.get(name, None)
    if current is None:
        config[name] = value
    elif isinstance(value, dict):
        current.update(value)
    else:
        current.extend(value)


def _grant_every_user(hub: Any, scopes: list[str]) -> None:
    """Add ``scopes`` to the built-in ``user`` role: with ``JupyterHub.extra_user_scopes``
    (JupyterHub >= 6.0), else by extending (or defining) the ``user`` role in ``load_roles``,
    keeping its ``self`` scope."""
    if jupyterhub.version_info >= (6,):
        current = hub.get("extra_user_scopes", None)
        hub.extra_user_scopes = set(current or ()) | set(scopes)
        return
    roles = hub.get("load_roles", None)
    if roles is None:
        roles = hub.load_roles = []
    for role in roles:
        if role.get("name") == "user":
            role["scopes"] = list(role.get("scopes", ["self"])) + scopes
            return
    roles.append({"name": "user", "scopes": ["self", *scopes]})


def configure_root(
    c: Any,
    registration_tokens: Iterable[str] = (),
    children: Iterable[str] | None = None,
    registrar: str = REGISTRAR,
    every_user_may_log_in: bool = True,
) -> None:
    """Make the hub whose configuration is ``c`` a root for roothub children.

    - ``Authenticator.auto_login_oauth2_authorize``: a logged-out user sent by a child goes
      straight to the root's login page, then back to the child; never the root's home page.
    - The role ``roothub-registration`` with :func:`registration_scopes` (``children``
      narrows it to those names), held by one service with no URL for each of
      ``registration_tokens`` (:func:`registrar_name`; the token is its
      ``JupyterHub.service_tokens`` entry). Give a token to the children's deployments as
      ``ROOTHUB_REGISTRATION_TOKEN``; remove it here and restart the root to revoke it.
    - With ``every_user_may_log_in``, every user of the root gets :func:`access_scopes`, which
      the root requires before it lets a user log in to a child (a service, to the root).
      Without ``children`` that is ``access:services``: every service of the root, so a
      service that relies on the root's access check alone (such as popcon's dashboard) is
      then open to every user too; name the children to grant only those.
      ``every_user_may_log_in=False`` grants nothing: give the scopes with your own roles.
    """
    names = None if children is None else list(children)
    registrars = {token: registrar_name(token, registrar) for token in registration_tokens}
    c.Authenticator.auto_login_oauth2_authorize = True
    hub = c.JupyterHub
    _extend(hub, "services", [{"name": name, "display": False} for name in registrars.values()])
    _extend(hub, "service_tokens", registrars)
    _extend(
        hub,
        "load_roles",
        [
            {
                "name": REGISTRATION_ROLE,
                "description": "Register roothub children (their OAuth clients) at runtime",
                "scopes": registration_scopes(names),
                "services": sorted(registrars.values()),
            }
        ],
    )
    if every_user_may_log_in:
        _grant_every_user(hub, access_scopes(names))
