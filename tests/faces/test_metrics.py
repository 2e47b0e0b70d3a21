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
from popcon.server.web.metrics import METRICS, make_registry


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
    assert families == set(METRICS)
    # a private registry: no process or interpreter metrics mixed in
    assert "process_cpu_seconds_total" not in text
    assert "python_gc" not in text
