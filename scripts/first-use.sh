#!/usr/bin/env bash
# First use, as a new user has it: `pip install .` (no extras) in a fresh virtual environment, then `contextfold demo`
# and a `contextfold chat` exchange with a `contextfold serve`. Catches a dependency the code imports but
# pyproject.toml does not declare, which the development environment (every extra installed) would hide.
# Usage: scripts/first-use.sh [PYTHON]   (default: python3; the interpreter the venv is made from)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}

work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
# Only the venv's own packages: nothing from this checkout's src/ or the caller's environment.
unset PYTHONPATH VIRTUAL_ENV

"$python" -m venv "$work/venv"
bin="$work/venv/bin"
"$bin/python" -m pip install -q --disable-pip-version-check .
cd "$work"  # away from the checkout, so `import contextfold` can only find the installed copy

echo "first use: contextfold demo --turns 20"
"$bin/contextfold" demo --turns 20 --db "$work/demo.db" </dev/null >"$work/demo.out"
grep -q "recall hits" "$work/demo.out"
if grep -q "http://" "$work/demo.out"; then  # piped, the demo's server has stopped: no URL may point at it
    echo "first use: the piped demo printed a URL of a server that has stopped:" >&2
    cat "$work/demo.out" >&2
    exit 1
fi

port=$("$bin/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
# a route to a provider whose SDK only an extra installs: asking for it must name the extra, not fail obscurely
printf '[[models]]\nname = "claude"\nprovider = "anthropic"\napi_key = "unused"\n' >"$work/serve.toml"
"$bin/contextfold" serve --db "$work/serve.db" --port "$port" --config "$work/serve.toml" --log-level warning \
    </dev/null >"$work/serve.log" 2>&1 &
server=$!
"$bin/python" - "$port" <<'EOF'
import sys, time, urllib.request
deadline = time.monotonic() + 60
while True:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz", timeout=2).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("first use: contextfold serve did not answer /healthz within 60 s")
        time.sleep(0.2)
EOF
echo "first use: contextfold chat"
printf 'hello, is anyone there?\n/status\n' | "$bin/contextfold" chat --url "http://127.0.0.1:$port" >"$work/chat.out"
test -s "$work/chat.out"
echo "first use: a model whose extra is not installed"
"$bin/python" - "$port" <<'EOF'
import json, sys, urllib.error, urllib.request
body = json.dumps({"model": "claude", "input": "hi"}).encode()
url = f"http://127.0.0.1:{sys.argv[1]}/v1/responses"
try:
    urllib.request.urlopen(urllib.request.Request(url, body, {"content-type": "application/json"}), timeout=30)
    sys.exit("first use: a model needing the anthropic extra answered without it")
except urllib.error.HTTPError as error:
    text = error.read().decode()
    if error.code != 400 or "pip install 'contextfold[anthropic]'" not in text:
        sys.exit(f"first use: the missing extra was not named: {error.code} {text}")
EOF
kill "$server"
wait "$server" || true
server=""
echo "first use: the demo and a chat exchange ran on a plain install"
