"""The ``popcon`` commands' argument parser: argparse, with each command's own usage on a bad
flag and the closest flag or command it knows (``popcon top --sinse 6h``: "did you mean
--since?"), and the bash completion script generated from the parsers
(``popcon completion bash``).

Standard library only: the recorder's commands use it without the server extra.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

_UNRECOGNIZED = "unrecognized arguments: "
_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)'")


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that suggests a close flag for an unknown one (and a close
    command for an unknown command), and tells its commands (those of ``add_subparsers``)
    for :func:`parse_command` and ``--help``."""

    @property
    def commands(self) -> argparse._SubParsersAction[Parser] | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action
        return None

    def command_help(self) -> dict[str, str]:
        """Each command's one-line help, as given to ``add_parser(name, help=...)``."""
        if self.commands is None:
            return {}
        # argparse keeps them in pseudo-actions, the lines of the parent's --help
        return {action.dest: action.help or "" for action in self.commands._choices_actions}

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}{self.suggestion(message)}\n")

    def suggestion(self, message: str) -> str:
        """``"; did you mean --since?"`` for an unrecognized flag close to one of this
        parser's (``"; did you mean status?"`` for an unknown command), else ``""``."""
        choice = _INVALID_CHOICE.search(message)
        if choice is not None and self.commands is not None:
            close = difflib.get_close_matches(choice[1], list(self.commands.choices), n=1)
            return f"; did you mean {close[0]}?" if close else ""
        if not message.startswith(_UNRECOGNIZED):
            return ""
        known = [flag for action in self._actions for flag in action.option_strings]
        for word in message[len(_UNRECOGNIZED) :].split():
            flag = word.split("=", 1)[0]
            if not flag.startswith("-"):
                continue
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
            if close:
                return f"; did you mean {close[0]}?"
        return ""


def parse_command(parser: Parser, argv: Sequence[str], dest: str = "command") -> argparse.Namespace:
    """``argv`` parsed by the parser of the command it starts with (so a bad flag gets that
    command's usage, not the top level's), the command's name in ``dest``."""
    commands = parser.commands.choices if parser.commands is not None else {}
    if argv and argv[0] in commands:
        arguments = commands[argv[0]].parse_args(argv[1:])
        setattr(arguments, dest, argv[0])
        return arguments
    return parser.parse_args(argv)


def _words(parser: argparse.ArgumentParser) -> tuple[list[str], dict[str, str]]:
    """A command's options, and for each option whose value can be completed, how: ``-W
    'a b'`` for its choices, ``-f`` for a path."""
    options: list[str] = []
    values: dict[str, str] = {}
    for action in parser._actions:
        options.extend(action.option_strings)
        if not action.option_strings or action.nargs == 0:
            continue
        if action.choices:
            how = "-W '" + " ".join(str(choice) for choice in action.choices) + "'"
        elif "PATH" in str(action.metavar or ""):
            how = "-f"
        else:
            continue
        for flag in action.option_strings:
            values[flag] = how
    for action in parser._actions:
        if (
            not action.option_strings
            and action.choices
            and not isinstance(action, argparse._SubParsersAction)
        ):
            values[""] = "-W '" + " ".join(str(choice) for choice in action.choices) + "'"
    return options, values


def _reply(how: str) -> str:
    return f'COMPREPLY=($(compgen {how} -- "$word"))'


def bash_completion(
    parser: Parser, server: Parser | None, serve_options: Sequence[str] = ()
) -> str:
    """A bash completion script for ``popcon``, generated from its parsers: the commands, each
    command's options, the choices and paths of their values. ``server`` is the collector
    commands' parser (None without the server extra), ``serve_options`` those of ``serve``."""
    commands: dict[str, Parser] = {}
    for each in (parser, server):
        found = each.commands if each is not None else None
        if found is not None:
            for name, sub in found.choices.items():
                if sub.add_help or name not in commands:
                    commands[name] = sub
    cases = []
    for name, sub in commands.items():
        options, values = _words(sub)
        if name == "serve":
            options = [*serve_options, "--help"]
        if not sub.add_help and name != "serve":
            continue  # a collector command without the server extra: nothing known
        lines = [f"        {name})", f'            options="{" ".join(options)}"']
        if values:
            lines.append('            case "$previous" in')
            for flag, how in values.items():
                if flag:
                    lines.append(f"                {flag}) {_reply(how)}; return ;;")
            lines.append("            esac")
            if "" in values:
                lines.append(f"            [[ $word != -* ]] && {_reply(values[''])} && return")
        lines.append("            ;;")
        cases.append("\n".join(lines))
    top = " ".join([*commands, "--help", "--version"])
    body = "\n".join(cases)
    return f"""# bash completion for popcon, generated by `popcon completion bash`
_popcon() {{
    local word=${{COMP_WORDS[COMP_CWORD]}} previous=${{COMP_WORDS[COMP_CWORD-1]}} options=""
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "{top}" -- "$word"))
        return
    fi
    case "${{COMP_WORDS[1]}}" in
{body}
    esac
    if [[ $word == -* ]]; then
        COMPREPLY=($(compgen -W "$options" -- "$word"))
    else
        COMPREPLY=($(compgen -f -- "$word"))
    fi
}}
complete -F _popcon popcon
"""
