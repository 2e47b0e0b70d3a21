"""The dashboard's server side, in-process: its two answers agree with the API's, its page and
files are served under any prefix, and nothing it ships loads anything from elsewhere."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from collectors import ApiServer, http_get
from fleet import GRAFANA_DASHBOARD
from repo import REPO_ROOT
from timing import NOW, FakeClock

from popcon.server.query import answers
from popcon.server.query.connection import connect_readonly
from popcon.server.query.params import BadParameter
from popcon.server.web.auth import TokenAuth
from popcon.server.web.base import Reader, ServerContext
from popcon.server.web.dashboard import (
    MAX_ROW_NAMES,
    ROUND_STEPS,
    STATIC_DIR,
    rows_answer,
    slice_edges,
    version_history_answer,
)


@pytest.fixture
def conn(sample_db: Path):
    connection = connect_readonly(sample_db)
    yield connection
    connection.close()


def serve(db: Path, prefix: str = "/", **ctx_args) -> ApiServer:
    reader = Reader(str(db))
    ctx = ServerContext(reader=reader, now=FakeClock(NOW), **ctx_args)
    server = ApiServer(ctx, prefix)
    server.reader = reader
    return server


def get(server: ApiServer, path: str, **headers: str):
    return http_get(server.url + path, headers=headers)


# -- slices ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "width"), [(6 * 3600, 600), (86400, 600), (7 * 86400, 3600), (30 * 86400, 86400)]
)
def test_slices_cover_the_window_in_whole_buckets(span, width):
    start = 1_700_000_400 - 1_700_000_400 % width
    edges = slice_edges(start, start + span, width)
    assert edges[0] == start and edges[-1] == start + span
    assert all(b > a for a, b in zip(edges, edges[1:]))
    assert all((edge - start) % width == 0 for edge in edges[:-1])
    assert len(edges) - 1 <= 25  # about 24 points, never finer than the buckets
    assert edges[1] - edges[0] in ROUND_STEPS  # time labels can fall at round intervals


def test_slices_refuse_an_empty_window():
    with pytest.raises(ValueError):
        slice_edges(100, 100, 10)


# -- the answers agree with the API's -----------------------------------------------------------


@pytest.mark.parametrize("since", ["6h", "24h", "7d", "30d"])
def test_trends_add_up_to_the_libraries_answer(conn, since):
    whole = answers.libraries_answer(conn, {"since": since}, now=NOW, min_count=1, min_users=1)
    names = [row["name"] for row in whole["libraries"]]
    rows = rows_answer(
        conn, {"since": since, "names": ",".join(names)}, now=NOW, min_count=1, min_users=1
    )
    assert (rows["from"], rows["until"]) == (whole["from"], whole["until"])
    for row in whole["libraries"]:
        assert sum(rows["rows"][row["name"]]["trend"]) == row["processes"], row["name"]
    assert len(rows["times"]) == len(rows["rows"][names[0]]["trend"])


def test_trends_follow_label_filters_and_versions_follow_env(conn):
    params = {"since": "24h", "label.hub": "teaching", "names": "numpy,pandas"}
    rows = rows_answer(conn, params, now=NOW, min_count=1, min_users=1)["rows"]
    assert sum(rows["numpy"]["trend"]) == 4  # img:b only
    assert sum(rows["pandas"]["trend"]) == 0
    by_env = rows_answer(
        conn, {"since": "24h", "env": "img:b", "names": "numpy"}, now=NOW, min_count=1, min_users=1
    )
    assert by_env["rows"]["numpy"]["versions"] == [
        {"version": "2.1.0", "users": None, "processes": 4}
    ]


def test_small_counts_in_trends_are_hidden_like_the_api(conn):
    rows = rows_answer(
        conn, {"since": "24h", "names": "requests,numpy"}, now=NOW, min_count=3, min_users=1
    )
    assert "fewer than 3" in rows["rows"]["requests"]["trend"]  # 2 processes
    assert 9 in rows["rows"]["numpy"]["trend"]
    assert rows["rows"]["requests"]["versions"] == [
        {"version": "2.32.3", "users": None, "processes": "fewer than 3"}
    ]


def test_version_history_adds_up_to_the_versions_in_use(conn):
    for since in ("24h", "7d", "30d"):
        detail = answers.library_answer(
            conn, "numpy", {"since": since}, now=NOW, min_count=1, min_users=1
        )
        history = version_history_answer(
            conn, "NumPy", {"since": since}, now=NOW, min_count=1, min_users=1
        )
        totals = {version: sum(values) for version, values in history["versions"].items()}
        assert totals == {row["version"]: row["processes"] for row in detail["versions"]}
        assert all(len(v) == len(history["times"]) for v in history["versions"].values())
        # The processes chart's points are the same slices (one time axis for both charts).
        assert [point["time"] for point in history["series"]] == history["times"]
        for key in ("processes", "direct", "transitive"):
            assert sum(point[key] for point in history["series"]) == detail[key], key
    assert version_history_answer(conn, "never-seen", {}, now=NOW, min_count=1, min_users=1) is None


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"since": "6h"}, "names"),
        ({"names": ",".join(f"lib{i}" for i in range(MAX_ROW_NAMES + 1))}, "names"),
        ({"names": "numpy", "colour": "blue"}, "colour"),
        ({"names": "not a name!"}, "library"),
        ({"names": "numpy", "since": "6 hours"}, "since"),
    ],
)
def test_bad_parameters_are_named(conn, params, name):
    with pytest.raises(BadParameter) as raised:
        rows_answer(conn, params, now=NOW, min_count=1, min_users=1)
    assert raised.value.name == name


# -- the page and its files ---------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/", "/services/popcon/"])
def test_page_and_files_are_served_under_the_prefix(sample_db, prefix):
    with serve(sample_db, prefix) as server:
        for view in ("", "library/numpy", "unused", "user-installed", "environments"):
            status, body, headers = get(server, prefix + view)
            assert status == 200, view
            assert headers["Content-Type"].startswith("text/html")
            assert f'<meta name="popcon-prefix" content="{prefix}">' in body
            assert f'src="{prefix}static/popcon.js' in body
            assert "default-src 'self'" in headers["Content-Security-Policy"]
        for name in ("popcon.js", "popcon.css", "chart.umd.min.js", "chart.js-LICENSE.md"):
            status, body, _ = get(server, f"{prefix}static/{name}")
            assert status == 200 and body, name
        status, answer, _ = get(server, f"{prefix}dashboard/api/rows?since=24h&names=numpy,pandas")
        assert status == 200 and set(answer["rows"]) == {"numpy", "pandas"}
        status, answer, _ = get(server, f"{prefix}dashboard/api/version-history/numpy?since=7d")
        assert status == 200 and set(answer["versions"]) == {"1.26.4", "2.0.0", "2.1.0"}
        status, answer, _ = get(server, f"{prefix}dashboard/api/version-history/nothing-here")
        assert status == 404
        status, answer, _ = get(server, f"{prefix}dashboard/api/rows?since=forever&names=numpy")
        assert status == 400 and answer["error"].startswith("since:")
    server.reader.close()


def test_with_a_token_the_page_is_public_and_the_data_is_not(sample_db):
    with serve(sample_db, api_auth=TokenAuth("page-token")) as server:
        assert get(server, "/")[0] == 200
        assert get(server, "/static/popcon.js")[0] == 200
        assert get(server, "/dashboard/api/rows?names=numpy")[0] == 401
        status, _, _ = get(
            server, "/dashboard/api/rows?names=numpy", Authorization="token page-token"
        )
        assert status == 200
        assert get(server, "/dashboard/api/rows?names=numpy&token=page-token")[0] == 200
    server.reader.close()


def test_nothing_is_loaded_from_elsewhere():
    """Every script, style and font comes from popcon itself: no URL to another host in what
    the page loads (the SVG namespace is a name, not a request)."""
    scripts = sorted(path.name for path in STATIC_DIR.glob("*.js") if ".min." not in path.name)
    assert "popcon.js" in scripts and len(scripts) > 1
    for name in ("index.html", "popcon.css", *scripts):
        text = (STATIC_DIR / name).read_text()
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
        assert "@import" not in text and "@font-face" not in text
    html = (STATIC_DIR / "index.html").read_text()
    for reference in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert reference.startswith(("{{prefix}}", "data:")), reference


def test_the_charting_library_is_shipped_with_its_licence():
    chart = (STATIC_DIR / "chart.umd.min.js").read_text()
    assert chart.startswith("/*!\n * Chart.js v4.")
    assert "Released under the MIT License" in chart[:300]
    licence = (STATIC_DIR / "chart.js-LICENSE.md").read_text()
    assert licence.startswith("The MIT License") and "Chart.js Contributors" in licence


def test_grafana_dashboard_is_valid_json_with_a_hub_variable():
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "hub", "env", "library"} <= names
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def test_every_route_is_documented():
    """docs/dashboard.md names every page and answer the dashboard serves."""
    from popcon.server.web.dashboard import dashboard_routes

    doc = (REPO_ROOT / "docs" / "dashboard.md").read_text()
    ctx = ServerContext(reader=None)  # type: ignore[arg-type] - routes only, no request
    for pattern, *_ in dashboard_routes(ctx, "/"):
        path = pattern.replace("\\", "").replace("([^/?#]+)", "<name>").replace("(.*)", "")
        if path.startswith("/static/"):
            continue
        shown = path.split("?")[0].rstrip("/").replace("/dashboard/api/", "dashboard/api/")
        assert (shown or "/") in doc, path
