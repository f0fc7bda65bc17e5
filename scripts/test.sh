#!/usr/bin/env bash
# The whole test suite: formatting, lint, strict types, then pytest (SQLite and a throwaway PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m ruff format --check .
python3 -m ruff check .
python3 -m mypy
python3 -m pytest "$@"
