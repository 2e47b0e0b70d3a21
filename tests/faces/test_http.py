"""The JSON API through a real tornado server in the test process (``collectors.ApiServer``).

The sample (``datagrams.sample_datagrams``), stored an hour before ``NOW`` unless noted:

- img:a (hub=research): 5 processes import pandas, which pulls in numpy and python-dateutil;
  one of them later uses numpy itself (an ``upgrade``); 2 import requests; 1 imports scipy
  from the user site. Inventory: attrs, numpy, pandas, python-dateutil, requests, six.
- img:b (hub=teaching): 4 processes import numpy 2.1.0 directly, and 3 more did three days ago
  (numpy 2.0.0). No inventory.
"""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from collectors import ApiServer, by_name
from timing import NOW

from popcon.server.query.params import iso
from popcon.server.web.auth import OpenAuth, TokenAuth

HIDDEN = "fewer than 3"
#: The sample's senders (popcon/1) send no people: their users are unknown, never 0.
NO_PEOPLE = {"users": None, "direct_users": None}
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def epoch(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def all_times(value):
    """Every ISO-8601 time anywhere in an answer."""
    if isinstance(value, dict):
        for item in value.values():
            yield from all_times(item)
    elif isinstance(value, list):
        for item in value:
            yield from all_times(item)
    elif isinstance(value, str) and ISO_RE.match(value):
        yield value


def test_libraries_counts_processes_levels_and_hides_small_counts(api):
    status, answer, headers = api.get("/api/v1/libraries?since=6h")
    assert status == 200, answer
    assert headers["Content-Type"].startswith("application/json")
    assert [row["name"] for row in answer["libraries"]] == [
        "numpy",
        "pandas",
        "python-dateutil",
        "requests",
        "scipy",
    ]
    rows = by_name(answer["libraries"])
    # numpy: 5 transitive (img:a) + 4 direct (img:b); one img:a process upgraded it to direct
    assert rows["numpy"] == {
        "name": "numpy",
        **NO_PEOPLE,
        "processes": 9,
        "direct": 5,
        "transitive": 4,
    }
    assert rows["pandas"] == {
        "name": "pandas",
        **NO_PEOPLE,
        "processes": 5,
        "direct": 5,
        "transitive": 0,
    }
    assert rows["python-dateutil"]["transitive"] == 5
    assert rows["requests"] == {
        "name": "requests",
        **NO_PEOPLE,
        "processes": HIDDEN,
        "direct": HIDDEN,
        "transitive": 0,
    }
    assert rows["scipy"]["processes"] == HIDDEN
    assert answer["min_count"] == 3
    assert epoch(answer["until"]) - epoch(answer["from"]) >= 6 * 3600


def test_longer_window_includes_older_reports(api):
    _, answer, _ = api.get("/api/v1/libraries?since=7d")
    assert by_name(answer["libraries"])["numpy"]["processes"] == 12
    _, answer, _ = api.get(
        f"/api/v1/libraries?from={iso(NOW - 4 * 86400)}&until={iso(NOW - 86400)}"
    )
    assert answer["libraries"] == [
        {"name": "numpy", **NO_PEOPLE, "processes": 3, "direct": 3, "transitive": 0}
    ]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("env=img:b", {"numpy": (4, 4, 0)}),
        (
            "label.hub=research",
            {
                "numpy": (5, HIDDEN, 4),
                "pandas": (5, 5, 0),
                "python-dateutil": (5, 0, 5),
                "requests": (HIDDEN, HIDDEN, 0),
                "scipy": (HIDDEN, HIDDEN, 0),
            },
        ),
        ("label.hub=teaching&env=img:b", {"numpy": (4, 4, 0)}),
        ("label.hub=nobody", {}),
        (
            "level=direct",
            {
                "numpy": (5, 5, 0),
                "pandas": (5, 5, 0),
                "requests": (HIDDEN, HIDDEN, 0),
                "scipy": (HIDDEN, HIDDEN, 0),
            },
        ),
        ("level=transitive&env=img:a", {"numpy": (4, 0, 4), "python-dateutil": (5, 0, 5)}),
        ("origin=user", {"scipy": (HIDDEN, HIDDEN, 0)}),
    ],
)
def test_library_filters(api, query, expected):
    status, answer, _ = api.get(f"/api/v1/libraries?since=6h&{query}")
    assert status == 200, answer
    got = {
        row["name"]: (row["processes"], row["direct"], row["transitive"])
        for row in answer["libraries"]
    }
    assert got == expected


def test_min_count_one_shows_every_count(sample_db, make_ctx):
    with ApiServer(make_ctx(sample_db, min_count=1)) as server:
        _, answer, _ = server.get("/api/v1/libraries?since=6h")
    rows = by_name(answer["libraries"])
    assert rows["requests"]["processes"] == 2
    assert rows["scipy"] == {
        "name": "scipy",
        **NO_PEOPLE,
        "processes": 1,
        "direct": 1,
        "transitive": 0,
    }


def test_hidden_rows_are_ordered_by_name_not_by_count(sample_db, make_ctx):
    # transitive use: python-dateutil 5, numpy 4. Shown, the larger comes first; hidden, the
    # order must not tell which is larger.
    query = "/api/v1/libraries?since=6h&level=transitive"
    with ApiServer(make_ctx(sample_db, min_count=1)) as server:
        _, answer, _ = server.get(query)
    assert [(r["name"], r["processes"]) for r in answer["libraries"]] == [
        ("python-dateutil", 5),
        ("numpy", 4),
    ]
    with ApiServer(make_ctx(sample_db, min_count=6)) as server:
        _, answer, _ = server.get(query)
    assert [(r["name"], r["processes"]) for r in answer["libraries"]] == [
        ("numpy", "fewer than 6"),
        ("python-dateutil", "fewer than 6"),
    ]


def test_library_detail(api):
    status, answer, _ = api.get("/api/v1/libraries/numpy?since=7d")
    assert status == 200, answer
    assert (answer["processes"], answer["direct"], answer["transitive"]) == (12, 8, 4)
    assert answer["importers"] == [{"importer": "pandas", "users": None, "processes": 5}]
    assert answer["versions"] == [
        {"version": "1.26.4", "users": None, "processes": 5},
        {"version": "2.1.0", "users": None, "processes": 4},
        {"version": "2.0.0", "users": None, "processes": 3},
    ]
    assert answer["users"] is None  # popcon/1 senders: nobody knows how many people
    envs = by_name(answer["environments"], "env")
    assert envs["img:a"] == {
        "env": "img:a",
        "users": None,
        "processes": 5,
        "direct": HIDDEN,
        "transitive": 4,
    }
    assert envs["img:b"]["processes"] == 7
    step = answer["step"]
    assert step >= 600 and step % 600 == 0
    times = [epoch(point["time"]) for point in answer["series"]]
    assert times == list(range(times[0], times[0] + step * len(times), step))
    assert sum(p["processes"] for p in answer["series"] if isinstance(p["processes"], int)) == 12


def test_library_detail_names_step_env_and_unknown(api):
    # a PEP 503 spelling is accepted and canonicalised
    status, answer, _ = api.get("/api/v1/libraries/Python_Dateutil?since=6h&step=1h&env=img:a")
    assert status == 200, answer
    assert answer["name"] == "python-dateutil"
    assert answer["step"] == 3600
    assert answer["importers"] == [{"importer": "pandas", "users": None, "processes": 5}]
    status, answer, _ = api.get("/api/v1/libraries/never-seen-anywhere")
    assert status == 404
    assert "never-seen-anywhere" in answer["error"]


def test_unused_lists_installed_but_not_imported(api):
    status, answer, _ = api.get("/api/v1/unused?since=30d")
    assert status == 200, answer
    assert [env["env"] for env in answer["environments"]] == ["img:a"]
    assert [(lib["name"], lib["version"]) for lib in answer["environments"][0]["libraries"]] == [
        ("attrs", "24.2.0"),
        ("six", "1.16.0"),
    ]
    assert answer["environments"][0]["inventory_id"] == "0000beef"
    _, answer, _ = api.get("/api/v1/unused?env=img:a")
    assert [lib["name"] for lib in answer["environments"][0]["libraries"]] == ["attrs", "six"]
    _, answer, _ = api.get("/api/v1/unused?env=img:nothing")
    assert answer["environments"] == []


def test_user_installed(api, sample_db, make_ctx):
    _, answer, _ = api.get("/api/v1/user-installed?since=30d")
    assert [(r["name"], r["env"], r["processes"]) for r in answer["libraries"]] == [
        ("scipy", "img:a", HIDDEN)
    ]
    assert answer["libraries"][0]["versions"] == [
        {"version": "1.14.1", "users": None, "processes": HIDDEN}
    ]
    with ApiServer(make_ctx(sample_db, min_count=1)) as server:
        _, answer, _ = server.get("/api/v1/user-installed")
    assert answer["libraries"][0]["processes"] == 1


def test_environments(api):
    status, answer, _ = api.get("/api/v1/environments")
    assert status == 200, answer
    envs = by_name(answer["environments"], "env")
    assert set(envs) == {"img:a", "img:b"}
    assert envs["img:a"]["labels"] == [{"hub": "research"}]
    assert envs["img:a"]["inventory_size"] == 6
    assert envs["img:a"]["processes"] == 8  # seq-0 datagrams: 5 + 2 + 1
    assert envs["img:b"]["processes"] == 7
    assert envs["img:b"]["inventory_size"] == 0
    assert envs["img:a"]["py"] == "3.11"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/libraries?since=6h",
        f"/api/v1/libraries?from={iso(NOW - 3 * 3600 + 17)}&until={iso(NOW - 5)}",
        "/api/v1/libraries?since=1m",
        "/api/v1/libraries/numpy?since=24h",
        "/api/v1/libraries/numpy?since=30d",
        "/api/v1/unused",
        "/api/v1/user-installed",
        "/api/v1/environments",
    ],
)
def test_no_time_finer_than_the_bucket_width(api, path):
    status, answer, _ = api.get(path)
    assert status == 200, answer
    times = list(all_times(answer))
    assert times, "the answer carries times"
    assert all(epoch(t) % 600 == 0 for t in times), times


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/api/v1/libraries?since=5x", "since: expected a duration"),
        ("/api/v1/libraries?since=6h&from=2026-01-01", "since: give either since or from"),
        ("/api/v1/libraries?from=yesterday", "from: expected an ISO-8601 time"),
        ("/api/v1/libraries?from=2026-01-02&until=2026-01-01", "from: must be earlier"),
        ("/api/v1/libraries?level=sideways", "level: expected one of"),
        ("/api/v1/libraries?origin=cloud", "origin: expected one of"),
        ("/api/v1/libraries?label.Hub=x", "label.Hub: a label key"),
        ("/api/v1/libraries?label.hub=a%20b", "label.hub: a label value"),
        ("/api/v1/libraries?colour=blue", "colour: unknown parameter"),
        ("/api/v1/libraries?since=6h&since=7d", "since: given more than once"),
        ("/api/v1/libraries/numpy?step=1m", "step: expected a multiple of the bucket width"),
        ("/api/v1/libraries/numpy?level=direct", "level: unknown parameter"),
        ("/api/v1/libraries/Not%20A%20Name!", "library: expected a distribution name"),
        ("/api/v1/unused?label.hub=x", "label.hub: unknown parameter"),
        ("/api/v1/environments?since=6h", "since: unknown parameter"),
        ("/api/v1/libraries?env=%01", "env: expected 1-200 characters"),
    ],
)
def test_bad_parameters_get_400_with_a_one_line_reason(api, path, reason):
    status, answer, headers = api.get(path)
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert set(answer) == {"error"}
    assert answer["error"].startswith(reason), answer
    assert "\n" not in answer["error"]


def test_unknown_endpoint_is_a_json_404(api):
    status, answer, _ = api.get("/api/v1/popularity")
    assert status == 404
    assert "no such endpoint" in answer["error"]


def test_index_lists_the_endpoints(api):
    status, answer, _ = api.get("/api/v1/")
    assert status == 200
    assert "/api/v1/libraries" in answer["endpoints"]


# -- who may read ------------------------------------------------------------------------------


@pytest.fixture
def token_api(sample_db, make_ctx):
    auth = TokenAuth("s3cret-token")
    with ApiServer(make_ctx(sample_db, api_auth=auth, metrics_auth=auth)) as server:
        yield server


@pytest.mark.parametrize(
    "path", ["/api/v1/libraries", "/api/v1/libraries/numpy", "/api/v1/unused",
             "/api/v1/user-installed", "/api/v1/environments", "/metrics"],
)  # fmt: skip
def test_every_endpoint_needs_the_token(token_api, path):
    status, answer, headers = token_api.get(path)
    assert status == 401
    assert "token is required" in answer["error"]
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, answer, _ = token_api.get(path, token="wrong")
    assert status == 403
    assert answer == {"error": "the token is not valid"}
    status, _, _ = token_api.get(path, token="s3cret-token")
    assert status == 200


def test_token_in_bearer_header_or_query(token_api):
    status, _, _ = token_api.get(
        "/api/v1/libraries", headers={"Authorization": "Bearer s3cret-token"}
    )
    assert status == 200
    status, answer, _ = token_api.get("/api/v1/libraries?token=s3cret-token&since=6h")
    assert status == 200
    assert by_name(answer["libraries"])["numpy"]["processes"] == 9
    status, _, _ = token_api.get("/api/v1/libraries?token=nope")
    assert status == 403


def test_without_a_configured_token_the_api_is_closed(sample_db, make_ctx):
    closed = TokenAuth("")
    with ApiServer(make_ctx(sample_db, api_auth=closed, metrics_auth=closed)) as server:
        for token in (None, "", "anything"):
            status, answer, _ = server.get("/api/v1/libraries", token=token)
            assert status == 403
            assert "POPCON_API_TOKEN" in answer["error"]


def test_metrics_can_be_open_while_the_api_needs_a_token(sample_db, make_ctx):
    ctx = make_ctx(sample_db, api_auth=TokenAuth("t0ken"), metrics_auth=OpenAuth())
    with ApiServer(ctx) as server:
        assert server.get("/metrics")[0] == 200
        assert server.get("/api/v1/libraries")[0] == 401


def test_routes_live_under_a_prefix(sample_db, make_ctx):
    with ApiServer(make_ctx(sample_db), prefix="/services/popcon") as server:
        status, answer, _ = server.get("/services/popcon/api/v1/libraries?since=6h")
        assert status == 200
        assert by_name(answer["libraries"])["pandas"]["processes"] == 5
        assert server.get("/services/popcon/metrics")[0] == 200
        assert server.get("/api/v1/libraries")[0] == 404
