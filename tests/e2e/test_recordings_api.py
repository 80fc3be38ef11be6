"""Recordings over REST and gRPC: register, upload (streamed), list, filter, sort, page,
download with Range, delete; scopes and businesses."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import pytest
from callvault.v1 import recordings_pb2 as pb
from callvault.v1 import recordings_pb2_grpc

from service.auth import Scope
from tests.support.grpc_errors import error_info
from tests.support.sealed import sealed_blob
from tests.support.server import RunningServer, Tenant


def register(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"dataId": "call-1", "callAt": "2026-05-20T08:14:00+07:00", "direction": "in", **fields}
    response = client.post("/api/v1/recordings", json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def upload(
    client: httpx.Client, recording_id: str, audio: bytes, content_type: str = "audio/wav"
) -> httpx.Response:
    def pieces() -> Iterator[bytes]:
        for i in range(0, len(audio), 64 * 1024):
            yield audio[i : i + 64 * 1024]

    return client.put(
        f"/api/v1/recordings/{recording_id}/audio", content=pieces(), headers={"Content-Type": content_type}
    )


def test_register_upload_download_with_range(server: RunningServer) -> None:
    tenant = server.new_tenant()
    audio = os.urandom(300_000)
    with server.http(tenant.business_key) as client:
        created = register(client, customerPhone="081-234-5678", tag="normal", score=87.5, note="VIP")
        assert created["created"] is True and created["processingStatus"] == "pending"
        assert created["uploadUrl"] == f"/api/v1/recordings/{created['id']}/audio"
        again = register(client, customerPhone="other")
        assert (again["id"], again["created"]) == (created["id"], False)  # idempotent on dataId

        not_yet = client.get(f"/api/v1/recordings/{created['id']}/audio")
        assert not_yet.status_code == 409 and not_yet.json()["error"] == "recording_audio_not_stored"

        stored = upload(client, created["id"], audio)
        assert stored.status_code == 200, stored.text
        item = stored.json()
        assert item["processingStatus"] == "completed" and item["sha256"] == hashlib.sha256(audio).hexdigest()
        assert item["size"] == len(audio)  # a JSON number, as the mirrored API writes it
        assert item["callAt"] == "2026-05-20T08:14:00+07:00"
        assert item["customerPhoneNormalized"] == "+66812345678"
        assert item["audioUrl"] == created["uploadUrl"]

        whole = client.get(item["audioUrl"])
        assert whole.status_code == 200 and whole.content == audio
        assert whole.headers["content-type"] == "audio/wav"
        assert whole.headers["content-length"] == str(len(audio))
        assert whole.headers["etag"] == f'"{item["sha256"]}"'
        assert whole.headers["accept-ranges"] == "bytes"

        for header, start, end in (
            ("bytes=0-99", 0, 100),
            ("bytes=1000-", 1000, len(audio)),
            ("bytes=-500", len(audio) - 500, len(audio)),
            ("bytes=299999-999999", 299_999, 300_000),
        ):
            part = client.get(item["audioUrl"], headers={"Range": header})
            assert part.status_code == 206, header
            assert part.content == audio[start:end]
            assert part.headers["content-range"] == f"bytes {start}-{end - 1}/{len(audio)}"
            assert part.headers["content-length"] == str(end - start)
        beyond = client.get(item["audioUrl"], headers={"Range": f"bytes={len(audio)}-"})
        assert beyond.status_code == 416 and beyond.json()["error"] == "range_not_satisfiable"
        ignored = client.get(item["audioUrl"], headers={"Range": "lines=1-2"})
        assert ignored.status_code == 200 and len(ignored.content) == len(audio)


def test_upload_rejects_bad_audio_and_keeps_nothing(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        rec = register(client)
        wrong = client.put(
            f"/api/v1/recordings/{rec['id']}/audio",
            params={"sha256": "0" * 64},
            content=b"abc",
            headers={"Content-Type": "audio/wav"},
        )
        assert wrong.status_code == 400 and wrong.json()["error"] == "audio_rejected"
        empty = client.put(f"/api/v1/recordings/{rec['id']}/audio", content=b"")
        assert empty.status_code == 400 and empty.json()["error"] == "audio_rejected"
        assert client.get(f"/api/v1/recordings/{rec['id']}").json()["processingStatus"] == "pending"
        missing = client.put("/api/v1/recordings/nope/audio", content=b"abc")
        assert missing.status_code == 404 and missing.json()["error"] == "recording_not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"dataId": ""}, "dataId"),
        ({"direction": "sideways"}, "direction"),
        ({"callAt": "yesterday"}, "callAt"),
        ({"tag": "great"}, "tag"),
        ({"score": 101}, "score"),
        ({"contentType": "wav"}, "contentType"),
    ],
)
def test_register_validation(server: RunningServer, body: dict[str, Any], field: str) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        full = {"dataId": "d1", "callAt": "2026-05-20T08:14:00+07:00", "direction": "in", **body}
        response = client.post("/api/v1/recordings", json=full)
        assert response.status_code == 400
        assert response.json()["message"].startswith(field)
        assert client.get("/api/v1/recordings").json()["total"] == 0


def seed_recordings(server: RunningServer, tenant: Tenant) -> list[dict[str, Any]]:
    rows = [
        {
            "dataId": "a",
            "callAt": "2026-05-01T09:00:00+07:00",
            "direction": "in",
            "customerPhone": "0811111111",
            "tag": "normal",
            "score": 90,
            "durationSeconds": 30,
        },
        {
            "dataId": "b",
            "callAt": "2026-05-02T09:00:00+07:00",
            "direction": "out",
            "customerPhone": "0822222222",
            "tag": "short",
            "score": 40,
            "durationSeconds": 5,
        },
        {
            "dataId": "c",
            "callAt": "2026-05-03T09:00:00+07:00",
            "direction": "in",
            "customerPhone": "0833333333",
            "note": "angry customer",
            "durationSeconds": 300,
        },
        {
            "dataId": "d",
            "callAt": "2026-05-04T23:30:00+07:00",
            "direction": "out",
            "customerPhone": "+66 81 111 1111",
            "tag": "normal",
            "score": 70,
            "durationSeconds": 60,
        },
    ]
    with server.http(tenant.business_key) as client:
        return [register(client, **row) for row in rows]


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["dataId"] for item in response.json()["items"]]


def test_list_filters_sorting_paging(server: RunningServer) -> None:
    tenant = server.new_tenant()
    seed_recordings(server, tenant)
    with server.http(tenant.business_key) as client:
        everything = client.get("/api/v1/recordings").json()
        assert set(everything) == {"items", "total", "limit", "offset"}
        assert (everything["total"], everything["limit"], everything["offset"]) == (4, 20, 0)
        assert [i["dataId"] for i in everything["items"]] == ["d", "c", "b", "a"]  # callAt desc by default
        get = lambda **params: ids(client.get("/api/v1/recordings", params=params))  # noqa: E731
        assert get(direction="in") == ["c", "a"]
        assert get(sourceProvider="upload", sortDir="asc") == ["a", "b", "c", "d"]
        assert get(sourceProvider="threecx") == []
        assert get(callDateFrom="2026-05-02", callDateTo="2026-05-03") == ["c", "b"]
        assert get(callDateFrom="2026-05-04") == ["d"]  # a date is that day in the business's zone
        assert get(callDateTo="2026-05-01T09:00:00+07:00") == ["a"]
        assert get(customerPhone="0822222222") == ["b"]
        assert get(customerPhoneNormalized="+66811111111") == ["d", "a"]
        assert get(search="angry") == ["c"]
        assert get(search="33333") == ["c"]
        assert get(tag="normal") == ["d", "a"]
        assert get(tag="none") == ["c"]
        assert get(scoreMin="50") == ["d", "a"]
        assert get(scoreMin="50", scoreMax="80") == ["d"]
        assert get(sortBy="duration") == ["c", "d", "a", "b"]
        assert get(sortBy="score", sortDir="asc") == ["b", "d", "a", "c"]  # unscored last
        page = client.get("/api/v1/recordings", params={"limit": 2, "offset": 1, "sortDir": "asc"}).json()
        assert [i["dataId"] for i in page["items"]] == ["b", "c"] and page["total"] == 4
        for params, field in (
            ({"limit": 0}, "limit"),
            ({"limit": 201}, "limit"),
            ({"offset": -1}, "offset"),
            ({"direction": "up"}, "direction"),
            ({"sortBy": "name"}, "sortBy"),
            ({"tag": "x"}, "tag"),
            ({"callDateFrom": "May 1"}, "callDateFrom"),
            ({"limit": "many"}, "limit"),
            ({"bogus": 1}, "bogus"),
        ):
            response = client.get("/api/v1/recordings", params=params)
            assert response.status_code == 400, params
            assert response.json()["message"].startswith(field), response.json()


def test_grpc_list_download_range_and_upload(server: RunningServer) -> None:
    tenant = server.new_tenant()
    md = [("authorization", f"Bearer {tenant.business_key}")]
    audio = os.urandom(200_000)
    with server.channel() as channel:
        stub = recordings_pb2_grpc.RecordingServiceStub(channel)
        created = stub.CreateRecording(
            pb.CreateRecordingRequest(data_id="g1", call_at="2026-05-20T01:14:00Z", direction="out"),
            metadata=md,
        )

        def requests() -> Iterator[pb.UploadRecordingAudioRequest]:
            yield pb.UploadRecordingAudioRequest(
                id=created.id, content_type="audio/mpeg", sha256=hashlib.sha256(audio).hexdigest()
            )
            for i in range(0, len(audio), 32_768):
                yield pb.UploadRecordingAudioRequest(chunk=audio[i : i + 32_768])

        stored = stub.UploadRecordingAudio(requests(), metadata=md)
        assert stored.processing_status == "completed" and stored.content_type == "audio/mpeg"
        assert stored.call_at == "2026-05-20T08:14:00+07:00"
        body = b"".join(
            c.data for c in stub.DownloadRecording(pb.DownloadRecordingRequest(id=created.id), metadata=md)
        )
        assert body == audio
        part = b"".join(
            c.data
            for c in stub.DownloadRecording(
                pb.DownloadRecordingRequest(id=created.id, offset=1000, length=5000), metadata=md
            )
        )
        assert part == audio[1000:6000]
        listed = stub.ListRecordings(pb.ListRecordingsRequest(direction="out"), metadata=md)
        assert [r.id for r in listed.items] == [created.id] and listed.total == 1
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.DownloadRecording(pb.DownloadRecordingRequest(id="nope"), metadata=md))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(raised.value).reason == "recording_not_found"
        with pytest.raises(grpc.RpcError) as raised:
            stub.ListRecordings(pb.ListRecordingsRequest(limit=500), metadata=md)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_delete_frees_blob_only_when_unreferenced_and_swept(server: RunningServer) -> None:
    tenant = server.new_tenant()
    audio = os.urandom(50_000)
    with server.http(tenant.business_key) as client:
        first, second = register(client, dataId="x1"), register(client, dataId="x2")
        upload(client, first["id"], audio)
        upload(client, second["id"], audio)  # same bytes, sealed apart: two blobs
        blob_one = server.call(sealed_blob(server.service.db, first["id"]))
        blob_two = server.call(sealed_blob(server.service.db, second["id"]))
        assert blob_one != blob_two
        assert client.delete(f"/api/v1/recordings/{first['id']}").json() == {"ok": True}
        assert server.call(server.service.blobs.stat(blob_one)) is not None  # released, not freed yet
        assert client.get(f"/api/v1/recordings/{second['id']}/audio").content == audio
        client.delete(f"/api/v1/recordings/{second['id']}")
        assert server.call(server.service.blobs.stat(blob_two)) is not None
        assert server.call(server.service.sweeper.sweep()) >= 2
        assert server.call(server.service.blobs.stat(blob_one)) is None
        assert server.call(server.service.blobs.stat(blob_two)) is None
        assert client.get(f"/api/v1/recordings/{second['id']}").status_code == 404


def test_scopes_and_businesses(server: RunningServer) -> None:
    owner = server.new_tenant("Owner")
    stranger = server.new_tenant("Stranger")
    viewer = server.new_tenant("Viewer", scopes=(Scope.VIEW_RECORDING_ALL,))
    providers_only = server.new_tenant("Config", scopes=(Scope.MANAGE_PROVIDER_CONFIG,))
    with server.http(owner.business_key) as client:
        rec = register(client)
        upload(client, rec["id"], b"RIFF....WAVE")
    with server.http(stranger.business_key) as client:
        assert client.get("/api/v1/recordings").json()["total"] == 0
        for path in (f"/api/v1/recordings/{rec['id']}", f"/api/v1/recordings/{rec['id']}/audio"):
            assert client.get(path).status_code == 404
        assert client.delete(f"/api/v1/recordings/{rec['id']}").status_code == 404
    with server.http(viewer.business_key) as client:
        assert client.get("/api/v1/recordings").status_code == 200
        denied = client.post(
            "/api/v1/recordings", json={"dataId": "v", "callAt": "2026-05-01T00:00:00Z", "direction": "in"}
        )
        assert denied.status_code == 403 and denied.json()["error"] == "insufficient_scope"
    with server.http(providers_only.business_key) as client:
        assert client.get("/api/v1/recordings").status_code == 403
    with server.http(owner.business_key) as client:
        assert client.get(f"/api/v1/recordings/{rec['id']}/audio").content == b"RIFF....WAVE"


def test_rest_deletes_racing_uploads_of_the_same_audio_never_break_a_download(server: RunningServer) -> None:
    """Over REST, clients upload identical audio and delete it again while the server sweeps:
    every stored recording still downloads byte-identical (issue: a 500 once its blob was freed)."""
    tenant = server.new_tenant()
    payloads = [os.urandom(20_000 + i) for i in range(3)]
    done = threading.Event()
    problems: list[str] = []

    def churn(audio: bytes, worker: int) -> None:
        with server.http(tenant.business_key) as client:
            for n in range(15):
                rec = register(client, dataId=f"w{worker}-{n}")
                for _ in range(20):
                    response = upload(client, rec["id"], audio)
                    if response.status_code != 409:
                        break
                    assert response.json()["error"] == "audio_reclaimed"  # sent again
                assert response.status_code == 200, response.text
                got = client.get(f"/api/v1/recordings/{rec['id']}/audio")
                if got.status_code != 200 or got.content != audio:
                    problems.append(f"{rec['id']}: {got.status_code}")
                if n < 14:
                    assert client.delete(f"/api/v1/recordings/{rec['id']}").status_code == 200

    def sweep() -> None:
        while not done.is_set():
            server.call(server.service.sweeper.sweep())
            time.sleep(0.01)

    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    try:
        with ThreadPoolExecutor(6) as pool:
            for future in [pool.submit(churn, payloads[i % 3], i) for i in range(6)]:
                future.result()
    finally:
        done.set()
        sweeper.join()
    assert problems == []
    with server.http(tenant.business_key) as client:
        items = client.get("/api/v1/recordings").json()["items"]
        assert len(items) == 6
        for item in items:
            assert client.get(f"/api/v1/recordings/{item['id']}/audio").content in payloads
