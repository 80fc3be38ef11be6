"""Presigned upload URLs (POST /recordings with audioPresignedUploadUrl): an absolute URL
that takes one recording's audio, once, without an API key, until it expires; over REST
and gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
from sqlmodel import col, select

from service import cli
from service.sealing import create_key_file
from service.storage.models import UploadUrlClaim
from tests.support.grpc_errors import error_info
from tests.support.server import RunningServer, server_settings

CALL = {"callAt": "2026-05-20T08:14:00+07:00", "direction": "in"}


def presign(client: httpx.Client, data_id: str, **fields: Any) -> dict[str, Any]:
    body = {"dataId": data_id, **CALL, "audioPresignedUploadUrl": True, **fields}
    response = client.post("/api/v1/recordings", json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def put(url: str, audio: bytes, **params: str) -> httpx.Response:
    """A PUT as a client holding only the URL would send it: no Authorization header."""
    extra = "".join(f"&{name}={value}" for name, value in params.items())
    with httpx.Client(timeout=30) as anonymous:
        return anonymous.put(url + extra, content=audio, headers={"Content-Type": "audio/wav"})


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["uploadToken"][0]


def with_token(url: str, token: str) -> str:
    return url.split("?", 1)[0] + "?uploadToken=" + token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def payload_fields(token: str) -> list[str]:
    return _unb64(token.split(".")[0]).decode().split(".")


def status_of(client: httpx.Client, recording_id: str) -> str:
    return str(client.get(f"/api/v1/recordings/{recording_id}").json()["processingStatus"])


def wait_for_claim(server: RunningServer, recording_id: str) -> None:
    """Until a PUT in progress has claimed the recording's upload URL."""

    async def claimed() -> bool:
        async with server.service.db.session() as session:
            query = select(UploadUrlClaim).where(col(UploadUrlClaim.recording_id) == recording_id)
            return (await session.exec(query)).first() is not None

    deadline = time.monotonic() + 10
    while not server.call(claimed()):
        assert time.monotonic() < deadline, "the PUT never claimed the URL"
        time.sleep(0.02)


def refused(response: httpx.Response, code: str) -> bool:
    return response.status_code == 403 and response.json()["error"] == code


def test_presigned_url_takes_the_audio_once_without_a_key(server: RunningServer) -> None:
    tenant = server.new_tenant()
    audio = os.urandom(300_000)
    digest = hashlib.sha256(audio).hexdigest()
    with server.http(tenant.business_key) as client:
        before = datetime.now(UTC)
        created = presign(client, "presigned-1")
        url = created["uploadUrl"]
        assert url.startswith(f"{server.http_base}/api/v1/recordings/{created['id']}/audio?uploadToken=")
        expires = datetime.fromisoformat(created["uploadUrlExpiresAt"].replace("Z", "+00:00"))
        assert before + timedelta(seconds=899) <= expires <= datetime.now(UTC) + timedelta(seconds=901)
        assert created["uploadToken"] == token_of(url)

        stored = put(url, audio, sha256=digest)
        assert stored.status_code == 200, stored.text
        assert stored.json()["processingStatus"] == "completed" and stored.json()["sha256"] == digest
        assert "customerPhone" not in stored.json() or stored.json()["customerPhone"] == ""  # a receipt
        download = client.get(f"/api/v1/recordings/{created['id']}/audio")
        assert download.status_code == 200 and download.content == audio

        with httpx.Client(base_url=server.http_base) as anonymous:  # only the upload takes a token
            query = {"uploadToken": created["uploadToken"]}
            for method, path in (
                ("GET", f"/api/v1/recordings/{created['id']}/audio"),
                ("GET", f"/api/v1/recordings/{created['id']}"),
                ("DELETE", f"/api/v1/recordings/{created['id']}"),
            ):
                other = anonymous.request(method, path, params=query)
                assert other.status_code in (400, 401), (method, path, other.text)  # unknown, or no key
        assert client.get(f"/api/v1/recordings/{created['id']}").status_code == 200  # not deleted
        again = put(url, os.urandom(1000))
        assert refused(again, "upload_url_used"), again.text
        assert client.get(f"/api/v1/recordings/{created['id']}/audio").content == audio  # unchanged


def test_without_the_flag_the_answer_and_the_keyed_upload_are_as_before(server: RunningServer) -> None:
    tenant = server.new_tenant()
    audio = os.urandom(5000)
    with server.http(tenant.business_key) as client:
        plain = client.post("/api/v1/recordings", json={"dataId": "plain-1", **CALL}).json()
        assert set(plain) == {"id", "uploadUrl", "created", "processingStatus"}
        assert plain["uploadUrl"] == f"/api/v1/recordings/{plain['id']}/audio"
        stored = client.put(plain["uploadUrl"], content=audio, headers={"Content-Type": "audio/wav"})
        assert stored.status_code == 200 and stored.json()["sha256"] == hashlib.sha256(audio).hexdigest()
        assert client.get(plain["uploadUrl"]).content == audio
    with httpx.Client(base_url=server.http_base) as anonymous:
        no_key = anonymous.put(plain["uploadUrl"], content=audio)
        assert no_key.status_code == 401 and no_key.json()["error"] == "unauthenticated"


def _tampered(token: str) -> Iterator[tuple[str, str]]:
    encoded, mac = token.split(".")
    fields = payload_fields(token)
    changes = {
        0: "v2",
        1: str(int(fields[1]) + 1),
        2: str(int(fields[2]) + 3600),
        3: ("A" if fields[3][0] != "A" else "B") + fields[3][1:],
        4: fields[4][:-1] + ("0" if fields[4][-1] != "0" else "1"),
        5: fields[5][:-1] + ("0" if fields[5][-1] != "0" else "1"),
    }
    for index, value in changes.items():
        changed = [*fields]
        changed[index] = value
        yield f"payload field {index}", f"{_b64('.'.join(changed).encode())}.{mac}"
    raw = bytearray(_unb64(mac))
    raw[0] ^= 1
    yield "mac", f"{encoded}.{_b64(bytes(raw))}"
    yield "no mac", encoded
    yield "truncated", token[:-4]
    yield "garbage", "not-a-token"
    yield "extra part", token + ".x"


def test_a_tampered_token_is_refused_and_changes_nothing(server: RunningServer) -> None:
    tenant = server.new_tenant()
    audio = os.urandom(2000)
    with server.http(tenant.business_key) as client:
        created = presign(client, "tampered-1")
        url, token = created["uploadUrl"], created["uploadToken"]
        for what, bad in _tampered(token):
            answer = put(with_token(url, bad), audio)
            assert refused(answer, "upload_url_invalid"), (what, answer.text)
            assert "key" not in answer.json()["message"] and "mac" not in answer.json()["message"].lower()
        assert status_of(client, created["id"]) == "pending"
        assert put(url, audio).status_code == 200  # the real one was not spent by the attempts


def test_a_token_for_another_recording_is_refused(server: RunningServer) -> None:
    tenant = server.new_tenant()
    other_tenant = server.new_tenant("Other")
    audio = os.urandom(2000)
    with server.http(tenant.business_key) as client, server.http(other_tenant.business_key) as other:
        first, second = presign(client, "mine-1"), presign(client, "mine-2")
        foreign = presign(other, "theirs-1")
        # A's token on B's path (same business), and on another business's recording.
        for target in (second["id"], foreign["id"]):
            answer = put(
                f"{server.http_base}/api/v1/recordings/{target}/audio?uploadToken={first['uploadToken']}",
                audio,
            )
            assert refused(answer, "upload_url_invalid"), answer.text
        assert status_of(client, second["id"]) == "pending"
        assert status_of(other, foreign["id"]) == "pending"
        assert put(first["uploadUrl"], audio).status_code == 200


def test_a_failed_upload_does_not_spend_the_url(server: RunningServer) -> None:
    tenant = server.new_tenant()
    audio = os.urandom(4000)
    with server.http(tenant.business_key) as client:
        created = presign(client, "retry-1")
        wrong = put(created["uploadUrl"], audio, sha256="0" * 64)
        assert wrong.status_code == 400 and wrong.json()["error"] == "audio_rejected"
        empty = put(created["uploadUrl"], b"")
        assert empty.status_code == 400 and empty.json()["error"] == "audio_rejected"
        assert status_of(client, created["id"]) == "pending"
        right = put(created["uploadUrl"], audio, sha256=hashlib.sha256(audio).hexdigest())
        assert right.status_code == 200, right.text
        assert client.get(f"/api/v1/recordings/{created['id']}/audio").content == audio


def test_a_put_in_progress_holds_the_url(server: RunningServer) -> None:
    """While one PUT streams, another with the same URL is refused; the first completes."""
    tenant = server.new_tenant()
    audio = os.urandom(200_000)
    release = threading.Event()
    started = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield audio[:100_000]
        started.set()
        assert release.wait(20)
        yield audio[100_000:]

    with server.http(tenant.business_key) as client:
        created = presign(client, "held-1")
        with ThreadPoolExecutor(1) as pool, httpx.Client(timeout=30) as anonymous:
            first = pool.submit(anonymous.put, created["uploadUrl"], content=slow_body())
            assert started.wait(10)
            wait_for_claim(server, created["id"])
            second = put(created["uploadUrl"], os.urandom(100))
            release.set()
            assert refused(second, "upload_url_used"), second.text
            assert first.result(30).status_code == 200
        assert client.get(f"/api/v1/recordings/{created['id']}/audio").content == audio


def test_racing_puts_with_one_url_store_exactly_once(server: RunningServer) -> None:
    tenant = server.new_tenant()
    bodies = [os.urandom(50_000) for _ in range(6)]
    with server.http(tenant.business_key) as client:
        created = presign(client, "race-1")
        barrier = threading.Barrier(len(bodies))

        def attempt(body: bytes) -> httpx.Response:
            barrier.wait(10)
            return put(created["uploadUrl"], body)

        with ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(attempt, bodies))
        codes = sorted(a.status_code for a in answers)
        assert codes == [200] + [403] * (len(bodies) - 1), [a.text for a in answers]
        assert all(refused(a, "upload_url_used") for a in answers if a.status_code == 403)
        winner = next(body for body, a in zip(bodies, answers, strict=True) if a.status_code == 200)
        assert client.get(f"/api/v1/recordings/{created['id']}/audio").content == winner


def test_grpc_upload_takes_the_token_in_place_of_a_key(server: RunningServer) -> None:
    tenant = server.new_tenant()
    audio = os.urandom(150_000)
    key = (("authorization", f"Bearer {tenant.business_key}"),)
    with server.channel() as channel:
        stub = recordings_pb2_grpc.RecordingServiceStub(channel)
        created = stub.CreateRecording(
            pb.CreateRecordingRequest(
                data_id="grpc-presigned-1",
                call_at=CALL["callAt"],
                direction="in",
                audio_presigned_upload_url=True,
            ),
            metadata=key,
        )
        assert created.upload_url.startswith(server.http_base) and created.HasField("upload_url_expires_at")
        assert token_of(created.upload_url) == created.upload_token

        def messages(token: str, body: bytes) -> Iterator[pb.UploadRecordingAudioRequest]:
            yield pb.UploadRecordingAudioRequest(
                id=created.id, upload_token=token, sha256=hashlib.sha256(body).hexdigest()
            )
            for i in range(0, len(body), 64 * 1024):
                yield pb.UploadRecordingAudioRequest(chunk=body[i : i + 64 * 1024])

        with pytest.raises(grpc.RpcError) as bad:
            stub.UploadRecordingAudio(messages(created.upload_token[:-3] + "AAA", audio))
        assert bad.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_info(bad.value).reason == "upload_url_invalid"

        stored = stub.UploadRecordingAudio(messages(created.upload_token, audio))  # no metadata at all
        assert stored.processing_status == "completed" and stored.sha256 == hashlib.sha256(audio).hexdigest()
        chunks = stub.DownloadRecording(pb.DownloadRecordingRequest(id=created.id), metadata=key)
        assert b"".join(c.data for c in chunks) == audio

        with pytest.raises(grpc.RpcError) as used:
            stub.UploadRecordingAudio(messages(created.upload_token, b"other"))
        assert used.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_info(used.value).reason == "upload_url_used"

        with pytest.raises(grpc.RpcError) as nothing:
            stub.UploadRecordingAudio(iter([pb.UploadRecordingAudioRequest(id=created.id, chunk=b"x")]))
        assert nothing.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(params=["sqlite", "postgres"])
def short_lived(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    """A server whose upload URLs live 1 s and whose limit is 5 requests a minute, with a
    configured public base URL."""
    url = request.getfixturevalue("database_url_factory")(request.param)
    settings = server_settings(tmp_path, url)
    settings = replace(
        settings,
        upload_url_ttl_seconds=1,
        rate_limit_per_minute=5,
        public_base_url="https://calls.example.test/base",
    )
    running = RunningServer(settings).start()
    yield running
    running.stop()


def test_an_expired_url_is_refused_and_changes_nothing(short_lived: RunningServer) -> None:
    tenant = short_lived.new_tenant()
    with short_lived.http(tenant.business_key) as client:
        created = presign(client, "expired-1")
    # The configured public base URL, not the listener; the path after it as usual.
    assert created["uploadUrl"].startswith(
        f"https://calls.example.test/base/api/v1/recordings/{created['id']}/audio?"
    )
    local = short_lived.http_base + created["uploadUrl"].removeprefix("https://calls.example.test/base")
    time.sleep(1.2)
    answer = put(local, os.urandom(100))
    assert refused(answer, "upload_url_expired"), answer.text
    with short_lived.http(tenant.business_key) as client:
        assert status_of(client, created["id"]) == "pending"


def test_signed_uploads_are_rate_limited_per_recording(short_lived: RunningServer) -> None:
    tenant = short_lived.new_tenant()
    with short_lived.http(tenant.business_key) as client:
        created = presign(client, "limited-1")
    local = f"{short_lived.http_base}/api/v1/recordings/{created['id']}/audio?uploadToken=forged"
    answers = [put(local, b"x") for _ in range(6)]
    assert [a.status_code for a in answers] == [403] * 5 + [429]
    assert answers[-1].json()["error"] == "rate_limited" and "Retry-After" in answers[-1].headers


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_url_minted_before_a_key_rotation_still_works(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """`master-keys add` makes a new primary; a link signed with the old one verifies while
    that key is in the ring (not after `retire`), and new links name the new key."""
    url = request.getfixturevalue("database_url_factory")(backend)
    key_file = tmp_path / "master-keys.json"
    create_key_file(key_file)
    settings = replace(server_settings(tmp_path, url), key_file=key_file, key_reload_seconds=0.1)
    running = RunningServer(settings, follow_key_file=True).start()
    try:
        tenant = running.new_tenant()
        with running.http(tenant.business_key) as client:
            before, kept = presign(client, "rotate-1"), presign(client, "rotate-3")
            assert payload_fields(before["uploadToken"])[1] == "1"
            monkeypatch.setenv("CALLVAULT_KEY_FILE", str(key_file))
            monkeypatch.setenv("CALLVAULT_DATABASE_URL", url)
            cli.main(["master-keys", "add"])
            deadline = time.monotonic() + 10
            while running.service.keyring.primary_id != 2:
                assert time.monotonic() < deadline, "the server did not take the new key file"
                time.sleep(0.05)
            after = presign(client, "rotate-2")
            assert payload_fields(after["uploadToken"])[1] == "2"
            for created in (before, after):
                audio = os.urandom(3000)
                stored = put(created["uploadUrl"], audio)
                assert stored.status_code == 200, stored.text
                assert client.get(f"/api/v1/recordings/{created['id']}/audio").content == audio
            cli.main(["master-keys", "retire", "1"])  # once retired, its links are refused
            while running.service.keyring.ids != (2,):
                assert time.monotonic() < deadline + 10, "the server did not drop key 1"
                time.sleep(0.05)
            gone = put(kept["uploadUrl"], os.urandom(100))
            assert refused(gone, "upload_url_invalid"), gone.text
            assert status_of(client, kept["id"]) == "pending"
    finally:
        running.stop()


def test_a_client_that_goes_away_mid_body_does_not_spend_the_url(server: RunningServer) -> None:
    tenant = server.new_tenant()
    audio = os.urandom(10_000)
    with server.http(tenant.business_key) as client:
        created = presign(client, "gone-1")
        parts = urlsplit(created["uploadUrl"])
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as raw:
            raw.sendall(
                f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Content-Type: audio/wav\r\nContent-Length: 1000000\r\n\r\n".encode()
                + os.urandom(50_000)
            )
            wait_for_claim(server, created["id"])
        deadline = time.monotonic() + 10
        while True:
            answer = put(created["uploadUrl"], audio)
            if answer.status_code == 200 or time.monotonic() > deadline:
                break
            assert refused(answer, "upload_url_used"), answer.text
            time.sleep(0.1)  # the server has not noticed the disconnect yet
        assert answer.status_code == 200, answer.text
        assert client.get(f"/api/v1/recordings/{created['id']}/audio").content == audio
