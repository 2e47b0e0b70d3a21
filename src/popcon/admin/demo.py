"""``popcon demo``: the whole job on the embedded default, end to end, on this machine.

It starts a collector on a temporary SQLite file (or ``--db PATH``, kept), enables the recorder
in a virtual environment with real libraries from PyPI (kept in ``~/.cache/popcon/demo-venv``
for the next run, recording left enabled there), runs a few realistic workloads there, prints
the ``popcon top`` table and the dashboard's address, and serves until Ctrl-C (``--exit`` stops
right after the table). Everything it starts, it stops.
"""

from __future__ import annotations

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

from popcon.arguments import Parser

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
    _say(f"creating a virtual environment in {directory} (kept for the next run)")
    subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True)
    _say(f"installing {wanted} from PyPI into it (about half a minute, the first time only)")
    _pip_install(python, WORKLOAD_PACKAGES)
    marker.write_text(wanted)
    return python


#: The lines of pip's output that show how far it got.
_PIP_PROGRESS = ("Collecting ", "Installing collected packages", "Successfully installed")


def _pip_install(python: Path, packages: tuple[str, ...]) -> None:
    """``pip install`` with its progress shown a line per package, and its whole output
    when it fails."""
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *packages]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    output = []
    assert process.stdout is not None
    for line in process.stdout:
        output.append(line)
        if line.startswith(_PIP_PROGRESS):
            _say("pip: " + line.strip())
    if process.wait() != 0:
        sys.stderr.write("".join(output))
        raise SystemExit(f"popcon demo: pip install failed with status {process.returncode}")


def _wait_for_http(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.stderr.write(log.read_text(errors="replace"))
            raise SystemExit(f"popcon demo: the collector exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"popcon demo: the collector did not answer at {url} within {timeout:.0f}s")


def run_demo(*, exit_after_table: bool, cache: Path, db: Path | None = None) -> int:
    udp_port = _free_port(socket.SOCK_DGRAM)
    http_port = _free_port(socket.SOCK_STREAM)
    url = f"http://127.0.0.1:{http_port}"
    python = _workload_venv(cache / "demo-venv")
    with tempfile.TemporaryDirectory(prefix="popcon-demo-") as scratch:
        database = db or Path(scratch, "popcon.sqlite")
        kept = "kept" if db else "removed at the end; --db PATH keeps one"
        _say(f"starting the collector: UDP 127.0.0.1:{udp_port}, HTTP {url}")
        _say(f"its database: {database} ({kept})")
        _say("it shows what fewer than 3 people used (--min-users 1): the demo is one person")
        log = Path(scratch, "collector.log")
        log_file = log.open("w")
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
                # One person runs the workloads: show rows fewer than 3 people used, which a
                # real collector hides.
                "--min-users",
                "1",
            ),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for_http(f"{url}/api/v1/environments", collector, log)
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
            _say(f"open the dashboard in a browser: {url}/")
            _say(f"(the API is under {url}/api/v1/, the metrics at {url}/metrics)")
            _say(
                f"recording stays enabled in {python.parent.parent}, for the next run "
                f"(undo: popcon disable --python {python}, or remove the directory)"
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
            log_file.close()
            gone = "" if db else " and removed its temporary database"
            _say(f"stopped the collector{gone}")
    return 0


def main(argv: list[str]) -> int:
    parser = Parser(prog="popcon demo", description=__doc__.splitlines()[0])
    parser.add_argument("--exit", action="store_true", help="exit right after the table (CI)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "popcon",
        help="where the workload's virtual environment is kept between runs",
    )
    parser.add_argument(
        "--db",
        type=Path,
        metavar="PATH",
        help="keep the collector's database here (default: a temporary file, removed)",
    )
    arguments = parser.parse_args(argv)
    return run_demo(exit_after_table=arguments.exit, cache=arguments.cache, db=arguments.db)
