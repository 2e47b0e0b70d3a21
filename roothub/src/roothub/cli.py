"""``roothub register | unregister | list``: provision children from outside a hub (a
deployment pipeline). The registration token comes from ``$ROOTHUB_REGISTRATION_TOKEN`` only,
never from a flag, so that it stays out of process lists and shell histories."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence

from . import __version__, registration, urls

TOKEN_VARIABLE = "ROOTHUB_REGISTRATION_TOKEN"


def child_config_python(record: registration.ClientRecord, child_url: str) -> str:
    """The child's ``jupyterhub_config.py`` lines for a registration made outside it."""
    return "\n".join(
        [
            'c.JupyterHub.authenticator_class = "roothub"',
            f"c.JupyterHub.public_url = {urls.normalized(child_url)!r}",
            f"c.RootHubAuthenticator.root_url = {record.root_url!r}",
            f"c.RootHubAuthenticator.child_name = {record.name!r}",
            f"c.RootHubAuthenticator.client_id = {record.client_id!r}",
            f"c.RootHubAuthenticator.client_secret = {record.client_secret!r}",
            "",
        ]
    )


def child_config_env(record: registration.ClientRecord, child_url: str) -> str:
    """The same as environment variables (the secret as ``OAUTH_CLIENT_SECRET``)."""
    return "\n".join(
        [
            f"ROOTHUB_URL={record.root_url}",
            f"ROOTHUB_CHILD_URL={urls.normalized(child_url)}",
            f"ROOTHUB_CHILD_NAME={record.name}",
            f"OAUTH_CLIENT_ID={record.client_id}",
            f"OAUTH_CLIENT_SECRET={record.client_secret}",
            "",
        ]
    )


def child_config_z2jh(record: registration.ClientRecord, child_url: str) -> str:
    """The same as zero-to-jupyterhub values (``hub.config``)."""
    return "\n".join(
        [
            "hub:",
            "  config:",
            "    JupyterHub:",
            "      authenticator_class: roothub",
            f"      public_url: {json.dumps(urls.normalized(child_url))}",
            "    RootHubAuthenticator:",
            f"      root_url: {json.dumps(record.root_url)}",
            f"      child_name: {json.dumps(record.name)}",
            f"      client_id: {json.dumps(record.client_id)}",
            f"      client_secret: {json.dumps(record.client_secret)}",
            "",
        ]
    )


FORMATS = {"python": child_config_python, "env": child_config_env, "z2jh": child_config_z2jh}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="roothub",
        description="Register JupyterHubs (children) as OAuth clients of a root JupyterHub. "
        f"The token is read from ${TOKEN_VARIABLE}.",
    )
    top.add_argument("--version", action="version", version=f"roothub {__version__}")
    commands = top.add_subparsers(dest="command", required=True)

    def with_root(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
        command.add_argument(
            "--root",
            default=os.environ.get("ROOTHUB_URL", ""),
            help="the root hub's public URL (default: $ROOTHUB_URL)",
        )
        return command

    register = with_root(
        commands.add_parser("register", help="register a child and print its configuration")
    )
    register.add_argument("--child-url", required=True, help="the child's public URL")
    register.add_argument("--name", help="the child's name at the root (default: from --child-url)")
    register.add_argument(
        "--replace",
        action="store_true",
        help="register again if the name exists, for whichever URL (a new secret; the old one "
        "stops working)",
    )
    register.add_argument(
        "--format", choices=sorted(FORMATS), default="python", help="how to print the config"
    )
    unregister = with_root(commands.add_parser("unregister", help="remove a child"))
    unregister.add_argument("name", help="the child's name at the root")
    listing = with_root(commands.add_parser("list", help="list the registered children"))
    listing.add_argument("--json", action="store_true", help="print JSON")
    return top


async def run(arguments: argparse.Namespace, token: str) -> str:
    """What the command prints; raises RegistrationError on failure."""
    root = urls.normalized(arguments.root)
    if arguments.command == "register":
        name = arguments.name or urls.child_name_from_url(arguments.child_url)
        record, _ = await registration.register(
            root,
            token,
            name,
            arguments.child_url,
            replace=arguments.replace,
            take_over=arguments.replace,
        )
        return FORMATS[arguments.format](record, arguments.child_url)
    if arguments.command == "unregister":
        await registration.unregister(root, token, arguments.name)
        return f"unregistered {arguments.name} at {root}\n"
    children = await registration.list_children(root, token)
    if arguments.json:
        return json.dumps(children, indent=1, sort_keys=True) + "\n"
    lines = [f"{name}\t{model.get('info', {}).get('url', '')}" for name, model in children.items()]
    return "".join(line + "\n" for line in lines)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    if not arguments.root:
        print("roothub: give --root or set $ROOTHUB_URL", file=sys.stderr)
        return 2
    token = os.environ.get(TOKEN_VARIABLE, "")
    if not token:
        print(f"roothub: set ${TOKEN_VARIABLE} to a registration token", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(asyncio.run(run(arguments, token)))
    except registration.RegistrationError as error:
        print(f"roothub: {error}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"roothub: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
