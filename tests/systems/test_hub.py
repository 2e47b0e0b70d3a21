"""popcon as a real JupyterHub service, configured by ``examples/jupyterhub_config.py``.

A real Hub (DummyAuthenticator, SimpleLocalProcessSpawner) behind a real
configurable-http-proxy on 127.0.0.1 starts ``popcon serve`` as a managed service. The test
only adds what a test needs: ports, temporary paths, the dummy authenticator and local
spawner, a kernel spec for the popcon-enabled venv, and a driver service of its own (a token
to start servers and make user tokens, as jupyterhub-idle-culler's tests do).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import pytest
from faces import HUB_EXAMPLE, Background, free_tcp_port, require_module, require_program
from recorder_testlib import free_udp_port
from repo import SRC, artifact
from timing import wait_until

pytestmark = pytest.mark.slow

ADMIN = "admin"
USER = "bob"
HUB_NAME = "research"
DRIVER_TOKEN = uuid.uuid4().hex
METRICS_TOKEN = uuid.uuid4().hex
KERNEL = "popcon-venv"

TEST_CONFIG = """\
# Written by tests/faces/test_hub.py: the documented example, plus what a test needs.
c = get_config()  # noqa: F821
load_subconfig({example!r})  # noqa: F821

c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.pid_file = {tmp!r} + "/proxy.pid"
c.JupyterHub.db_url = "sqlite:///" + {tmp!r} + "/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = {tmp!r} + "/cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {tmp!r} + "/home/{{username}}"
c.Spawner.cmd = [{python!r}, "-m", "jupyterhub.singleuser"]
c.Spawner.args = ["--allow-root"] if {root!r} else []  # CI runs as root
c.Spawner.environment["JUPYTER_PATH"] = {tmp!r} + "/jupyter"
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
# popcon reads popcon_config.py from its working directory: show every count here.
c.JupyterHub.services[0]["cwd"] = {tmp!r} + "/popcon"
c.JupyterHub.services.append({{"name": "test-driver", "api_token": {driver!r}}})
c.JupyterHub.load_roles.append(
    {{
        "name": "test-driver",
        "scopes": ["admin:users", "admin:servers", "tokens", "access:servers"],
        "services": ["test-driver"],
    }}
)
"""


@dataclass
class Hub:
    url: str
    process: Background
    tmp: Path

    def driver(self, method: str, path: str, **kwargs):
        import requests

        headers = {"Authorization": f"token {DRIVER_TOKEN}"}
        return requests.request(
            method, f"{self.url}/hub/api/{path}", headers=headers, timeout=30, **kwargs
        )

    def user_token(self, name: str) -> str:
        if self.driver("GET", f"users/{name}").status_code == 404:
            assert self.driver("POST", f"users/{name}").status_code == 201
        reply = self.driver("POST", f"users/{name}/tokens", json={"note": "popcon test"})
        assert reply.status_code == 201, reply.text
        return reply.json()["token"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, enabled_workload_venv) -> Hub:
    require_module("jupyterhub", "pip install jupyterhub")
    require_module("jupyter_server", "pip install jupyter_server")
    require_module("requests", "pip install requests")
    chp = require_program("configurable-http-proxy", "npm install -g configurable-http-proxy")
    tmp = tmp_path_factory.mktemp("hub")
    for folder in ("home", "popcon", "jupyter/kernels/" + KERNEL):
        (tmp / folder).mkdir(parents=True)
    (tmp / "popcon" / "popcon_config.py").write_text("c.PopconServe.min_count = 1\n")
    (tmp / "jupyter" / "kernels" / KERNEL / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [
                    str(enabled_workload_venv.python),
                    "-m",
                    "ipykernel_launcher",
                    "-f",
                    "{connection_file}",
                ],
                "display_name": "Python (popcon-enabled venv)",
                "language": "python",
            }
        )
    )
    port = free_tcp_port()
    config = tmp / "jupyterhub_config.py"
    config.write_text(
        TEST_CONFIG.format(
            example=str(HUB_EXAMPLE),
            port=port,
            hub_port=free_tcp_port(),
            proxy_api_port=free_tcp_port(),
            chp=chp,
            tmp=str(tmp),
            python=sys.executable,
            driver=DRIVER_TOKEN,
            root=os.geteuid() == 0,
        )
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("POPCON_", "JUPYTER", "PYTHON"))
    }
    env.update(
        HOME=str(tmp / "home"),
        PYTHONPATH=str(SRC),
        POPCON_EXAMPLE_UDP=f"127.0.0.1:{free_udp_port()}",
        POPCON_EXAMPLE_HTTP_PORT=str(free_tcp_port()),
        POPCON_EXAMPLE_DB=str(tmp / "popcon" / "popcon.sqlite"),
        POPCON_EXAMPLE_ADMINS=ADMIN,
        POPCON_API_TOKEN=METRICS_TOKEN,
    )
    process = Background(
        [sys.executable, "-m", "jupyterhub", "-f", config], tmp / "jupyterhub.log", env, tmp
    )
    hub = Hub(f"http://127.0.0.1:{port}", process, tmp)
    try:
        import requests

        def up() -> bool:
            if not process.alive():
                raise AssertionError("jupyterhub exited:\n" + process.output())
            css = requests.get(f"{hub.url}/services/popcon/static/popcon.css", timeout=5)
            return css.status_code == 200

        wait_until(up, timeout=90, what="the Hub, its proxy and the popcon service")
        yield hub
    finally:
        status = process.stop(timeout=30)
        print(process.output()[-4000:])
        assert status is not None


def login(hub: Hub, name: str):
    """A ``requests`` session logged in through the Hub's own login form."""
    import requests

    session = requests.Session()
    form = session.get(f"{hub.url}/hub/login", timeout=30)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form.text)
    data = {
        "username": name,
        "password": "any password",
        **({"_xsrf": xsrf.group(1)} if xsrf else {}),
    }
    reply = session.post(f"{hub.url}/hub/login", data=data, allow_redirects=False, timeout=30)
    assert reply.status_code == 302, reply.text  # logged in (not following: no server spawn)
    return session


HTML = {"Accept": "text/html,application/xhtml+xml"}


def test_admin_reaches_the_dashboard_through_the_proxy(hub):
    session = login(hub, ADMIN)
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
    session = login(hub, USER)
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
        base + "metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30
    )
    assert scrape.status_code == 200 and "popcon_datagrams_total" in scrape.text


async def execute(ws_url: str, token: str, code: str) -> dict:
    """Run ``code`` in a kernel over the Jupyter websocket protocol; the execute_reply."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    request = HTTPRequest(ws_url, headers={"Authorization": f"token {token}"})
    connection = await asyncio.wait_for(websocket_connect(request), 30)
    msg_id = uuid.uuid4().hex
    message = {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "username": USER,
            "session": uuid.uuid4().hex,
            "date": datetime.now(timezone.utc).isoformat(),
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }
    await connection.write_message(json.dumps(message))
    outputs = []
    try:
        while True:
            raw = await asyncio.wait_for(connection.read_message(), 60)
            assert raw is not None, "the kernel websocket closed"
            reply = json.loads(raw)
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if reply["msg_type"] == "stream":
                outputs.append(reply["content"]["text"])
            if reply["msg_type"] == "execute_reply":
                return {**reply["content"], "stdout": "".join(outputs)}
    finally:
        connection.close()


def in_own_loop(coroutine):
    """Run a coroutine in a thread of its own: Playwright's sync API holds this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=120)


@pytest.fixture(scope="module")
def pandas_kernel(hub: Hub) -> str:
    """Start bob's single-user server, a kernel in the popcon-enabled venv through the
    Jupyter REST API, and run ``import pandas`` over its websocket; pandas' version."""
    import requests

    token = hub.user_token(USER)
    started = hub.driver("POST", f"users/{USER}/server")
    assert started.status_code in (201, 202), started.text

    def ready() -> bool:
        model = hub.driver("GET", f"users/{USER}").json()
        return bool(model["servers"].get("", {}).get("ready"))

    wait_until(ready, timeout=90, what=f"{USER}'s single-user server")
    server = f"{hub.url}/user/{USER}/"
    auth = {"Authorization": f"token {token}"}
    kernel = requests.post(server + "api/kernels", json={"name": KERNEL}, headers=auth, timeout=60)
    assert kernel.status_code == 201, kernel.text
    kernel_id = kernel.json()["id"]
    ws_url = server.replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels"
    try:
        code = "import pandas\nprint(pandas.__version__)"
        reply = in_own_loop(execute(ws_url, token, code))
        assert reply["status"] == "ok", reply
        yield reply["stdout"].strip()
    finally:
        requests.delete(server + f"api/kernels/{kernel_id}", headers=auth, timeout=30)
        hub.driver("DELETE", f"users/{USER}/server")


def test_a_kernel_importing_pandas_is_counted_as_direct(hub, pandas_kernel):
    admin = login(hub, ADMIN)
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
    page.goto(f"{hub.url}/hub/login?next=" + quote("/services/popcon/?since=6h"))
    page.fill('input[name="username"]', ADMIN)
    page.fill('input[name="password"]', "any password")
    page.click('input[type="submit"], button[type="submit"]')
    page.wait_for_selector('main[data-loaded="libraries"]')
    assert page.url.startswith(f"{hub.url}/services/popcon/")
    names = page.eval_on_selector_all("main tbody tr", "rows => rows.map(r => r.dataset.name)")
    assert "pandas" in names and "numpy" in names
    page.screenshot(path=str(artifact("hub-dashboard.png")), full_page=True)
