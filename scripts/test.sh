#!/usr/bin/env bash
# The whole test suite: formatting, lint, strict types, then pytest (SQLite and a throwaway PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."
ruff format --check .
ruff check .
mypy
pytest "$@"
