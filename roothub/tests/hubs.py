"""Real JupyterHubs for the tests: a root and its children, each a ``jupyterhub`` process
with its own configurable-http-proxy, on loopback addresses and free ports.

Each hub has its own loopback address (127.0.0.1 for the root, 127.0.0.2 and up for the
children), because browsers keep cookies per host, not per port, and every hub names its
cookies alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

PASSWORD = "root-password-for-tests"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
READY = "JupyterHub is now running"


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(condition: Any, timeout: float, what: str, step: float = 0.2) -> Any:
    """Poll ``condition()`` until it returns something truthy, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


@dataclass
class Hub:
    """One JupyterHub: its folder (config, database, logs), addresses and process. Its
    configuration file is ``preamble``, then the addresses and paths, then ``settings``."""

    folder: Path
    host: str
    base_url: str = "/"
    settings: str = ""
    preamble: str = ""
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.host)
        self.hub_port = free_port(self.host)
        self.api_port = free_port(self.host)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.base_url}"

    @property
    def log_path(self) -> Path:
        return self.folder / f"hub-{self.starts}.log"

    def log(self) -> str:
        """The log of the current (or last) run."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def config(self) -> str:
        return "\n".join(
            [
                self.preamble,
                f"c.JupyterHub.bind_url = {self.url!r}",
                f"c.JupyterHub.public_url = {self.url!r}",
                f"c.JupyterHub.hub_bind_url = 'http://{self.host}:{self.hub_port}'",
                f"c.ConfigurableHTTPProxy.api_url = 'http://{self.host}:{self.api_port}'",
                f"c.JupyterHub.db_url = 'sqlite:///{self.folder / 'jupyterhub.sqlite'}'",
                f"c.JupyterHub.cookie_secret_file = '{self.folder / 'cookie_secret'}'",
                f"c.JupyterHub.pid_file = '{self.folder / 'jupyterhub.pid'}'",
                f"c.JupyterHub.default_url = '{self.base_url}hub/home'",
                "c.JupyterHub.cleanup_servers = True",
                self.settings,
                "",
            ]
        )

    def start(self, ready: bool = True) -> None:
        """Start the hub; with ``ready``, wait (bounded) until it says it is running."""
        assert self.process is None, "already running"
        self.starts += 1
        (self.folder / "jupyterhub_config.py").write_text(self.config())
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("ROOTHUB_", "JUPYTERHUB_", "OAUTH"))
        }
        environment.update(self.env)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).with_name("jupyterhub")), "-f", "jupyterhub_config.py"],
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
                start_new_session=True,
            )
        if ready:
            try:
                self.wait_for_log(READY, START_TIMEOUT)
            except AssertionError:
                self.stop()
                raise

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first match of the regular expression ``pattern`` in this run's log."""

        def found() -> re.Match[str] | None:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"the hub at {self.url} exited ({self.process.returncode}) before "
                    f"{pattern!r} appeared in its log:\n{self.log()[-3000:]}"
                )
            return re.search(pattern, self.log())

        try:
            match: re.Match[str] = wait_until(found, timeout, f"{pattern!r} in {self.log_path}")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.log()[-3000:]}") from None
        return match

    def stop(self) -> None:
        """Stop the hub (which stops its proxy), then anything left of its process group."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def api(self, path: str, token: str, method: str = "GET") -> Any:
        """A call to this hub's REST API with ``token``; the answer's JSON."""
        request = Request(
            f"{self.url}hub/api/{path}",
            method=method,
            headers={"Authorization": f"token {token}"},
        )
        with urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None


ROOT_LOGIN = f"""
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {PASSWORD!r}
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {{"alice"}}
c.JupyterHub.load_groups = {{
    "physics": {{"users": ["alice", "bob"]}},
    "visitors": {{"users": ["carol"]}},
}}
"""

ROOT_SETTINGS = """
from roothub.root import configure_root
configure_root(c, registration_tokens={tokens!r}, children={children!r})
"""


def root_settings(*registration_tokens: str, children: list[str] | None = None) -> str:
    """The root's configuration: its login (``ROOT_LOGIN``: DummyAuthenticator with one
    password, users alice, an admin in group physics, bob in physics and carol in visitors),
    the registration tokens and, when given, the only children they may register."""
    return ROOT_LOGIN + ROOT_SETTINGS.format(tokens=list(registration_tokens), children=children)


def root_hub(folder: Path, *registration_tokens: str) -> Hub:
    return Hub(folder, "127.0.0.1", settings=root_settings(*registration_tokens))


CHILD_SETTINGS = """
c.JupyterHub.authenticator_class = "roothub"
c.RootHubAuthenticator.root_url = {root_url!r}
c.Authenticator.allowed_groups = {{"physics"}}
c.Authenticator.auth_refresh_age = {refresh_age}
c.RootHubAuthenticator.registration_retry_max = {retry_max}
c.JupyterHub.services = [{{"name": "probe", "api_token": {probe_token!r}}}]
c.JupyterHub.load_roles = [
    {{"name": "probe", "scopes": ["admin:users", "read:groups"], "services": ["probe"]}}
]
"""

PROBE_TOKEN = "probe-token-of-the-child-hubs-0123456789"


def child_hub(
    folder: Path,
    host: str,
    root: Hub,
    registration_token: str,
    *,
    base_url: str = "/",
    refresh_age: int = 300,
    retry_max: float = 60.0,
    extra: str = "",
) -> Hub:
    """A roothub child: members of the root's group physics may log in; a service token
    (``PROBE_TOKEN``) lets the tests read its users. Without ``registration_token`` it has
    none in its environment; ``extra`` is more configuration."""
    settings = CHILD_SETTINGS.format(
        root_url=root.url,
        refresh_age=refresh_age,
        retry_max=retry_max,
        probe_token=PROBE_TOKEN,
    )
    env = {"JUPYTERHUB_CRYPT_KEY": os.urandom(32).hex()}
    if registration_token:
        env["ROOTHUB_REGISTRATION_TOKEN"] = registration_token
    return Hub(folder, host, base_url=base_url, settings=settings + extra, env=env)


@contextlib.contextmanager
def running(*hubs: Hub) -> Iterator[tuple[Hub, ...]]:
    """Start ``hubs`` in order; stop them all on the way out, whatever happened."""
    try:
        for hub in hubs:
            hub.start()
        yield hubs
    finally:
        for hub in reversed(hubs):
            hub.stop()


def services(root: Hub, token: str) -> Mapping[str, Any]:
    listed: Mapping[str, Any] = root.api("services", token)
    return listed
