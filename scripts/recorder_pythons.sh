#!/usr/bin/env bash
# The recorder's tests on every CPython from 3.9 to 3.13 that pyenv provides on this machine
# (~/.pyenv/versions/3.X.*, the newest patch release of each), run by .ci/run after the main
# test run:
#
# - the fast ones (tests/recorder) under each interpreter, in a small cached venv with pytest
#   alone: they load the recorder's files by path and need nothing of popcon's package;
# - a few slow ones (tests/systems) from the main .venv, with every venv they build made from
#   that interpreter (POPCON_TEST_PYTHON): levels, a namespace package, the user site, egg-info,
#   a changing environment, broken metadata, start-up imports, privacy, popcon.pth,
#   enable/disable/status. The Jupyter kernel test and the others on the workload venv are not
#   among them: its packages (pandas, pyzmq, ...) exist here for one CPython only. Skipped for
#   the version of the main .venv, whose run has them all.
#
# A version that is missing is skipped with a line saying so; under CI=true it fails the run.
#
# The pytest venvs are installed with --no-deps and read no configuration file (-c /dev/null):
# pytest needs tomli on Python < 3.11 only to read pyproject.toml, and this machine's package
# index has tomli for CPython 3.11 alone.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSIONS=(3.9 3.10 3.11 3.12 3.13)
SLOW_TESTS=(
  tests/systems/test_recorder_mapping.py::test_namespace_package_shared_by_tiny_distributions
  tests/systems/test_recorder_mapping.py::test_user_site_origin
  tests/systems/test_recorder_mapping.py::test_egg_info_with_installed_files
  tests/systems/test_recorder_robustness.py::test_environment_changed_by_pip_after_enable
  tests/systems/test_recorder_robustness.py::test_broken_distribution_metadata
  tests/systems/test_recorder_robustness.py::test_pth_imports_of_other_distributions_are_not_direct
  tests/systems/test_recorder_privacy.py::test_nothing_personal_leaves_the_process
  tests/systems/test_recorder_privacy.py::test_the_default_environment_label_names_no_path_and_no_user
  tests/systems/test_recorder_reports.py::test_pth_executed_twice_counts_once
  tests/systems/test_recorder_cli.py::test_enable_disable_status_are_idempotent
  tests/systems/test_recorder_cli.py::test_status_reports_opt_out_and_rejected_labels
)
PYTEST_PACKAGES=("pytest>=8,<9" iniconfig packaging pluggy pygments)
PYTEST_PACKAGES_BEFORE_3_11=(exceptiongroup typing-extensions)

versions_root="${PYENV_ROOT:-$HOME/.pyenv}/versions"
cache="${POPCON_TEST_CACHE:-$HOME/.cache/popcon-tests}/pythons"
main_version=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
export PYTHONDONTWRITEBYTECODE=1
missing=()

pytest_venv() {  # the cached venv with pytest for interpreter $1 (version $2); prints its python
  local python=$1 version=$2 venv
  venv="$cache/pytest-$(basename "$(dirname "$(dirname "$python")")")"
  if [ ! -e "$venv/.complete" ]; then
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2
    local packages=("${PYTEST_PACKAGES[@]}")
    case $version in 3.9 | 3.10) packages+=("${PYTEST_PACKAGES_BEFORE_3_11[@]}") ;; esac
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "${packages[@]}" >&2
    touch "$venv/.complete"
  fi
  echo "$venv/bin/python"
}

for version in "${VERSIONS[@]}"; do
  found=$(compgen -G "$versions_root/$version.*" | sort -V | tail -n 1 || true)
  python="$found/bin/python$version"
  if [ -z "$found" ] || [ ! -x "$python" ]; then
    if [ "${CI:-}" = true ]; then
      echo "recorder_pythons: FAILED: no CPython $version in $versions_root (CI needs 3.9 to 3.13)"
    else
      echo "recorder_pythons: skipped CPython $version: not in $versions_root"
    fi
    missing+=("$version")
    continue
  fi
  name="CPython $(basename "$found")"
  start=$SECONDS
  tester=$(pytest_venv "$python" "$version")
  echo "recorder_pythons: $name: fast tests (tests/recorder)"
  PYTHONPATH=tests/testlib "$tester" -m pytest -q -c /dev/null \
    --rootdir . --confcutdir tests/recorder -p no:cacheprovider tests/recorder
  if [ "$version" = "$main_version" ]; then
    echo "recorder_pythons: $name: slow tests run by the main run already ($((SECONDS - start)) s)"
    continue
  fi
  echo "recorder_pythons: $name: slow tests, venvs made from $python"
  POPCON_TEST_PYTHON="$python" .venv/bin/python -m pytest -q -p no:cacheprovider "${SLOW_TESTS[@]}"
  echo "recorder_pythons: $name: passed in $((SECONDS - start)) s"
done

if [ "${CI:-}" = true ] && [ ${#missing[@]} -gt 0 ]; then
  exit 1
fi
