"""``/metrics``: counters computed at scrape time from the stored totals (sample: see
test_http.py's docstring)."""

from __future__ import annotations

import shutil
from collections import Counter

from collectors import ApiServer, by_name, store_datagrams
from datagrams import use_datagram
from prometheus_client.parser import text_string_to_metric_families
from timing import NOW

from popcon.server.storage.schema import RESULT_REASONS
from popcon.server.web.base import Reader
from popcon.server.web.metrics import GAUGES, METRICS, make_registry


def scrape_text(text: str) -> dict:
    """{(sample name, frozenset(labels)): value} from the exposition format."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape_db(db, min_count: int) -> dict:
    from prometheus_client.exposition import generate_latest

    reader = Reader(str(db), workers=1)
    try:
        registry = make_registry(reader.connection, min_count)
        return scrape_text(generate_latest(registry).decode())
    finally:
        reader.close()


def value(samples: dict, name: str, **labels: str):
    return samples.get((name, frozenset(labels.items())))


def test_counters_from_the_sample(sample_db):
    samples = scrape_db(sample_db, min_count=3)
    processes = "popcon_library_processes_total"
    assert value(samples, processes, library="numpy", env="img:a", level="transitive") == 5
    assert value(samples, processes, library="numpy", env="img:b", level="direct") == 7
    assert value(samples, processes, library="pandas", env="img:a", level="direct") == 5
    assert (
        value(samples, processes, library="python-dateutil", env="img:a", level="transitive") == 5
    )
    versions = "popcon_library_version_processes_total"
    assert value(samples, versions, library="numpy", version="1.26.4", env="img:a") == 5
    assert value(samples, versions, library="numpy", version="2.1.0", env="img:b") == 4
    assert value(samples, versions, library="numpy", version="2.0.0", env="img:b") == 3
    assert value(samples, "popcon_reports_total", env="img:a") == 8
    assert value(samples, "popcon_reports_total", env="img:b") == 7
    # 17 good datagrams (16 use + 1 inventory) and one that is not a datagram at all
    datagrams = {
        dict(labels)["result"]: v for (name, labels), v in samples.items()
        if name == "popcon_datagrams_total"
    }  # fmt: skip
    assert datagrams["ok"] == 17
    assert sum(datagrams.values()) == 18
    assert set(RESULT_REASONS) <= set(datagrams)


def test_small_counts_are_left_out(sample_db):
    hidden = scrape_db(sample_db, min_count=3)
    shown = scrape_db(sample_db, min_count=1)
    requests = ("popcon_library_processes_total", "requests")
    names = {(name, dict(labels).get("library")) for name, labels in hidden}
    assert requests not in names
    assert ("popcon_library_upgrades_total", "numpy") not in names  # 1 upgrade
    assert value(shown, "popcon_library_upgrades_total", library="numpy", env="img:a") == 1
    assert (
        value(
            shown, "popcon_library_processes_total", library="requests", env="img:a", level="direct"
        )
        == 2
    )
    assert (
        value(shown, "popcon_library_processes_total", library="scipy", env="img:a", level="direct")
        == 1
    )
    # collector health is never hidden
    assert value(hidden, "popcon_datagrams_total", result="unknown_format") == value(
        shown, "popcon_datagrams_total", result="unknown_format"
    )


def test_counters_agree_with_the_api(sample_db, make_ctx):
    samples = scrape_db(sample_db, min_count=1)
    processes, direct = Counter(), Counter()
    for (name, labels), v in samples.items():
        labels = dict(labels)
        if name == "popcon_library_processes_total":
            processes[labels["library"]] += v
            if labels["level"] == "direct":
                direct[labels["library"]] += v
        elif name == "popcon_library_upgrades_total":
            direct[labels["library"]] += v
    with ApiServer(make_ctx(sample_db, min_count=1)) as server:
        _, answer, _ = server.get("/api/v1/libraries?since=30d")
    rows = by_name(answer["libraries"])
    assert processes == Counter({name: row["processes"] for name, row in rows.items()})
    assert +direct == +Counter({name: row["direct"] for name, row in rows.items()})


def test_counters_only_grow_across_restarts(sample_db, tmp_path):
    db = tmp_path / "popcon.sqlite"
    shutil.copy(sample_db, db)
    before = scrape_db(db, min_count=3)
    later = [
        (NOW - 60, use_datagram("img:a", [("numpy", "1.26.4", "upgrade", "env")], seq=3))
        for _ in range(3)
    ] + [(NOW - 60, use_datagram("img:c", [("pandas", "2.2.3", "direct", "env")]))]
    store_datagrams(db, later)  # a new writer on the same file: a restart
    after = scrape_db(db, min_count=3)
    for key, old in before.items():
        assert key in after, f"{key} disappeared"
        assert after[key] >= old, key
    # the upgrades became visible (1 + 3) without any level series going down
    assert value(after, "popcon_library_upgrades_total", library="numpy", env="img:a") == 4
    assert value(after, "popcon_datagrams_total", result="ok") == 21


def test_metrics_endpoint(api):
    status, text, headers = api.get("/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    families = {family.name for family in text_string_to_metric_families(text)}
    assert families == set(METRICS) | set(GAUGES)
    # a private registry: no process or interpreter metrics mixed in
    assert "process_cpu_seconds_total" not in text
    assert "python_gc" not in text


IPYKERNEL = ("ipykernel", "6.29.5", "env")


def test_people_are_a_gauge_per_window_above_min_users(tmp_path):
    """Three people use pandas (two of them in a kernel) and numpy through it, one person runs
    requests five times: with ``min_users`` 2 only pandas and numpy have a users gauge, in both
    windows. A kernel's library first the program's and then claimed counts one process, and
    its claim counts with the upgrades."""
    from datagrams import use_datagram_2

    people = [bytes([n]) * 32 for n in range(1, 4)]
    timed = []
    for n, secret in enumerate(people):
        libs = [
            ("pandas", "2.2.2", "direct", "env"),
            ("numpy", "2.0", "transitive", "env", "pandas"),
        ]
        program = ("ipykernel", "6.29.5", "env") if n else None
        timed.append((NOW - 3600 + n, use_datagram_2("img", libs, secret, program=program)))
    later = [("tornado", "6.4", "program", "env", "ipykernel")]
    timed.append((NOW - 3000, use_datagram_2("img", later, people[1], program=IPYKERNEL)))
    claimed = [("tornado", "6.4", "claimed", "env")]
    timed.append((NOW - 2900, use_datagram_2("img", claimed, people[1], seq=1)))
    for run in range(5):
        requests = [("requests", "2.32.3", "direct", "env")]
        timed.append((NOW - 2000 + run, use_datagram_2("img", requests, people[0])))
    db = tmp_path / "popcon.sqlite"
    store_datagrams(db, timed)
    reader = Reader(str(db), workers=1)
    try:
        from prometheus_client.exposition import generate_latest

        registry = make_registry(reader.connection, 1, 2, lambda: NOW)
        samples = scrape_text(generate_latest(registry).decode())
    finally:
        reader.close()
    users = "popcon_library_users"
    for window in ("6h", "30d"):
        assert value(samples, users, library="pandas", window=window) == 3
        assert value(samples, users, library="numpy", window=window) == 3
        assert value(samples, users, library="requests", window=window) is None  # one person
        assert value(samples, users, library="tornado", window=window) is None  # one person
    processes = "popcon_library_processes_total"
    assert value(samples, processes, library="tornado", env="img", level="program") == 1
    assert value(samples, "popcon_library_upgrades_total", library="tornado", env="img") == 1
    assert value(samples, processes, library="requests", env="img", level="direct") == 5
