"""The real programs the faces' tests start: what they need installed (a failure under CI, a
skip elsewhere), Debian's Chromium for Playwright, a real JupyterHub configured by the
documented example (its users' servers, their kernels driven over the Jupyter protocol), a UDP
relay that keeps a copy of what passes, and programs run in the background.

Every process is started on 127.0.0.1, with its output in a log file, and stopped by its own
process id (its process group, for the Hub and its children), bounded in time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
from repo import REPO_ROOT, SRC
from timing import wait_until

T = TypeVar("T")

HUB_EXAMPLE = REPO_ROOT / "examples" / "jupyterhub_config.py"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_program(name: str, install: str) -> str:
    """The path of a program the test needs. Missing: a failure under CI (which must install
    it), a skip on a developer's machine, with the command that installs it."""
    path = name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed ({install})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_module(name: str, install: str) -> Any:
    """The Python module a test needs, imported; missing, as :func:`require_program`."""
    try:
        return __import__(name)
    except ImportError:
        message = f"the Python package {name} is not installed ({install})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def free_tcp_port() -> int:
    """A loopback TCP port with nothing listening (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Background:
    """A program running in its own process group, output to ``log``; stopped by its id."""

    def __init__(
        self, args: Sequence[object], log: Path, env: Mapping[str, str], cwd: Path | None = None
    ) -> None:
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(a) for a in args],
            env=dict(env),
            cwd=str(cwd) if cwd else None,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM to the process (it stops its own children), then SIGKILL to its group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever is left of its group
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(5)
        self._out.close()
        return self.proc.returncode


# -- a real JupyterHub -------------------------------------------------------------------------

#: The Hub's admin (the only user who may see popcon) and the Hub's ``hub=`` label.
HUB_ADMIN = "admin"
HUB_NAME = "research"

_HUB_CONFIG = """\
# Written by tests/testlib/faces.py: the documented example, plus what a test needs.
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
c.Spawner.cmd = {singleuser!r}
c.Spawner.args = ["--allow-root"] if {root!r} else []  # CI runs as root
c.Spawner.environment["JUPYTER_PATH"] = {tmp!r} + "/jupyter"
c.Spawner.environment.update({spawner_environment!r})
c.Spawner.start_timeout = 90
c.Spawner.http_timeout = 90
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
    """A running Hub: its public URL, its process, its temporary directory, the collector's
    UDP address and the token of the test's driver service."""

    url: str
    process: Background
    tmp: Path
    udp: tuple[str, int]
    driver_token: str
    metrics_token: str
    kernel: str
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def popcon(self) -> str:
        """The popcon service's base URL, through the proxy."""
        return f"{self.url}/services/popcon/"

    def home(self, name: str) -> Path:
        return self.tmp / "home" / name

    def driver(self, method: str, path: str, **kwargs: Any) -> Any:
        import requests

        headers = {"Authorization": f"token {self.driver_token}"}
        return requests.request(
            method, f"{self.url}/hub/api/{path}", headers=headers, timeout=30, **kwargs
        )

    def user_token(self, name: str) -> str:
        """A Hub API token of user ``name`` (the user is made when new); one per user."""
        if name not in self.tokens:
            if self.driver("GET", f"users/{name}").status_code == 404:
                assert self.driver("POST", f"users/{name}").status_code == 201
            reply = self.driver("POST", f"users/{name}/tokens", json={"note": "popcon test"})
            assert reply.status_code == 201, reply.text
            self.tokens[name] = reply.json()["token"]
        return self.tokens[name]

    def start_servers(self, names: Sequence[str], timeout: float = 120) -> None:
        """Start the single-user servers of ``names`` at once and wait until all are ready."""
        for name in names:
            self.user_token(name)
            started = self.driver("POST", f"users/{name}/server")
            assert started.status_code in (201, 202), started.text

        def ready() -> bool:
            models = [self.driver("GET", f"users/{name}").json() for name in names]
            return all(model["servers"].get("", {}).get("ready") for model in models)

        wait_until(ready, timeout=timeout, interval=0.5, what=f"the servers of {list(names)}")

    def stop_server(self, name: str) -> None:
        self.driver("DELETE", f"users/{name}/server")

    def start_kernel(self, name: str) -> str:
        """Start a kernel of the Hub's kernel spec in ``name``'s server; its websocket URL."""
        import requests

        server = f"{self.url}/user/{name}/"
        auth = {"Authorization": f"token {self.user_token(name)}"}
        kernel = requests.post(
            server + "api/kernels", json={"name": self.kernel}, headers=auth, timeout=60
        )
        assert kernel.status_code == 201, kernel.text
        return server.replace("http://", "ws://") + f"api/kernels/{kernel.json()['id']}/channels"


@contextmanager
def running_hub(
    tmp: Path,
    *,
    kernel_python: Path,
    singleuser: Sequence[str] | None = None,
    spawner_environment: Mapping[str, str] | None = None,
    udp_port: int | None = None,
) -> Iterator[Hub]:
    """A real JupyterHub behind a real configurable-http-proxy on 127.0.0.1, configured by
    ``examples/jupyterhub_config.py`` (popcon serve as its managed service, showing every
    count), with DummyAuthenticator, SimpleLocalProcessSpawner (each user's HOME under
    ``tmp/home``), a kernel spec running ``kernel_python -m ipykernel_launcher`` and a driver
    service of the test's own. ``singleuser``: the single-user server's command (default: this
    interpreter's ``-m jupyterhub.singleuser``); ``spawner_environment``: variables every
    server gets, over the example's; ``udp_port``: where popcon serve receives (default: a
    free port)."""
    require_module("jupyterhub", "pip install jupyterhub")
    require_module("jupyter_server", "pip install jupyter_server")
    require_module("requests", "pip install requests")
    chp = require_program("configurable-http-proxy", "npm install -g configurable-http-proxy")
    kernel = "popcon-venv"
    for folder in ("home", "popcon", "jupyter/kernels/" + kernel):
        (tmp / folder).mkdir(parents=True)
    (tmp / "popcon" / "popcon_config.py").write_text(
        "c.PopconServe.min_count = 1\nc.PopconServe.min_users = 1\n"
    )
    (tmp / "jupyter" / "kernels" / kernel / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [str(kernel_python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python (popcon-enabled venv)",
                "language": "python",
            }
        )
    )
    port, udp_port = free_tcp_port(), udp_port or free_udp_port()
    driver_token, metrics_token = uuid.uuid4().hex, uuid.uuid4().hex
    config = tmp / "jupyterhub_config.py"
    config.write_text(
        _HUB_CONFIG.format(
            example=str(HUB_EXAMPLE),
            port=port,
            hub_port=free_tcp_port(),
            proxy_api_port=free_tcp_port(),
            chp=chp,
            tmp=str(tmp),
            singleuser=[
                str(part) for part in singleuser or (sys.executable, "-m", "jupyterhub.singleuser")
            ],
            spawner_environment=dict(spawner_environment or {}),
            driver=driver_token,
            root=os.geteuid() == 0,
        )
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("POPCON_", "JUPYTER", "PYTHON", "XDG_"))
    }
    env.update(
        HOME=str(tmp / "home"),
        PYTHONPATH=str(SRC),
        POPCON_EXAMPLE_UDP=f"127.0.0.1:{udp_port}",
        POPCON_EXAMPLE_HTTP_PORT=str(free_tcp_port()),
        POPCON_EXAMPLE_DB=str(tmp / "popcon" / "popcon.sqlite"),
        POPCON_EXAMPLE_ADMINS=HUB_ADMIN,
        POPCON_API_TOKEN=metrics_token,
    )
    process = Background(
        [sys.executable, "-m", "jupyterhub", "-f", config], tmp / "jupyterhub.log", env, tmp
    )
    hub = Hub(
        f"http://127.0.0.1:{port}",
        process,
        tmp,
        ("127.0.0.1", udp_port),
        driver_token,
        metrics_token,
        kernel,
    )
    try:
        import requests

        def up() -> bool:
            if not process.alive():
                raise AssertionError("jupyterhub exited:\n" + process.output())
            css = requests.get(hub.popcon + "static/popcon.css", timeout=5)
            return css.status_code == 200

        wait_until(up, timeout=90, what="the Hub, its proxy and the popcon service")
        yield hub
    finally:
        status = process.stop(timeout=30)
        print(process.output()[-4000:])
        assert status is not None


def free_udp_port() -> int:
    """A loopback UDP port with nothing bound to it (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


#: The Accept header of a browser asking for a page.
HTML = {"Accept": "text/html,application/xhtml+xml"}


def hub_login(hub: Hub, name: str) -> Any:
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


def browser_login(page: Any, hub: Hub, name: str, next_path: str) -> None:
    """Log ``page`` in through the Hub's login form and go on to ``next_path``."""
    from urllib.parse import quote

    page.goto(f"{hub.url}/hub/login?next=" + quote(next_path))
    page.fill('input[name="username"]', name)
    page.fill('input[name="password"]', "any password")
    page.click('input[type="submit"], button[type="submit"]')


async def execute(ws_url: str, token: str, code: str, username: str = "test") -> dict[str, Any]:
    """Run ``code`` in a kernel over the Jupyter websocket protocol; its execute_reply, with
    the text the cell printed as ``stdout``."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    request = HTTPRequest(ws_url, headers={"Authorization": f"token {token}"})
    connection = await asyncio.wait_for(websocket_connect(request), 30)
    msg_id = uuid.uuid4().hex
    message = {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "username": username,
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
            raw = await asyncio.wait_for(connection.read_message(), 90)
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


def in_own_loop(coroutine: Coroutine[Any, Any, T], timeout: float = 180) -> T:
    """Run a coroutine in a thread of its own: Playwright's sync API holds this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=timeout)
