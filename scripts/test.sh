#!/usr/bin/env bash
# Installs everything the tests need (system packages, venv, test extras) and runs the whole suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k cache -x
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/scripts/setup.sh" --test
cd "$here"
exec "${VENV:-$here/.venv}/bin/python" -m pytest -q -p no:cacheprovider "$@"
