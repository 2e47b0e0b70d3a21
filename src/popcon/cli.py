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
from .output import write_stdout

# What the extra popcon[server] brings; `top` and friends need none of it.
SERVER_DEPENDENCIES = frozenset({"traitlets", "tornado", "prometheus_client"})
SERVER_COMMANDS = ("serve", "top", "unused", "user-installed", "why", "versions", "envs", "demo")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    for name in SERVER_COMMANDS:
        commands.add_parser(name, help=f"collector command (popcon {name} --help)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SERVER_COMMANDS:
        return _server_command(argv)
    arguments = _parser().parse_args(argv)
    if arguments.command is None:
        _parser().print_help()
        return 2
    if arguments.command == "preview":
        command = arguments.cmd[1:] if arguments.cmd[:1] == ["--"] else arguments.cmd
        if not command:
            _parser().error("preview needs a command: popcon preview -- CMD [ARGS]")
        from .admin.preview import preview_main

        return preview_main(command, json_output=arguments.json)
    from .admin import enable as environment

    try:
        if arguments.command == "status":
            report = environment.status(arguments.python)
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
