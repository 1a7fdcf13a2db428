#!/usr/bin/env bash
# The test command of the README: lint, then the whole test suite.
# pytest's exit code 5 (no tests collected) counts as a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests bench || exit 1
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test: no tests were collected" >&2
  exit 1
fi
exit "$rc"
