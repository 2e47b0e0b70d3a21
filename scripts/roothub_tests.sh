#!/usr/bin/env bash
# jupyterhub-roothub (roothub/) on its own: run by .ci/run after popcon's tests.
#
# Two fresh virtual environments under roothub/.venv-ci/, each with `pip install ./roothub[test]`
# (the package as a user installs it, not editable):
#
# - "newest": the newest JupyterHub and oauthenticator pip finds, with the lint extra and popcon's
#   server extra (for the fleet example, tests/test_popcon_fleet.py): mypy on roothub (its own
#   [tool.mypy]; ruff runs from .ci/run over the whole repository), then every test in
#   roothub/tests;
# - "oldest": the oldest versions roothub's pyproject.toml claims (jupyterhub 5.0.0,
#   oauthenticator 17.3.0), then every test again but the fleet example's (no popcon there).
#
# The tests start real JupyterHubs with configurable-http-proxy (from PATH) and Chromium
# (/usr/bin/chromium); .ci/run installs both. Arguments go to pytest in both runs.
set -euo pipefail
cd "$(dirname "$0")/.."

VENVS="$PWD/roothub/.venv-ci"
OLDEST=("jupyterhub==5.0.0" "oauthenticator==17.3.0")

make_venv() {
  local venv="$VENVS/$1"
  shift
  python3 -m venv --clear "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "$@"
  "$venv/bin/python" -c 'import jupyterhub, oauthenticator; print(
    "roothub tests with jupyterhub", jupyterhub.__version__,
    "and oauthenticator", oauthenticator.__version__)'
}

make_venv newest "./roothub[test,lint]" ".[server]"
(cd roothub && "$VENVS/newest/bin/mypy")
(cd roothub && "$VENVS/newest/bin/python" -m pytest -p no:cacheprovider "$@")

make_venv oldest "./roothub[test]" "${OLDEST[@]}"
(cd roothub && "$VENVS/oldest/bin/python" -m pytest -p no:cacheprovider "$@")
