"""JSON shapes as the public docs show them: each key with the JSON type of its example
value. Nothing here knows callvault; the contract tests use only the docs' text."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.server import RunningServer

# The JSON types of the docs' example values.
STRING, NUMBER, BOOLEAN, ARRAY, OBJECT = "string", "number", "boolean", "array", "object"
INTEGER = "integer"  # a number with no fraction ("total": 1284)


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, float):
        return NUMBER
    if isinstance(value, str):
        return STRING
    if isinstance(value, list):
        return ARRAY
    if isinstance(value, dict):
        return OBJECT
    return "null"


def assert_shape(value: Any, shape: dict[str, str]) -> None:
    """Every key of the documented example is there with the example's JSON type (an
    integer also counts as a number where the docs say "number")."""
    assert isinstance(value, dict), value
    for key, expected in shape.items():
        assert key in value, f"{key} missing from {sorted(value)}"
        got = json_type(value[key])
        ok = got == expected or (expected == NUMBER and got == INTEGER)
        assert ok, f"{key}: {got} ({value[key]!r}), the docs show {expected}"


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert_shape(body, {"error": STRING, "message": STRING})
    return str(body["error"])


def client(server: RunningServer, key: str, business: str | None = None) -> httpx.Client:
    """A client as the docs' curl lines: Authorization: Bearer crk_..., base /api/v1."""
    headers = {"Authorization": f"Bearer {key}"}
    if business is not None:
        headers["X-Business-Id"] = business
    return httpx.Client(base_url=f"{server.http_base}/api/v1", headers=headers, timeout=30)
