"""Fuzzing the HTTP API from its own OpenAPI document with schemathesis: valid and invalid inputs on every route.

Every operation of the app's `/openapi.json` (read from the app itself, so a new route is fuzzed without a change
here) is run in schemathesis's positive mode (inputs the document allows) and negative mode (inputs it forbids),
against a real `contextfold serve` process on loopback. Path parameters are, half the time, the id of a real
conversation, item or response (so the fuzzing gets past the 404s). Every answer must be:

- never a 5xx (nor a traceback or a RecursionError in the server's log);
- an error in the route's shape (OpenAI's, or Anthropic's on /v1/messages) whose message names the problem; a 400
  names the wrong field in `param`, or else says the body as a whole was wrong ("the request body ...");
- for an input the document forbids, a 4xx (schemathesis's `negative_data_rejection`).

Default: CI-sized (`FUZZ_EXAMPLES`, 20 examples per operation and mode). A long run:
`FUZZ_EXAMPLES=1000 pytest tests/test_fuzz_api.py` (marked `slow` either way).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, GenerationMode
from schemathesis.core import NotSet
from schemathesis.core.errors import InvalidSchema
from schemathesis.core.result import Err, Ok
from schemathesis.specs.openapi.checks import negative_data_rejection

from contextfold.server import ServerConfig, create_app

from .processes import Replica

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
SCHEMA = schemathesis.openapi.from_dict(create_app(ServerConfig(db="unused")).openapi())


def _operation(result: Ok[APIOperation[Any, Any, Any, Any]] | Err[InvalidSchema]) -> APIOperation[Any, Any, Any, Any]:
    if isinstance(result, Err):
        raise result.err()  # the app's own document is invalid: a bug to fix, not to fuzz around
    return result.ok()


OPERATIONS = {op.label: op for op in map(_operation, SCHEMA.get_all_operations())}
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
ANTHROPIC_ROUTES = ("/v1/messages",)


@dataclass
class Objects:
    """Real objects to aim at: conversations with their items, and stored responses."""

    items: dict[str, list[str]]
    """Item ids by conversation id."""
    responses: list[str]


@dataclass
class Api:
    replica: Replica
    kept: Objects
    """For every route but those that delete what they name."""
    doomed_conversations: Objects
    doomed_responses: Objects


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    where = tmp_path_factory.mktemp("fuzz")
    replica = Replica(str(where / "fuzz.db"), where / "server.log")
    try:
        replica.wait_ready()
        with httpx.Client(base_url=replica.url, timeout=60) as http:
            yield Api(replica, _seed(http, folded=2), _seed(http, plain=8), _seed(http, plain=8))
        failures = server_failures(replica.output())
        assert not failures, "\n".join(failures[:20])
    finally:
        replica.stop()


_FAILURE = re.compile(
    r"^(Traceback \(most recent call last\)|RecursionError|.* internal error err_\w+$|.* 5\d\d [\d.]+ms$)"
)


def server_failures(log: str) -> list[str]:
    """The server log's lines that tell of a failure: a 5xx answered, an internal error, a traceback. (Matched by
    their shape, not their words: the fuzzed paths are logged too, and hold any words.)"""
    return [line for line in log.splitlines() if _FAILURE.match(line)]


def _seed(http: httpx.Client, *, folded: int = 0, plain: int = 0) -> Objects:
    """Conversations (`folded` of them long and compacted, `plain` of one turn) and their stored responses."""
    seeded = Objects({}, [])
    for n in range(folded + plain):
        first = http.post("/v1/responses", json={"model": "test", "input": f"hello {n}"}).json()
        conversation = first["conversation"]["id"]
        seeded.responses.append(first["id"])
        if n < folded:
            for _ in range(6):
                body = {"model": "test", "input": "/long 60", "conversation": conversation}
                seeded.responses.append(http.post("/v1/responses", json=body).json()["id"])
            http.post(f"/v1/conversations/{conversation}/compact", json={})
        page = http.get(f"/v1/conversations/{conversation}/items", params={"limit": 8}).json()
        seeded.items[conversation] = [item["id"] for item in page["data"]]
    return seeded


def _aim(case: Any, data: st.DataObject, api: Api, mode: GenerationMode) -> None:
    """Half the time, each id a real one (an item of the conversation named), and the model one that is served:
    so the fuzzing reaches past the 404s and the unknown models into the routes themselves."""
    deleting = case.method.upper() == "DELETE"
    pool = api.kept
    if deleting and case.path == "/v1/conversations/{conversation_id}":
        pool = api.doomed_conversations
    elif deleting and case.path == "/v1/responses/{response_id}":
        pool = api.doomed_responses
    params = case.path_parameters or {}
    body = case.body if isinstance(case.body, dict) else {}

    def real(label: str) -> bool:
        return data.draw(st.booleans(), label=label)

    if "conversation_id" in params and real("real conversation"):
        params["conversation_id"] = data.draw(st.sampled_from(sorted(pool.items)), label="conversation")
    items = pool.items.get(params.get("conversation_id", ""), [])
    if "item_id" in params and items and real("real item"):
        params["item_id"] = data.draw(st.sampled_from(items), label="item")
    if "response_id" in params and real("real response"):
        params["response_id"] = data.draw(st.sampled_from(pool.responses), label="response")
    if mode is GenerationMode.NEGATIVE:
        return  # a body value made real could be the one that made the case invalid (any string is a valid id)
    if "item_id" in body and items and real("real item in the body"):
        body["item_id"] = data.draw(st.sampled_from(items), label="body item")
    if "model" in body and real("served model"):
        body["model"] = "test"
    if "conversation" in body and real("real conversation in the body"):
        body["conversation"] = data.draw(st.sampled_from(sorted(api.kept.items)), label="body conversation")
    if "previous_response_id" in body and real("real previous response"):
        body["previous_response_id"] = data.draw(st.sampled_from(api.kept.responses), label="previous response")


def _check(label: str, response: Any, case: Any) -> None:
    """The answer is no 5xx, and an error that names its problem (and the field, when a field was wrong)."""
    curl = case.as_curl_command()
    assert response.status_code < 500, f"{label}: {response.status_code} {response.content[:500]!r}\n{curl}"
    if response.status_code < 400:
        return
    body = json.loads(response.content)
    if case.path in ANTHROPIC_ROUTES:
        assert body["type"] == "error", body
        error = body["error"]
        assert error["message"], body
        return
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str)
    assert error["message"].strip(), body
    assert "Traceback" not in error["message"]
    if response.status_code == 400 and not error["param"]:
        # no field named: the body as a whole was wrong (not JSON, not an object, nested too deep)
        assert error["message"].startswith("the request body"), f"{label}: a 400 naming no field: {error}\n{curl}"


def _multipart(operation: APIOperation[Any, Any, Any, Any]) -> bool:
    return any(body.media_type == "multipart/form-data" for body in operation.body)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_the_api_never_fails_and_names_every_problem(api: Api, label: str, mode: GenerationMode) -> None:
    operation = OPERATIONS[label]
    if mode is GenerationMode.NEGATIVE and _multipart(operation):
        pytest.skip("a multipart body holds only text and bytes: a value made null arrives as the text 'null'")

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def fuzz(case: Any, data: st.DataObject) -> None:
        _aim(case, data, api, mode)
        response = case.call(base_url=api.replica.url, timeout=60)
        _check(label, response, case)
        if mode is GenerationMode.NEGATIVE:
            case.validate_response(response, checks=[negative_data_rejection])

    try:
        fuzz()
    except Unsatisfiable:
        if mode is not GenerationMode.NEGATIVE:
            raise
        pytest.skip("the document allows every value of this operation's inputs: none can be invalid")


def test_every_operation_is_fuzzed_with_its_body() -> None:
    """The document has the routes (and the proxy routes, which read their bodies themselves, describe theirs)."""
    paths = {op.path for op in OPERATIONS.values()}
    assert {"/v1/responses", "/v1/conversations/{conversation_id}/items", "/v1/chat/completions"} <= paths
    for label in ("POST /v1/chat/completions", "POST /v1/messages"):
        assert OPERATIONS[label].body, f"{label} has no request body in the OpenAPI document"


def _strings(node: object, path: str = "") -> list[tuple[str, list[object]]]:
    """Every string leaf of a JSON value: its param path and the keys and indexes that reach it."""
    found: list[tuple[str, list[object]]] = []
    stack: list[tuple[object, str, list[object]]] = [(node, path, [])]
    while stack:
        value, where, trail = stack.pop()
        if isinstance(value, str):
            found.append((where, trail))
        elif isinstance(value, dict):
            stack.extend((v, f"{where}.{k}" if where else k, [*trail, k]) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]", [*trail, i]) for i, v in enumerate(value))
    return found


BODIES = sorted(label for label, op in OPERATIONS.items() if op.body and not _multipart(op))
"""The operations with a JSON body (an upload is multipart: its text fields are never decoded as JSON escapes)."""


@pytest.mark.parametrize("label", BODIES)
def test_a_lone_surrogate_anywhere_in_any_body_is_a_400_naming_it(api: Api, label: str) -> None:
    """Issue 14: on every route with a JSON body, a lone UTF-16 surrogate put into any string of a valid body (or
    beside it) is a 400 whose param is that string's path: never a 500, never anything created."""
    operation = OPERATIONS[label]

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE), data=st.data())
    def fuzz(case: Any, data: st.DataObject) -> None:
        _aim(case, data, api, GenerationMode.POSITIVE)
        if isinstance(case.body, NotSet):  # an optional body left out: the surrogate goes into one of its own
            body: Any = {}
        else:
            body = case.body if isinstance(case.body, dict) else {"body": case.body}
        leaves = [leaf for leaf in _strings(body) if leaf[0]]
        into: bool = data.draw(st.booleans(), label="into a string of the body")
        if leaves and into:
            path, trail = data.draw(st.sampled_from(leaves), label="string")
            holder: Any = body
            for step in trail[:-1]:
                holder = holder[step]
            holder[trail[-1]] = holder[trail[-1]] + "\ud800"
        else:
            path, body = "x_fuzz", {**body, "x_fuzz": "hi \udfff"}
        url = api.replica.url + case.formatted_path
        raw = json.dumps(body).encode()  # ASCII: the surrogate goes as its escape, as JSON encoders write it
        before = httpx.get(f"{api.replica.url}/v1/conversations", params={"limit": 100, "order": "desc"}).json()["data"]
        reply = httpx.request(case.method, url, content=raw, headers={"content-type": "application/json"}, timeout=60)
        assert reply.status_code == 400, f"{label} {path}: {reply.status_code} {reply.text[:300]}"
        error = reply.json()["error"]
        assert "lone UTF-16 surrogate" in error["message"]
        if case.path not in ANTHROPIC_ROUTES:
            assert error["param"] == path
        assert (
            httpx.get(f"{api.replica.url}/v1/conversations", params={"limit": 100, "order": "desc"}).json()["data"]
            == before
        )

    fuzz()
