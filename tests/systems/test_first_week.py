"""An operator's first week, with real parts: a real venv enabled by the real CLI, processes that
run before any collector listens, a real ``popcon serve`` started afterwards, and
``popcon check`` / ``popcon status --server`` telling in one line whether the collector
receives, or why not."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from collectors import ServeProcess
from recorder_testlib import (
    UdpListener,
    Venv,
    build_wheel,
    clean_environ,
    free_udp_port,
    pip_install,
    popcon_cli,
    run,
)
from timing import wait_until

pytestmark = pytest.mark.slow

KEY = "the-collector-key-0123456789"


@pytest.fixture
def venv(new_venv, wheelhouse, home) -> Venv:
    """An enabled venv with two installed distributions, ``tiny-lib`` and ``idle-lib``."""
    made = new_venv()
    for name in ("tiny-lib", "idle-lib"):
        module = name.replace("-", "_")
        wheel = build_wheel(wheelhouse, name, "1.0", {f"{module}.py": "X = 1\n"})
        pip_install(made, "--no-index", "--no-deps", wheel)
    result = popcon_cli("enable", "--python", made.python, env=clean_environ(home))
    assert result.returncode == 0, result.stderr  # the map, fresh with both in it
    return made


def _stamp(venv: Venv) -> Path:
    (stamp,) = (venv.site_packages / "popcon-cache").glob("inventory-*")
    return stamp


def test_the_first_inventory_reaches_a_collector_started_later(venv, home, workdir, tmp_path):
    port = free_udp_port()
    # POPCON_INVENTORY_INTERVAL 6400: the first resend is due 100 s after the first inventory.
    env = clean_environ(
        home, POPCON_COLLECTOR=f"udp://127.0.0.1:{port}", POPCON_INVENTORY_INTERVAL="6400"
    )
    result = run([venv.python, "-c", "import tiny_lib"], env=env, cwd=workdir)
    assert (result.returncode, result.stderr) == (0, "")
    stamp = _stamp(venv)
    assert stamp.stat().st_size == 1  # sent once, to nobody
    with ServeProcess(tmp_path / "popcon.sqlite", "--open", udp=f"127.0.0.1:{port}") as serve:
        assert serve.udp_url == f"udp://127.0.0.1:{port}"

        def unused() -> list[str]:
            answer = popcon_cli("unused", "--server", serve.http_url, "--json", env=env)
            assert answer.returncode == 0, answer.stderr
            return [lib["name"] for e in json.loads(answer.stdout)["environments"]
                    for lib in e["libraries"]]  # fmt: skip

        assert unused() == []  # no inventory yet
        result = run([venv.python, "-c", "import tiny_lib"], env=env, cwd=workdir)  # a report
        assert stamp.stat().st_size == 1  # no resend yet: within the first wait

        def unused_table() -> str:
            answer = popcon_cli("unused", "--server", serve.http_url, env=env)
            assert answer.returncode == 0, answer.stderr
            return answer.stdout

        waiting = wait_until(lambda: "No inventory yet from env:" in unused_table(), 20)
        assert waiting and "then hourly, by default" in unused_table()
        # 100 s pass: the stamp's time is set back rather than waited for.
        then = stamp.stat().st_mtime - 101
        os.utime(stamp, (then, then))
        result = run([venv.python, "-c", "import tiny_lib"], env=env, cwd=workdir)
        assert (result.returncode, result.stderr) == (0, "")
        assert stamp.stat().st_size == 2  # the young resend
        assert wait_until(unused, 20) == ["idle-lib"]
        assert "No inventory yet" not in unused_table()
        # The next process, within the doubled wait (200 s), sends no inventory again.
        before = stamp.stat().st_mtime
        run([venv.python, "-c", "import tiny_lib"], env=env, cwd=workdir)
        assert (stamp.stat().st_size, stamp.stat().st_mtime) == (2, before)


def _check(venv: Venv, env: dict, *extra: str):
    return popcon_cli("check", "--python", venv.python, *extra, env=env)


def test_check_says_in_one_line_whether_the_collector_receives(venv, home, tmp_path):
    db = tmp_path / "popcon.sqlite"
    with ServeProcess(db, "--open", env={"POPCON_KEY": KEY}) as serve:
        env = clean_environ(home, POPCON_COLLECTOR=serve.udp_url, POPCON_KEY=KEY)
        server = ["--server", serve.http_url]
        result = _check(venv, env, *server)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("ok: sent a check datagram (signed, env env:")
        assert f"the collector at {serve.http_url} counted it" in result.stdout
        assert result.stdout.count("\n") == 1

        status = popcon_cli("status", "--python", venv.python, *server, env=env)
        assert status.returncode == 0, status.stderr
        assert "\ncheck:      receives: sent a check datagram (signed" in status.stdout
        status = popcon_cli(
            "status", "--python", venv.python, *server, env=dict(env, POPCON_DISABLE="1")
        )
        assert status.returncode == 0, status.stderr
        assert "\ncheck:      FAILED: this user opted out" in status.stdout
        unconfirmed = _check(venv, env)
        assert unconfirmed.returncode == 0, unconfirmed.stderr
        assert unconfirmed.stdout == (
            f"unconfirmed: sent a check datagram (signed, env {result.stdout.split()[7][:-1]}) "
            f"to {serve.udp_url}; nothing refused it (give --server URL to confirm it arrived)\n"
        )

        failures = {
            "wrong key": (
                dict(env, POPCON_KEY="another-key-9876543210"),
                "popcon check: the key does not match: the collector checks signatures "
                "with another POPCON_KEY\n",
            ),
            "no key": (
                clean_environ(home, POPCON_COLLECTOR=serve.udp_url),
                "popcon check: the key does not match: the collector has a POPCON_KEY and "
                "this environment's processes sign with none\n",
            ),
            "opted out": (
                dict(env, POPCON_DISABLE="1"),
                "popcon check: this user opted out (POPCON_DISABLE or "
                "~/.config/popcon/disable): their processes send nothing\n",
            ),
        }
        for what, (their_env, line) in failures.items():
            result = _check(venv, their_env, *server)
            assert (result.returncode, result.stderr, result.stdout) == (1, line, ""), what

        hiding = tmp_path / "theirs"
        hiding.mkdir()
        (hiding / "sitecustomize.py").write_text("")
        result = _check(venv, dict(env, PYTHONPATH=str(hiding)), *server)
        assert result.returncode == 1
        assert result.stderr == (
            "popcon check: the recorder does not start in this user's processes: their "
            f"processes import {hiding / 'sitecustomize.py'} instead (popcon enable --pth "
            "starts recording from popcon.pth)\n"
        )

        elsewhere = UdpListener()
        try:
            result = _check(venv, dict(env, POPCON_COLLECTOR=elsewhere.url), *server, "--wait", "1")
        finally:
            elsewhere.close()
        assert result.returncode == 1
        assert result.stderr.startswith(
            f"popcon check: nothing arrived: the collector at {serve.http_url} counted no "
            f"check within 1 s of one sent to {elsewhere.url}"
        )

        # The checks counted no process, library or environment.
        envs = popcon_cli("envs", "--server", serve.http_url, "--json", env=env)
        assert json.loads(envs.stdout)["environments"] == []
        _status, metrics, _headers = serve.get("/metrics")
        assert 'popcon_datagrams_total{result="check"} 3.0' in metrics
        udp = serve.udp_url
    result = _check(venv, clean_environ(home, POPCON_COLLECTOR=udp, POPCON_KEY=KEY))
    assert (result.returncode, result.stderr) == (
        1,
        f"popcon check: the collector is unreachable: nothing listens on {udp}\n",
    )
    result = _check(venv, clean_environ(home, POPCON_COLLECTOR=udp), *server)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"popcon check: the collector is unreachable: {serve.http_url.rstrip('/')}/metrics: "
    )


def test_check_of_an_environment_not_enabled(new_venv, home):
    venv = new_venv(enable=False)
    result = _check(venv, clean_environ(home))
    assert result.returncode == 1
    assert result.stderr == (
        f"popcon check: recording is not enabled in {venv.site_packages} (run: popcon enable "
        f"--python {venv.python})\n"
    )
