"""``popcon forget`` and ``popcon backup``: the upkeep of a collector's database.

``forget --env ENV`` or ``--library NAME`` deletes what the database holds of one environment or
library, after asking (``--yes`` does not ask); the collector must be stopped, as it holds the
database. ``backup PATH`` copies the database while the collector runs. The work is in
:mod:`popcon.server.storage.upkeep`.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from typing import Any, Callable

from popcon.output import write_stdout
from popcon.protocol import canonical_name
from popcon.server.settings import default_db_path
from popcon.server.storage.lock import DatabaseInUse
from popcon.server.storage.upkeep import (
    backup_database,
    describe_environment,
    describe_library,
    forget_environment,
    forget_library,
    open_for_upkeep,
)

UPKEEP_COMMANDS = ("forget", "backup")


class NotConfirmed(Exception):
    """The operator did not answer yes."""


def add_upkeep_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``forget`` and ``backup`` to the collector commands' parser."""
    default = default_db_path()
    forget = commands.add_parser(
        "forget",
        help="delete what the database holds of one environment or library",
        description="Delete every count, inventory and total of one environment or one "
        "library from the database. Stop the collector first: it holds the database. Asks "
        "before it deletes, unless --yes.",
    )
    what = forget.add_mutually_exclusive_group(required=True)
    what.add_argument("--env", metavar="ENV", help="the environment label to forget")
    what.add_argument("--library", metavar="NAME", help="the library (distribution) to forget")
    forget.add_argument(
        "--db", default=default, metavar="PATH", help=f"the database (default {default})"
    )
    forget.add_argument("--yes", action="store_true", help="do not ask")
    backup = commands.add_parser(
        "backup",
        help="copy the database, while the collector runs",
        description="Copy the database to PATH with SQLite's online backup: one consistent "
        "snapshot, taken while the collector runs; PATH is replaced once the copy is "
        "complete.",
    )
    backup.add_argument("path", metavar="PATH", help="where the copy goes")
    backup.add_argument(
        "--db", default=default, metavar="PATH", help=f"the database (default {default})"
    )


def _when(epoch: int | None) -> str:
    if epoch is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def _confirmed(question: str, read: Callable[[str], str]) -> bool:
    try:
        return read(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def forget(args: argparse.Namespace, read: Callable[[str], str] = input) -> int:
    if args.env is not None:
        kind, name = "environment", args.env
        describe, remove = describe_environment, forget_environment
    else:
        kind, name = "library", canonical_name(args.library)
        describe, remove = describe_library, forget_library
    with open_for_upkeep(args.db) as conn:
        found = describe(conn, name)
        if not found.found:
            raise LookupError(f"no {kind} {name!r} in {args.db}")
        if not args.yes:
            amount = (
                f"{found.amount} processes counted"
                if kind == "environment"
                else f"used in {found.amount} environments"
            )
            question = (
                f"Forget {kind} {name} ({amount}, last seen {_when(found.last_seen)}) in {args.db}?"
            )
            if not _confirmed(question, read):
                raise NotConfirmed("not confirmed; nothing was deleted (--yes does not ask)")
        remove(conn, name)
    write_stdout(f"forgot {kind} {name} in {args.db}\n")
    return 0


def backup(args: argparse.Namespace) -> int:
    size = backup_database(args.db, args.path)
    write_stdout(f"backed up {args.db} to {args.path} ({size:,} bytes)\n")
    return 0


def run_upkeep(args: argparse.Namespace) -> int:
    """Run ``forget`` or ``backup``; each failure is one line on standard error."""
    try:
        return forget(args) if args.command == "forget" else backup(args)
    except DatabaseInUse as error:
        holder = f"pid {error.pid}" if error.pid is not None else "another process"
        message = (
            f"{args.db}: a running collector ({holder}) holds the database; stop it first "
            "(popcon backup works while it runs)"
        )
    except (FileNotFoundError, LookupError, NotConfirmed, ValueError) as error:
        message = str(error)
    except (sqlite3.Error, OSError) as error:
        message = f"{args.db}: {error}"
    print(f"popcon {args.command}: {message}", file=sys.stderr)
    return 1
