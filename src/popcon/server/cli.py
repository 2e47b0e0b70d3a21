"""The collector's commands: ``popcon serve`` and the questions asked of a collector.

``popcon top|programs|unused|user-installed|why|versions|envs`` read either a running
collector's HTTP API (``--server URL``, token from ``POPCON_API_TOKEN``; the default is the
collector on this machine, ``http://127.0.0.1:8138/``) or a database file directly (``--db
PATH``, read-only). Both give the same answer: the JSON is the API's, byte for byte the same
structure.

Rows count people (``USERS``: distinct people, estimated from the recorders' sketches; ``?``
where no recorder sent people) beside processes. Libraries are those people's own code used,
directly or through other libraries, most users first; ``--include-programs`` adds what the
programs (a Jupyter server, a kernel's machinery, pip, pytest) imported for themselves, and
``popcon programs`` lists the programs.

Output: an aligned table by default, JSON with ``--json``, CSV with ``--csv``. The table is
printed even when standard output is a pipe (``popcon top | head`` stays readable);
scripts say ``--json`` or ``--csv``, so what they get never depends on how they were started.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, Callable

from popcon.arguments import Parser, parse_command
from popcon.output import write_stdout
from popcon.protocol import DEFAULT_HTTP_PORT, DIRECT, ORIGINS
from popcon.server.query import answers
from popcon.server.query.connection import connect_readonly
from popcon.server.query.environments import (
    QUIET_AFTER,
    WHY_DEPENDENCY,
    WHY_ORPHAN,
    WHY_REQUESTED,
    WHY_UNKNOWN,
)
from popcon.server.query.params import BadParameter, QueryError, canonical_library
from popcon.server.settings import API_TOKEN_ENV
from popcon.server.tables import (
    UNKNOWN_IN_TABLE,
    Column,
    display_text,
    render_csv,
    render_json,
    render_table,
)
from popcon.server.upkeep_commands import UPKEEP_COMMANDS, add_upkeep_commands, run_upkeep

DEFAULT_SERVER = f"http://127.0.0.1:{DEFAULT_HTTP_PORT}/"
#: Seconds an HTTP request to the collector may take.
HTTP_TIMEOUT = 30.0


#: Where a command's answers come from: (API path, parameters) → the API's JSON answer.
Fetch = Callable[[str, Mapping[str, str]], dict[str, Any]]


class CommandError(Exception):
    """A failure to report as one line, with an exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# -- where answers come from -------------------------------------------------------------------


def check_server(server: str) -> str:
    """``server`` if it is an ``http://`` or ``https://`` URL with a host, else a
    :class:`CommandError` naming ``--server`` (without a scheme: the URL to say instead)."""
    parts = urllib.parse.urlsplit(server)
    if parts.scheme not in ("http", "https"):
        if "://" not in server:
            raise CommandError(
                f"--server {server}: the URL has no scheme; did you mean http://{server}?", 2
            )
        raise CommandError(f"--server {server}: expected an http:// or https:// URL", 2)
    try:
        parts.port  # noqa: B018  # parses the port: ValueError when it is not one
    except ValueError as error:
        raise CommandError(f"--server {server}: {error}", 2) from None
    if not parts.hostname:
        raise CommandError(f"--server {server}: expected a host after {parts.scheme}://", 2)
    return server


def fetch_http(server: str, path: str, params: Mapping[str, str]) -> dict[str, Any]:
    """GET ``<server>/api/v1/<path>?params`` with the token from ``POPCON_API_TOKEN``."""
    base = server if server.endswith("/") else server + "/"
    url = urllib.parse.urljoin(base, "api/v1/" + path)
    if params:
        url += "?" + urllib.parse.urlencode(params)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    token = os.environ.get(API_TOKEN_ENV)
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            answer: dict[str, Any] = json.loads(response.read().decode("utf-8"))
            return answer
    except urllib.error.HTTPError as error:
        try:
            reason = json.loads(error.read().decode("utf-8"))["error"]
        except (ValueError, KeyError, TypeError):
            reason = error.reason
        status = 2 if error.code == 400 else 1
        raise CommandError(f"{reason} (HTTP {error.code} from {server})", status) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise CommandError(
            f"cannot reach the collector at {server}: {reason} "
            "(is popcon serve running? --db PATH reads a database file instead)"
        ) from None
    except ValueError:
        raise CommandError(f"the collector at {server} did not answer JSON") from None


def fetch_db(
    db: str,
    path: str,
    params: Mapping[str, str],
    min_count: int,
    min_users: int = 1,
    quiet_after: float = QUIET_AFTER,
) -> dict[str, Any]:
    """The same answer as the API, read from the database file (read-only); environments
    are quiet after ``quiet_after`` seconds without a report."""
    try:
        conn = connect_readonly(db)
    except FileNotFoundError as error:
        raise CommandError(str(error)) from None
    except (sqlite3.Error, OSError) as error:
        raise CommandError(f"--db {db}: {error}") from None
    try:
        now = time.time()
        if path.startswith("libraries/"):
            name = urllib.parse.unquote(path.split("/", 1)[1])
            answer = answers.library_answer(
                conn, name, params, now=now, min_count=min_count, min_users=min_users
            )
        else:
            settings = {"quiet_after": quiet_after} if path == "environments" else {}
            answer = answers.ANSWERS[path](
                conn, params, now=now, min_count=min_count, min_users=min_users, **settings
            )
    except (BadParameter, QueryError) as error:
        raise CommandError(str(error), 2) from None
    except sqlite3.Error as error:  # a corrupt or damaged database
        raise CommandError(f"--db {db}: {error}") from None
    except Exception as error:  # one line, not a traceback
        raise CommandError(f"cannot read {db}: {error}") from None
    finally:
        conn.close()
    if answer is None:
        raise CommandError(f"library: never seen in this window: {path.split('/', 1)[1]}")
    return answer


def fetcher(args: argparse.Namespace) -> Fetch:
    if args.db:
        hours = getattr(args, "quiet_after", None)
        quiet_after = QUIET_AFTER if hours is None else hours * 3600
        return lambda path, params: fetch_db(
            args.db, path, params, args.min_count, args.min_users, quiet_after
        )
    server = check_server(args.server)
    return lambda path, params: fetch_http(server, path, params)


# -- options -----------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, since: str, filters: bool = True) -> None:
    """``--server``/``--db``, ``--min-count``, the window (unless ``since`` is empty),
    ``--env`` (with ``filters``), ``--json``/``--csv``."""
    source = parser.add_argument_group("where to read")
    where = source.add_mutually_exclusive_group()
    where.add_argument(
        "--server",
        default=DEFAULT_SERVER,
        metavar="URL",
        help=f"a running collector's HTTP address (default {DEFAULT_SERVER}); "
        f"the token comes from {API_TOKEN_ENV}",
    )
    where.add_argument("--db", metavar="PATH", help="read this database file instead (read-only)")
    source.add_argument(
        "--min-count",
        type=int,
        default=3,
        metavar="N",
        help='with --db: show counts below N as "fewer than N" (default 3; the server '
        "applies its own setting)",
    )
    source.add_argument(
        "--min-users",
        type=int,
        default=3,
        metavar="N",
        help="with --db: hide the counts of rows fewer than N people used (default 3; the "
        "server applies its own setting)",
    )
    if since:
        _window_options(parser, since)
    if filters:
        parser.add_argument("--env", metavar="ENV", help="only this environment")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the API's JSON")
    output.add_argument("--csv", action="store_true", help="print CSV")


def _window_options(parser: argparse.ArgumentParser, since: str) -> None:
    window = parser.add_argument_group("time window")
    window.add_argument(
        "--since", metavar="DURATION", help=f"6h, 24h, 7d, 2w, 30d... (default {since})"
    )
    window.add_argument("--from", dest="start", metavar="TIME", help="ISO-8601 start")
    window.add_argument("--until", metavar="TIME", help="ISO-8601 end (default now)")


def _include_programs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--include-programs",
        action="store_true",
        help="count also what programs (a Jupyter server, a kernel's machinery, pip...) "
        "imported for themselves, not only what people's code used",
    )


def _label_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only reports carrying this label (repeatable)",
    )


def build_parser() -> Parser:
    parser = Parser(prog="popcon", add_help=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    top = commands.add_parser(
        "top",
        help="libraries by the people whose code used them",
        description="Libraries people's own code used, directly or through other libraries, "
        "by users (distinct people), then processes.",
    )
    _common(top, "6h")
    _include_programs(top)
    top.add_argument(
        "--direct",
        action="store_true",
        help="count only processes that imported the library from user code",
    )
    _label_option(top)
    top.add_argument("--origin", choices=ORIGINS, help="only this origin")
    top.add_argument("--limit", type=int, metavar="N", help="show the first N only")

    programs = commands.add_parser(
        "programs",
        help="the programs people run, by users",
        description="Programs (the distribution of a console script or python -m: a Jupyter "
        "server, a kernel, pip, pytest) by users (distinct people), then processes.",
    )
    _common(programs, "6h")
    _label_option(programs)

    unused = commands.add_parser(
        "unused",
        help="installed but imported by nobody",
        description="Distributions in an environment's latest inventory that no process "
        "imported in the window, and why each is installed: on request, as a dependency of "
        "another, or neither; whether a used distribution requires it; packaging tools "
        "apart.",
    )
    _common(unused, "30d")
    user = commands.add_parser(
        "user-installed",
        help="imported from user sites, missing from the environment",
        description="Libraries imported from user sites (pip install --user) that the "
        "environment does not provide: candidates to add to the image.",
    )
    _common(user, "30d")
    why = commands.add_parser(
        "why",
        help="what pulls a library in, and how often it is used directly",
        description="The distributions whose code imported LIB, and its direct share.",
    )
    why.add_argument("library", metavar="LIB")
    _common(why, "30d")
    _include_programs(why)
    versions = commands.add_parser(
        "versions", help="versions of a library in use", description="Versions of LIB in use."
    )
    versions.add_argument("library", metavar="LIB")
    _common(versions, "30d")
    _include_programs(versions)
    envs = commands.add_parser(
        "envs",
        help="environments that report",
        description="Environments: labels, last seen, inventory size, processes, and which "
        "are quiet (reported before, nothing since for longer than the collector's "
        "--quiet-after).",
    )
    _common(envs, "", filters=False)
    envs.add_argument(
        "--quiet-after",
        type=float,
        metavar="HOURS",
        help=f"with --db: flag environments with no report for more than HOURS (default "
        f"{QUIET_AFTER / 3600:g}; the server applies its own setting)",
    )
    add_upkeep_commands(commands)
    return parser


def window_params(args: argparse.Namespace, default_since: str) -> dict[str, str]:
    params: dict[str, str] = {}
    if args.start:
        params["from"] = args.start
    else:
        params["since"] = args.since or default_since
    if args.until:
        params["until"] = args.until
    if getattr(args, "env", None):
        params["env"] = args.env
    return params


# -- commands ----------------------------------------------------------------------------------


class Shown:
    """What a command prints: a caption, table columns and rows, and the JSON answer."""

    def __init__(
        self, answer: Any, columns: Sequence[Column], rows: list[dict[str, Any]], caption: str
    ) -> None:
        self.answer = answer
        self.columns = columns
        self.rows = rows
        self.caption = caption


def _window_text(answer: Mapping[str, Any]) -> str:
    return f"{answer.get('from', '?')} to {answer.get('until', '?')}"


def _hidden_note(answer: Mapping[str, Any]) -> str:
    n = answer.get("min_count", 1)
    note = f'; counts under {n} shown as "fewer than {n}"' if n and n > 1 else ""
    people = answer.get("min_users", 1)
    if people and people > 1:
        note += f'; rows fewer than {people} people used shown as "fewer than {people} people"'
    return note


def _people_text(value: Any) -> str:
    """A count of people in a caption: ``?`` when unknown (no recorder sent people)."""
    return UNKNOWN_IN_TABLE if value is None else str(value)


def _scope_params(args: argparse.Namespace, params: dict[str, str]) -> dict[str, str]:
    """``params`` with the ``--label`` filters and ``--include-programs`` of ``args``."""
    for item in getattr(args, "label", ()):
        key, sep, value = item.partition("=")
        if not sep:
            raise CommandError(f"--label: expected KEY=VALUE, got {item!r}", 2)
        params[f"label.{key}"] = value
    if getattr(args, "include_programs", False):
        params["include"] = answers.INCLUDE_PROGRAMS
    return params


def command_top(args: argparse.Namespace, fetch: Fetch) -> Shown:
    params = _scope_params(args, window_params(args, "6h"))
    if args.direct:
        params["level"] = DIRECT
    if args.origin:
        params["origin"] = args.origin
    answer = fetch("libraries", params)
    rows = answer["libraries"][: args.limit] if args.limit else answer["libraries"]
    columns = [("LIBRARY", "name"), ("USERS", "users"), ("PROCESSES", "processes")]
    if not args.direct:
        columns += [("DIRECT", "direct"), ("TRANSITIVE", "transitive")]
        if args.include_programs:
            columns.append(("PROGRAM", "program"))
    scope = f"environment {args.env}" if args.env else "all environments"
    if args.direct:
        what = "Direct use by people's code"
    elif args.include_programs:
        what = "Libraries of people's code and of programs"
    else:
        what = "Libraries of people's code"
    caption = f"{what} {_window_text(answer)}, {scope}{_hidden_note(answer)}"
    return Shown(answer, columns, rows, caption)


def command_programs(args: argparse.Namespace, fetch: Fetch) -> Shown:
    answer = fetch("programs", _scope_params(args, window_params(args, "6h")))
    rows = [
        {**row, "versions_text": _versions_text(row.get("versions", []))}
        for row in answer["programs"]
    ]
    columns = [
        ("PROGRAM", "name"),
        ("USERS", "users"),
        ("PROCESSES", "processes"),
        ("VERSIONS", "versions_text"),
    ]
    scope = f"environment {args.env}" if args.env else "all environments"
    caption = f"Programs {_window_text(answer)}, {scope}{_hidden_note(answer)}"
    return Shown(answer, columns, rows, caption)


def command_unused(args: argparse.Namespace, fetch: Fetch) -> Shown:
    answer = fetch("unused", window_params(args, "30d"))
    rows = [
        {
            "env": env["env"],
            "name": lib["name"],
            "version": lib["version"],
            # .get: a collector before schema 3 answers names and versions only
            "why": _UNUSED_TOOL if lib.get("tool") else lib.get("why", WHY_UNKNOWN),
            "required_by": lib.get("required_by", []),
            "needed_by": lib.get("needed_by", []),
            "removable": _yes_no(lib.get("removable")),
        }
        for env in answer["environments"]
        for lib in env["libraries"]
    ]
    rows.sort(key=lambda row: (row["env"], _UNUSED_ORDER.index(row["why"]), row["name"]))
    caption = (
        f"Installed but not imported {_window_text(answer)}; WHY: requested (installed on "
        "request), orphan (neither requested nor required by an installed distribution), "
        "dependency (required by those of REQUIRED BY), unknown (the inventory does not say), "
        "tool (pip, setuptools, wheel); REMOVABLE: no used distribution requires it, directly "
        "or through others (those that do: NEEDED BY)"
    )
    waiting = [
        row["env"]
        for row in fetch("environments", {})["environments"]
        if row.get("inventory_at") is None and (not args.env or row["env"] == args.env)
    ]
    if waiting:
        caption += (
            f"\nNo inventory yet from {', '.join(waiting)}: its recorders send one with their "
            "first processes and again about 1, 3, 7, 14, 29 and 59 minutes later, then "
            "hourly, by default (docs/recording.md#when-it-sends)"
        )
    columns = [
        ("ENVIRONMENT", "env"),
        ("LIBRARY", "name"),
        ("VERSION", "version"),
        ("WHY", "why"),
        ("REQUIRED BY", "required_by"),
        ("NEEDED BY", "needed_by"),
        ("REMOVABLE", "removable"),
    ]
    return Shown(answer, columns, rows, caption)


def _yes_no(value: bool | None) -> str | None:
    return None if value is None else "yes" if value else "no"


#: How ``popcon unused`` orders an environment's rows, by their WHY.
_UNUSED_TOOL = "tool"
_UNUSED_ORDER = (WHY_REQUESTED, WHY_ORPHAN, WHY_DEPENDENCY, WHY_UNKNOWN, _UNUSED_TOOL)


def _versions_text(versions: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{v['version']} ({v['processes']})" for v in versions)


def command_user_installed(args: argparse.Namespace, fetch: Fetch) -> Shown:
    answer = fetch("user-installed", window_params(args, "30d"))
    rows = [
        {**row, "versions_text": _versions_text(row["versions"])} for row in answer["libraries"]
    ]
    columns = [
        ("LIBRARY", "name"),
        ("ENVIRONMENT", "env"),
        ("PROCESSES", "processes"),
        ("VERSIONS", "versions_text"),
    ]
    caption = f"Imported from user sites {_window_text(answer)}{_hidden_note(answer)}"
    return Shown(answer, columns, rows, caption)


def _library(args: argparse.Namespace, fetch: Fetch) -> dict[str, Any]:
    try:
        name = canonical_library(args.library)
    except BadParameter as error:
        raise CommandError(str(error), 2) from None
    params = _scope_params(args, window_params(args, "30d"))
    return fetch("libraries/" + urllib.parse.quote(name), params)


def direct_share(answer: Mapping[str, Any]) -> float | None:
    """direct / processes, or None when either is hidden or there were no processes."""
    direct, processes = answer.get("direct"), answer.get("processes")
    if isinstance(direct, int) and isinstance(processes, int) and processes:
        return direct / processes
    return None


def command_why(args: argparse.Namespace, fetch: Fetch) -> Shown:
    answer = _library(args, fetch)
    share = direct_share(answer)
    share_text = f"{share:.0%}" if share is not None else "-"
    caption = (
        f"{answer['name']} {_window_text(answer)}: {_people_text(answer.get('users'))} users, "
        f"{answer['processes']} processes, "
        f"{answer['direct']} direct ({share_text}), {answer['transitive']} transitive"
        f"{_hidden_note(answer)}\nImported by:"
    )
    answer = {**answer, "direct_share": share}
    rows = [
        {
            "importer": row["importer"],
            "users": row.get("users"),
            "processes": row["processes"],
        }
        for row in answer["importers"]
    ]
    columns = [("IMPORTER", "importer"), ("USERS", "users"), ("PROCESSES", "processes")]
    return Shown(answer, columns, rows, caption)


def command_versions(args: argparse.Namespace, fetch: Fetch) -> Shown:
    answer = _library(args, fetch)
    caption = f"Versions of {answer['name']} in use {_window_text(answer)}{_hidden_note(answer)}"
    rows = list(answer["versions"])
    columns = [("VERSION", "version"), ("USERS", "users"), ("PROCESSES", "processes")]
    return Shown(answer, columns, rows, caption)


def command_envs(args: argparse.Namespace, fetch: Fetch) -> Shown:
    answer = fetch("environments", {})
    rows = [
        {
            **row,
            "labels_text": "; ".join(
                ",".join(f"{k}={v}" for k, v in labels.items())
                for labels in row["labels"]
                if labels
            ),
            "quiet_text": "quiet" if row.get("quiet") else "",
        }
        for row in answer["environments"]
    ]
    columns = [
        ("ENVIRONMENT", "env"),
        ("PYTHON", "py"),
        ("LABELS", "labels_text"),
        ("LAST SEEN", "last_seen"),
        ("QUIET", "quiet_text"),
        ("INVENTORY", "inventory_size"),
        ("PROCESSES", "processes"),
    ]
    caption = f"Environments{_hidden_note(answer)}"
    if "quiet_after" in answer:
        quiet = sum(1 for row in rows if row.get("quiet"))
        caption += (
            f"; quiet: no report for more than {answer['quiet_after'] / 3600:g} hours "
            f"({quiet} of {len(rows)})"
        )
    return Shown(answer, columns, rows, caption)


def serve_options() -> list[str]:
    """``popcon serve``'s flags, for ``popcon completion``."""
    from popcon.server.app import PopconServe

    return [f"--{name}" for name in (*PopconServe.aliases, *PopconServe.flags)]


def require_environment(env: str, fetch: Fetch) -> None:
    """A :class:`CommandError` when no environment ``env`` has reported: an empty answer
    for ``--env`` then means a wrong name, not an unused environment."""
    known = [row["env"] for row in fetch("environments", {})["environments"]]
    if env not in known:
        raise CommandError(f"--env {env}: no such environment (popcon envs lists them)")


COMMANDS: dict[str, Callable[[argparse.Namespace, Fetch], Shown]] = {
    "top": command_top,
    "programs": command_programs,
    "unused": command_unused,
    "user-installed": command_user_installed,
    "why": command_why,
    "versions": command_versions,
    "envs": command_envs,
}


#: Table columns whose CSV form is the structured value (JSON in the cell).
_CSV_KEYS = {"versions_text": "versions", "labels_text": "labels", "quiet_text": "quiet"}


def render(shown: Shown, args: argparse.Namespace) -> str:
    if args.json:
        return render_json(shown.answer)
    if args.csv:
        keys = [_CSV_KEYS.get(key, key) for _, key in shown.columns]
        return render_csv([(key, key) for key in keys], shown.rows)
    caption = "\n".join(display_text(line) for line in shown.caption.split("\n"))
    if not shown.rows:
        return f"{caption}\n(nothing)\n"
    return f"{caption}\n{render_table(shown.columns, shown.rows)}"


def main(argv: Sequence[str] | None = None) -> int:
    """``popcon <command> ...`` for the collector's commands; argv starts with the command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":
        from popcon.server.app import main as serve_main

        return serve_main(argv[1:])
    known = (*COMMANDS, *UPKEEP_COMMANDS)
    if argv and argv[0] not in known and not argv[0].startswith("-"):
        print(f"popcon: unknown collector command {argv[0]!r}", file=sys.stderr)
        return 2
    args = parse_command(build_parser(), argv)
    if args.command in UPKEEP_COMMANDS:
        return run_upkeep(args)
    try:
        if args.min_count < 1:
            raise CommandError("--min-count: expected at least 1", 2)
        if args.min_users < 1:
            raise CommandError("--min-users: expected at least 1", 2)
        if getattr(args, "quiet_after", None) is not None and not args.quiet_after > 0:
            raise CommandError(f"--quiet-after: expected more than 0, got {args.quiet_after:g}", 2)
        if getattr(args, "limit", None) is not None and args.limit < 1:
            raise CommandError(f"--limit: expected at least 1, got {args.limit}", 2)
        fetch = fetcher(args)
        shown = COMMANDS[args.command](args, fetch)
        if getattr(args, "env", None) and not shown.rows:
            require_environment(args.env, fetch)
    except CommandError as error:
        print(display_text(f"popcon {args.command}: {error}"), file=sys.stderr)
        return error.status
    write_stdout(render(shown, args))  # popcon top | head
    return 0


if __name__ == "__main__":
    sys.exit(main())
