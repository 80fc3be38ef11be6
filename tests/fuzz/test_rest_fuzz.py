"""Property-based fuzzing of the REST surface from the live server's /openapi.json
(schemathesis): valid and invalid requests to every operation, on both databases.
No answer may be a 5xx, every answer must match the document (status, media type, JSON
schema), and a refused call (4xx) must leave the business's rows as they were."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.conftest import EXAMPLES, Target
from tests.fuzz.messages import text
from tests.support.snapshot import business_rows


def _names(document: dict[str, Any], path: str, method: str) -> tuple[list[str], list[str]]:
    """(query parameter names, JSON body property names) of one operation."""
    op = document["paths"][path][method.lower()]
    query = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    if "$ref" in body:
        body = document["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    return query, list(body.get("properties", {}))


def _with_values(names: list[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(names), values, max_size=2) if names else st.just({})


# Valid bodies that the overrides change a field or two of, so a generated value is the
# one check that can fail (random values elsewhere would be refused first).
BASE_BODIES: dict[str, dict[str, Any]] = {
    "POST /api/v1/recordings": {"dataId": "fuzz", "callAt": "2026-05-20T08:14:00+07:00", "direction": "in"},
    "POST /api/v1/providers": {
        "kind": "threecx",
        "name": "Fuzzed",
        "config": {"baseUrl": "http://127.0.0.1:9", "username": "u", "password": "p"},
    },
}


def _override(case: Any, base: dict[str, Any] | None, query: dict[str, Any], body: dict[str, Any]) -> Any:
    """The case with only these query parameters, and its body (or the operation's valid
    base body) with these fields: values this service gives meaning to."""
    case.query = query
    if base is not None:
        case.body = {**base, **body}
    elif isinstance(case.body, dict):
        case.body = {**case.body, **body}
    return case


def _keyless(document: dict[str, Any], path: str, method: str) -> bool:
    """Whether an operation also works with no key (its security admits ``{}``): a presigned
    upload URL's or a listen link's token stands in for one."""
    return {} in document["paths"][path][method.lower()].get("security", [{"bearer": []}])


def _strategies(
    target: Target, mode: GenerationMode
) -> list[tuple[str, st.SearchStrategy[tuple[Any, bool]]]]:
    """One strategy per operation: schemathesis's cases, aimed at real rows too, and with
    some fields set to values this service gives meaning to; each case with the key, and
    without it too where the operation takes a token in its place."""
    url = f"{target.server.http_base}/openapi.json"
    schema = schemathesis.openapi.from_url(url)
    document = httpx.get(url).json()
    values = st.one_of(
        text(target.ids, longest=4000),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
    )
    body_values = st.one_of(values, text(target.ids))
    out = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the server's OpenAPI document is invalid: {result}"
        operation = result.ok()
        query, body = _names(document, operation.path, operation.method)
        cases = [operation.as_strategy(mode)]
        if "{id}" in operation.path and operation.method.upper() != "DELETE":
            # The generated ids are almost never real: also aim at the business's own rows
            # (not with DELETE, which would leave the rest of the run nothing to reach).
            real = target.recording_id if "/recordings/" in operation.path else target.provider_id
            if operation.path.startswith("/api/v1/sync-jobs"):
                real = target.job_id
            cases.append(operation.as_strategy(mode, path_parameters={"id": real}))
        name = f"{operation.method.upper()} {operation.path}"
        strategies = list(cases)
        if query or body:
            overrides = (
                st.just(BASE_BODIES.get(name)),
                _with_values(query, values),
                _with_values(body, body_values),
            )
            # Weighted: schemathesis's own values rarely get past the first check.
            strategies += [st.builds(_override, case, *overrides) for case in cases] * 2
        keyed = st.booleans() if _keyless(document, operation.path, operation.method) else st.just(True)
        out.append((name, st.tuples(st.one_of(strategies), keyed)))
    return sorted(out, key=lambda item: item[0])


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_no_request_gets_a_5xx_or_changes_data_when_refused(target: Target, mode: GenerationMode) -> None:
    business = target.tenant.business_id
    state = {"rows": business_rows(target.server, business)}

    def check(keyed_case: tuple[Any, bool]) -> None:
        case, keyed = keyed_case
        # Negative generation also mangles the Authorization header; a 401 reaches no further.
        case.headers = {**(case.headers or {}), **target.auth()}
        if not keyed:  # as a holder of only a presigned URL or a listen link sends it
            case.headers = {k: v for k, v in case.headers.items() if k.lower() != "authorization"}
        response = case.call(base_url=target.server.http_base, timeout=30)
        body = response.content[:300].decode("utf-8", "replace")  # audio answers are bytes
        where = f"{case.method} {case.formatted_path} -> {response.status_code} {body}"
        assert response.status_code < 500, where
        # The document says what is served: every status, media type and JSON shape.
        case.validate_response(
            response, checks=[status_code_conformance, content_type_conformance, response_schema_conformance]
        )
        rows = business_rows(target.server, business)
        if response.status_code >= 400:
            assert rows == state["rows"], f"a refused call changed stored data: {where}"
        state["rows"] = rows

    for _name, strategy in _strategies(target, mode):
        settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )(given(keyed_case=strategy)(check))()
