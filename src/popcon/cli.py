"""The ``popcon`` command.

``enable``, ``disable``, ``status`` and ``preview`` need only the standard library. The
collector's commands (``serve``, ``top``, ...) live in ``popcon.server.cli`` and need the extra
``popcon[server]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .arguments import Parser, parse_command
from .output import write_stdout

# What the extra popcon[server] brings; `top` and friends need none of it.
SERVER_DEPENDENCIES = frozenset({"traitlets", "tornado", "prometheus_client"})
SERVER_COMMANDS = (
    "serve",
    "top",
    "programs",
    "unused",
    "user-installed",
    "why",
    "versions",
    "envs",
    "forget",
    "backup",
    "demo",
)
#: The line ``popcon --help`` gives the commands that ``popcon.server.cli``'s parser does not
#: describe.
OWN_HELP = {
    "serve": "run the collector: receive datagrams, keep counts, serve the API and dashboard",
    "demo": "the whole job on this machine: a collector, a recorded venv, the table",
}


#: The commands of this parser (recorder side, standard library only).
RECORDER_COMMANDS = ("enable", "disable", "status", "preview", "check", "completion")


def _server_parser() -> Parser | None:
    """The collector commands' parser, or None without the server extra."""
    try:
        from .server.cli import build_parser
    except ModuleNotFoundError as error:
        if error.name not in SERVER_DEPENDENCIES:
            raise
        return None
    return build_parser()


def _serve_options() -> list[str]:
    """``popcon serve``'s options, or none without the server extra."""
    try:
        from .server.cli import serve_options

        return serve_options()
    except ModuleNotFoundError as error:
        if error.name not in SERVER_DEPENDENCIES:
            raise
        return []


def _server_help() -> dict[str, str]:
    """Each collector command's line in ``popcon --help``, as its own parser gives it."""
    server = _server_parser()
    return {**(server.command_help() if server is not None else {}), **OWN_HELP}


def _parser(server_help: bool = True) -> Parser:
    """The ``popcon`` parser; each collector command described only with ``server_help``
    (it imports the collector's command module, which a recorder command does not need)."""
    parser = Parser(
        prog="popcon",
        description="Count which installed Python libraries are really used, privately.",
    )
    parser.add_argument("--version", action="version", version=f"popcon {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    python_help = "the interpreter whose environment to act on (default: the one running popcon)"
    for name, text in (
        ("enable", "record every Python process of an environment"),
        ("disable", "stop recording in an environment (removes what enable wrote)"),
        ("status", "is recording on, where does data go, is the module map fresh"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--python", metavar="PATH", help=python_help)
        command.add_argument("--json", action="store_true", help="print JSON")
        if name == "status":
            _server_options(command, "also check that the collector receives (popcon check)")
        if name == "enable":
            command.add_argument(
                "--pth",
                action="store_true",
                help="start recording from popcon.pth even where the environment has no "
                "sitecustomize of its own (costs each process about 0.3 ms more; for users "
                "who bring their own sitecustomize)",
            )
    preview = commands.add_parser(
        "preview",
        help="run a command with recording on, send nothing, print what would be sent",
        description="Run CMD with recording on; print the datagrams it would have sent.",
    )
    preview.add_argument("--json", action="store_true", help="print one JSON summary")
    preview.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS]")
    check = commands.add_parser(
        "check",
        help="confirm that a collector receives this environment's data",
        description="Run a Python process of the environment with recording on; it sends a "
        "check datagram (counted by the collector as a check, never as a use) to the "
        "configured collector. With --server, read the collector's /metrics before and after "
        "to confirm it arrived. Each cause of failure is one line, exit status 1.",
    )
    check.add_argument("--python", metavar="PATH", help=python_help)
    _server_options(check, "to confirm arrival")
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script for popcon",
        description="Print a completion script for popcon's commands and options, generated "
        'from this popcon: eval "$(popcon completion bash)" in ~/.bashrc (zsh: autoload '
        "bashcompinit && bashcompinit first).",
    )
    completion.add_argument(
        "shell", choices=("bash",), help="the shell (bash; zsh via bashcompinit)"
    )
    described = _server_help() if server_help else {}
    for name in SERVER_COMMANDS:
        text = described.get(name, f"collector command: see popcon {name} --help")
        commands.add_parser(name, help=text, add_help=False)
    return parser


def _server_options(parser: argparse.ArgumentParser, why: str) -> None:
    parser.add_argument(
        "--server",
        metavar="URL",
        help=f"the collector's HTTP address, {why} (token from POPCON_API_TOKEN)",
    )
    parser.add_argument(
        "--wait",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="with --server: how long to wait for the collector to count the check (default 5)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"expected 0 < SECONDS <= 600, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SERVER_COMMANDS:
        return _server_command(argv)
    top_level = not argv or argv[0] not in RECORDER_COMMANDS
    parser = _parser(server_help=top_level)
    arguments = parse_command(parser, argv)
    if arguments.command is None:
        parser.print_help()
        return 2
    if arguments.command == "completion":
        from .arguments import bash_completion

        script = bash_completion(_parser(server_help=False), _server_parser(), _serve_options())
        write_stdout(script)
        return 0
    if arguments.command == "preview":
        command = arguments.cmd[1:] if arguments.cmd[:1] == ["--"] else arguments.cmd
        if not command:
            parser.error("preview needs a command: popcon preview -- CMD [ARGS]")
        from .admin.preview import preview_main

        return preview_main(command, json_output=arguments.json)
    if arguments.command == "check":
        from .admin.check import check_main

        return check_main(arguments.python, arguments.server, wait=arguments.wait)
    from .admin import enable as environment

    try:
        if arguments.command == "status":
            report = environment.status(arguments.python)
            if report["enabled"] and arguments.server:
                from .admin.check import collector_answer

                report["check"] = collector_answer(report, arguments.server, arguments.wait)
            text = environment.format_status(report)
        elif arguments.command == "enable":
            report = environment.enable(arguments.python, pth=arguments.pth)
            text = _format_change(arguments.command, report)
        else:
            report = environment.disable(arguments.python)
            text = _format_change(arguments.command, report)
    except environment.EnableError as error:
        print(f"popcon {arguments.command}: {error}", file=sys.stderr)
        return 1
    write_stdout((json.dumps(report, indent=2) if arguments.json else text) + "\n")
    return 0


def _format_change(command: str, report: dict[str, Any]) -> str:
    from .admin import enable as environment

    if command == "enable":
        states = ", ".join(f"{m['state']} ({m['site']})" for m in report["maps"]) or "none"
        started = environment.START_FILES[report["start"]][0]
        return f"recording enabled in {report['site']}\nstarts in: {started}\nmodule map: {states}"
    if report["removed"]:
        return f"recording disabled in {report['site']}"
    return f"recording was not enabled in {report['site']}"


def _server_command(argv: list[str]) -> int:
    if argv[0] == "demo":
        from .admin.demo import main as demo_main

        return demo_main(argv[1:])
    try:
        from .server.cli import main as server_main

        return server_main(argv)
    except ModuleNotFoundError as error:
        if error.name not in SERVER_DEPENDENCIES:
            raise
        print(
            f"popcon {argv[0]}: needs the collector's dependencies (missing: {error.name}); "
            "install them with: pip install 'popcon[server]'",
            file=sys.stderr,
        )
        return 1
