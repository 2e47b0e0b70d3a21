"""``popcon enable``, ``disable`` and ``status`` on real virtual environments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from recorder_testlib import (
    build_wheel,
    clean_environ,
    first_records,
    pip_install,
    popcon_cli,
    run,
    unwritable,
    use_libs,
    write_dist_info,
)

pytestmark = pytest.mark.slow


def _listing(venv) -> set:
    """What site-packages holds; an empty ``__pycache__`` left behind does not count."""
    return {
        path.name
        for path in venv.site_packages.iterdir()
        if not (path.name == "__pycache__" and not any(path.iterdir()))
    }


def _status(venv, env) -> dict:
    result = popcon_cli("status", "--json", "--python", venv.python, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_enable_disable_status_are_idempotent(new_venv, home, recorder_env, listener, workdir):
    venv = new_venv(enable=False)
    write_dist_info(venv.site_packages, "tiny-lib", "1.0", {"tiny_lib.py": "X = 1\n"})
    env = clean_environ(home)
    before = _listing(venv)
    assert _status(venv, env)["enabled"] is False

    for _ in range(2):
        result = popcon_cli("enable", "--python", venv.python, env=env)
        assert (result.returncode, result.stderr) == (0, ""), result.stderr
        assert {"sitecustomize.py", "_popcon_recorder.py", "popcon-cache"} <= _listing(venv)
        assert not {"popcon.pth", "_popcon_hook.py"} & _listing(venv)
        report = _status(venv, env)
        assert report["enabled"] is True
        assert (report["start"], report["hidden_by"]) == ("sitecustomize", None)
        assert report["recorder_version"] == report["popcon_version"]
        assert [m["state"] for m in report["maps"]] == ["fresh"]
    mtime = venv.site_packages.stat().st_mtime_ns
    assert popcon_cli("enable", "--python", venv.python, env=env).returncode == 0
    assert venv.site_packages.stat().st_mtime_ns == mtime, "a repeated enable changed the venv"

    # The venv has no popcon installed, yet its processes record, whichever way they start.
    assert "popcon" not in venv.metadata_versions()
    for flags, start, gone in (([], "sitecustomize", "popcon.pth"), (["--pth"], "pth", None)):
        result = popcon_cli("enable", *flags, "--python", venv.python, env=env)
        assert (result.returncode, result.stderr) == (0, ""), result.stderr
        assert _status(venv, env)["start"] == start
        assert gone not in _listing(venv)
        result = run([venv.python, "-c", "import tiny_lib"], env=recorder_env(), cwd=workdir)
        assert (result.returncode, result.stderr) == (0, "")
        datagrams = listener.datagrams()
        assert set(first_records(use_libs(datagrams))) == {"tiny-lib"}
        assert [d.seq for d in datagrams].count(0) == 1, "the process started recording twice"
        listener.clear()
    assert "sitecustomize.py" not in _listing(venv), "enable --pth left the other start"

    for _ in range(2):
        result = popcon_cli("disable", "--python", venv.python, env=env)
        assert (result.returncode, result.stderr) == (0, ""), result.stderr
        assert _listing(venv) == before
        assert _status(venv, env)["enabled"] is False
    result = run([venv.python, "-c", "import tiny_lib"], env=recorder_env(), cwd=workdir)
    assert (result.returncode, result.stderr) == (0, "")
    assert listener.settle() == [], "a disabled venv still sends"


def test_an_environment_s_own_sitecustomize_is_left_alone(
    new_venv, home, recorder_env, listener, workdir
):
    """Where site-packages has a sitecustomize of its own, recording starts from popcon.pth,
    and that module runs as before, untouched by enable and disable."""
    venv = new_venv(enable=False)
    write_dist_info(venv.site_packages, "tiny-lib", "1.0", {"tiny_lib.py": "X = 1\n"})
    own = venv.site_packages / "sitecustomize.py"
    own_text = "import os\nos.environ['OWN_SITECUSTOMIZE'] = 'ran'\n"
    own.write_text(own_text)
    env = clean_environ(home)
    before = _listing(venv) - {"__pycache__"}

    result = popcon_cli("enable", "--python", venv.python, env=env)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert "starts in: popcon.pth" in result.stdout
    assert {"popcon.pth", "_popcon_hook.py"} <= _listing(venv)
    assert _status(venv, env)["start"] == "pth"
    code = "import os, tiny_lib; print(os.environ.get('OWN_SITECUSTOMIZE'))"
    result = run([venv.python, "-c", code], env=recorder_env(), cwd=workdir)
    assert (result.returncode, result.stdout, result.stderr) == (0, "ran\n", "")
    assert set(first_records(use_libs(listener.datagrams()))) == {"tiny-lib"}

    result = popcon_cli("disable", "--python", venv.python, env=env)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert _listing(venv) - {"__pycache__"} == before
    assert own.read_text() == own_text


def test_a_package_replacing_popcon_s_sitecustomize(
    new_venv, home, wheelhouse, recorder_env, listener, workdir
):
    """pip installs a package that ships its own sitecustomize.py over popcon's: status says
    nothing starts the recorder, and enable starts it again from popcon.pth, beside it."""
    venv = new_venv()
    env = clean_environ(home)
    files = {"sitecustomize.py": "import os\nos.environ['THEIRS'] = 'ran'\n", "theirs.py": ""}
    pip_install(venv, "--no-index", "--no-deps", build_wheel(wheelhouse, "theirs", "1.0", files))
    assert _status(venv, env)["enabled"] is False
    text = popcon_cli("status", "--python", venv.python, env=env).stdout
    assert "nothing starts them" in text and "popcon enable" in text

    result = popcon_cli("enable", "--python", venv.python, env=env)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert _status(venv, env)["start"] == "pth"
    code = "import os, theirs; print(os.environ.get('THEIRS'))"
    result = run([venv.python, "-c", code], env=recorder_env(), cwd=workdir)
    assert (result.returncode, result.stdout, result.stderr) == (0, "ran\n", "")
    assert set(first_records(use_libs(listener.datagrams()))) == {"theirs"}


def _distribution_python_with_sitecustomize() -> str | None:
    """A Linux distribution's Python whose standard library has a sitecustomize (Debian and
    Ubuntu ship one), or None."""
    for python in ("/usr/bin/python3",):
        code = "import sitecustomize; print(sitecustomize.__file__)"
        try:
            found = run([python, "-c", code], env={"PATH": "/usr/bin:/bin"})
        except OSError:
            continue
        if found.returncode == 0 and found.stdout.startswith("/usr/lib/"):
            return python
    return None


def test_a_distribution_python_keeps_its_sitecustomize(
    tmp_path, home, recorder_env, listener, workdir
):
    """A venv of Debian's Python imports the system's sitecustomize: enable sees that and
    starts recording from popcon.pth instead of hiding it."""
    python = _distribution_python_with_sitecustomize()
    if python is None:
        pytest.skip("no distribution Python with a sitecustomize here")
    venv_dir = tmp_path / "distro-venv"
    env = clean_environ(home)
    created = run([python, "-m", "venv", "--without-pip", venv_dir], env=env)
    assert created.returncode == 0, created.stderr
    venv_python = venv_dir / "bin" / "python"
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = run([venv_python, "-c", code], env=env)
    write_dist_info(Path(site.stdout.strip()), "tiny-lib", "1.0", {"tiny_lib.py": ""})
    result = popcon_cli("enable", "--python", venv_python, env=env)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert "starts in: popcon.pth" in result.stdout
    code = "import sitecustomize, tiny_lib; print(sitecustomize.__file__)"
    result = run([venv_python, "-c", code], env=recorder_env(), cwd=workdir)
    assert result.returncode == 0 and result.stdout.startswith("/usr/lib/"), result.stderr
    assert set(first_records(use_libs(listener.datagrams()))) == {"tiny-lib"}


def test_status_says_when_a_user_s_sitecustomize_hides_the_recorder(new_venv, home, tmp_path):
    """Started as sitecustomize, the recorder is hidden from a user whose PYTHONPATH has a
    sitecustomize of their own; status says so and names the way out."""
    venv = new_venv()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "sitecustomize.py").write_text("")
    env = clean_environ(home, PYTHONPATH=str(mine))
    assert _status(venv, env)["hidden_by"] == str(mine / "sitecustomize.py")
    text = popcon_cli("status", "--python", venv.python, env=env).stdout
    assert "record nothing" in text and "popcon enable --pth" in text
    assert _status(venv, clean_environ(home))["hidden_by"] is None


def test_status_text_says_enabled_and_where_data_goes(new_venv, home):
    venv = new_venv()
    env = clean_environ(home, POPCON_COLLECTOR="udp://127.0.0.1:9999")
    result = popcon_cli("status", "--python", venv.python, env=env)
    assert result.returncode == 0, result.stderr
    assert "enabled" in result.stdout and "udp://127.0.0.1:9999" in result.stdout
    assert "fresh" in result.stdout


def test_status_reports_opt_out_and_rejected_labels(new_venv, home):
    venv = new_venv()
    (home / ".config" / "popcon").mkdir(parents=True)
    (home / ".config" / "popcon" / "disable").touch()
    env = clean_environ(home, POPCON_LABELS="hub=research,Bad=1,team=a b")
    report = _status(venv, env)
    assert report["opted_out"] is True
    assert report["labels"] == {"hub": "research"}
    assert len(report["rejected_labels"]) == 2
    text = popcon_cli("status", "--python", venv.python, env=env).stdout
    assert "Bad=1" in text


def test_status_notices_a_stale_map(new_venv, home, wheelhouse, recorder_env, listener, workdir):
    venv = new_venv()
    env = clean_environ(home)
    wheel = build_wheel(wheelhouse, "late-comer", "1.0", {"late_comer.py": ""})
    pip_install(venv, "--no-index", "--no-deps", wheel)
    assert [m["state"] for m in _status(venv, env)["maps"]] == ["stale"]
    # The next process that needs the map rebuilds it and stores it for the others.
    result = run([venv.python, "-c", "import late_comer"], env=recorder_env(), cwd=workdir)
    assert (result.returncode, result.stderr) == (0, "")
    assert set(first_records(use_libs(listener.datagrams()))) == {"late-comer"}
    assert [m["state"] for m in _status(venv, env)["maps"]] == ["fresh"]


@pytest.mark.parametrize("command", ["enable", "disable"])
def test_read_only_site_packages_is_a_one_line_error(new_venv, home, command):
    venv = new_venv(enable=command == "disable")
    env = clean_environ(home)
    before = _listing(venv)
    with unwritable(venv.site_packages):
        result = popcon_cli(command, "--python", venv.python, env=env)
        status = popcon_cli("status", "--python", venv.python, env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(venv.site_packages) in lines[0] or "writ" in lines[0]
    assert _listing(venv) == before
    assert status.returncode == 0, status.stderr


def test_bad_python_names_the_flag(home, tmp_path):
    result = popcon_cli("enable", "--python", tmp_path / "no-such-python", env=clean_environ(home))
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "--python" in result.stderr


def test_status_of_the_workload(workload_venv, home):
    report = _status(workload_venv, clean_environ(home))
    assert report["enabled"] is True
    assert [m["state"] for m in report["maps"]] == ["fresh"]
    assert report["maps"][0]["distributions"] == len(workload_venv.metadata_versions())


def test_output_into_a_closed_pipe_is_no_traceback(new_venv, home, popcon_into_closed_pipe):
    """``popcon status | head -0``: the reader is gone before popcon writes."""
    venv = new_venv()
    result = popcon_into_closed_pipe("status", "--python", venv.python, env=clean_environ(home))
    assert (result.returncode, result.stderr) == (0, "")
