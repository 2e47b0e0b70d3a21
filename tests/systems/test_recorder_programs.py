"""The program apart from people's code (docs/recording.md, "People's code and the program"):
for each way a real process runs in a real venv, which distribution is the program, what its
machinery imported (level ``program``) and what people's code imported (``direct``, and
``transitive`` through it), over real UDP."""

from __future__ import annotations

import signal
import subprocess
import textwrap
import time

import pytest
from recorder_testlib import (
    first_records,
    free_udp_port,
    parse_datagram,
    programs,
    run,
    run_cell,
    running_kernel,
    use_libs,
)

pytestmark = pytest.mark.slow

JOB = "import requests\nprint('ok')\n"
USER_TESTS = """
import requests

def test_requests_is_there():
    assert requests.get
"""


def _levels(datagrams) -> dict:
    return {name: lib.level for name, lib in first_records(use_libs(datagrams)).items()}


@pytest.mark.parametrize("how", ["script", "-c"])
def test_people_s_own_script_and_dash_c_have_no_program(
    workload_venv, recorder_env, listener, workdir, how
):
    if how == "script":
        (workdir / "job.py").write_text(JOB)
        command = [workload_venv.python, "job.py"]
    else:
        command = [workload_venv.python, "-c", JOB]
    result = run(command, env=recorder_env(), cwd=workdir)
    assert (result.returncode, result.stdout) == (0, "ok\n"), result.stderr
    datagrams = listener.datagrams()
    assert programs(datagrams) == []
    levels = _levels(datagrams)
    assert levels["requests"] == "direct"
    assert levels["urllib3"] == "transitive" and levels["idna"] == "transitive"
    assert "program" not in levels.values()


@pytest.mark.parametrize("how", ["console script", "-m"])
def test_pytest_is_the_program_and_the_user_s_tests_are_people_s_code(
    workload_venv, recorder_env, listener, workdir, how
):
    (workdir / "test_mine.py").write_text(textwrap.dedent(USER_TESTS))
    runner = (
        [str(workload_venv.path / "bin" / "pytest")]
        if how == "console script"
        else [workload_venv.python, "-m", "pytest"]
    )
    env = recorder_env(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    result = run([*runner, "-q", "-p", "no:cacheprovider", "test_mine.py"], env=env, cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    datagrams = listener.datagrams()
    assert [p.name for p in programs(datagrams)] == ["pytest"]
    first = first_records(use_libs(datagrams))
    assert first["pytest"].level == "program"
    assert first["pluggy"].level == "program" and first["pluggy"].importer == "pytest"
    assert first["requests"].level == "direct"  # imported by test_mine.py
    assert first["urllib3"].level == "transitive" and first["urllib3"].importer == "requests"


def test_a_kernel_s_machinery_is_the_program_s_until_a_cell_claims_it(
    workload_venv, recorder_env, listener, tmp_path
):
    """ipykernel is the program; its own imports (tornado, traitlets, pyzmq, jupyter-client)
    are the program's; a cell that uses traitlets, loaded before by the kernel, claims it."""
    env = recorder_env(JUPYTER_PATH=str(tmp_path / "jupyter"), JUPYTER_RUNTIME_DIR=str(tmp_path))
    with running_kernel(workload_venv, tmp_path, env) as (_manager, client):
        run_cell(client, "import requests")
        run_cell(client, "import traitlets\ntraitlets.Unicode")
    datagrams = listener.datagrams()
    assert [p.name for p in programs(datagrams)] == ["ipykernel"]
    libs = use_libs(datagrams)
    first = first_records(libs)
    for machinery in ("ipykernel", "tornado", "pyzmq", "jupyter-client", "ipython"):
        assert first[machinery].level == "program", first[machinery]
    assert first["requests"].level == "direct"
    assert [lib.level for lib in libs if lib.name == "traitlets"] == ["program", "claimed"]
    assert [lib.level for lib in libs if lib.name == "tornado"] == ["program"]


def test_a_jupyter_server_is_a_program_and_no_one_s_code(
    workload_venv, recorder_env, listener, tmp_path
):
    root = tmp_path / "notebooks"
    root.mkdir()
    env = recorder_env(
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
    )
    port = free_udp_port()  # a free port number, for TCP too on loopback
    server = subprocess.Popen(
        [str(workload_venv.path / "bin" / "jupyter-server"), f"--ServerApp.port={port}",
         "--ServerApp.ip=127.0.0.1", "--ServerApp.open_browser=False",
         f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0"],
        env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        started = listener.wait_for(
            lambda raws: any(b"lib tornado " in raw for raw in raws), timeout=90
        )
        time.sleep(1)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        errors = server.stderr.read() if server.stderr else ""
    assert started, errors
    datagrams = [parse_datagram(raw) for raw in listener.settle()]
    assert [p.name for p in programs(datagrams)] == ["jupyter-server"]
    levels = _levels(datagrams)
    assert levels["jupyter-server"] == "program" and levels["tornado"] == "program"
    assert {"direct", "transitive"}.isdisjoint(levels.values()), levels


@pytest.mark.parametrize("module", ["mymod", "timeit"])
def test_python_dash_m_of_a_user_s_or_a_standard_module_is_people_s_code(
    workload_venv, recorder_env, listener, workdir, module
):
    """``python -m`` of a user's module, or of the standard library's ``timeit`` timing a
    statement of the user's: no program, requests direct, what it imports transitive."""
    (workdir / "mymod.py").write_text(JOB)
    command = ["-m", "mymod"] if module == "mymod" else ["-m", "timeit", "-n1", "-r1", JOB]
    result = run([workload_venv.python, *command], env=recorder_env(), cwd=workdir)
    assert result.returncode == 0 and result.stdout.startswith("ok\n"), result.stderr
    datagrams = listener.datagrams()
    assert programs(datagrams) == []
    assert _levels(datagrams)["requests"] == "direct"
    assert all(lib.level in ("direct", "transitive") for lib in use_libs(datagrams))
