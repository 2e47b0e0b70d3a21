"""The dashboard in a real headless Chromium, against a real ``popcon serve`` fed by real
recorder processes (a real venv with real PyPI packages, enabled by ``popcon enable``).

What runs: three environments (``POPCON_ENV``) with two ``hub=`` labels; team-a imports
requests three times and yaml once (below ``--min-count 2``), team-b imports bs4 and pandas
twice each, team-c imports a package installed with ``pip install --user``. A screenshot of
each page is kept in ``test-artifacts/``, at 1280 px and, for the narrow-screen tests, 390 px.

The last section covers the dashboard's fixes of issue 12 (the window applies or says why
not, sparklines, one time axis, the level filter and the heading, one date format, 390 px)
and an environment gone quiet (over a database written for it: no recorder sends from the
past).
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest
from collectors import ServeProcess
from recorder_testlib import Venv, clean_environ, create_venv, pip_install, popcon_cli
from repo import artifact
from timing import wait_until

pytestmark = pytest.mark.slow

TOKEN = "dashboard-test-token"
HOUR = 3600
DAY = 24 * HOUR
USER_PACKAGE = "tabulate"  # pure Python, tiny, absent from the workload venv

WORKLOADS = [
    # (environment, labels, code, processes)
    ("team-a", "hub=alpha", "import requests\nrequests.Session()", 3),
    ("team-a", "hub=alpha", "import yaml\nyaml.safe_load('a: 1')", 1),
    ("team-b", "hub=beta", "import bs4\nbs4.BeautifulSoup('<p>x</p>', 'html.parser')", 2),
    ("team-b", "hub=beta", "import pandas\npandas.DataFrame({'a': [1]})", 2),
]


@dataclass
class Fed:
    serve: ServeProcess
    url: str
    versions: dict


def user_site_venv(tmp: Path, home: Path) -> Venv:
    """A venv that sees the user site (system site-packages on), recording enabled, with one
    real PyPI package installed by ``pip install --user``."""
    venv = create_venv(tmp / "user-venv", system_site_packages=True)
    result = popcon_cli("enable", "--python", venv.python, env=clean_environ(home))
    assert result.returncode == 0, result.stdout + result.stderr
    pip_install(
        venv,
        "--user",
        USER_PACKAGE,
        env_extra={"PYTHONUSERBASE": str(home / ".local"), "HOME": str(home)},
    )
    return venv


def run_workloads(runs: list, timeout: float = 180) -> None:
    """Start every recorder process at once, then wait for all of them."""
    procs = [
        (code, subprocess.Popen([str(python), "-c", code], env=env, cwd=cwd,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for python, code, env, cwd in runs
    ]  # fmt: skip
    for code, proc in procs:
        out, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"{code!r} failed:\n{out}"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, enabled_workload_venv: Venv):
    tmp = tmp_path_factory.mktemp("browser")
    home = tmp / "home"
    home.mkdir()
    serve = ServeProcess(
        tmp / "popcon.sqlite",
        "--min-count",
        "2",
        "--min-users",
        "1",
        env={"POPCON_API_TOKEN": TOKEN},
    )
    try:
        user_venv = user_site_venv(tmp, home)
        runs = []
        for env_name, labels, code, count in WORKLOADS:
            env = clean_environ(
                home, POPCON_COLLECTOR=serve.udp_url, POPCON_ENV=env_name, POPCON_LABELS=labels
            )
            runs += [(enabled_workload_venv.python, code, env, tmp)] * count
        user_env = clean_environ(
            home,
            POPCON_COLLECTOR=serve.udp_url,
            POPCON_ENV="team-c",
            POPCON_LABELS="hub=alpha",
            PYTHONUSERBASE=str(home / ".local"),
        )
        runs += [(user_venv.python, f"import {USER_PACKAGE}", user_env, tmp)] * 2
        run_workloads(runs)

        def arrived():
            # every record the tests look at: a process sends a datagram per new import (bs4's
            # before soupsieve's), so the collector may hold some for its next job
            _, answer, _ = serve.get("/api/v1/libraries?since=6h", token=TOKEN)
            processes = {row["name"]: row["processes"] for row in answer["libraries"]}
            _, unused, _ = serve.get("/api/v1/unused?since=6h", token=TOKEN)
            envs = {row["env"] for row in unused["environments"]}
            wanted = {"pyyaml", "soupsieve", "numpy", USER_PACKAGE}
            counts = {"requests": 3, "beautifulsoup4": 2, "pandas": 2}
            return (
                wanted <= set(processes)
                and all(processes.get(name) == count for name, count in counts.items())
                and {"team-a", "team-b"} <= envs
            )

        wait_until(arrived, timeout=20, what="the workloads' records in the collector")
        yield Fed(serve, serve.http_url, enabled_workload_venv.metadata_versions())
    finally:
        serve.stop()


def open_page(page, fed: Fed, path: str = "", **params: str) -> None:
    query = urllib.parse.urlencode({"since": "6h", **params})
    page.goto(f"{fed.url}{path}?{query}")


def table_names(page) -> list:
    return page.eval_on_selector_all("main tbody tr", "rows => rows.map(r => r.dataset.name)")


def cell_text(page, name: str, column: int) -> str:
    return page.inner_text(f'main tbody tr[data-name="{name}"] td:nth-child({column})').strip()


def shoot(page, name: str) -> None:
    page.screenshot(path=str(artifact(f"dashboard-{name}.png")), full_page=True)


# -- the libraries table ------------------------------------------------------------------------


def test_table_shows_what_the_workloads_imported(page, fed):
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    open_page(page, fed, token=TOKEN)
    page.wait_for_selector('main[data-loaded="libraries"]')
    assert "token=" not in page.url  # moved out of the address into the tab's storage
    names = table_names(page)
    for name in ("requests", "pyyaml", "beautifulsoup4", "soupsieve", "pandas", "numpy"):
        assert name in names
    assert names.index("requests") < names.index("pyyaml")  # by users, then processes
    assert cell_text(page, "requests", 2) == "1"  # one person (one HOME) ran every workload
    assert cell_text(page, "requests", 3) == "3"
    assert cell_text(page, "requests", 5).endswith("100%")  # direct share
    assert cell_text(page, "pyyaml", 3) == "fewer than 2"  # one process, under --min-count
    assert cell_text(page, "soupsieve", 5).endswith("0%")  # only bs4 imports it
    page.wait_for_function(
        """() => document.querySelector('td[data-versions="requests"]').textContent !== '…'"""
    )
    assert cell_text(page, "requests", 7) == fed.versions["requests"]
    trend = page.get_attribute('td[data-trend="requests"] svg', "data-values")
    assert sum(v for v in json.loads(trend) if isinstance(v, int)) == 3
    hosts = {urllib.parse.urlsplit(url).netloc for url in requested}
    assert hosts == {urllib.parse.urlsplit(fed.url).netloc}, hosts  # works offline
    assert not page.errors, page.errors
    shoot(page, "libraries")


def test_filters_change_what_is_shown(page, fed):
    open_page(page, fed, token=TOKEN)
    page.select_option("#env", "team-b")
    page.wait_for_url("**env=team-b**")
    page.wait_for_selector('main[data-loaded="libraries"]')
    names = table_names(page)
    assert "beautifulsoup4" in names and "pandas" in names
    assert "requests" not in names and USER_PACKAGE not in names
    shoot(page, "filter-env")

    page.select_option("#env", "")
    page.select_option("#label", "hub=alpha")
    page.wait_for_url("**label.hub=alpha**")
    page.wait_for_selector('main[data-loaded="libraries"]')
    names = table_names(page)
    assert {"requests", "pyyaml", USER_PACKAGE} <= set(names)
    assert "beautifulsoup4" not in names and "pandas" not in names

    page.fill("#search", "req")
    page.wait_for_url("**q=req**")
    page.wait_for_selector('main[data-loaded="libraries"]')
    assert table_names(page) == ["requests"]
    shoot(page, "filter-label-search")


def test_window_selector_and_sorting(page, fed):
    open_page(page, fed, token=TOKEN)
    page.click("text=30 d")
    page.wait_for_url("**since=30d**")
    page.wait_for_selector('main[data-loaded="libraries"]')
    assert "requests" in table_names(page)
    page.click("th >> text=Library")
    names = table_names(page)
    assert names == sorted(names)
    page.click("th >> text=Library")
    assert table_names(page) == sorted(names, reverse=True)


def test_csv_download_is_what_is_shown(page, fed):
    open_page(page, fed, token=TOKEN, q="y")
    page.wait_for_selector('main[data-loaded="libraries"]')
    page.wait_for_function(
        """() => [...document.querySelectorAll('td[data-versions]')]
                .every(td => td.textContent !== '…')"""
    )
    shown = table_names(page)
    assert "numpy" in shown and "pyyaml" in shown and "requests" not in shown
    with page.expect_download() as download:
        page.click("#csv")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert [row["library"] for row in rows] == shown
    by_name = {row["library"]: row for row in rows}
    assert by_name["numpy"]["processes"] == "2"
    assert by_name["numpy"]["direct_share"] == "0.000"
    assert by_name["numpy"]["versions"] == f"{fed.versions['numpy']} (2)"
    assert by_name["pyyaml"]["processes"] == "fewer than 2"
    assert by_name["pyyaml"]["direct_share"] == ""


# -- a page per library ---------------------------------------------------------------------------


def chart_datasets(page, canvas: str) -> dict:
    return page.evaluate(
        """(id) => Object.fromEntries(Chart.getChart(document.getElementById(id)).data.datasets
                 .map(d => [d.label, d.data]))""",
        canvas,
    )


def test_library_page_draws_its_charts(page, fed):
    open_page(page, fed, token=TOKEN)
    page.click('main a:text-is("numpy")')
    page.wait_for_url("**/library/numpy**")
    page.wait_for_selector('main[data-loaded="library"]')
    processes = chart_datasets(page, "chart-processes")
    assert set(processes) == {"direct", "transitive"}
    assert sum(v or 0 for v in processes["transitive"]) == 2  # the two pandas processes
    versions = chart_datasets(page, "chart-versions")
    assert set(versions) == {fed.versions["numpy"]}
    assert page.is_visible('section:has(h2:text("Imported by")) >> text=pandas')
    assert page.is_visible('section:has(h2:text("Environments")) >> text=team-b')
    assert not page.errors, page.errors
    shoot(page, "library-numpy")

    page.click('section:has(h2:text("Imported by")) >> text=pandas')
    page.wait_for_url("**/library/pandas**")
    page.wait_for_selector('main[data-loaded="library"]')
    processes = chart_datasets(page, "chart-processes")
    assert sum(v or 0 for v in processes["direct"]) == 2
    shoot(page, "library-pandas")


# -- unused, user-installed, environments ----------------------------------------------------------


def test_unused_and_user_installed_tabs(page, fed):
    open_page(page, fed, "unused", token=TOKEN)
    page.wait_for_selector('main[data-loaded="unused"]')
    team_a = page.locator('details[data-env="team-a"]')
    unused = team_a.locator(".chip").evaluate_all("chips => chips.map(c => c.dataset.name)")
    assert "pandas" in unused and "scikit-learn" in unused  # installed, not imported by team-a
    assert "requests" not in unused and "pyyaml" not in unused
    shoot(page, "unused")

    page.click('nav a:text("User-installed")')
    page.wait_for_selector('main[data-loaded="user-installed"]')
    assert table_names(page) == [USER_PACKAGE]
    assert cell_text(page, USER_PACKAGE, 2) == "team-c"
    shoot(page, "user-installed")

    page.click('nav a:text("Environments")')
    page.wait_for_selector('main[data-loaded="environments"]')
    text = page.inner_text("main table")
    assert "team-a" in text and "hub=alpha" in text and "hub=beta" in text
    shoot(page, "environments")


def test_narrow_screen(chromium, fed):
    context = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    try:
        open_page(page, fed, token=TOKEN)
        page.wait_for_selector('main[data-loaded="libraries"]')
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert page.is_visible('main a:text-is("requests")')
        shoot(page, "narrow-libraries")
        page.click('main a:text-is("pandas")')
        page.wait_for_selector('main[data-loaded="library"]')
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shoot(page, "narrow-library")
    finally:
        context.close()


def test_without_a_token_the_page_asks_for_one(page, fed):
    open_page(page, fed)
    page.wait_for_selector(".token-form")
    assert page.is_visible("text=A token is needed")
    page.fill('.token-form input[name="token"]', TOKEN)
    page.click(".token-form button")
    page.wait_for_selector('main[data-loaded="libraries"]')
    assert "requests" in table_names(page)


def test_recorder_processes_really_ran(fed):
    """The table's facts come from the recorder, not from this file: the versions the page
    shows are those the venv's own metadata reports."""
    _, answer, _ = fed.serve.get("/api/v1/libraries/requests?since=6h", token=TOKEN)
    assert answer["versions"] == [{"version": fed.versions["requests"], "users": 1, "processes": 3}]


# -- hostile stored text: CSV formulas, spoofing characters -----------------------------------

#: What senders may put in an environment label and in versions (see tests/faces/test_csv.py).
ENV_CMD = "=cmd|' /C calc'!A0"
ENV_AT = "@SUM(1+1)*cmd|' /C calc'!A0"
VERSION_LINK = '=HYPERLINK("http://evil.example/?x","click")'
VERSION_MINUS = "-1+1"
INVENTORY_VERSION = "+1+cmd"
#: What old data may hold (the decoder now refuses it): a right-to-left override, a C1 control.
SPOOFED_ENV = "img:\u202eexe.gnp\x9b"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory):
    """``popcon serve`` over a database of formulas and spoofing characters (no recorder:
    these never come from a real one)."""
    import sqlite3

    from collectors import store_datagrams
    from datagrams import inventory_datagrams, use_datagram
    from timing import HOUR, NOW

    db = tmp_path_factory.mktemp("hostile") / "popcon.sqlite"
    at = NOW - HOUR
    labels = [("hub", VERSION_MINUS)]
    timed = [(at, use_datagram(ENV_CMD, [("numpy", VERSION_LINK, "direct", "env")], labels=labels))]
    timed *= 2
    timed += [(at, use_datagram(ENV_AT, [("scipy", VERSION_MINUS, "direct", "user")]))]
    timed += [(at, use_datagram("img:spoof", [("numpy", "2.1.0", "direct", "env")]))]
    timed += [(at, d) for d in inventory_datagrams(ENV_CMD, [("six", INVENTORY_VERSION)])]
    store_datagrams(db, timed)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE envs SET name = ? WHERE name = 'img:spoof'", (SPOOFED_ENV,))
    conn.commit()
    conn.close()
    serve = ServeProcess(
        db, "--min-count", "1", "--min-users", "1", env={"POPCON_API_TOKEN": TOKEN}
    )
    try:
        yield Fed(serve, serve.http_url, {})
    finally:
        serve.stop()


def downloaded_csv(page) -> list:
    with page.expect_download() as download:
        page.click("#csv")
    return list(csv.reader(io.StringIO(Path(download.value.path()).read_text())))


def assert_no_formula(rows: list) -> None:
    for row in rows:
        for value in row:
            assert not value.startswith(FORMULA_STARTS), value


def test_csv_downloads_neutralise_formulas(page, hostile):
    open_page(page, hostile, token=TOKEN)
    page.wait_for_selector('main[data-loaded="libraries"]')
    page.wait_for_function(
        """() => [...document.querySelectorAll('td[data-versions]')]
                .every(td => td.textContent !== '…')"""
    )
    rows = downloaded_csv(page)
    assert_no_formula(rows)
    by_name = {row[0]: row for row in rows[1:]}
    assert rows[0][:3] == ["library", "users", "processes"]
    assert by_name["numpy"][1] == "unknown"  # popcon/1 datagrams carry no people
    assert by_name["numpy"][2] == "3"  # a count stays a number
    assert by_name["numpy"][6].startswith("'" + VERSION_LINK + " (2)")
    assert by_name["scipy"][6] == "'" + VERSION_MINUS + " (1)"

    views = {
        "unused": {"'" + ENV_CMD, "'" + INVENTORY_VERSION},
        "user-installed": {"'" + ENV_AT, "'" + VERSION_MINUS + " (1)"},
        "environments": {"'" + ENV_CMD, "'" + ENV_AT, "hub=" + VERSION_MINUS},
    }
    for view, expected in views.items():
        open_page(page, hostile, view)
        page.wait_for_selector(f'main[data-loaded="{view}"]')
        rows = downloaded_csv(page)
        assert_no_formula(rows)
        assert expected <= {value for row in rows for value in row}, view
    assert not page.errors, page.errors


def test_spoofing_characters_are_shown_escaped(page, hostile):
    open_page(page, hostile, "environments", token=TOKEN)
    page.wait_for_selector('main[data-loaded="environments"]')
    text = page.inner_text("main table")
    assert "img:\\u202eexe.gnp\\u009b" in text
    assert "\u202e" not in text and "\x9b" not in text
    options = page.eval_on_selector_all(
        "#env option", "options => options.map(o => [o.value, o.textContent])"
    )
    assert [SPOOFED_ENV, "img:\\u202eexe.gnp\\u009b"] in options  # the value is the data
    assert ENV_CMD in text  # text that is no control stays as it is
    shoot(page, "environments-spoofed")
    assert not page.errors, page.errors


# -- the fixes of issue 12: window, sparklines, time axes, filters, dates, 390 px ---------------

#: How the page writes a moment everywhere (en-US, Chromium's default): "Dec 2, 2026, 1:00 AM".
DATE = re.compile(r"[A-Z][a-z]{2} \d{1,2}, \d{4}, \d{1,2}:\d{2}\s[AP]M")


def window_seconds(page) -> float:
    """The span of the window the view says it shows (its note's data-from/data-until)."""
    note = page.locator("main p.window").first
    start, end = note.get_attribute("data-from"), note.get_attribute("data-until")
    return page.evaluate("([a, b]) => (Date.parse(b) - Date.parse(a)) / 1000", [start, end])


def checked_window(page) -> str | None:
    return page.evaluate(
        """() => (document.querySelector('input[name="since"]:checked') || {}).value || null"""
    )


@pytest.mark.parametrize("view", ["unused", "user-installed"])
def test_the_window_selector_applies_to_unused_and_user_installed(page, fed, view):
    page.goto(f"{fed.url}{view}?token={TOKEN}")
    page.wait_for_selector(f'main[data-loaded="{view}"]')
    assert checked_window(page) == "30d"  # the window the view shows, not "6 h"
    assert 30 * DAY <= window_seconds(page) <= 31 * DAY  # whole buckets: a little wider
    page.click("text=24 h")
    page.wait_for_url("**since=24h**")
    page.wait_for_selector(f'main[data-loaded="{view}"]')
    assert checked_window(page) == "24h"
    assert 24 * HOUR <= window_seconds(page) <= 25 * HOUR
    page.click("text=6 h")
    page.wait_for_url("**since=6h**")
    page.wait_for_selector(f'main[data-loaded="{view}"]')
    assert 6 * HOUR <= window_seconds(page) <= 7 * HOUR
    assert not page.errors, page.errors


def test_where_the_window_does_not_apply_the_controls_say_so(page, fed):
    open_page(page, fed, "environments", token=TOKEN)
    page.wait_for_selector('main[data-loaded="environments"]')
    assert checked_window(page) is None
    assert page.eval_on_selector_all(
        'input[name="since"]', "inputs => inputs.every(i => i.disabled)"
    )
    assert page.is_disabled("#env") and page.is_disabled("#level")
    assert "do not apply" in page.inner_text("#controls-note")
    shoot(page, "environments-no-window")


def test_sparklines_fill_their_column_and_show_hidden_slices(page, fed):
    open_page(page, fed, token=TOKEN)
    page.wait_for_selector('main[data-loaded="libraries"]')
    sizes = page.evaluate(
        """() => [...document.querySelectorAll('td[data-trend]')].map(td => {
             const style = getComputedStyle(td);
             const inner = td.clientWidth - parseFloat(style.paddingLeft)
               - parseFloat(style.paddingRight);
             const svg = td.querySelector('svg');
             return [td.dataset.trend, svg.getBoundingClientRect().width, inner];
           })"""
    )
    assert sizes
    for name, drawn, room in sizes:
        assert abs(drawn - room) <= 1, (name, drawn, room)  # no more 70 px short
    yaml = page.locator('td[data-trend="pyyaml"] svg')
    values = json.loads(yaml.get_attribute("data-values"))
    assert "fewer than 2" in values  # the one pyyaml process is below --min-count 2
    assert yaml.locator("rect.hidden").count() == values.count("fewer than 2")
    assert yaml.locator("rect.count").count() == 0
    assert "grey: fewer than 2" in yaml.get_attribute("aria-label")
    requests = page.locator('td[data-trend="requests"] svg')
    assert requests.locator("rect.count").count() >= 1
    assert requests.locator("rect.hidden").count() == 0
    assert page.locator("svg.spark polyline, svg.spark circle").count() == 0


def x_axis(page, canvas: str) -> dict:
    return page.evaluate(
        """(id) => { const chart = Chart.getChart(document.getElementById(id));
             const x = chart.scales.x;
             return { labels: x.ticks.map(t => t.label),
                      pixels: chart.data.labels.map((_, i) => Math.round(x.getPixelForValue(i))),
                      times: chart.data.labels.length }; }""",
        canvas,
    )


@pytest.mark.parametrize("since", ["6h", "24h", "7d"])
def test_a_librarys_two_charts_share_one_time_axis(page, fed, since):
    open_page(page, fed, "library/numpy", token=TOKEN, since=since)
    page.wait_for_selector('main[data-loaded="library"]')
    processes, versions = x_axis(page, "chart-processes"), x_axis(page, "chart-versions")
    assert processes == versions  # same slices, same labels, bars at the same pixels
    shown = [i for i, label in enumerate(processes["labels"]) if label]
    assert 2 <= len(shown) <= 8, processes["labels"]
    steps = {b - a for a, b in zip(shown, shown[1:])}
    assert len(steps) == 1, processes["labels"]  # evenly spaced, on round times
    assert sum(v or 0 for v in chart_datasets(page, "chart-processes")["transitive"]) == 2
    shoot(page, f"library-numpy-axes-{since}")


def test_the_level_filter_is_a_control_and_the_heading_says_what_is_on(page, fed):
    open_page(page, fed, token=TOKEN)
    page.wait_for_selector('main[data-loaded="libraries"]')
    assert page.locator("main h1 .filter-on").count() == 0
    page.select_option("#level", "direct")
    page.wait_for_url("**level=direct**")
    page.wait_for_selector('main[data-loaded="libraries"]')
    names = table_names(page)
    assert "requests" in names and "numpy" not in names  # numpy is only ever transitive
    assert "only direct use" in page.inner_text("main h1")
    page.select_option("#env", "team-a")
    page.wait_for_url("**env=team-a**")
    page.wait_for_selector('main[data-loaded="libraries"]')
    assert page.inner_text("main h1") == "Libraries · only environment team-a, direct use"
    assert page.input_value("#level") == "direct"
    shoot(page, "filter-level-heading")
    page.click('.tabs a[data-view="unused"]')
    page.wait_for_selector('main[data-loaded="unused"]')
    assert page.inner_text("main h1") == "Installed but unused · only environment team-a"
    assert page.is_disabled("#level")


def test_every_date_is_written_one_way(page, fed):
    open_page(page, fed, "environments", token=TOKEN)
    page.wait_for_selector('main[data-loaded="environments"]')
    seen = page.eval_on_selector_all(
        'main td[data-column="last_seen"]', "cells => cells.map(c => c.textContent)"
    )
    assert seen and all(DATE.fullmatch(text) for text in seen), seen
    open_page(page, fed, "unused", token=TOKEN)
    page.wait_for_selector('main[data-loaded="unused"]')
    summary = page.inner_text('details[data-env="team-a"] summary')
    assert DATE.search(summary.split("inventory of ")[1]), summary
    window = page.inner_text("main p.window")
    assert len(DATE.findall(window)) == 2, window


def narrow_page(chromium):
    context = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    return context, context.new_page()


def test_the_main_table_is_readable_at_390_px(chromium, fed):
    context, page = narrow_page(chromium)
    try:
        for params in ({}, {"include": "programs"}):
            open_page(page, fed, token=TOKEN, **params)
            page.wait_for_selector('main[data-loaded="libraries"]')
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            wrap = page.evaluate(
                """() => { const w = document.querySelector('main .table-wrap');
                     return [w.scrollWidth, w.clientWidth]; }"""
            )
            assert wrap[0] <= wrap[1], wrap  # no sideways scrolling
            top = page.evaluate("document.querySelector('main h1').getBoundingClientRect().top")
            assert top <= 130, top  # tabs and controls leave the screen to the content
            assert page.is_visible('main a:text-is("requests")')
        shoot(page, "narrow-libraries-programs")
        assert not page.is_visible("#env")  # folded behind "Filters"
        page.click("#filters-toggle")
        page.select_option("#env", "team-b")
        page.wait_for_selector('main[data-loaded="libraries"]')
        assert page.inner_text("#filters-toggle") == "Filters (1 on)"
        assert "only environment team-b" in page.inner_text("main h1")
        shoot(page, "narrow-filters-open")
    finally:
        context.close()


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory):
    """``popcon serve`` over a database where ``img:gone`` reported five days ago and
    ``img:busy`` an hour ago (no recorder can send from the past)."""
    from collectors import store_datagrams
    from datagrams import use_datagram
    from timing import NOW

    db = tmp_path_factory.mktemp("quiet") / "popcon.sqlite"
    timed = [(NOW - HOUR, use_datagram("img:busy", [("numpy", "2.1.0", "direct", "env")]))]
    timed += [(NOW - 5 * DAY, use_datagram("img:gone", [("numpy", "2.1.0", "direct", "env")]))]
    store_datagrams(db, timed * 3)
    serve = ServeProcess(
        db, "--min-count", "1", "--min-users", "1", env={"POPCON_API_TOKEN": TOKEN}
    )
    try:
        yield Fed(serve, serve.http_url, {})
    finally:
        serve.stop()


def test_an_environment_gone_quiet_is_flagged(chromium, page, quiet):
    open_page(page, quiet, "environments", token=TOKEN)
    page.wait_for_selector('main[data-loaded="environments"]')
    warning = page.inner_text("main p.warning")
    assert "1 of 2 environments have sent nothing for more than 3 days: img:gone" in warning
    status = page.eval_on_selector_all(
        'main td[data-column="quiet"]', "cells => cells.map(c => [c.className, c.textContent])"
    )
    assert status == [["reporting", "reporting"], ["quiet", "quiet for 5 days"]]
    shoot(page, "environments-quiet")
    context, narrow = narrow_page(chromium)
    try:
        open_page(narrow, quiet, "environments", token=TOKEN)
        narrow.wait_for_selector('main[data-loaded="environments"]')
        assert narrow.is_visible("main p.warning")
        shoot(narrow, "narrow-environments-quiet")
    finally:
        context.close()
