"""The HTTP side against hostile clients: idle connections, bad parameters, tokens in logs,
HEAD, short tokens, and the size of /metrics and of a library's answers."""

from __future__ import annotations

import errno
import http.client
import logging
import random
import resource
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from collectors import ApiServer, http_get, store_datagrams, subprocess_env
from datagrams import use_datagram
from timing import NOW

from popcon.server.query import answers
from popcon.server.web.api import ENDPOINTS
from popcon.server.web.auth import TokenAuth
from popcon.server.web.guard import GuardedHTTPServer, RateLimitedLog, redact
from popcon.server.web.metrics import MAX_BYTES, MAX_SERIES, MAX_VERSION_SERIES, collect_families

TOKEN = "hardening-test-token-0123"

# -- 6. idle connections --------------------------------------------------------------------


def _serve_with_few_descriptors(
    db: Path, log: Path, *flags: str
) -> tuple[subprocess.Popen[bytes], str, int]:
    """``popcon serve`` with RLIMIT_NOFILE at 256 (soft and hard), its log in ``log``: the
    process, its HTTP URL and UDP port."""

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    command = [
        sys.executable, "-m", "popcon", "serve", "--open", "--min-count", "1",
        "--udp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--db", str(db), *flags,
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=few_descriptors,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "listening on" in text:
            words = [word.rstrip(",") for word in text.split()]
            http_url = next(w for w in words if w.startswith("http://"))
            udp = next(w for w in words if w.startswith("udp://"))
            return proc, http_url.rstrip("/"), int(udp.rsplit(":", 1)[1])
        assert proc.poll() is None, text
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("popcon serve did not start:\n" + log.read_text(errors="replace"))


def test_idle_connections_do_not_lock_out_the_api(tmp_path):
    """600 idle connections to a collector limited to 256 descriptors: the API still answers
    at once, UDP is still counted, idle connections are closed after --idle-timeout, and
    the log stays a few lines (it was 150 MB of EMFILE tracebacks)."""
    log = tmp_path / "serve.log"
    proc, url, udp_port = _serve_with_few_descriptors(
        tmp_path / "popcon.sqlite", log, "--idle-timeout", "3"
    )
    idle: list[socket.socket] = []
    try:
        port = int(url.rsplit(":", 1)[1])
        for _ in range(600):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.5)
        started = time.monotonic()
        status, answer, _ = http_get(url + "/api/v1/environments")
        assert status == 200, answer
        assert time.monotonic() - started < 5
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(
                use_datagram("img:flooded", [("numpy", "2.1.0", "direct", "env")]),
                ("127.0.0.1", udp_port),
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status, answer, _ = http_get(url + "/api/v1/environments")
            if status == 200 and answer["environments"]:
                break
            time.sleep(0.2)
        assert [row["env"] for row in answer["environments"]] == ["img:flooded"]
        time.sleep(3.5)  # --idle-timeout: every idle connection left is closed
        for sock in idle:
            sock.settimeout(2)
            try:
                assert sock.recv(1) == b""
            except ConnectionResetError:
                pass
    finally:
        for sock in idle:
            sock.close()
        proc.terminate()
        proc.wait(20)
    text = log.read_text(errors="replace")
    assert len(text) < 10_000, text[:3000]
    assert "Traceback" not in text
    assert "closed the one idle longest" in text


def test_accept_errors_pause_and_log_once(caplog):
    """When the system has no descriptor to give, accepting pauses and says so once per
    LOG_EVERY seconds, instead of spinning."""
    import asyncio

    from tornado.web import Application

    calls = []

    class Exhausted(socket.socket):
        def accept(self):  # type: ignore[override]
            calls.append(time.monotonic())
            raise OSError(errno.EMFILE, "Too many open files")

    async def main() -> None:
        listener = Exhausted(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        server = GuardedHTTPServer(
            Application([]), max_connections=10, idle_timeout=5, body_timeout=5
        )
        server.add_sockets([listener])
        client = socket.create_connection(listener.getsockname())
        await asyncio.sleep(1.2)
        server.stop()
        client.close()

    with caplog.at_level(logging.WARNING, logger="popcon.http"):
        asyncio.run(main())
    lines = [r for r in caplog.records if "cannot accept" in r.getMessage()]
    assert len(lines) == 1
    assert "Too many open files" in lines[0].getMessage()
    assert 2 <= len(calls) <= 4  # once per ACCEPT_PAUSE, not thousands


def test_rate_limited_log_counts_what_it_held_back(caplog):
    clock = [0.0]
    limited = RateLimitedLog(every=10, clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="popcon.http"):
        for step in range(30):
            clock[0] = step
            limited.warning("http: %s", "full")
    assert [r.getMessage() for r in caplog.records] == [
        "http: full (1 time(s) since the last such line)",
        "http: full (10 time(s) since the last such line)",
        "http: full (10 time(s) since the last such line)",
    ]


# -- 7. bad parameters, and tokens in logs ----------------------------------------------------


@pytest.fixture
def token_api(sample_db, make_ctx):
    with ApiServer(make_ctx(sample_db, api_auth=TokenAuth(TOKEN))) as server:
        yield server


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("since=999999d", "since"),
        ("since=36501d", "since"),
        ("until=9999-12-31T23:59:59Z", "until"),
        ("until=0001-01-01", "until"),
        ("from=0001-01-01T00:00:00%2B14:00", "from"),
        ("until=0001-01-01T05:00:00%2B14:00", "until"),
        ("from=9999-12-31T23:59:59-14:00", "from"),
        ("from=1969-12-31T23:00:00Z&until=1970-01-02", "from"),
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/libraries", "/api/v1/libraries/numpy", "/api/v1/unused"])
def test_times_out_of_range_answer_400_naming_the_parameter(token_api, path, query, named):
    status, answer, _ = token_api.get(f"{path}?{query}", token=TOKEN)
    assert status == 400, answer
    assert answer["error"].startswith(f"{named}: ")


def test_a_huge_step_answers_400(token_api):
    status, answer, _ = token_api.get("/api/v1/libraries/numpy?step=999999d", token=TOKEN)
    assert (status, answer["error"].split(":")[0]) == (400, "step")


def test_static_paths_with_a_nul_are_not_found(token_api):
    status, _, _ = token_api.get("/static/x%00")
    assert status == 404


def test_tornado_500_log_holds_no_token(token_api, monkeypatch, caplog):
    def broken(*_args, **_kwargs):
        raise RuntimeError("broken on purpose")

    monkeypatch.setitem(answers.ANSWERS, "environments", broken)
    with caplog.at_level(logging.DEBUG):
        status, _, _ = token_api.get(f"/api/v1/environments?token={TOKEN}&since=1h")
    assert status == 500
    assert "Uncaught exception GET /api/v1/environments?…" in caplog.text
    assert TOKEN not in caplog.text


def test_redact_takes_out_query_strings_and_tokens():
    line = "GET /api/v1/x?token=abc&since=6h (1.2.3.4) uri='/m?token=abc' token=abc"
    assert redact(line) == "GET /api/v1/x?… (1.2.3.4) uri='/m?… token=…"
    assert redact("GET /x?a=',&token=abc&b=\"c (h)") == "GET /x?… (h)"


def _fuzz_paths() -> list[str]:
    paths = [p.replace("<name>", "numpy") for p in ENDPOINTS]
    paths += ["/api/v1/", "/api/v1/libraries/pandas", "/api/v1/libraries/x%00", "/api/v1/nope"]
    paths += ["/", "/unused", "/user-installed", "/environments", "/library/numpy"]
    paths += ["/static/app.js", "/static/x%00", "/static/../pyproject.toml", "/static/%ff"]
    paths += ["/dashboard/api/rows", "/dashboard/api/version-history/numpy"]
    paths += ["/dashboard/api/version-history/%ff", "/library/%00"]
    return paths


_NAMES = ["since", "from", "until", "env", "level", "origin", "step", "names", "label.hub",
          "label.X", "label.", "token", "bogus", "%00", "since%00"]  # fmt: skip
_VALUES = [
    "6h", "0m", "999999d", "36500d", "36501d", "-1h", "1e9d", "", "%20", "%00", "%ff", "%c0%80",
    "2026-11-26", "2026-11-26T14:00:00Z", "9999-12-31T23:59:59Z", "0001-01-01",
    "0001-01-01T00:00:00%2B14:00", "9999-12-31T23:59:59-14:00", "8999-12-31T23:59:59Z",
    "1970-01-01", "1969-12-31T23:59:59Z", "2026-13-45", "numpy", "numpy,pandas", ",,,",
    "direct", "unknown", "user", "img:a", "research", "x" * 300, "%e2%80%ae", "'%20OR%201=1",
    ",".join(f"lib{i}" for i in range(150)), "1.5h", "24H", "10000d", TOKEN,
]  # fmt: skip


def test_parameter_fuzzer_finds_no_5xx_and_no_token_in_the_log(token_api, caplog):
    """A few thousand requests over every route with hostile parameters (token in the query
    string): every answer below 500, the token nowhere in the captured log."""
    rng = random.Random(11)
    paths = _fuzz_paths()
    conn = http.client.HTTPConnection("127.0.0.1", token_api.port, timeout=20)
    failures = []
    with caplog.at_level(logging.DEBUG):
        for number in range(2500):
            pairs = [(rng.choice(_NAMES), rng.choice(_VALUES)) for _ in range(rng.randint(0, 3))]
            query = "&".join(f"{name}={value}" for name, value in pairs)
            query = f"token={TOKEN}&{query}" if number % 3 else query
            method = "HEAD" if number % 7 == 0 else "GET"
            target = rng.choice(paths) + ("?" + query if query else "")
            conn.request(method, target, headers={"Authorization": f"token {TOKEN}"})
            response = conn.getresponse()
            response.read()
            if response.status >= 500:
                failures.append((method, target, response.status))
    conn.close()
    assert failures == []
    assert TOKEN not in caplog.text


# -- 10. tokens at start, HEAD ----------------------------------------------------------------


@pytest.mark.parametrize("token", ["    ", "\t", "short-token", "a token with spaces in it"])
def test_blank_or_short_tokens_are_refused_at_start(tmp_path, token):
    command = [
        sys.executable, "-m", "popcon", "serve", "--db", str(tmp_path / "p.sqlite"),
        "--udp", "127.0.0.1:0", "--http", "127.0.0.1:0",
    ]  # fmt: skip
    done = subprocess.run(
        command, env=subprocess_env(POPCON_API_TOKEN=token), cwd=tmp_path,
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("popcon serve: POPCON_API_TOKEN: expected at least 16 characters")
    assert len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "p.sqlite").exists()


@pytest.mark.parametrize(
    "path",
    [
        "/", "/unused", "/library/numpy", "/static/app.js", "/api/v1/", "/api/v1/libraries",
        "/api/v1/libraries/numpy", "/api/v1/environments", "/metrics",
        "/dashboard/api/rows?names=numpy", "/dashboard/api/version-history/numpy",
        "/api/v1/libraries/nope", "/api/v1/nope",
    ],
)  # fmt: skip
def test_head_is_served_wherever_get_is(token_api, path):
    def ask(method: str) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", token_api.port, timeout=20)
        conn.request(method, path, headers={"Authorization": f"token {TOKEN}"})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        return response.status, response.getheader("Content-Type", ""), body

    got, head = ask("GET"), ask("HEAD")
    assert head[:2] == got[:2]
    assert head[2] == b""


# -- 1. the size of /metrics and of a library's answers ---------------------------------------


def _fill_totals(db: Path, envs: int, libraries: int, versions: int) -> None:
    """Totals for ``libraries`` in each of ``envs`` environments with ``versions`` versions
    each, written straight into the total tables (as years of reports would leave them)."""
    conn = sqlite3.connect(db)
    with conn:
        env_ids = [
            conn.execute(
                "INSERT INTO envs (name, first_seen, last_seen) VALUES (?, ?, ?)",
                (f"quay.io/jupyter/scipy-notebook:flood-{e:03d}", NOW, NOW),
            ).lastrowid
            for e in range(envs)
        ]
        lib_ids = [
            conn.execute(
                "INSERT INTO libs (name) VALUES (?)", (f"flood-library-{i:05d}",)
            ).lastrowid
            for i in range(libraries)
        ]
        conn.executemany(
            "INSERT INTO total_usage VALUES (?, ?, 0, ?, ?)",
            ((e, lib, 10 + n, NOW) for e in env_ids for n, lib in enumerate(lib_ids)),
        )
        conn.executemany(
            "INSERT INTO total_versions VALUES (?, ?, ?, ?, ?)",
            (
                (e, lib, f"{v}.0.0", 3 + v, NOW)
                for e in env_ids
                for lib in lib_ids
                for v in range(versions)
            ),
        )
    conn.close()


def test_metrics_keep_their_budget_and_keep_the_libraries_most_used(tmp_path, make_ctx):
    db = tmp_path / "popcon.sqlite"
    store_datagrams(
        db, [(NOW - 3600, use_datagram("img:a", [("numpy", "2.1.0", "direct", "env")]))]
    )
    _fill_totals(db, envs=20, libraries=1500, versions=3)  # 120,000 series stored
    with ApiServer(make_ctx(db, min_count=1)) as server:
        started = time.monotonic()
        status, text, _ = server.get("/metrics")
        seconds = time.monotonic() - started
    assert status == 200
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    size = len(text.encode())
    print(f"/metrics at the budget: {len(lines)} series, {size / 1e6:.1f} MB, {seconds:.2f} s")
    assert len(lines) <= MAX_SERIES
    assert size <= MAX_BYTES
    truncated = {line.split('"')[1]: float(line.split()[-1])
                 for line in lines if line.startswith("popcon_metrics_truncated")}  # fmt: skip
    assert truncated["versions"] == 0
    assert truncated["libraries"] > 0
    kept = {line.split('library="')[1].split('"')[0] for line in lines if 'library="' in line}
    # the most used libraries are kept whole: the ranking is by processes, then by name
    ranked = [f"flood-library-{i:05d}" for i in range(1499, -1, -1)]
    assert kept == set(ranked[: len(kept) - 1]) | {"numpy"} or kept == set(ranked[: len(kept)])


def test_metrics_cut_is_deterministic_and_small_budgets_hold(tmp_path):
    db = tmp_path / "popcon.sqlite"
    store_datagrams(
        db, [(NOW - 3600, use_datagram("img:a", [("numpy", "2.1.0", "direct", "env")]))]
    )
    _fill_totals(db, envs=2, libraries=30, versions=MAX_VERSION_SERIES + 5)
    conn = sqlite3.connect(db)
    first = collect_families(conn, 1, max_series=100, max_bytes=1_000_000)
    again = collect_families(conn, 1, max_series=100, max_bytes=1_000_000)
    conn.close()
    samples = [(s.name, tuple(sorted(s.labels.items())), s.value) for f in first for s in f.samples]
    assert samples == [
        (s.name, tuple(sorted(s.labels.items())), s.value) for f in again for s in f.samples
    ]
    assert len(samples) <= 100
    truncated = {dict(labels)["part"]: value for name, labels, value in samples
                 if name == "popcon_metrics_truncated"}  # fmt: skip
    assert truncated["versions"] == 2 * 30 * 5  # the versions with fewest processes, everywhere
    shown = [dict(labels)["version"] for name, labels, _ in samples if "version" in dict(labels)]
    assert "0.0.0" not in shown and f"{MAX_VERSION_SERIES + 4}.0.0" in shown
    libraries = {dict(labels).get("library") for _, labels, _ in samples} - {None}
    assert libraries == {f"flood-library-{i:05d}" for i in range(29, 29 - len(libraries), -1)}


def test_a_library_answer_and_its_history_fold_rare_versions(tmp_path, make_ctx):
    """81 versions (27 in each of 3 environments, under the store's bound per environment)
    and 60 importers: the answer lists 50 of each and sums the rest in one row."""
    db = tmp_path / "popcon.sqlite"
    timed = [
        (NOW - 3600, use_datagram(f"img:{env}", [("numpy", f"1.{27 * e + v}.0", "direct", "env")]))
        for e, env in enumerate("abc")
        for v in range(27)
        for _ in range(1 + v % 3)
    ]
    timed += [
        (NOW - 3600, use_datagram("img:a", [("numpy", "1.0.0", "transitive", "env", f"user{i}")]))
        for i in range(60)
    ]
    store_datagrams(db, timed)
    with ApiServer(make_ctx(db, min_count=1)) as server:
        status, detail, _ = server.get("/api/v1/libraries/numpy?since=24h")
        assert status == 200
        assert len(detail["versions"]) == answers.MAX_ROWS + 1
        assert detail["versions"][-1]["version"] == answers.OTHER_VERSIONS
        assert sum(row["processes"] for row in detail["versions"]) == detail["processes"]
        assert len(detail["importers"]) == answers.MAX_ROWS + 1
        assert detail["importers"][-1] == {
            "importer": answers.OTHER_IMPORTERS,
            "users": None,
            "processes": 10,
        }
        status, history, _ = server.get("/dashboard/api/version-history/numpy?since=24h")
        assert status == 200
        assert set(history["versions"]) == {row["version"] for row in detail["versions"]}
        for version, values in history["versions"].items():
            assert sum(values) == next(
                row["processes"] for row in detail["versions"] if row["version"] == version
            )


@pytest.mark.parametrize("flag", ["--max-connections=0", "--idle-timeout=-1", "--body-timeout=0"])
def test_connection_settings_must_be_positive(tmp_path, flag):
    done = subprocess.run(
        [sys.executable, "-m", "popcon", "serve", "--db", str(tmp_path / "p.sqlite"), flag],
        env=subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    name = flag.split("=")[0]
    assert (done.returncode, done.stderr) == (2, f"popcon serve: {name}: expected more than 0\n")
