"""Downloads at their edges, over both transports: messages no bigger than the store's
chunk (so a client with gRPC's default 4 MiB limit reads any recording), a range that
spans chunks and ends inside one, errors before the first byte, and a download
abandoned mid-stream giving its blob's file back at once."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from callvault.v1 import recordings_pb2 as pb
from callvault.v1 import recordings_pb2_grpc

from service.recordings.store import DOWNLOAD_CHUNK
from tests.support.server import RunningServer, Tenant

DEFAULT_GRPC_RECEIVE_LIMIT = 4 * 1024 * 1024


def _metadata(tenant: Tenant) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {tenant.business_key}")]


def _stored(server: RunningServer, tenant: Tenant, audio: bytes, data_id: str) -> str:
    with server.http(tenant.business_key) as client:
        created = client.post(
            "/api/v1/recordings",
            json={"dataId": data_id, "callAt": "2026-05-20T08:14:00+07:00", "direction": "in"},
        )
        assert created.status_code == 200, created.text
        recording_id: str = created.json()["id"]

        def pieces() -> Iterator[bytes]:
            for i in range(0, len(audio), 256 * 1024):
                yield audio[i : i + 256 * 1024]

        stored = client.put(
            f"/api/v1/recordings/{recording_id}/audio",
            content=pieces(),
            headers={"Content-Type": "audio/wav"},
        )
        assert stored.status_code == 200, stored.text
        assert stored.json()["sha256"] == hashlib.sha256(audio).hexdigest()
    return recording_id


def _open_blob_files(server: RunningServer) -> list[str]:
    """Files under the blob directory this process (the in-process server) holds open."""
    root = str(Path(server.settings.resolved_blob_dir).resolve())
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(root + os.sep) and os.sep + "tmp" + os.sep not in target[len(root) :]:
            found.append(target)
    return found


def _wait_released(server: RunningServer, seconds: float = 10.0) -> list[str]:
    deadline = time.monotonic() + seconds
    while (still := _open_blob_files(server)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return still


def test_grpc_messages_stay_within_the_chunk_and_a_default_client_reads_any_size(
    server: RunningServer,
) -> None:
    tenant = server.new_tenant("Chunks")
    size = DEFAULT_GRPC_RECEIVE_LIMIT + DOWNLOAD_CHUNK + 12_345  # past the default limit, not a multiple
    audio = os.urandom(size)
    recording_id = _stored(server, tenant, audio, "chunks-1")
    with server.channel() as channel:  # gRPC's default receive limit: 4 MiB a message
        stub = recordings_pb2_grpc.RecordingServiceStub(channel)
        messages = list(
            stub.DownloadRecording(pb.DownloadRecordingRequest(id=recording_id), metadata=_metadata(tenant))
        )
    sizes = [len(m.data) for m in messages]
    assert b"".join(m.data for m in messages) == audio
    assert max(sizes) <= DOWNLOAD_CHUNK
    assert len(messages) == -(-size // DOWNLOAD_CHUNK)  # one message per chunk read, none empty
    assert {m.content_type for m in messages} == {"audio/wav"}


def test_a_range_across_chunks_ends_inside_the_last_one(server: RunningServer) -> None:
    tenant = server.new_tenant("Ranges")
    audio = os.urandom(3 * DOWNLOAD_CHUNK + 999)
    recording_id = _stored(server, tenant, audio, "ranges-1")
    start, end = DOWNLOAD_CHUNK - 7, 3 * DOWNLOAD_CHUNK + 500  # end exclusive, inside the 4th chunk
    with server.http(tenant.business_key) as client:
        part = client.get(
            f"/api/v1/recordings/{recording_id}/audio", headers={"Range": f"bytes={start}-{end - 1}"}
        )
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes {start}-{end - 1}/{len(audio)}"
        assert part.headers["content-length"] == str(end - start)
        assert part.content == audio[start:end]
        tail = client.get(f"/api/v1/recordings/{recording_id}/audio", headers={"Range": "bytes=-1"})
        assert tail.status_code == 206 and tail.content == audio[-1:]
    with server.channel() as channel:
        stub = recordings_pb2_grpc.RecordingServiceStub(channel)
        call = stub.DownloadRecording(
            pb.DownloadRecordingRequest(id=recording_id, offset=start, length=end - start),
            metadata=_metadata(tenant),
        )
        messages = list(call)
        assert b"".join(m.data for m in messages) == audio[start:end]
        assert max(len(m.data) for m in messages) <= DOWNLOAD_CHUNK
        headers = dict(call.initial_metadata())
        assert headers["content-range"] == f"bytes {start}-{end - 1}/{len(audio)}"


def test_rest_download_errors_before_the_first_byte_are_json(server: RunningServer) -> None:
    """The REST shim streams the servicer's bytes directly, and reads the first chunk
    before it answers: a blob gone after the row was found is still a JSON 503."""
    tenant = server.new_tenant("Gone")
    audio = os.urandom(DOWNLOAD_CHUNK + 10)
    recording_id = _stored(server, tenant, audio, "gone-1")
    blob = server.service.blobs
    original = blob.open

    async def vanished(
        sha256: str, *, start: int = 0, end: int | None = None, chunk_size: int = 256 * 1024
    ) -> AsyncIterator[bytes]:
        chunks = await original(sha256, start=start, end=end, chunk_size=chunk_size)
        await blob.delete(sha256)  # between the check in open() and the first read
        return chunks

    blob.open = vanished  # type: ignore[method-assign]
    try:
        with server.http(tenant.business_key) as client:
            answer = client.get(f"/api/v1/recordings/{recording_id}/audio")
    finally:
        blob.open = original  # type: ignore[method-assign]
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "recording_audio_missing"


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_a_download_abandoned_mid_stream_closes_the_blob(server: RunningServer, transport: str) -> None:
    tenant = server.new_tenant(f"Abandon {transport}")
    audio = os.urandom(24 * 1024 * 1024)  # more than both transports buffer for a client that stops
    recording_id = _stored(server, tenant, audio, f"abandon-{transport}")
    assert _wait_released(server) == []
    if transport == "grpc":
        with server.channel() as channel:
            stub = recordings_pb2_grpc.RecordingServiceStub(channel)
            call = stub.DownloadRecording(
                pb.DownloadRecordingRequest(id=recording_id), metadata=_metadata(tenant)
            )
            first = next(call)
            assert first.data == audio[: len(first.data)]
            time.sleep(0.3)  # the server fills the flow-control window, then waits
            assert _open_blob_files(server), "the download should hold its blob open while it waits"
            call.cancel()
            still = _wait_released(server)
    else:
        # A small receive buffer: the kernel would otherwise take most of the answer in.
        small = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)])
        with httpx.Client(base_url=server.http_base, timeout=30, transport=small) as client:
            headers = {"Authorization": f"Bearer {tenant.business_key}"}
            with client.stream("GET", f"/api/v1/recordings/{recording_id}/audio", headers=headers) as answer:
                assert answer.status_code == 200
                pieces = answer.iter_raw(64 * 1024)  # kept: dropping it would close the answer
                first_bytes = next(pieces)
                assert first_bytes == audio[: len(first_bytes)]
                time.sleep(0.3)
                assert _open_blob_files(server), "the download should hold its blob open while it waits"
        still = _wait_released(server)
    assert still == [], f"blob files still open after the client went away: {still}"
    # And the server still serves: the same recording, whole, to the next caller.
    with server.http(tenant.business_key) as client:
        assert client.get(f"/api/v1/recordings/{recording_id}/audio").content == audio
