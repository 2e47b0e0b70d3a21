#!/usr/bin/env bash
# The README's main command: the whole job on the embedded default (a SQLite file), on this
# machine. Pass --exit to stop right after the table instead of serving until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[server]'
exec .venv/bin/popcon demo "$@"
