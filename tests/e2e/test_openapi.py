"""/openapi.json says what is served: a valid OpenAPI 3.1 document, every route the shim
serves, the audio bodies as bytes, the required fields, the X-Business-Id header, and the
statuses each operation really answers (seen by a small run over every operation)."""

from __future__ import annotations

import re
from typing import Any

import httpx
from openapi_spec_validator import validate

from service.auth import Scope
from tests.e2e.test_recordings_api import register, upload
from tests.support.server import RunningServer

MISSING = "0192b9d0-0000-7000-8000-000000000000"


def _document(server: RunningServer) -> dict[str, Any]:
    with server.http() as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def _schema(document: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    return document["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]  # type: ignore[no-any-return]


def test_the_document_is_valid_openapi(server: RunningServer) -> None:
    document = _document(server)
    validate(document)  # raises on an invalid document
    assert document["openapi"] == "3.1.0"


def test_every_served_route_is_documented(server: RunningServer) -> None:
    paths = _document(server)["paths"]
    served = {(b.path, b.verb.lower()) for b in server.service.bindings()}
    documented = {(path, verb) for path, ops in paths.items() for verb in ops}
    assert served == documented
    for path, verb in served:
        assert "200" in paths[path][verb]["responses"], (verb, path)


def test_audio_upload_and_download_are_bytes_with_ranges(server: RunningServer) -> None:
    document = _document(server)
    put = document["paths"]["/api/v1/recordings/{id}/audio"]["put"]
    assert set(put["requestBody"]["content"]) == {"audio/*", "application/octet-stream"}
    assert put["requestBody"]["content"]["audio/*"]["schema"] == {"type": "string", "format": "binary"}
    query = {p["name"] for p in put["parameters"] if p["in"] == "query"}
    assert {"sha256", "uploadToken"} <= query
    assert "chunk" not in query
    assert {"bearer": []} in put["security"] and {} in put["security"]
    assert {"409", "413", "415"} <= set(put["responses"])

    get = document["paths"]["/api/v1/recordings/{id}/audio"]["get"]
    assert {"200", "206", "416"} <= set(get["responses"])
    for status in ("200", "206"):
        assert set(get["responses"][status]["content"]) == {"audio/*", "application/octet-stream"}
    headers = {p["name"]: p for p in get["parameters"] if p["in"] == "header"}
    assert headers["Range"]["required"] is False


def test_required_fields_and_the_business_header(server: RunningServer) -> None:
    document = _document(server)
    create = document["paths"]["/api/v1/recordings"]["post"]
    body = _schema(document, create["requestBody"]["content"]["application/json"]["schema"])
    assert body["required"] == ["dataId", "callAt", "direction"]
    provider = document["paths"]["/api/v1/providers"]["post"]
    assert set(
        _schema(document, provider["requestBody"]["content"]["application/json"]["schema"])["required"]
    ) == {
        "kind",
        "name",
        "config",
    }
    remove = document["paths"]["/api/v1/collections/{id}/items"]["delete"]
    assert {p["name"]: p["required"] for p in remove["parameters"] if p["in"] == "query"} == {
        "callRecordingId": True
    }
    for path, ops in document["paths"].items():
        for verb, op in ops.items():
            header = [p for p in op.get("parameters", []) if p["name"] == "X-Business-Id"]
            if path == "/api/v1/meta/whoami":
                assert header == [], "whoami takes no X-Business-Id"
            else:
                assert [(p["in"], p["required"]) for p in header] == [("header", False)], (verb, path)


def test_documented_error_codes_are_listed_per_operation(server: RunningServer) -> None:
    paths = _document(server)["paths"]
    get = paths["/api/v1/providers/{id}"]["get"]["responses"]
    # seed 000: provider_not_found 404, provider_kind_not_supported 422.
    assert "`provider_not_found`" in get["404"]["description"]
    assert "`provider_kind_not_supported`" in get["422"]["description"]
    assert (
        "`recording_not_found`" in paths["/api/v1/recordings/{id}"]["get"]["responses"]["404"]["description"]
    )
    assert "`business_required`" in paths["/api/v1/recordings"]["get"]["responses"]["400"]["description"]
    assert (
        "404" not in paths["/api/v1/recordings"]["post"]["responses"]
        or "`business_not_found`" in (paths["/api/v1/recordings"]["post"]["responses"]["404"]["description"])
    )
    assert "403" in paths["/api/v1/meta/whoami"]["get"]["responses"]


def _call(client: httpx.Client, verb: str, path: str, **kwargs: Any) -> int:
    return client.request(verb, path, **kwargs).status_code


def test_every_status_an_operation_answers_is_documented(server: RunningServer) -> None:
    """A small run over every operation: with no key, with a key lacking scopes, with an
    unknown id, with an empty or bad body, and the happy path; every status seen must be
    among the operation's documented responses."""
    tenant = server.new_tenant("OpenAPI")
    weak = server.new_tenant("OpenAPI weak", scopes=(Scope.VIEW_RECORDING_SELF,))
    document = _document(server)
    seen: dict[tuple[str, str], set[int]] = {}
    with server.http(tenant.business_key) as client:
        recording = register(client, dataId="openapi-1")["id"]
        assert upload(client, recording, b"RIFF" + b"\0" * 64).status_code == 200
        ids = {"/api/v1/recordings/": recording}
    clients = {
        "anonymous": server.http(),
        "weak": server.http(weak.business_key),
        "account without business": server.http(tenant.account_key),
        "full": server.http(tenant.business_key),
    }
    try:
        for binding in server.service.bindings():
            verb, template = binding.verb, binding.path
            statuses = seen.setdefault((template, verb.lower()), set())
            for who, client in clients.items():
                for target in {MISSING, *(v for k, v in ids.items() if template.startswith(k))}:
                    path = re.sub(r"\{[a-z_]+\}", target, template)
                    if verb == "DELETE" and who == "full" and target != MISSING:
                        continue  # keep the recording for the other operations
                    kwargs: dict[str, Any] = {}
                    if binding.body == "*":
                        kwargs["json"] = {}
                    elif binding.client_streaming:
                        kwargs = {"content": b"RIFF", "headers": {"Content-Type": "audio/wav"}}
                    statuses.add(_call(client, verb, path, **kwargs))
                    if binding.body == "*" and who == "full":
                        statuses.add(
                            _call(client, verb, path, content=b"{", headers={"Content-Type": "text/x"})
                        )
                        statuses.add(_call(client, verb, path, json={"unknownField": 1}))
                    if path.endswith("/audio") and verb == "GET" and who == "full":
                        statuses.add(_call(client, verb, path, headers={"Range": "bytes=0-3"}))
                        statuses.add(_call(client, verb, path, headers={"Range": "bytes=9999-"}))
    finally:
        for client in clients.values():
            client.close()
    for (path, verb), statuses in sorted(seen.items()):
        documented = {int(s) for s in document["paths"][path][verb]["responses"]}
        assert statuses <= documented, f"{verb.upper()} {path} answered {sorted(statuses - documented)}"
    every = set().union(*seen.values())
    assert {200, 206, 400, 401, 403, 404, 415, 416} <= every  # the run reached past the first checks
