"""Fuzz the query parameters of every route of a real ``popcon serve``: no 5xx, no token logged.

    python fuzz/params.py            # 20,000 requests
    python fuzz/params.py --quick    # 400 requests (for CI)

It sends first the requests that gave 500s before (``KNOWN``), then random ones. Each
request is a GET (now and then a HEAD) of one route (every API endpoint, ``/metrics``,
every dashboard page and its data, static files, junk paths with ``%00``, ``..`` and bad
escapes) with up to four parameters, each an edge value (``since=999999d``,
``until=9999-12-31T23:59:59Z``, ``0001-01-01T00:00:00+14:00``, NUL, bidi overrides, huge
numbers...) or random text. The token goes in the ``Authorization`` header, in
``?token=`` (which the log must never show), or not at all. Checks: no answer is a 5xx, nor
a 405 (HEAD is served wherever GET is); a 400's error begins with the parameter it refuses
(one of the request's, a required one, or the library in the path); the log holds neither
the token nor a traceback. The seed is fixed, so a failure can be replayed.
"""

from __future__ import annotations

import http.client
import json
import random
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from pathlib import Path

from hostile import TOKEN, Checks, parse_args, serve, wait_for

# isort: split
# (hostile, imported first, puts src/ and tests/testlib/ on sys.path)

from datagrams import PANDAS_PROCESS, inventory_datagrams, use_datagram

ROUTES = [
    "/api/v1/", "/api/v1/libraries", "/api/v1/libraries/{name}", "/api/v1/unused",
    "/api/v1/user-installed", "/api/v1/environments", "/metrics", "/", "/unused",
    "/user-installed", "/environments", "/library/{name}", "/static/{name}",
    "/dashboard/api/rows", "/dashboard/api/version-history/{name}", "/api/v1/{name}",
    "/{name}", "/api/v2/libraries",
]  # fmt: skip
NAMES = [
    "pandas", "numpy", "x%00", "%00", "..%2f..%2fetc%2fpasswd", "%2e%2e", "a%zz", "%", "%ff%fe",
    "popcon.js", "popcon.css", "%e2%80%ae", "a" * 300, "=cmd", "index.html%00.js", "%c0%af",
]  # fmt: skip
EDGES = {
    "since": [
        "999999d", "36500d", "36501d", "0h", "-1h", "1e9d", "6h", "7d", "1m", "0", "",
        "9" * 40 + "d", "6 h", "6H", "nan", "inf",
    ],
    "from": [
        "0001-01-01", "0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00-14:00", "1970-01-01",
        "2026-12-01T00:00:00Z", "2026-13-45", "9999-12-31T23:59:59Z", "10000-01-01", "now", "",
        "2026-12-01T00:00:00+99:00", "9" * 40,
    ],
    "until": [
        "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-14:00", "0001-01-01",
        "0001-01-01T00:00:00+14:00", "0001-01-02T00:00:00+14:00", "1970-01-01T00:00:00Z",
        "2026-12-02", "2026-02-30", "", "-1", "1e400",
    ],
    "env": [
        "img:a", "", "x" * 201, "a\x00b", "\u202e", "\x85", "quay.io/jupyter/scipy-notebook:x",
        "' OR 1=1 --", "%", "~/envs/my env",
    ],
    "level": ["direct", "transitive", "upgrade", "", "DIRECT", "x", "\x00"],
    "origin": ["env", "user", "", "site", "\u202e"],
    "step": ["10m", "600", "0", "1s", "-10m", "999999d", "7d", "1h", "", "1e9"],
    "names": ["pandas,numpy", "," * 500, "x," * 200, "", "\x00", "a" * 2000],
    "limit": ["0", "-1", "1e9", "x", "9" * 30],
    "label.hub": ["research", "", "x" * 65, "a,b", "\u202e"],
    "label.Bad": ["x"],
    "label.": ["x"],
    "token": [TOKEN],
    "x": ["1"],
}  # fmt: skip
#: The requests that gave 500s before (issue 11), sent first: (path with query, with the token).
KNOWN = [
    ("/api/v1/libraries?since=999999d", True),
    ("/api/v1/libraries?until=9999-12-31T23:59:59Z", True),
    ("/api/v1/libraries?until=0001-01-01", True),
    ("/api/v1/libraries?from=0001-01-01T00:00:00%2B14:00", True),
    ("/api/v1/libraries/numpy?until=0001-01-01T00:00:00%2B14:00&since=1d", True),
    (f"/api/v1/libraries?since=999999d&token={TOKEN}", False),
    ("/static/x%00", False),
]
ALPHABET = "aZ09-_:./@+%=&?# \x00\x7f\u202eé😀"


def _value(rng: random.Random, name: str) -> str:
    if rng.random() < 0.8:
        return rng.choice(EDGES[name])
    return "".join(rng.choices(ALPHABET, k=rng.randint(0, 30)))


def request(rng: random.Random) -> tuple[str, str, dict[str, str], str]:
    """(method, path with query, headers, how the token went) of one random request."""
    if rng.random() < 0.02:
        path, header = rng.choice(KNOWN)
        return "GET", path, {"Authorization": f"token {TOKEN}"} if header else {}, "known"
    route = rng.choice(ROUTES).replace("{name}", rng.choice(NAMES))
    params = [(name, _value(rng, name)) for name in rng.sample(sorted(EDGES), rng.randint(0, 4))]
    params = [(k, v) for k, v in params if k != "token"]
    how = rng.choice(["header", "header", "query", "none"])
    if how == "query":
        params.append(("token", TOKEN))
    query = urllib.parse.urlencode(params)
    if rng.random() < 0.05:
        query += rng.choice(["&%00=1", "&since", "&=", "&%zz=%zz", "&since=1h&since=2h"])
    headers = {"Authorization": f"token {TOKEN}"} if how == "header" else {}
    method = "HEAD" if rng.random() < 0.05 else "GET"
    return method, route + ("?" + query if query else ""), headers, how


def fuzz(count: int, seed: int = 11) -> Checks:
    """``count`` requests against a collector holding a little data; figures and verdicts."""
    checks = Checks("params")
    rng = random.Random(seed)
    statuses: Counter[int] = Counter()
    fives: list[str] = []
    unnamed: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="popcon-params-") as tmp,
        serve(Path(tmp) / "params.sqlite") as server,
    ):
        server.send([use_datagram("img:a", PANDAS_PROCESS) for _ in range(3)])
        server.send(inventory_datagrams("img:a", [("pandas", "2.2.2"), ("attrs", "24.2.0")]))
        wait_for(lambda: "pandas" in str(server.get("/api/v1/libraries", token=TOKEN)[1]), 15)
        host, port = server.http_url.rstrip("/").rsplit("//", 1)[1].rsplit(":", 1)
        started = time.monotonic()
        known = [("GET", p, {"Authorization": f"token {TOKEN}"} if h else {}, "") for p, h in KNOWN]
        for method, path, headers, _how in known + [request(rng) for _ in range(count)]:
            conn = http.client.HTTPConnection(host, int(port), timeout=20)
            try:
                conn.request(method, path, headers=headers)
                response = conn.getresponse()
                status, body = response.status, response.read()
            except (OSError, http.client.HTTPException) as error:
                status, body = 0, str(error).encode()
            finally:
                conn.close()
            statuses[status] += 1
            if status >= 500 or status == 0:
                fives.append(f"{status} {method} {path[:120]}")
            elif status == 400 and method == "GET" and _answers_json(path):
                _note_unnamed(path, body, unnamed)
        seconds = time.monotonic() - started
        server.stop()
    log = "\n".join(server.lines)
    checks.figure("requests, s", (len(KNOWN) + count, round(seconds, 1)))
    checks.figure("statuses", dict(sorted(statuses.items())))
    checks.figure("log bytes", len(log))
    checks.check("no 5xx and no broken answer", not fives, "; ".join(fives[:5]))
    checks.check("HEAD is served wherever GET is", not statuses[405], f"{statuses[405]} 405s")
    checks.check("every 400 names a parameter", not unnamed, "; ".join(unnamed[:5]))
    checks.check("the token is not in the log", TOKEN not in log)
    checks.check("no traceback in the log", "Traceback" not in log, _around(log, "Traceback"))
    return checks


def _answers_json(path: str) -> bool:
    """Whether ``path`` is a route that answers JSON, with a path that decodes (tornado
    refuses a bad escape in the path itself with a bare 400, which names no parameter)."""
    route = path.partition("?")[0]
    return "%" not in route and route.startswith(("/api/v1/", "/dashboard/api/", "/metrics"))


def _note_unnamed(path: str, body: bytes, unnamed: list[str]) -> None:
    """Note ``path`` when its 400's error names none of the request's parameters."""
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        unnamed.append(f"not a JSON error: {path[:80]}")
        return
    query = path.partition("?")[2]
    names = {name for name, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)}
    names |= {part.partition("=")[0] for part in query.split("&")}
    named = error.partition(":")[0]
    if not (named in names or named in EDGES or named == "library"):
        unnamed.append(f"{error[:60]!r} for {path[:80]}")


def _around(text: str, word: str) -> str:
    at = text.find(word)
    return "" if at < 0 else text[max(0, at - 200) : at + 300].replace("\n", " | ")


def main(argv: list[str] | None = None) -> int:
    quick, _ = parse_args(__doc__ or "", argv)
    return fuzz(400 if quick else 20_000).exit_status()


if __name__ == "__main__":
    sys.exit(main())
