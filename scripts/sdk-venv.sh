#!/usr/bin/env bash
# The end-to-end SDK tests drive the unmodified agent SDKs (llama-stack-client needs Python >= 3.12; openai-agents
# pins websockets<17) from a venv of their own, .venv-py312, made from pyenv's newest 3.12 (or python3.12 on PATH)
# and tests/sdk_clients/requirements.txt. Idempotent: a venv that is up to date costs a pip check.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-py312/bin/python ]; then
    root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
    py312="$(ls -d "$root"/versions/3.12.*/bin/python 2>/dev/null | sort -V | tail -1 || true)"
    py312="${py312:-$(command -v python3.12 || true)}"
    if [ -z "$py312" ]; then
        echo "no Python 3.12 (pyenv's or python3.12 on PATH): the SDK tests will skip; install one to run them" >&2
        exit 0
    fi
    "$py312" -m venv .venv-py312
fi
.venv-py312/bin/python -m pip install -q --disable-pip-version-check -r tests/sdk_clients/requirements.txt
