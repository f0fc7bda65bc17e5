"""`contextfold doctor`: checks that a setup can serve, one line per check, without starting a server.

It takes `serve`'s options and checks, in order: the configuration loads; the database opens, its schema is current
and an event written reads back the same; the API keys let the server listen where it is told to; and for the
upstream and every model route, the server answers `GET {base}/models` and lists the model, and the context window
the registry resolves, with the compaction budget, trigger and target it gives. A check that cannot run because an
earlier one failed is left out rather than failed twice. The doctor changes nothing but its own test conversation,
which it deletes: pending migrations are reported, not applied.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from ._output import stderr, stdout, table

if TYPE_CHECKING:
    from ..server._config import ModelRoute, ServerConfig
    from ..server._registry import ModelRegistry, ResolvedModel
    from ..store import ServerStore

PROBE_TIMEOUT = 5.0
"""Seconds a `GET /models` may take before the server counts as unreachable."""
RESOLVE_TIMEOUT = 20.0
"""Seconds resolving a model's window may take (it may ask the upstream)."""
_MARKS = {"pass": "✓", "fail": "✗", "skip": "-"}
_FLAGS = (  # (flag, metavar, help): serve's flags that decide what the checks find
    ("--host", "HOST", "the address serve would listen on; decides whether API keys are needed (default 127.0.0.1)"),
    ("--db", "DB", "SQLite file or postgresql:// URL (default contextfold.db)"),
    ("--upstream", "URL", "OpenAI-compatible base URL for model names without a route"),
    ("--upstream-api-key", "KEY", "API key for --upstream"),
    ("--model", "NAME", "the default model (default test)"),
    ("--context-window", "TOKENS", "context window of the test model and of the upstream's models"),
)


@dataclass(frozen=True, slots=True)
class Check:
    check: str
    result: Literal["pass", "fail", "skip"]
    detail: str


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="check that the configuration, database, keys and models can serve",
        description="Checks the setup `serve` would run with these options (the same flags, CONTEXTFOLD_* "
        "variables and config file) and prints one line per check. Exits 0 if every check passes, 1 otherwise. "
        "It writes and deletes one test conversation; it applies no migration.",
    )
    for flag, metavar, text in _FLAGS:
        doctor.add_argument(flag, metavar=metavar, help=text)  # values are checked by load_config, as serve's are
    doctor.add_argument("--config", metavar="FILE", help="TOML config file (also CONTEXTFOLD_CONFIG)")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON instead of a table")
    doctor.set_defaults(handler=doctor_command)


def doctor_command(args: argparse.Namespace) -> int:
    names = ("host", "db", "upstream", "upstream_api_key", "model", "context_window", "config")
    checks = asyncio.run(run_checks({name: getattr(args, name) for name in names}))
    failed = [check.check for check in checks if check.result == "fail"]
    if args.json:
        stdout().out(json.dumps([asdict(check) for check in checks], indent=2, ensure_ascii=False), highlight=False)
    else:
        rows = [(check.check, _MARKS[check.result], check.detail) for check in checks]
        stdout().print(table(("check", "result", "detail"), rows))
    if failed:
        stderr().print(f"{len(failed)} check(s) failed: {', '.join(failed)}")
    return 1 if failed else 0


async def run_checks(given: Mapping[str, object]) -> list[Check]:
    from .._errors import ConfigurationError
    from ..server._config import CONFIG_ENV, load_config

    try:
        config = load_config(given)
    except ConfigurationError as exc:
        return [Check("configuration", "fail", str(exc))]
    source = given.get("config") or os.environ.get(CONFIG_ENV)
    routes = f"{len(config.routes)} model route(s)" if config.routes else "no model routes"
    origin = f"from {source}" if source else "from flags, environment and defaults"
    checks = [Check("configuration", "pass", f"{origin}: default model {config.model}, {routes}")]
    checks += await _database(config)
    checks += await _models(config)
    return checks


# --- the database --------------------------------------------------------------------------------------------


async def _database(config: ServerConfig) -> list[Check]:
    from .._errors import ContextfoldError
    from ..store import open_server_store
    from ._admin import read_schema

    try:
        schema = await read_schema(config.db)
    except ContextfoldError as exc:
        return [Check("database", "fail", str(exc))]
    if not schema.exists:  # not a fault: `serve` creates it, as `migrate` would
        detail = f"{schema.where} does not exist yet; `contextfold serve` (or `contextfold migrate`) creates it"
        return [Check("database", "pass", detail), Check("write/read", "skip", "no database yet")]
    checks = [Check("database", "pass", f"{schema.where} opens")]
    try:
        pending = schema.pending()
    except ContextfoldError as exc:  # newer than this build
        return [*checks, Check("schema", "fail", str(exc))]
    if pending:  # not a fault either: `serve` applies them on start (`migrate --check` is for deploy scripts)
        fix = f"this contextfold needs {schema.latest}; `contextfold serve` (or `contextfold migrate`) applies "
        checks.append(Check("schema", "pass", f"version {schema.version}, {fix}{len(pending)} migration(s)"))
        return [*checks, Check("write/read", "skip", "after the migrations")]
    checks.append(Check("schema", "pass", f"version {schema.version}, current"))
    try:
        store = await open_server_store(config.db)  # migrates nothing: the schema is current
    except ContextfoldError as exc:
        return [*checks, Check("write/read", "fail", str(exc))]
    try:
        return [*checks, await _round_trip(store), await _keys(store, config)]
    finally:
        await store.close()


async def _round_trip(store: ServerStore) -> Check:
    from .._errors import ContextfoldError
    from ..events import encode, user

    try:
        # Tenant "" belongs to no API key, so no client of a server on this database ever sees it.
        info = await store.conversations.create(metadata={"created_by": "contextfold doctor"})
        try:
            written = await store.append(info.id, [user("contextfold doctor: a write/read check")], 0)
            read = await store.read(info.id)
        finally:
            await store.conversations.delete(info.id)
    except ContextfoldError as exc:
        return Check("write/read", "fail", str(exc))
    if [encode(event) for event in read] != [encode(event) for event in written]:
        return Check("write/read", "fail", "the event read back differs from the one written")
    return Check("write/read", "pass", "appended an event, read it back and deleted it")


async def _keys(store: ServerStore, config: ServerConfig) -> Check:
    from .._errors import ConfigurationError
    from ..server._main import check_exposure

    active = await store.keys.active()
    try:
        check_exposure(config, active)
    except ConfigurationError as exc:
        return Check("API keys", "fail", str(exc))
    if active:
        return Check("API keys", "pass", f"{active} active; requests need one")
    return Check("API keys", "pass", f"none: unauthenticated requests are accepted, on {config.host} (loopback) only")


# --- the models ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listing:
    """What `GET {base}/models` gave: the model ids, or why there are none."""

    url: str
    ids: tuple[str, ...] | None
    problem: str = ""


async def _models(config: ServerConfig) -> list[Check]:
    from ..server._config import TEST_MODEL
    from ..server._registry import ModelRegistry

    registry = ModelRegistry(config)
    routes = {route.name: route for route in config.routes}
    checks: list[Check] = []
    upstream: Listing | None = None
    try:
        if config.upstream is not None:
            upstream = await _openai_listing(config.upstream, config.upstream_api_key)
            checks.append(_upstream_check(upstream, config))
        for name in registry.names():
            route = routes.get(name)
            if name == TEST_MODEL or (route is not None and route.provider == "test"):
                checks.append(Check(f"model {name}", "pass", "built in: scripted, offline, needs no key"))
            elif route is not None:
                checks.append(await _route_check(route))
            elif upstream is not None:
                checks.append(_listed(f"model {name}", name, upstream))
            checks.append(await _window(registry, config, name, route))
            if checks[-1].result == "pass":
                checks.append(Check(f"compaction {name}", "pass", _policy_text(await registry.resolve(name))))
    finally:
        await registry.close()
    return checks


def _upstream_check(listing: Listing, config: ServerConfig) -> Check:
    if listing.ids is None:
        if listing.problem.startswith("answered 401") and config.upstream_auth == "forward":
            return Check("upstream", "pass", f"{listing.url} answers; it wants each client's own key (forward)")
        return Check("upstream", "fail", f"{listing.url}: {listing.problem}")
    shown = ", ".join(listing.ids[:5]) + (", …" if len(listing.ids) > 5 else "")
    return Check("upstream", "pass", f"{listing.url}: {len(listing.ids)} model(s): {shown}")


async def _route_check(route: ModelRoute) -> Check:
    from .._errors import ConfigurationError
    from ..server._registry import build_route

    label = f"model {route.name}"
    from ..models._specs import SPECS

    path = SPECS[route.provider].listing
    if path is None:
        return Check(label, "skip", f"{route.provider}: not probed (its API lists models differently)")
    providers: list[Any] = []  # the provider build_route opens for the route: its SDK client is what we ask
    try:
        build_route(route, providers.append)
    except ConfigurationError as exc:
        return Check(label, "fail", str(exc))
    try:
        # The route's own client (its key, its base URL), asked with a short timeout and no retries.
        client = providers[-1].client.with_options(timeout=PROBE_TIMEOUT, max_retries=0)
        listing = await _listing(client, path)
    finally:
        for provider in providers:
            await provider.aclose()
    return _listed(label, route.upstream_model, listing)


async def _openai_listing(base_url: str, api_key: str | None) -> Listing:
    import openai

    client = openai.AsyncOpenAI(api_key=api_key or "unused", base_url=base_url, timeout=PROBE_TIMEOUT, max_retries=0)
    async with client:
        return await _listing(client, "models")


async def _listing(client: Any, path: str) -> Listing:
    """The ids `client.models.list()` gives (the openai and anthropic SDKs share the call and the error shapes);
    `path` is where the SDK asks, below its base URL, to name it in messages."""
    url = f"{str(client.base_url).rstrip('/')}/{path}"
    try:
        ids = tuple([entry.id async for entry in client.models.list()])
    except Exception as exc:  # each SDK's own errors: a status, or a connection that failed or timed out
        status = getattr(exc, "status_code", None)
        if status is not None:
            return Listing(url, None, f"answered {status}: {getattr(exc, 'message', exc)}")
        cause = exc.__cause__ or exc
        return Listing(url, None, f"unreachable ({type(cause).__name__}: {cause})")
    return Listing(url, ids)


def _listed(label: str, wanted: str, listing: Listing) -> Check:
    if listing.ids is None:
        return Check(label, "fail", f"not found: {listing.url} did not list its models ({listing.problem})")
    if wanted in listing.ids:
        return Check(label, "pass", f"listed by {listing.url}")
    if len(listing.ids) == 1:  # llama.cpp serves its one model whatever name it is asked for
        return Check(label, "pass", f"{listing.url} serves one model ({listing.ids[0]}) under any name")
    shown = ", ".join(listing.ids[:10]) or "none"
    return Check(label, "fail", f"{wanted!r} is not among the models of {listing.url}: {shown}")


async def _window(registry: ModelRegistry, config: ServerConfig, name: str, route: ModelRoute | None) -> Check:
    from .._errors import ContextfoldError
    from ..server._config import TEST_MODEL
    from ..server.inspect._inspect import budget_lines

    label = f"window {name}"
    try:
        resolved = await asyncio.wait_for(registry.resolve(name), RESOLVE_TIMEOUT)
    except TimeoutError:
        return Check(label, "fail", f"resolving it took over {RESOLVE_TIMEOUT:g}s (the upstream did not answer)")
    except ContextfoldError as exc:
        return Check(label, "fail", str(exc))
    settings = resolved.compaction
    lines = budget_lines(resolved, None, settings.threshold, settings.target)
    configured = route.context_window if route is not None else config.context_window
    if configured:
        source = "configured"
    elif name == TEST_MODEL or (route is not None and route.provider == "test"):
        source = "the test model's own"
    elif resolved.model.profile.context_window != lines["context_window"]:
        source = "reported by the upstream's /models"
    else:
        source = "from the model's profile"
    return Check(
        label,
        "pass",
        f"{lines['context_window']:,} tokens ({source}); budget {lines['budget']:,}, compaction at "
        f"{lines['trigger_tokens']:,} down to {lines['target_tokens']:,}",
    )


def _policy_text(resolved: ResolvedModel) -> str:
    """The rest of the compaction policy in force for a model (the window check gives its lines), on one line."""
    from ..server.inspect._window import summariser_name

    settings = resolved.compaction
    cap = f"{settings.summary_max_tokens:,} tokens" if settings.summary_max_tokens else "its share of the budget"
    return (
        f"verbatim: first {settings.head_items} items, last {settings.tail_turns} turns; masking "
        f"{'on' if settings.masking else 'off'}; summariser {summariser_name(resolved)} "
        f"(timeout {settings.summariser_timeout:g}s, summary up to {cap})"
    )
