"""``popcon preview`` checks what it shows with the collector's decoder: per datagram, whether a
collector would accept it and, if not, the reason (with the command's ``POPCON_KEY``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from popcon.admin.preview import collector_answers, format_datagrams, summarize
from popcon.protocol import sign, time_line

GOOD = b"popcon/1 use 0\nenv lab\npy 3.11\nlabel hub=x\nlib pandas 2.2.2 direct env\n"
LATER = b"popcon/1 use 1\nenv lab\npy 3.11\nlabel hub=x\nlib numpy 2.0 transitive env pandas\n"
BAD_NAME = b"popcon/1 use 2\nenv lab\npy 3.11\nlib Not_Canonical 1.0 direct env\n"
TRUNCATED = b"popcon/1 use 3\nenv lab\npy 3.11\nlib six 1.16.0 direct"
STATSD = b"jupyter.popcon.library_used.numpy:1|c\njupyter.popcon.reports:1|c"


def test_each_datagram_shown_says_whether_the_collector_would_accept_it() -> None:
    text = format_datagrams(
        [GOOD, BAD_NAME, TRUNCATED, STATSD], collector_answers([GOOD, BAD_NAME, TRUNCATED, STATSD])
    )
    blocks = text.split("# datagram ")[1:]
    assert [block.splitlines()[1] for block in blocks] == [
        "# the collector would accept it",
        "# the collector would drop it: bad_name",
        "# the collector would drop it: truncated",
        "# the collector would accept it",  # with the prefix its lines carry
    ]
    assert blocks[0] == f"1, {len(GOOD)} bytes\n# the collector would accept it\n" + GOOD.decode()


def test_the_json_summary_lists_the_collectors_answer_per_datagram() -> None:
    datagrams = [GOOD, LATER, BAD_NAME]
    shown = summarize(datagrams, collector_answers(datagrams))
    assert shown["datagrams"] == [
        {"bytes": len(GOOD), "accepted": True, "reason": None},
        {"bytes": len(LATER), "accepted": True, "reason": None},
        {"bytes": len(BAD_NAME), "accepted": False, "reason": "bad_name"},
    ]
    assert shown["labels"] == {"env": "lab", "python": "3.11", "hub": "x"}
    assert shown["libraries"] == [
        {"name": "numpy", "version": "2.0", "level": "transitive", "origin": "env",
         "importer": "pandas"},
        {"name": "pandas", "version": "2.2.2", "level": "direct", "origin": "env",
         "importer": None},
    ]  # fmt: skip


def test_signatures_are_checked_with_the_commands_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POPCON_KEY", "shared secret")
    stamped = GOOD + time_line(int(time.time()) // 60, "0123456789abcdef")
    right = stamped + sign(b"shared secret", stamped)
    wrong = stamped + sign(b"another key", stamped)
    answers = [entry["reason"] for entry in summarize([right, wrong, GOOD, STATSD])["datagrams"]]
    assert answers == [None, "bad_signature", "unsigned", "unsigned"]
    assert "# the collector would drop it: bad_signature\n" in format_datagrams([wrong])


def test_a_previewed_command_shows_its_datagrams_accepted(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("POPCON_")}
    environ.update(POPCON_CACHE_DIR=str(tmp_path / "cache"), POPCON_KEY="k", POPCON_ENV="lab")
    command = [sys.executable, "-c", "import hypothesis"]
    preview = [sys.executable, "-m", "popcon", "preview"]
    text = subprocess.run(
        [*preview, "--", *command], env=environ, capture_output=True, text=True, timeout=120
    )
    assert text.returncode == 0, text.stderr
    assert "lib hypothesis " in text.stdout
    verdicts = [line for line in text.stdout.splitlines() if line.startswith("# the collector")]
    assert verdicts and set(verdicts) == {"# the collector would accept it"}
    shown = subprocess.run(
        [*preview, "--json", "--", *command], env=environ, capture_output=True, timeout=120
    )
    checked = json.loads(shown.stdout)["datagrams"]
    assert checked and all(entry["accepted"] for entry in checked), checked


def test_what_no_collector_reads_is_named_as_the_collector_names_it() -> None:
    other_version = b"popcon/3 use 0\nenv lab\npy 3.11\n"
    assert collector_answers([other_version, b"x:1|c", b"\xff.reports:1|c", b""]) == [
        "version",
        "unknown_format",
        "unknown_format",
        "empty",
    ]


KERNEL = (
    b"popcon/2 use 0\nenv lab\npy 3.11\nprog ipykernel 6.29.5 env 17:2\n"
    b"lib tornado 6.4 program env 9:1 ipykernel\nlib pandas 2.2.2 direct env 5:3\n"
    b"lib numpy 2.0 transitive env 88:1 pandas\n"
)
KERNEL_LATER = b"popcon/2 use 1\nenv lab\npy 3.11\nlib tornado 6.4 claimed env 9:1\n"


def test_the_summary_names_the_program_and_what_people_s_code_claimed() -> None:
    shown = summarize([KERNEL, KERNEL_LATER])
    assert shown["programs"] == [{"name": "ipykernel", "version": "6.29.5", "origin": "env"}]
    assert shown["person"] is True
    assert {lib["name"]: (lib["level"], lib["importer"]) for lib in shown["libraries"]} == {
        "numpy": ("transitive", "pandas"),
        "pandas": ("direct", None),
        "tornado": ("direct", None),  # the program's first, then people's
    }
    assert summarize([KERNEL])["libraries"][-1]["level"] == "program"
    no_person = KERNEL.replace(b" 17:2", b" -").replace(b" 9:1", b" -")
    no_person = no_person.replace(b" 5:3", b" -").replace(b" 88:1", b" -")
    assert summarize([no_person])["person"] is False
    assert summarize([STATSD])["person"] is None


def test_a_process_without_a_config_directory_is_previewed_as_no_person(tmp_path: Path) -> None:
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("POPCON_", "XDG_")) and k != "HOME"
    }
    environ.update(POPCON_CACHE_DIR=str(tmp_path / "cache"), POPCON_ENV="lab")
    command = [sys.executable, "-m", "popcon", "preview", "--", sys.executable, "-c"]
    text = subprocess.run(
        [*command, "import hypothesis"], env=environ, capture_output=True, text=True, timeout=120
    )
    assert text.returncode == 0, text.stderr
    assert "lib hypothesis " in text.stdout and " direct env -\n" in text.stdout
    assert "# counted as a process, not as a person: no usable secret" in text.stdout
    environ["HOME"] = str(tmp_path / "home")
    counted = subprocess.run(
        [*command, "import hypothesis"], env=environ, capture_output=True, text=True, timeout=120
    )
    assert counted.returncode == 0, counted.stderr
    assert "not as a person" not in counted.stdout
    assert (tmp_path / "home" / ".config" / "popcon" / "secret").exists()
