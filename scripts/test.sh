#!/usr/bin/env bash
# The whole test suite: formatting, lint, strict types, then pytest (SQLite and a throwaway PostgreSQL).
# The Python it runs them with is the one that has the dev tools installed, activated or not (scripts/python.sh says
# which it looks for); PYTHON=/path/to/python chooses it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python.sh
python=$(pick_python "$PWD")
"$python" -m ruff format --check .
"$python" -m ruff check .
"$python" -m mypy
scripts/sdk-venv.sh  # the agent SDKs' own venv, for the end-to-end SDK tests
"$python" -m pytest "$@"
