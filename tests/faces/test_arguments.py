"""The CLI's edges: a bad flag gets its command's usage and the closest flag, ``--limit`` is
checked, an unknown environment is named, weeks are a unit, ``--help`` says what each command
does, ``disable`` leaves nothing in the user's cache, and ``popcon completion bash`` completes
from the real parsers (in a real bash)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from collectors import subprocess_env
from recorder_testlib import clean_environ, popcon_cli, run, write_dist_info

from popcon.cli import main


def popcon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "popcon", *args],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("argv", "usage", "hint"),
    [
        (["top", "--sinse", "6h"], "usage: popcon top ", "did you mean --since?"),
        (["unused", "--evn", "x"], "usage: popcon unused ", "did you mean --env?"),
        (["status", "--pythn", "x"], "usage: popcon status ", "did you mean --python?"),
        (["forget", "--env", "x", "--yse"], "usage: popcon forget ", "did you mean --yes?"),
        (["statsu"], "usage: popcon ", "did you mean status?"),
        (["topp"], "usage: popcon ", "did you mean top?"),
    ],
)
def test_a_bad_flag_gets_its_commands_usage_and_the_closest_flag(argv, usage, hint):
    result = popcon(*argv)
    assert result.returncode == 2
    assert result.stderr.startswith(usage), result.stderr
    last = result.stderr.rstrip("\n").splitlines()[-1]
    assert last.endswith(f"; {hint}"), last


def test_a_flag_close_to_none_gets_no_guess():
    result = popcon("top", "--zzzzzz")
    assert result.returncode == 2
    assert result.stderr.rstrip().endswith("unrecognized arguments: --zzzzzz")


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_limit_below_one_is_refused(capsys, sample_db, limit):
    assert main(["top", "--db", str(sample_db), "--limit", limit]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"popcon top: --limit: expected at least 1, got {limit}\n")


def test_limit_shows_that_many(capsys, sample_db):
    assert main(["top", "--db", str(sample_db), "--since", "30d", "--json", "--limit", "1"]) == 0
    everything = json.loads(capsys.readouterr().out)["libraries"]
    assert main(["top", "--db", str(sample_db), "--since", "30d", "--limit", "1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(everything) > 1 and len(table) == 3  # caption, header, one row
    assert table[2].split()[0] == everything[0]["name"]


@pytest.mark.parametrize("command", [["top"], ["unused"], ["user-installed"], ["why", "numpy"]])
def test_an_unknown_environment_is_named(capsys, sample_db, command):
    assert main([*command, "--db", str(sample_db), "--env", "img:nope"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"popcon {command[0]}: --env img:nope: no such environment (popcon envs lists them)\n"
    )
    assert main([*command, "--db", str(sample_db), "--env", "img:a", "--since", "30d"]) == 0


def test_weeks_are_a_unit(capsys, sample_db):
    assert main(["top", "--db", str(sample_db), "--since", "1w", "--json"]) == 0
    week = json.loads(capsys.readouterr().out)
    assert main(["top", "--db", str(sample_db), "--since", "7d", "--json"]) == 0
    assert week == json.loads(capsys.readouterr().out)
    assert week["libraries"]


def test_help_gives_each_command_its_own_line():
    result = popcon("--help")
    assert result.returncode == 0, result.stderr
    assert "collector command" not in result.stdout
    lines: list[str] = []
    for line in result.stdout.splitlines():  # a help that wraps goes on indented further
        if line.startswith(" " * 10) and lines:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    for command, words in {
        "serve": "run the collector",
        "top": "libraries by the people",
        "forget": "delete what the database holds",
        "backup": "copy the database",
        "check": "confirm that a collector receives",
        "completion": "completion script",
    }.items():
        line = next(line for line in lines if line.split()[:1] == [command])
        assert words in line, line


def test_disable_leaves_nothing_in_the_users_cache(new_venv, home, workdir):
    venv = new_venv()
    # Without popcon-cache beside site-packages, a user's process keeps the map and the
    # default label in the user's cache directory.
    shutil.rmtree(venv.site_packages / "popcon-cache")
    write_dist_info(venv.site_packages, "tiny-lib", "1.0", {"tiny_lib.py": "X = 1\n"})
    cache = home / ".cache" / "popcon"
    result = run([venv.python, "-c", "import tiny_lib"], env=clean_environ(home), cwd=workdir)
    assert (result.returncode, result.stderr) == (0, "")
    kept = sorted(path.name.split("-")[0] for path in cache.iterdir())
    assert "map" in kept and "label" in kept, kept
    result = popcon_cli("disable", "--python", venv.python, env=clean_environ(home))
    assert result.returncode == 0, result.stderr
    assert [p.name for p in cache.iterdir() if p.name.startswith(("map-", "label-"))] == []


BASH_COMPLETE = """
source "$1"
complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _popcon; echo "${COMPREPLY[*]}"; }
complete_words popcon ba
complete_words popcon top --si
complete_words popcon top --origin ""
complete_words popcon forget --l
complete_words popcon serve --ud
complete_words popcon completion ""
complete -p popcon
"""


def test_bash_completion_comes_from_the_parsers(tmp_path):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    result = popcon("completion", "bash")
    assert result.returncode == 0, result.stderr
    script = tmp_path / "popcon.bash"
    script.write_text(result.stdout)
    done = subprocess.run(
        [bash, "-c", BASH_COMPLETE, "bash", str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [
        "backup",
        "--since",
        "env user",
        "--library",
        "--udp",
        "bash",
        "complete -F _popcon popcon",
    ]
    assert popcon("completion", "fish").returncode == 2


WITHOUT_SERVER_EXTRA = """
import sys
for name in ("tornado", "traitlets", "prometheus_client"):
    sys.modules[name] = None  # as if popcon were installed without popcon[server]
from popcon.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_help_and_completion_work_without_the_server_extra():
    shown = {}
    for args in (["--help"], ["completion", "bash"], ["status", "--help"]):
        result = subprocess.run(
            [sys.executable, "-c", WITHOUT_SERVER_EXTRA, *args],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            timeout=60,
            check=False,
        )
        assert (result.returncode, result.stderr) == (0, ""), args
        shown[args[0]] = result.stdout
    # The collector's commands' parser needs none of the extra: its lines stay.
    assert "delete what the database holds" in shown["--help"]
    script = shown["completion"]
    assert "        enable)" in script and "        top)" in script
    assert '        serve)\n            options="--help"\n' in script  # its flags need traitlets
    assert script.endswith("complete -F _popcon popcon\n")
    assert "usage: popcon status" in shown["status"]
