"""`contextfold serve`: the OpenAI-compatible server, configured by flags, environment and a TOML file."""

from __future__ import annotations

import argparse

_FLAGS = (
    ("--host", "address to listen on (default 127.0.0.1; another one needs an API key, see `keys create`)"),
    ("--port", "port to listen on (default 8400)"),
    ("--db", "SQLite file or postgresql:// URL (default contextfold.db)"),
    ("--upstream", "OpenAI-compatible base URL (Chat Completions) for model names without a route"),
    ("--upstream-api-key", "API key for --upstream"),
    ("--upstream-auth", "server (send --upstream-api-key) or forward (send each proxy client's own key)"),
    ("--model", "the model of requests that name none (default test, the built-in scripted model)"),
    ("--context-window", "context window in tokens of the test model and of the upstream's models"),
    ("--first-byte-timeout", "seconds an upstream may take to start each answer, per attempt (default 120)"),
    ("--turn-timeout", "seconds a turn may wait on its upstream in all, retries included (default 600)"),
    (
        "--tool-timeout",
        "seconds one call of a server-side tool (recall, expand, file_search, MCP) may take (default 60)",
    ),
    ("--shutdown-grace", "seconds SIGTERM/SIGINT waits for running requests before cancelling them (default 10)"),
    ("--max-header-bytes", "request line and headers limit in bytes; over it: 431 (default 65536)"),
    ("--max-replay-bytes", "memory in bytes kept for resuming streams (default 67108864)"),
    ("--compact-threshold", "compact above this share of the budget (default 0.8)"),
    ("--compact-target", "compact down to this share of the budget (default 0.5)"),
    ("--compact-tail-turns", "newest turns kept verbatim by a compaction (default 4)"),
    ("--compact-head-items", "first items kept verbatim by a compaction (default 2)"),
    ("--compact-masking", "mask old tool outputs before summarising: true or false (default true)"),
    ("--compact-background", "compact off the request path past the soft threshold: true or false (default true)"),
    ("--compact-summariser", "self (the serving model), none (deterministic only) or a served model (default self)"),
    ("--compact-summariser-timeout", "seconds a summary may take before the deterministic digest (default 120)"),
    ("--compact-summary-max-tokens", "the summary's output cap in tokens (default 0: its share of the budget)"),
    ("--embeddings-url", "OpenAI-compatible base URL (.../v1) to embed vector store chunks and queries with"),
    ("--embeddings-model", "the embeddings model to ask --embeddings-url for"),
    ("--embeddings-api-key", "API key for --embeddings-url"),
    ("--otel-endpoint", "OTLP/HTTP endpoint to export traces to, such as http://localhost:4318 (needs [otel])"),
    ("--log-format", "text or json (default text)"),
    ("--log-level", "debug, info, warning, error or critical (default info)"),
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the OpenAI-compatible server (Responses + Conversations API, compaction proxy)",
        description=(
            "Runs the OpenAI-compatible server. Each option can also be set as CONTEXTFOLD_<OPTION> in the "
            "environment (CONTEXTFOLD_PORT=8400) or as a key of the --config file; flags win over the environment, "
            "which wins over the file. The built-in `test` model needs no key, so every endpoint can be tried."
        ),
    )
    for flag, text in _FLAGS:
        serve.add_argument(flag, help=text)  # values are checked by load_config, which names where they came from
    serve.add_argument(
        "--queue-turns",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="wait for a busy conversation's turn to end instead of answering 409",
    )
    serve.add_argument("--config", metavar="FILE", help="TOML config file (also CONTEXTFOLD_CONFIG)")
    serve.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the other commands should not load the server's dependencies.
    from ..server._config import load_config
    from ..server._main import run

    names = (
        *("host", "port", "db", "upstream", "upstream_api_key", "upstream_auth"),
        *("model", "context_window", "queue_turns"),
        *(
            "first_byte_timeout",
            "turn_timeout",
            "tool_timeout",
            "shutdown_grace",
            "max_header_bytes",
            "max_replay_bytes",
        ),
        *("compact_threshold", "compact_target", "compact_tail_turns", "compact_head_items", "compact_masking"),
        "compact_background",
        *("compact_summariser", "compact_summariser_timeout", "compact_summary_max_tokens", "otel_endpoint"),
        *("embeddings_url", "embeddings_model", "embeddings_api_key"),
        *("embeddings_url", "embeddings_model", "embeddings_api_key"),
    )
    given = {name: getattr(args, name) for name in (*names, "config", "log_format", "log_level")}
    run(load_config(given))
    return 0
