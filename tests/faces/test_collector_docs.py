"""docs/collector.md cannot drift: every setting, metric, endpoint and CLI option is in it."""

from __future__ import annotations

import re

import pytest
from repo import REPO_ROOT

from popcon.server.app import PopconServe, settings_markdown
from popcon.server.cli import COMMANDS, build_parser
from popcon.server.settings import API_TOKEN_ENV, KEY_ENV
from popcon.server.upkeep_commands import UPKEEP_COMMANDS
from popcon.server.web.api import ENDPOINTS
from popcon.server.web.metrics import GAUGES, METRICS

DOC = REPO_ROOT / "docs" / "collector.md"


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_the_settings_table_is_generated_from_the_traits(doc):
    match = re.search(
        r"<!-- settings-table:[^\n]*-->\n(.*?)<!-- end of settings-table -->", doc, re.DOTALL
    )
    assert match, "docs/collector.md lost its settings-table markers"
    assert match.group(1) == settings_markdown(), (
        "the settings table is stale; regenerate it with "
        "python -c 'from popcon.server.app import settings_markdown; print(settings_markdown())'"
    )


def test_every_setting_and_flag_is_documented_exactly_once(doc):
    for name in PopconServe.class_own_traits(config=True):
        assert doc.count(f"| `c.PopconServe.{name}` |") == 1, name
    for flag in [*PopconServe.aliases, *PopconServe.flags]:
        assert f"`--{flag}`" in doc, flag


def test_every_secret_is_in_the_variables_table(doc):
    for variable in (API_TOKEN_ENV, KEY_ENV):
        assert re.search(rf"^\| `{variable}` \|", doc, re.MULTILINE), variable


def test_every_metric_is_documented(doc):
    for name, (_help, labels) in METRICS.items():
        row = re.search(rf"^\| `{name}_total` \| ([^|]*) \|", doc, re.MULTILINE)
        assert row, name
        assert [label.strip("` ") for label in row.group(1).split(",")] == list(labels), name
    for name, (_help, labels) in GAUGES.items():
        row = re.search(rf"^\| `{name}` \| ([^|]*) \|", doc, re.MULTILINE)
        assert row, name
        assert [label.strip("` ") for label in row.group(1).split(",")] == list(labels), name


def test_every_endpoint_is_documented(doc):
    for endpoint in ENDPOINTS:
        assert f"`GET {endpoint}`" in doc, endpoint


def test_every_cli_command_and_option_is_documented(doc):
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    assert set(subparsers) == {*COMMANDS, *UPKEEP_COMMANDS}
    for command, sub in subparsers.items():
        assert f"popcon {command}" in doc, command
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert f"{option}" in doc, f"popcon {command} {option}"


def test_every_datagram_result_is_documented():
    from popcon.server.storage.schema import RESULT_REASONS

    storage = (REPO_ROOT / "docs" / "collector-storage.md").read_text()
    paragraph = storage[storage.index("Every datagram ends up in exactly one result") :]
    paragraph = paragraph[: paragraph.index("\n\n")]
    named = set(re.findall(r"`([a-z0-9_]+)`", paragraph))
    assert set(RESULT_REASONS) <= named, sorted(set(RESULT_REASONS) - named)
