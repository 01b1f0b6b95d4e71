#!/usr/bin/env bash
# Installs everything the tests need (system packages, venv, test extras), checks the code
# (ruff lint and format, mypy over fsync_fuse/, cache/ and remote/), then runs the whole suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k cache -x
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/scripts/setup.sh" --test
cd "$here"
venv="${VENV:-$here/.venv}"
echo "test: ruff check"
"$venv/bin/ruff" check .
echo "test: ruff format --check"
"$venv/bin/ruff" format --check .
echo "test: mypy (fsync_fuse, cache, remote)"
"$venv/bin/mypy"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider --durations=15 "$@"
