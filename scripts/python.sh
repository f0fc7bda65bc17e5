# Sourced by scripts/test.sh: `pick_python ROOT` prints the Python that has the project's development tools.
# The first of these that has them (ruff, mypy, pytest and contextfold itself): $PYTHON when set (then only that
# one); the active virtual environment ($VIRTUAL_ENV); a virtual environment in the checkout, ROOT/.venv or ROOT/venv,
# activated or not; python3 on PATH. None of them: a message saying how to install the tools, and status 1.

pick_python() {
    local root=$1 candidate
    local -a candidates
    if [ -n "${PYTHON:-}" ]; then
        candidates=("$PYTHON")
    else
        candidates=(${VIRTUAL_ENV:+"$VIRTUAL_ENV/bin/python"} "$root/.venv/bin/python" "$root/venv/bin/python" python3)
    fi
    for candidate in "${candidates[@]}"; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c "import contextfold, mypy, pytest, ruff" >/dev/null 2>&1; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    {
        echo "no Python with the project's development tools (ruff, mypy, pytest, contextfold); tried: ${candidates[*]}"
        echo "install them into the one you use with: /path/to/python -m pip install -e '.[dev]'"
        echo "then run the tests with it: PYTHON=/path/to/python scripts/test.sh (or activate its virtual environment)"
    } >&2
    return 1
}
