"""Listen links (POST /recordings/{id}/audio-link): an absolute URL that plays one recording's
audio with Range and no API key until it expires; refused with 403 when tampered with,
expired, for another recording or minted by a key since revoked; over REST and gRPC, on
SQLite and PostgreSQL, with real HTTP and gRPC clients."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx
import pytest
from callvault.v1 import recordings_pb2 as pb
from callvault.v1 import recordings_pb2_grpc

from service import cli
from service.auth import Scope
from service.logs import LibraryCap
from service.sealing import create_key_file
from tests.e2e.test_agents import agent_key_for, seed
from tests.e2e.test_recordings_api import register, upload
from tests.support.grpc_errors import error_info
from tests.support.server import RunningServer, Tenant, server_settings

AUDIO_HEADERS = {
    "cache-control": "private",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "accept-ranges": "bytes",
}


def stored(server: RunningServer, tenant: Tenant, data_id: str, audio: bytes) -> str:
    with server.http(tenant.business_key) as client:
        created = register(client, dataId=data_id)
        assert upload(client, created["id"], audio).status_code == 200
    return str(created["id"])


def mint(client: httpx.Client, recording_id: str, **body: Any) -> httpx.Response:
    return client.post(f"/api/v1/recordings/{recording_id}/audio-link", json=body)


def link(client: httpx.Client, recording_id: str, **body: Any) -> dict[str, Any]:
    response = mint(client, recording_id, **body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def play(url: str, **headers: str) -> httpx.Response:
    """A GET as a browser holding only the URL sends it: no Authorization header."""
    with httpx.Client(timeout=30) as anonymous:
        return anonymous.get(url, headers=headers)


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["linkToken"][0]


def refused(response: httpx.Response, code: str) -> bool:
    return (
        response.status_code == 403
        and response.headers["content-type"] == "application/json"
        and response.json()["error"] == code
    )


def test_a_link_plays_and_seeks_without_a_key(server: RunningServer) -> None:
    tenant = server.new_tenant()
    audio = os.urandom(300_000)
    recording = stored(server, tenant, "listen-1", audio)
    with server.http(tenant.business_key) as client:
        before = datetime.now(UTC)
        answer = link(client, recording)
        keyed = client.get(f"/api/v1/recordings/{recording}/audio", headers={"Range": "bytes=10-19"})
    assert set(answer) == {"url", "expiresAt", "token"}
    assert (
        answer["url"] == f"{server.http_base}/api/v1/recordings/{recording}/audio?linkToken={answer['token']}"
    )
    expires = datetime.fromisoformat(answer["expiresAt"].replace("Z", "+00:00"))
    assert before + timedelta(seconds=599) <= expires <= datetime.now(UTC) + timedelta(seconds=602)

    whole = play(answer["url"])
    assert whole.status_code == 200 and whole.content == audio
    assert whole.headers["content-type"] == "audio/wav"
    assert whole.headers["content-length"] == str(len(audio))
    assert whole.headers["etag"] == f'"{hashlib.sha256(audio).hexdigest()}"'
    for name, value in AUDIO_HEADERS.items():
        assert whole.headers[name] == value, name
        assert keyed.headers[name] == value, name  # the keyed download's own policy
    assert "location" not in whole.headers  # streamed by callvault, never a redirect

    # An <audio> element seeks with ranges: 206 with Content-Range, as the keyed download.
    for header, start, end in (
        ("bytes=0-99", 0, 100),
        ("bytes=250000-", 250_000, len(audio)),
        ("bytes=-5", len(audio) - 5, len(audio)),
    ):
        part = play(answer["url"], Range=header)
        assert part.status_code == 206, (header, part.text)
        assert part.content == audio[start:end]
        assert part.headers["content-range"] == f"bytes {start}-{end - 1}/{len(audio)}"
        assert part.headers["content-length"] == str(end - start)
        assert part.headers["referrer-policy"] == "no-referrer"
    beyond = play(answer["url"], Range=f"bytes={len(audio)}-")
    assert beyond.status_code == 416 and beyond.json()["error"] == "range_not_satisfiable"
    assert beyond.headers["content-range"] == f"bytes */{len(audio)}"
    assert keyed.status_code == 206 and keyed.content == audio[10:20]

    with httpx.Client(base_url=server.http_base) as anonymous:  # the token admits the audio only
        query = {"linkToken": answer["token"]}
        for method, path in (
            ("GET", f"/api/v1/recordings/{recording}"),
            ("DELETE", f"/api/v1/recordings/{recording}"),
            ("POST", f"/api/v1/recordings/{recording}/audio-link"),
        ):
            other = anonymous.request(method, path, params=query)
            assert other.status_code in (400, 401), (method, path, other.text)
        upload = anonymous.put(f"/api/v1/recordings/{recording}/audio", params=query, content=b"RIFF")
        assert upload.status_code in (400, 401), upload.text
    assert play(answer["url"]).content == audio  # nothing changed


def test_a_link_works_over_grpc_with_no_key(server: RunningServer) -> None:
    tenant = server.new_tenant()
    audio = os.urandom(100_000)
    recording = stored(server, tenant, "listen-grpc", audio)
    auth = [("authorization", f"Bearer {tenant.business_key}")]
    with server.channel() as channel:
        stub = recordings_pb2_grpc.RecordingServiceStub(channel)
        answer = stub.CreateAudioLink(
            pb.CreateAudioLinkRequest(id=recording, expires_in_seconds=120), metadata=auth
        )
        assert answer.url.endswith(f"/api/v1/recordings/{recording}/audio?linkToken={answer.token}")
        assert 100 <= answer.expires_at.seconds - time.time() <= 122
        chunks = stub.DownloadRecording(
            pb.DownloadRecordingRequest(id=recording, link_token=answer.token, offset=1000, length=500)
        )
        assert b"".join(c.data for c in chunks) == audio[1000:1500]
        with pytest.raises(grpc.RpcError) as bad:
            list(
                stub.DownloadRecording(
                    pb.DownloadRecordingRequest(id=recording, link_token=answer.token[:-3])
                )
            )
        assert bad.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_info(bad.value).reason == "link_invalid"
        with pytest.raises(grpc.RpcError) as long:
            stub.CreateAudioLink(
                pb.CreateAudioLinkRequest(id=recording, expires_in_seconds=3601), metadata=auth
            )
        assert long.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(long.value).metadata["field"] == "expiresInSeconds"


def test_expiry_is_asked_within_bounds(server: RunningServer) -> None:
    tenant = server.new_tenant()
    recording = stored(server, tenant, "listen-bounds", b"RIFF" * 10)
    with server.http(tenant.business_key) as client:
        hour = link(client, recording, expiresInSeconds=3600)
        expires = datetime.fromisoformat(hour["expiresAt"].replace("Z", "+00:00"))
        assert timedelta(seconds=3590) < expires - datetime.now(UTC) <= timedelta(seconds=3601)
        for bad in (3601, 0, -1, 100_000):
            answer = mint(client, recording, expiresInSeconds=bad)
            assert answer.status_code == 400, answer.text
            assert answer.json() == {
                "error": "invalid_argument",
                "message": "expiresInSeconds: must be between 1 and 3600 seconds",
            }
        pending = register(client, dataId="listen-pending")["id"]
        not_stored = mint(client, pending)
        assert not_stored.status_code == 409 and not_stored.json()["error"] == "recording_audio_not_stored"


def test_an_expired_link_is_refused(server: RunningServer) -> None:
    tenant = server.new_tenant()
    recording = stored(server, tenant, "listen-expiry", b"RIFF" * 100)
    with server.http(tenant.business_key) as client:
        answer = link(client, recording, expiresInSeconds=1)
    assert play(answer["url"]).status_code == 200
    expires = datetime.fromisoformat(answer["expiresAt"].replace("Z", "+00:00"))
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.05)  # at most 2 s
    gone = play(answer["url"])
    assert refused(gone, "link_expired"), gone.text
    assert gone.json()["message"] == "this listen link has expired; ask for a new one"
    assert refused(play(answer["url"], Range="bytes=0-1"), "link_expired")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_a_tampered_link_is_refused_and_says_nothing_of_the_recording(server: RunningServer) -> None:
    tenant = server.new_tenant()
    recording = stored(server, tenant, "listen-tamper", b"RIFF" * 100)
    with server.http(tenant.business_key) as client:
        token = link(client, recording)["token"]
    encoded, mac = token.split(".")
    fields = _unb64(encoded).decode().split(".")
    base = f"{server.http_base}/api/v1/recordings/{recording}/audio?linkToken="
    forged = []
    for index in range(len(fields)):  # version, master key, expiry, business, recording, key
        changed = list(fields)
        changed[index] = "9" + changed[index][1:] if changed[index][0] != "9" else "8" + changed[index][1:]
        forged.append(f"{_b64('.'.join(changed).encode())}.{mac}")
    forged += [f"{encoded}.{mac[:-2]}", token[:-10], encoded, "not-a-token", "x" * 1000]
    for bad in forged:
        answer = play(base + bad)
        assert refused(answer, "link_invalid"), (bad, answer.text)
        assert answer.json()["message"] == "this listen link is not valid for this recording"
    missing = "0192b9d0-0000-7000-8000-000000000000"
    unknown = play(f"{server.http_base}/api/v1/recordings/{missing}/audio?linkToken=x.y")
    assert unknown.status_code == 403 and unknown.json() == play(base + "x.y").json()


def test_a_link_for_one_recording_fetches_no_other(server: RunningServer) -> None:
    tenant, other = server.new_tenant("Mine"), server.new_tenant("Theirs")
    mine = stored(server, tenant, "listen-a", b"A" * 64)
    second = stored(server, tenant, "listen-b", b"B" * 64)
    theirs = stored(server, other, "listen-c", b"C" * 64)
    with server.http(tenant.business_key) as client:
        token = link(client, mine)["token"]
        # Another business's recording does not exist for this key: no link to it.
        foreign = mint(client, theirs)
        assert foreign.status_code == 404 and foreign.json()["error"] == "recording_not_found"
    for target in (second, theirs):
        answer = play(f"{server.http_base}/api/v1/recordings/{target}/audio?linkToken={token}")
        assert refused(answer, "link_invalid"), answer.text
    assert play(f"{server.http_base}/api/v1/recordings/{mine}/audio?linkToken={token}").content == b"A" * 64


def test_an_account_key_links_in_the_business_it_names(server: RunningServer) -> None:
    tenant = server.new_tenant()
    recording = stored(server, tenant, "listen-account", b"RIFF" * 8)
    with server.http(tenant.account_key) as client:
        assert mint(client, recording).json()["error"] == "business_required"
    with server.http(tenant.account_key, tenant.business_id) as client:
        answer = link(client, recording)
    assert play(answer["url"]).content == b"RIFF" * 8


def test_linking_needs_the_scopes_of_a_download(server: RunningServer) -> None:
    calls = seed(server, "LinkAgents")
    alice = calls.ids["alice-1"]
    bob = calls.ids["bob-1"]
    own = agent_key_for(server, calls, "1001")
    with server.http(own) as client:
        answer = link(client, alice)  # its own agent's recording
        assert play(answer["url"]).content == b"RIFF-alice-1"
        hidden = mint(client, bob)  # another agent's: not found, as a download
        assert hidden.status_code == 404 and hidden.json()["error"] == "recording_not_found"
    writer = server.call(
        server.admin().create_key(
            account_id=calls.tenant.account_id,
            business_id=calls.tenant.business_id,
            scopes=(Scope.MANAGE_CALL_RECORDING,),
        )
    ).plaintext
    with server.http(writer) as client:
        denied = mint(client, alice)
        assert denied.status_code == 403 and denied.json()["error"] == "insufficient_scope"
    with server.http() as anonymous:
        assert mint(anonymous, alice).status_code == 401


def test_a_revoked_minting_key_stops_its_links(server: RunningServer) -> None:
    tenant = server.new_tenant()
    recording = stored(server, tenant, "listen-revoke", b"RIFF" * 16)
    created = server.call(
        server.admin().create_key(
            account_id=tenant.account_id, business_id=tenant.business_id, scopes=(Scope.VIEW_RECORDING_ALL,)
        )
    )
    with server.http(created.plaintext) as client:
        answer = link(client, recording)
    with server.http(tenant.business_key) as client:
        kept = link(client, recording)
    assert play(answer["url"]).status_code == 200
    server.call(server.admin().revoke_key(created.id))
    gone = play(answer["url"])
    assert refused(gone, "link_invalid"), gone.text
    assert play(kept["url"]).status_code == 200  # another key's links are untouched


def test_a_deleted_recordings_link_is_not_found(server: RunningServer) -> None:
    tenant = server.new_tenant()
    recording = stored(server, tenant, "listen-deleted", b"RIFF" * 16)
    with server.http(tenant.business_key) as client:
        answer = link(client, recording)
        assert client.delete(f"/api/v1/recordings/{recording}").status_code == 200
    gone = play(answer["url"])
    assert gone.status_code == 404 and gone.json()["error"] == "recording_not_found"


def test_a_links_token_stays_out_of_every_log_line(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Minting and playing a link: no line callvault writes (its own records, and libraries'
    from WARNING up: service.logs.LibraryCap) holds the token."""
    tenant = server.new_tenant()
    recording = stored(server, tenant, "listen-logged", b"RIFF" * 16)
    with server.http(tenant.business_key) as client, caplog.at_level("INFO"):
        answer = link(client, recording)
        assert play(answer["url"], Range="bytes=0-3").status_code == 206
        assert play(answer["url"]).status_code == 200
    written = [r for r in caplog.records if LibraryCap().filter(r)]
    assert any(r.name.startswith("callvault") for r in written)  # the call lines were captured
    assert all(
        answer["token"] not in r.getMessage() and answer["token"] not in str(r.__dict__) for r in written
    )


@pytest.fixture(params=["sqlite", "postgres"])
def short_links(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    """A server whose links live 2 s by default and at most 5 s, on a configured public URL,
    and whose keys may make 8 requests a minute."""
    url = request.getfixturevalue("database_url_factory")(request.param)
    settings = replace(
        server_settings(tmp_path, url),
        audio_link_ttl_seconds=2,
        audio_link_max_seconds=5,
        public_base_url="https://calls.example.test/base",
        rate_limit_per_minute=8,
    )
    running = RunningServer(settings).start()
    yield running
    running.stop()


def test_settings_give_the_default_and_the_most(short_links: RunningServer) -> None:
    tenant = short_links.new_tenant()
    recording = stored(short_links, tenant, "listen-settings", b"RIFF" * 4)
    with short_links.http(tenant.business_key) as client:
        answer = link(client, recording)
        assert answer["url"].startswith(
            f"https://calls.example.test/base/api/v1/recordings/{recording}/audio?"
        )
        expires = datetime.fromisoformat(answer["expiresAt"].replace("Z", "+00:00"))
        assert expires - datetime.now(UTC) <= timedelta(seconds=3)
        too_long = mint(client, recording, expiresInSeconds=6)
        assert too_long.status_code == 400
        assert too_long.json()["message"] == "expiresInSeconds: must be between 1 and 5 seconds"
    local = short_links.http_base + answer["url"].removeprefix("https://calls.example.test/base")
    assert play(local).content == b"RIFF" * 4


def test_each_use_of_a_link_counts_against_its_minting_keys_rate_limit(short_links: RunningServer) -> None:
    tenant = short_links.new_tenant()
    recording = stored(short_links, tenant, "listen-limited", b"RIFF" * 4)  # 2 requests
    with short_links.http(tenant.business_key) as client:
        url = link(client, recording)["url"]  # 3
        local = short_links.http_base + url.removeprefix("https://calls.example.test/base")
        answers = [play(local) for _ in range(7)]
        codes = [a.status_code for a in answers]
        assert 200 in codes and codes[-1] == 429, codes  # 5 more, then the key's budget is spent
        assert answers[-1].json()["error"] == "rate_limited" and "Retry-After" in answers[-1].headers
        assert client.get(f"/api/v1/recordings/{recording}").status_code == 429  # the key itself too


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_links_survive_a_rotation_until_the_old_key_is_retired(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    url = request.getfixturevalue("database_url_factory")(backend)
    key_file = tmp_path / "master-keys.json"
    create_key_file(key_file)
    settings = replace(server_settings(tmp_path, url), key_file=key_file, key_reload_seconds=0.1)
    running = RunningServer(settings, follow_key_file=True).start()
    try:
        tenant = running.new_tenant()
        recording = stored(running, tenant, "listen-rotate", b"RIFF" * 32)
        with running.http(tenant.business_key) as client:
            before = link(client, recording)
            monkeypatch.setenv("CALLVAULT_KEY_FILE", str(key_file))
            monkeypatch.setenv("CALLVAULT_DATABASE_URL", url)
            cli.main(["master-keys", "add"])
            deadline = time.monotonic() + 10
            while running.service.keyring.primary_id != 2:
                assert time.monotonic() < deadline, "the server did not take the new key file"
                time.sleep(0.05)
            after = link(client, recording)
            assert _unb64(after["token"].split(".")[0]).decode().split(".")[1] == "2"
            for answer in (before, after):
                assert play(answer["url"]).content == b"RIFF" * 32
            cli.main(["master-keys", "reseal", "--wait", "10"])  # the recording's data key, too
            cli.main(["master-keys", "retire", "1"])
            while running.service.keyring.ids != (2,):
                assert time.monotonic() < deadline + 10, "the server did not drop key 1"
                time.sleep(0.05)
            assert refused(play(before["url"]), "link_invalid")
            assert play(after["url"]).content == b"RIFF" * 32
    finally:
        running.stop()


def test_the_document_describes_minting_and_playing(server: RunningServer) -> None:
    with server.http() as client:
        document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    mint_op = document["paths"]["/api/v1/recordings/{id}/audio-link"]["post"]
    assert mint_op["operationId"] == "CreateAudioLink"
    body = schemas[mint_op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert set(body["properties"]) == {"id", "expiresInSeconds"}
    answer = mint_op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(schemas[answer]["properties"]) == {"url", "expiresAt", "token"}
    assert {"400", "401", "403", "404", "409"} <= set(mint_op["responses"])
    assert "security" not in mint_op  # the document's default: a key

    play_op = document["paths"]["/api/v1/recordings/{id}/audio"]["get"]
    assert {"bearer": []} in play_op["security"] and {} in play_op["security"]  # the link needs no key
    query = {p["name"] for p in play_op["parameters"] if p["in"] == "query"}
    assert "linkToken" in query
    assert {"200", "206", "416"} <= set(play_op["responses"])
    for code in ("link_invalid", "link_expired"):
        assert f"`{code}`" in play_op["responses"]["403"]["description"]
