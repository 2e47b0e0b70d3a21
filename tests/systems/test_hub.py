"""popcon as a real JupyterHub service, configured by ``examples/jupyterhub_config.py``.

A real Hub (DummyAuthenticator, SimpleLocalProcessSpawner) behind a real
configurable-http-proxy on 127.0.0.1 starts ``popcon serve`` as a managed service. The test
only adds what a test needs: ports, temporary paths, the dummy authenticator and local
spawner, a kernel spec for the popcon-enabled venv, and a driver service of its own (a token
to start servers and make user tokens, as jupyterhub-idle-culler's tests do).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from faces import (
    HTML,
    HUB_ADMIN,
    HUB_NAME,
    Hub,
    browser_login,
    execute,
    hub_login,
    in_own_loop,
    running_hub,
)
from repo import artifact
from timing import wait_until

pytestmark = pytest.mark.slow

ADMIN = HUB_ADMIN
USER = "bob"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, enabled_workload_venv) -> Iterator[Hub]:
    """The Hub, its single-user servers running in this interpreter's environment (not
    recorded), their kernels in the popcon-enabled venv."""
    tmp: Path = tmp_path_factory.mktemp("hub")
    with running_hub(
        tmp,
        kernel_python=enabled_workload_venv.python,
        singleuser=[sys.executable, "-m", "jupyterhub.singleuser"],
    ) as running:
        yield running


def test_admin_reaches_the_dashboard_through_the_proxy(hub):
    session = hub_login(hub, ADMIN)
    page = session.get(f"{hub.url}/services/popcon/", headers=HTML, timeout=30)
    assert page.status_code == 200, page.text
    assert page.url == f"{hub.url}/services/popcon/"
    steps = [urlsplit_path(r.url) for r in page.history]
    assert "/hub/api/oauth2/authorize" in steps and "/services/popcon/oauth_callback" in steps
    assert '<meta name="popcon-prefix" content="/services/popcon/">' in page.text
    answer = session.get(f"{hub.url}/services/popcon/api/v1/environments", timeout=30)
    assert answer.status_code == 200 and "environments" in answer.json()


def urlsplit_path(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path


def test_a_user_without_the_scope_is_refused(hub):
    session = hub_login(hub, USER)
    page = session.get(f"{hub.url}/services/popcon/", headers=HTML, timeout=30)
    assert page.status_code == 403  # the Hub refuses to authorize popcon for bob
    # popcon itself refuses a Hub token that lacks the scope, with the scope it needs
    token = hub.user_token(USER)
    reply = session.get(
        f"{hub.url}/services/popcon/api/v1/libraries",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert reply.status_code == 403
    assert "access:services!service=popcon" in reply.json()["error"]
    assert f"user {USER}" in reply.json()["error"]


def test_tokens_and_metrics(hub):
    import requests

    base = f"{hub.url}/services/popcon/"
    assert requests.get(base + "api/v1/libraries", timeout=30).status_code == 401
    admin = hub.user_token(ADMIN)
    reply = requests.get(
        base + "api/v1/libraries", headers={"Authorization": f"token {admin}"}, timeout=30
    )
    assert reply.status_code == 200 and "libraries" in reply.json()
    assert requests.get(base + "metrics", timeout=30).status_code == 401
    scrape = requests.get(
        base + "metrics", headers={"Authorization": f"Bearer {hub.metrics_token}"}, timeout=30
    )
    assert scrape.status_code == 200 and "popcon_datagrams_total" in scrape.text


@pytest.fixture(scope="module")
def pandas_kernel(hub: Hub) -> str:
    """Start bob's single-user server, a kernel in the popcon-enabled venv through the
    Jupyter REST API, and run ``import pandas`` over its websocket; pandas' version."""
    import requests

    hub.start_servers([USER])
    ws_url = hub.start_kernel(USER)
    try:
        code = "import pandas\nprint(pandas.__version__)"
        reply = in_own_loop(execute(ws_url, hub.user_token(USER), code, USER))
        assert reply["status"] == "ok", reply
        yield reply["stdout"].strip()
    finally:
        kernel = ws_url.replace("ws://", "http://").rsplit("/channels", 1)[0]
        auth = {"Authorization": f"token {hub.user_token(USER)}"}
        requests.delete(kernel, headers=auth, timeout=30)
        hub.stop_server(USER)


def test_a_kernel_importing_pandas_is_counted_as_direct(hub, pandas_kernel):
    admin = hub_login(hub, ADMIN)
    api = f"{hub.url}/services/popcon/api/v1/"
    admin.get(f"{hub.url}/services/popcon/", headers=HTML, timeout=30)  # the OAuth round

    def counted():
        answer = admin.get(api + "libraries?since=6h", timeout=30).json()
        return {row["name"]: row for row in answer["libraries"]}.get("pandas")

    pandas = wait_until(counted, timeout=20, what="pandas in the collector")
    assert pandas["direct"] >= 1 and pandas["direct"] == pandas["processes"]
    numpy = admin.get(api + "libraries/numpy?since=6h", timeout=30).json()
    assert numpy["direct"] == 0
    assert any(row["importer"] == "pandas" and row["processes"] >= 1 for row in numpy["importers"])
    versions = admin.get(api + "libraries/pandas?since=6h", timeout=30).json()["versions"]
    assert versions[0]["version"] == pandas_kernel
    envs = admin.get(api + "environments", timeout=30).json()["environments"]
    assert any({"hub": HUB_NAME} in env["labels"] for env in envs)


def test_admin_sees_the_dashboard_in_a_browser(hub, pandas_kernel, page):
    # the Hub's login form, then straight to the dashboard (no single-user server)
    browser_login(page, hub, ADMIN, "/services/popcon/?since=6h")
    page.wait_for_selector('main[data-loaded="libraries"]')
    assert page.url.startswith(f"{hub.url}/services/popcon/")
    names = page.eval_on_selector_all("main tbody tr", "rows => rows.map(r => r.dataset.name)")
    assert "pandas" in names and "numpy" in names
    page.screenshot(path=str(artifact("hub-dashboard.png")), full_page=True)
