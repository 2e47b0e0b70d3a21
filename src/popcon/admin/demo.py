"""``popcon demo``: the whole job on the embedded default, end to end, on this machine.

It starts a collector on a temporary SQLite file, enables the recorder in a fresh virtual
environment with real libraries from PyPI, runs a few realistic workloads there, prints the
``popcon top`` table and where the collector answers, and serves until Ctrl-C (``--exit`` stops
right after the table). Everything it starts, it stops.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

WORKLOAD_PACKAGES = ("pandas", "requests", "PyYAML", "beautifulsoup4")

# Each workload is a script a user of a shared installation might run, run a few times so that
# the libraries it uses pass the collector's default privacy threshold (min_count 3).
WORKLOADS = {
    "analysis.py": (
        4,
        """
        import pandas as pd
        import numpy as np

        frame = pd.DataFrame({"x": np.arange(100), "y": np.arange(100) ** 2})
        print("mean of y:", frame["y"].mean())
        """,
    ),
    "fetch.py": (
        3,
        """
        import requests

        request = requests.Request("GET", "http://127.0.0.1/", params={"q": "popcon"}).prepare()
        print("would fetch", request.url)
        """,
    ),
    "config_and_html.py": (
        3,
        """
        import yaml
        from bs4 import BeautifulSoup

        settings = yaml.safe_load("title: popcon\\nitems: [1, 2, 3]")
        page = BeautifulSoup("<h1>%s</h1>" % settings["title"], "html.parser")
        print(page.h1.text, len(settings["items"]))
        """,
    ),
    "report.py": (
        3,
        """
        import pandas
        import yaml

        print(yaml.safe_dump({"rows": len(pandas.DataFrame({"a": [1, 2]}))}))
        """,
    ),
}


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _popcon(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "popcon", *arguments]


def _say(text: str) -> None:
    print(f"popcon demo: {text}", flush=True)


def _workload_venv(directory: Path) -> Path:
    """A virtual environment with the workload libraries, kept between runs to save time."""
    python = directory / "bin" / "python"
    marker = directory / ".popcon-demo-packages"
    wanted = " ".join(WORKLOAD_PACKAGES)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    shutil.rmtree(directory, ignore_errors=True)
    _say(f"creating a virtual environment with {wanted} in {directory}")
    subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            *WORKLOAD_PACKAGES,
        ],
        check=True,
    )
    marker.write_text(wanted)
    return python


def _wait_for_http(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"popcon demo: the collector exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"popcon demo: the collector did not answer at {url} within {timeout:.0f}s")


def run_demo(*, exit_after_table: bool, cache: Path) -> int:
    udp_port = _free_port(socket.SOCK_DGRAM)
    http_port = _free_port(socket.SOCK_STREAM)
    url = f"http://127.0.0.1:{http_port}"
    python = _workload_venv(cache / "demo-venv")
    with tempfile.TemporaryDirectory(prefix="popcon-demo-") as scratch:
        database = Path(scratch, "popcon.sqlite")
        _say(f"starting the collector: UDP 127.0.0.1:{udp_port}, HTTP {url}, SQLite {database}")
        collector = subprocess.Popen(
            _popcon(
                "serve",
                "--udp",
                f"127.0.0.1:{udp_port}",
                "--http",
                f"127.0.0.1:{http_port}",
                "--db",
                str(database),
                "--open",
            ),
        )
        try:
            _wait_for_http(f"{url}/api/v1/environments", collector)
            subprocess.run(_popcon("enable", "--python", str(python)), check=True)
            environ = dict(
                os.environ,
                POPCON_COLLECTOR=f"udp://127.0.0.1:{udp_port}",
                POPCON_ENV="popcon-demo",
                POPCON_LABELS="hub=demo",
                POPCON_CACHE_DIR=str(Path(scratch, "recorder-cache")),
            )
            environ.pop("POPCON_DISABLE", None)
            for name, (times, source) in WORKLOADS.items():
                script = Path(scratch, name)
                script.write_text(textwrap.dedent(source))
                _say(f"running {name} {times} times")
                for _ in range(times):
                    subprocess.run(
                        [str(python), str(script)],
                        env=environ,
                        check=True,
                        stdout=subprocess.DEVNULL,
                        cwd=scratch,
                    )
            time.sleep(2.5)  # the collector commits at least once a second
            print(flush=True)
            subprocess.run(_popcon("top", "--since", "6h", "--server", url), check=False)
            print(flush=True)
            _say(
                f"the collector answers at {url}/ (API under {url}/api/v1/, metrics at "
                f"{url}/metrics)"
            )
            if not exit_after_table:
                _say("serving until Ctrl-C")
                while collector.poll() is None:
                    time.sleep(0.5)
        except KeyboardInterrupt:
            print()
        finally:
            if collector.poll() is None:
                collector.send_signal(signal.SIGTERM)
                try:
                    collector.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    collector.kill()
            _say("stopped the collector")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="popcon demo", description=__doc__.splitlines()[0])
    parser.add_argument("--exit", action="store_true", help="exit right after the table (CI)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "popcon",
        help="where the workload's virtual environment is kept between runs",
    )
    arguments = parser.parse_args(argv)
    return run_demo(exit_after_table=arguments.exit, cache=arguments.cache)
