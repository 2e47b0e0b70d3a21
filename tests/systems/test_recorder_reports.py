"""What a process reports, over real UDP, from a real venv with real PyPI packages.

The "done when" scenario of issue 2, upgrades, and every way a Python process runs: a script,
``-c``, ``-m``, threads, fork, spawn, ``os._exit``, SIGKILL, and a real Jupyter kernel.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from recorder_testlib import (
    Lib,
    by_name,
    clean_environ,
    final_levels,
    first_records,
    popcon_cli,
    programs,
    run,
    run_cell,
    running_kernel,
    use_libs,
    with_oracle,
    write_dist_info,
)

from popcon.recorder.rare import prefix_label

pytestmark = pytest.mark.slow

PANDAS_AND_REQUESTS = """
import pandas
import requests
print("ok")
"""

# Distributions that pandas and requests import at `import`, and who imports them first.
EXPECTED_TRANSITIVE = {
    "numpy": "pandas",
    "python-dateutil": "pandas",
    "urllib3": "requests",
    "charset-normalizer": "requests",
    "certifi": "requests",
}


def _check_versions_and_edges(first: dict, versions: dict) -> None:
    for lib in first.values():
        assert lib.version == versions[lib.name], f"{lib} but the venv has {versions[lib.name]}"
        assert lib.origin == "env", lib
        if lib.level == "transitive":
            assert lib.importer in first, f"{lib}: its importer was not reported itself"
            assert lib.importer != lib.name, lib


def test_done_when_pandas_and_requests_over_udp(
    workload_venv, workload_versions, recorder_env, run_script, listener, workdir
):
    """Issue 2's "done when": direct pandas and requests, transitive numpy, dateutil, urllib3
    and friends with their importers and versions, and nothing the process did not load."""
    oracle = workdir / "loaded.json"
    result = run_script(workload_venv, with_oracle(PANDAS_AND_REQUESTS, oracle), recorder_env())
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")

    datagrams = listener.datagrams()
    assert datagrams, "nothing arrived at the listener"
    assert all(d.kind == "use" for d in datagrams)  # POPCON_INVENTORY_INTERVAL=0
    assert sorted(d.seq for d in datagrams) == list(range(len(datagrams)))
    assert {d.env for d in datagrams} == {prefix_label(str(workload_venv.path))}
    assert {d.py for d in datagrams} == {"%d.%d" % sys.version_info[:2]}
    assert all(d.labels == {} for d in datagrams)

    first = first_records(use_libs(datagrams))
    assert first["pandas"] == Lib("pandas", workload_versions["pandas"], "direct", "env")
    assert first["requests"] == Lib("requests", workload_versions["requests"], "direct", "env")
    for name, importer in EXPECTED_TRANSITIVE.items():
        assert first[name] == Lib(name, workload_versions[name], "transitive", "env", importer)
    _check_versions_and_edges(first, workload_versions)
    # Exactly the distributions whose modules the process loaded (importlib.metadata's view).
    assert set(first) == set(json.loads(oracle.read_text()))
    assert not any(lib.level == "upgrade" for lib in use_libs(datagrams))


def test_preview_json_shows_what_the_udp_run_sent(
    workload_venv, workload_versions, recorder_env, run_script, listener, workdir
):
    env = recorder_env(POPCON_LABELS="hub=research,team=a-1")
    result = run_script(workload_venv, PANDAS_AND_REQUESTS, env)
    assert result.returncode == 0, result.stderr
    sent = first_records(use_libs(listener.datagrams()))
    listener.clear()

    preview = run(
        [
            sys.executable,
            "-m",
            "popcon",
            "preview",
            "--json",
            "--",
            workload_venv.python,
            "main.py",
        ],
        env=env,
        cwd=workdir,
    )
    assert preview.returncode == 0, preview.stderr
    assert preview.stderr == "ok\n"  # the command's own output goes to stderr in JSON mode
    shown = json.loads(preview.stdout)
    assert shown["labels"]["hub"] == "research" and shown["labels"]["team"] == "a-1"
    rows = {
        (e["name"], e["version"], e["level"], e["origin"], e["importer"])
        for e in shown["libraries"]
    }
    assert rows == {(x.name, x.version, x.level, x.origin, x.importer) for x in sent.values()}
    assert len(shown["libraries"]) == len(rows)
    assert listener.settle() == [], "preview sent datagrams"


def test_preview_text_prints_the_datagrams(workload_venv, recorder_env, listener, workdir):
    env = recorder_env()
    result = run(
        [sys.executable, "-m", "popcon", "preview", "--", workload_venv.python, "-c",
         "import yaml; print('hello')"],
        env=env,
        cwd=workdir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "hello\n" in result.stdout
    assert "popcon/2 use 0\n" in result.stdout
    version = workload_venv.metadata_versions()["pyyaml"]
    assert re.search(rf"^lib pyyaml {re.escape(version)} direct env \d+:\d+$", result.stdout, re.M)
    assert "not as a person" not in result.stdout  # HOME is set: the user has a secret
    assert listener.settle() == []


def test_preview_returns_the_command_exit_status(workload_venv, recorder_env, workdir):
    result = run(
        [sys.executable, "-m", "popcon", "preview", "--json", "--", workload_venv.python, "-c",
         "import yaml, sys; sys.exit(3)"],
        env=recorder_env(),
        cwd=workdir,
    )  # fmt: skip
    assert result.returncode == 3
    names = [e["name"] for e in json.loads(result.stdout)["libraries"]]
    assert names == ["pyyaml"]


@pytest.mark.parametrize(
    "code",
    [
        "import pandas\nimport numpy\n",
        "import pandas\nfrom numpy import array\n",
        "import pandas\nfrom numpy import linspace\n",
        "import pandas\nfrom numpy import ndarray\n",
        "import pandas\nimport numpy.linalg as la\n",
    ],
    ids=[
        "import-numpy",
        "from-numpy-import-builtin",
        "from-numpy-import-dispatched-function",
        "from-numpy-import-class",
        "import-numpy-submodule-as",
    ],
)
def test_transitive_then_direct_is_an_upgrade(
    workload_venv, recorder_env, run_script, listener, code
):
    result = run_script(workload_venv, code, recorder_env())
    assert (result.returncode, result.stderr) == (0, "")
    libs = use_libs(listener.datagrams())
    numpy = by_name(libs)["numpy"]
    assert [lib.level for lib in numpy] == ["transitive", "upgrade"]
    assert numpy[1].importer is None and numpy[1].version == numpy[0].version
    assert final_levels(libs)["numpy"] == "direct"


def test_upgrade_is_sent_at_the_next_new_import(workload_venv, recorder_env, run_script, listener):
    """Without an exit hook (os._exit), the upgrade must already have gone with the next
    distribution's import."""
    code = "import os, pandas, numpy\nimport yaml\nos._exit(0)\n"
    result = run_script(workload_venv, code, recorder_env())
    assert (result.returncode, result.stderr) == (0, "")
    levels = final_levels(use_libs(listener.datagrams()))
    assert levels["numpy"] == "direct" and levels["pyyaml"] == "direct"


def test_no_upgrade_when_user_code_does_not_touch_it(
    workload_venv, recorder_env, run_script, listener
):
    code = "import pandas as pd\nframe = pd.DataFrame({'a': [1, 2]})\nvalues = frame.to_numpy()\n"
    result = run_script(workload_venv, code, recorder_env())
    assert (result.returncode, result.stderr) == (0, "")
    numpy = by_name(use_libs(listener.datagrams()))["numpy"]
    assert [lib.level for lib in numpy] == ["transitive"]


def test_user_module_counts_as_user_code(
    workload_venv, recorder_env, run_script, listener, workdir
):
    """A module of the user's own (beside the script) that imports a library makes it direct;
    the user module itself is never reported."""
    (workdir / "helpers_of_mine.py").write_text("import yaml\n")
    result = run_script(workload_venv, "import helpers_of_mine\n", recorder_env())
    assert (result.returncode, result.stderr) == (0, "")
    datagrams = listener.datagrams()
    first = first_records(use_libs(datagrams))
    assert set(first) == {"pyyaml"} and first["pyyaml"].level == "direct"
    assert not any(b"helpers_of_mine" in d.raw for d in datagrams)


def test_python_dash_c(workload_venv, workload_versions, recorder_env, listener, workdir):
    result = run([workload_venv.python, "-c", "import requests"], env=recorder_env(), cwd=workdir)
    assert (result.returncode, result.stderr) == (0, "")
    first = first_records(use_libs(listener.datagrams()))
    assert first["requests"].level == "direct"
    assert first["urllib3"] == Lib(
        "urllib3", workload_versions["urllib3"], "transitive", "env", "requests"
    )


def test_python_dash_m(workload_venv, recorder_env, listener, workdir):
    """``python -m requests.help``: an installed distribution's module run as the program, so
    requests is the process's program and what it imports is the program's."""
    result = run([workload_venv.python, "-m", "requests.help"], env=recorder_env(), cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert '"requests"' in result.stdout
    datagrams = listener.datagrams()
    assert [p.name for p in programs(datagrams)] == ["requests"]
    first = first_records(use_libs(datagrams))
    assert first["requests"].level == "program"
    assert first["idna"].level == "program" and first["idna"].importer == "requests"
    assert first["urllib3"].importer == "requests"
    assert "direct" not in {lib.level for lib in first.values()}


def test_stdlib_only_process_sends_nothing(workload_venv, recorder_env, listener, workdir):
    code = "import json, email.message, sqlite3, xml.dom.minidom, concurrent.futures"
    result = run([workload_venv.python, "-c", code], env=recorder_env(), cwd=workdir)
    assert (result.returncode, result.stderr) == (0, "")
    assert listener.settle() == []


def test_threads(workload_venv, recorder_env, run_script, listener):
    code = """
    import threading
    def work():
        import requests
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads: t.start()
    import yaml
    for t in threads: t.join()
    import bs4
    print(threading.active_count())
    """
    result = run_script(workload_venv, code, recorder_env())
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "1\n", "the recorder left a thread running"
    first = first_records(use_libs(listener.datagrams()))
    for name in ("requests", "pyyaml", "beautifulsoup4"):
        assert first[name].level == "direct"
    assert first["soupsieve"].importer == "beautifulsoup4"


FORK_SCRIPT = """
import multiprocessing, sys
import requests

def child():
    import yaml

if __name__ == "__main__":
    context = multiprocessing.get_context(sys.argv[1])
    process = context.Process(target=child)
    process.start()
    process.join()
    print(process.exitcode)
"""


def test_forked_child_reports_only_what_is_new(workload_venv, recorder_env, run_script, listener):
    result = run_script(workload_venv, FORK_SCRIPT, recorder_env(), "fork")
    assert (result.returncode, result.stdout, result.stderr) == (0, "0\n", "")
    datagrams = listener.datagrams()
    names = by_name(use_libs(datagrams))
    assert [lib.level for lib in names["requests"]] == ["direct"], "the child re-reported"
    assert [lib.level for lib in names["pyyaml"]] == ["direct"]
    assert sorted(d.seq for d in datagrams).count(0) == 2, "the child is a new process"
    child = [d for d in datagrams if any(lib.name == "pyyaml" for lib in d.libs)]
    assert child[0].seq == 0 and {lib.name for lib in child[0].libs} == {"pyyaml"}


def test_spawned_child_is_a_new_process(workload_venv, recorder_env, run_script, listener):
    result = run_script(workload_venv, FORK_SCRIPT, recorder_env(), "spawn")
    assert (result.returncode, result.stdout, result.stderr) == (0, "0\n", "")
    datagrams = listener.datagrams()
    names = by_name(use_libs(datagrams))
    assert [lib.level for lib in names["requests"]] == ["direct", "direct"]
    assert [lib.level for lib in names["urllib3"]] == ["transitive", "transitive"]
    assert [lib.level for lib in names["pyyaml"]] == ["direct"]
    assert sorted(d.seq for d in datagrams).count(0) == 2


def test_os_exit_loses_nothing(workload_venv, recorder_env, run_script, listener, workdir):
    oracle = workdir / "loaded.json"
    code = "import os\nimport pandas, requests\n# ORACLE\nos._exit(0)\n"
    result = run_script(workload_venv, with_oracle(code, oracle, where="here"), recorder_env())
    assert (result.returncode, result.stderr) == (0, "")
    first = first_records(use_libs(listener.datagrams()))
    assert set(first) == set(json.loads(oracle.read_text()))
    assert first["pandas"].level == "direct" and first["numpy"].importer == "pandas"


def test_sigkill_five_seconds_after_the_last_import(workload_venv, recorder_env, listener, workdir):
    oracle = workdir / "loaded.json"
    code = "import sys, time\nimport pandas, requests\n# ORACLE\nprint('ready', flush=True)\n"
    code += "time.sleep(120)\n"
    script = workdir / "main.py"
    script.write_text(with_oracle(code, oracle, where="here"))
    process = subprocess.Popen(
        [str(workload_venv.python), str(script)],
        env=recorder_env(),
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline() == "ready\n"
        time.sleep(5)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert process.stderr.read() == ""
    expected = set(json.loads(oracle.read_text()))
    assert listener.wait_for(
        lambda raws: expected <= {lib.name for lib in _libs(raws)}, timeout=5
    ), f"missing after SIGKILL: {expected - {lib.name for lib in _libs(listener.received)}}"
    first = first_records(use_libs(listener.datagrams()))
    assert set(first) == expected


def _libs(raws: list) -> list:
    from recorder_testlib import parse_datagram

    return use_libs(parse_datagram(raw) for raw in raws)


def test_no_warnings_no_leftovers_in_development_mode(
    workload_venv, recorder_env, listener, workdir
):
    """``-X dev -W error``: an unclosed socket, a ResourceWarning or a thread left behind by the
    recorder shows up on stderr or fails the process."""
    code = (
        "import threading, requests, yaml, os\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n    import bs4\n    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
    )
    result = run(
        [workload_venv.python, "-X", "dev", "-W", "error", "-c", code],
        env=recorder_env(),
        cwd=workdir,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    names = by_name(use_libs(listener.datagrams()))
    assert len(names["requests"]) == 1 and len(names["beautifulsoup4"]) == 1


def test_pth_executed_twice_counts_once(new_venv, home, recorder_env, listener, workdir):
    """cpython#75723: site may process a venv's .pth files twice. Started from popcon.pth,
    running its lines again (as site.addpackage does) and re-adding the site directory must not
    double count."""
    venv = new_venv(enable=False)
    write_dist_info(venv.site_packages, "tiny-app", "1.0", {"tiny_app.py": "import tiny_dep\n"})
    write_dist_info(venv.site_packages, "tiny-dep", "1.0", {"tiny_dep.py": ""})
    enabled = popcon_cli("enable", "--pth", "--python", venv.python, env=clean_environ(home))
    assert enabled.returncode == 0, enabled.stderr
    code = """if 1:
    import site, sys
    site_dir = site.getsitepackages()[0]
    with open(site_dir + "/popcon.pth") as pth:
        for line in pth:
            if line.startswith(("import ", "import\\t")):
                exec(line)
    site.addsitedir(site_dir)
    import tiny_app
    """
    result = run([venv.python, "-c", code], env=recorder_env(), cwd=workdir)
    assert (result.returncode, result.stderr) == (0, "")
    datagrams = listener.datagrams()
    names = by_name(use_libs(datagrams))
    assert [lib.level for lib in names["tiny-app"]] == ["direct"]
    assert [(lib.level, lib.importer) for lib in names["tiny-dep"]] == [("transitive", "tiny-app")]
    assert [d.seq for d in datagrams].count(0) == 1


# --------------------------------------------------------------------------- Jupyter


def test_jupyter_kernel_sigkilled_after_import(
    workload_venv, workload_versions, recorder_env, listener, tmp_path
):
    """A real ipykernel, driven with jupyter_client: ipykernel is the program and its machinery
    the program's, the cell's import is direct, what pandas pulls in is transitive, a later
    cell's `import numpy` is an upgrade, and all of it arrived although the kernel is SIGKILLed
    one second after the reply (no exit hook runs)."""
    env = recorder_env(JUPYTER_PATH=str(tmp_path / "jupyter"), JUPYTER_RUNTIME_DIR=str(tmp_path))
    with running_kernel(workload_venv, tmp_path, env) as (manager, client):
        run_cell(client, "import pandas")
        run_cell(client, "import numpy as np; np.zeros(1)", timeout=60)
        time.sleep(1)
        os.kill(manager.provisioner.process.pid, signal.SIGKILL)
        manager.provisioner.process.wait(30)

    def arrived(raws):
        levels = final_levels(_libs(raws))
        return levels.get("pandas") == "direct" and levels.get("numpy") == "direct"

    assert listener.wait_for(arrived, timeout=5), [raw.decode() for raw in listener.received]
    libs = use_libs(listener.datagrams())
    first = first_records(libs)
    assert first["pandas"] == Lib("pandas", workload_versions["pandas"], "direct", "env")
    assert first["numpy"].level == "transitive" and first["numpy"].importer == "pandas"
    assert [lib.level for lib in by_name(libs)["numpy"]] == ["transitive", "upgrade"]
    assert [p.name for p in programs(listener.datagrams())] == ["ipykernel"]
    assert first["ipykernel"].level == "program"  # python -m ipykernel_launcher
    assert first["tornado"].level == "program" and first["pyzmq"].level == "program"
    _check_versions_and_edges(first, workload_versions)
