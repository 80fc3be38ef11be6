"""The BlobStore contract, checked on every backend: a local directory and a real SeaweedFS bucket.

Only complete, verified blobs ever appear under their name; a failed or cancelled put
leaves nothing behind (no temp file, no object, no unfinished multipart upload); nothing
is held whole in memory. What only one backend does is tested in its own module
(tests/unit/test_blobs_local.py, tests/integration/test_blobs_s3.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from service.blobs import BlobNotFound, BlobTooLarge, BlobVerificationFailed, is_sha256
from tests.support.blob_backends import (
    BIG,
    BIG_SHA,
    DATA,
    DATA_SHA,
    PART,
    Backend,
    read_all,
    source,
    split,
)

pytest_plugins = ["tests.support.blob_backends"]

# DATA fits in one S3 part and is stored with a single PutObject; BIG takes a multipart upload.
SIZES = pytest.mark.parametrize("data", [DATA, BIG], ids=["single-put", "multipart"])
# With the expected sha256 an S3 upload goes straight to its final key, else via a temp key.
EXPECTED = pytest.mark.parametrize("expected_sha256", [None, BIG_SHA], ids=["via-temp", "direct"])
DIRECT = pytest.mark.parametrize("direct", [False, True], ids=["via-temp", "direct"])


class Boom(Exception):
    pass


@pytest.mark.parametrize(("data", "piece"), [(DATA, 1000), (BIG, 100_000)], ids=["single-put", "multipart"])
async def test_round_trip(blob_backend: Backend, data: bytes, piece: int) -> None:
    store = blob_backend.store
    sha = hashlib.sha256(data).hexdigest()
    info = await store.put(source(*split(data, piece)))

    assert (info.sha256, info.size) == (sha, len(data))
    await blob_backend.assert_holds(sha)
    assert await blob_backend.raw(sha) == data
    assert await store.stat(sha) == info
    assert await read_all(store, sha) == data


async def test_empty_blob(blob_backend: Backend) -> None:
    store = blob_backend.store
    info = await store.put(source())

    assert (info.sha256, info.size) == (hashlib.sha256(b"").hexdigest(), 0)
    assert await store.stat(info.sha256) == info
    assert await read_all(store, info.sha256) == b""


@pytest.mark.parametrize(("data", "cut"), [(DATA, 100), (BIG, PART + 100)], ids=["buffered", "after-a-part"])
@DIRECT
async def test_visible_only_when_complete(blob_backend: Backend, data: bytes, cut: int, direct: bool) -> None:
    store = blob_backend.store
    sha = hashlib.sha256(data).hexdigest()
    first_sent = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield data[:cut]
        first_sent.set()  # reached only once the put asked for more, e.g. after S3 part 1 went out
        await release.wait()
        yield data[cut:]

    put = asyncio.create_task(store.put(slow(), expected_sha256=sha if direct else None))
    await asyncio.wait_for(first_sent.wait(), blob_backend.timeout)

    in_flight = 1 if cut > PART else blob_backend.buffered_partials
    assert len(await blob_backend.partials()) == in_flight  # really mid-stream
    assert await blob_backend.objects() == []
    assert await store.stat(sha) is None
    with pytest.raises(BlobNotFound):
        await store.open(sha)

    release.set()
    info = await asyncio.wait_for(put, blob_backend.timeout)
    assert info.sha256 == sha
    assert await store.stat(sha) == info
    await blob_backend.assert_holds(sha)


@pytest.mark.parametrize("first", [DATA[:2000], BIG[: PART + 1]], ids=["buffered", "after-a-part"])
@EXPECTED
async def test_source_error_propagates_and_leaves_nothing(
    blob_backend: Backend, first: bytes, expected_sha256: str | None
) -> None:
    boom = Boom("provider hung up")

    async def failing() -> AsyncIterator[bytes]:
        yield first
        raise boom

    with pytest.raises(Boom) as caught:
        await blob_backend.store.put(failing(), expected_sha256=expected_sha256)

    assert caught.value is boom
    await blob_backend.assert_nothing_left()


@pytest.mark.parametrize("first", [DATA, BIG[: PART + 1]], ids=["buffered", "after-a-part"])
async def test_cancelled_put_leaves_nothing(blob_backend: Backend, first: bytes) -> None:
    started = asyncio.Event()

    async def stuck() -> AsyncIterator[bytes]:
        yield first
        started.set()
        await asyncio.Event().wait()
        yield b""  # pragma: no cover

    put = asyncio.create_task(blob_backend.store.put(stuck()))
    await asyncio.wait_for(started.wait(), blob_backend.timeout)
    in_flight = 1 if len(first) > PART else blob_backend.buffered_partials
    assert len(await blob_backend.partials()) == in_flight
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put

    await blob_backend.assert_nothing_left()


@pytest.mark.parametrize(("data", "piece"), [(DATA, 1000), (BIG, 4096)], ids=["single-put", "multipart"])
@pytest.mark.parametrize(
    ("expected_sha256", "expected_size", "message"),
    [
        pytest.param(lambda sha: "0" * 64, None, "sha256", id="wrong-sha256"),
        pytest.param(None, lambda n: n + 1, "expected", id="one-byte-missing"),
        pytest.param(None, lambda n: n - 1, "expected", id="one-byte-too-many"),
        pytest.param(None, lambda n: n - 5000, "expected", id="far-too-many"),
        pytest.param(lambda sha: sha, lambda n: 5, "expected", id="right-sha256-wrong-size"),
    ],
)
async def test_verification_failure_leaves_nothing(
    blob_backend: Backend,
    data: bytes,
    piece: int,
    expected_sha256: Callable[[str], str] | None,
    expected_size: Callable[[int], int] | None,
    message: str,
) -> None:
    store = blob_backend.store
    sha = hashlib.sha256(data).hexdigest()
    with pytest.raises(BlobVerificationFailed, match=message):
        await store.put(
            source(*split(data, piece)),
            expected_sha256=None if expected_sha256 is None else expected_sha256(sha),
            expected_size=None if expected_size is None else expected_size(len(data)),
        )

    await blob_backend.assert_nothing_left()
    assert await store.stat(sha) is None


@SIZES
async def test_expected_values_that_match_are_accepted(blob_backend: Backend, data: bytes) -> None:
    store = blob_backend.store
    sha = hashlib.sha256(data).hexdigest()
    info = await store.put(source(*split(data, 65536)), expected_sha256=sha, expected_size=len(data))

    assert (info.sha256, info.size) == (sha, len(data))
    assert await read_all(store, sha) == data
    await blob_backend.assert_holds(sha)


async def test_max_size(blob_backend: Backend) -> None:
    store = blob_backend.store
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
    await blob_backend.assert_nothing_left()

    pulled = 0
    with pytest.raises(BlobTooLarge):
        await store.put(endless(b"y" * 1024 * 1024), max_size=PART + 2 * 1024 * 1024)
    assert pulled == 8  # past a whole S3 part, already uploaded, and aborted
    await blob_backend.assert_nothing_left()


@EXPECTED
async def test_identical_content_is_stored_once(blob_backend: Backend, expected_sha256: str | None) -> None:
    store = blob_backend.store
    for data, piece in ((DATA, 7), (BIG, 7777)):
        sha = hashlib.sha256(data).hexdigest()
        want = expected_sha256 and sha
        first = await store.put(source(data), expected_sha256=want)
        version = await blob_backend.version(sha)
        second = await store.put(source(*split(data, piece)), expected_sha256=want)
        both = await asyncio.gather(
            store.put(source(data), expected_sha256=want), store.put(source(data), expected_sha256=want)
        )

        assert first == second == both[0] == both[1]
        assert await blob_backend.version(sha) == version  # the existing blob was kept
    await blob_backend.assert_holds(DATA_SHA, BIG_SHA)


@SIZES
@DIRECT
async def test_damaged_object_is_replaced(blob_backend: Backend, data: bytes, direct: bool) -> None:
    store = blob_backend.store
    sha = hashlib.sha256(data).hexdigest()
    await blob_backend.plant(sha, b"truncated")

    info = await store.put(source(data), expected_sha256=sha if direct else None)

    assert await store.stat(sha) == info
    assert await read_all(store, sha) == data
    await blob_backend.assert_holds(sha)


async def test_ranged_reads(blob_backend: Backend) -> None:
    store = blob_backend.store
    await store.put(source(DATA))
    n = len(DATA)

    for start, end in [(0, None), (0, 1), (10, 20), (0, n), (n - 1, n), (n - 1, None), (999, 5000)]:
        got = await read_all(store, DATA_SHA, start=start, end=end, chunk_size=333)
        assert got == DATA[start:end], (start, end)
    assert await read_all(store, DATA_SHA, start=n, end=n) == b""
    assert await read_all(store, DATA_SHA, start=n) == b""
    assert await read_all(store, DATA_SHA, start=5, end=5) == b""


async def test_ranged_read_across_parts(blob_backend: Backend) -> None:
    store = blob_backend.store
    await store.put(source(BIG))

    start, end = PART - 10, 2 * PART + 10
    assert await read_all(store, BIG_SHA, start=start, end=end, chunk_size=65537) == BIG[start:end]


async def test_reads_come_in_chunks(blob_backend: Backend) -> None:
    store = blob_backend.store
    await store.put(source(DATA))

    sizes = [len(c) async for c in await store.open(DATA_SHA, start=1, chunk_size=4096)]

    assert sizes == [4096, 4096, len(DATA) - 1 - 8192]


@pytest.mark.parametrize(
    ("start", "end"),
    [(-1, None), (len(DATA) + 1, None), (10, 5), (0, len(DATA) + 1), (len(DATA) + 1, len(DATA) + 2)],
)
async def test_invalid_ranges(blob_backend: Backend, start: int, end: int | None) -> None:
    store = blob_backend.store
    await store.put(source(DATA))

    with pytest.raises(ValueError, match="range"):
        await store.open(DATA_SHA, start=start, end=end)


async def test_invalid_chunk_size(blob_backend: Backend) -> None:
    store = blob_backend.store
    await store.put(source(DATA))

    with pytest.raises(ValueError, match="chunk_size"):
        await store.open(DATA_SHA, chunk_size=0)


async def test_missing_blob(blob_backend: Backend) -> None:
    store = blob_backend.store
    with pytest.raises(BlobNotFound):
        await store.open("ab" * 32)
    assert await store.stat("ab" * 32) is None
    assert await store.delete("ab" * 32) is False


async def test_delete(blob_backend: Backend) -> None:
    store = blob_backend.store
    await store.put(source(DATA))

    assert await store.delete(DATA_SHA) is True
    assert await blob_backend.objects() == []
    assert await store.stat(DATA_SHA) is None
    assert await store.delete(DATA_SHA) is False


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
async def test_crafted_names_are_rejected(blob_backend: Backend, tmp_path: Path, name: str) -> None:
    store = blob_backend.store
    victim = tmp_path / "victim"  # next to a local store's root
    victim.write_bytes(b"keep me")

    assert not is_sha256(name)
    with pytest.raises(ValueError):
        await store.stat(name)
    with pytest.raises(ValueError):
        await store.delete(name)
    with pytest.raises(ValueError):
        await store.open(name)
    with pytest.raises(ValueError):
        await store.put(source(DATA), expected_sha256=name)
    assert victim.read_bytes() == b"keep me"
    assert await store.stat(DATA_SHA) is None  # the put never started
    await blob_backend.assert_nothing_left()


def test_is_sha256() -> None:
    assert is_sha256(DATA_SHA)
    assert not is_sha256("g" * 64)


async def test_ping(blob_backend: Backend) -> None:
    assert await blob_backend.store.ping() is True


async def test_large_blob_is_streamed_in_bounded_memory(blob_backend: Backend) -> None:
    chunk_size, chunks = 64 * 1024, blob_backend.stream_chunks
    sent = hashlib.sha256()

    async def generated() -> AsyncIterator[bytes]:
        for i in range(chunks):
            chunk = i.to_bytes(4, "big") * (chunk_size // 4)
            sent.update(chunk)
            yield chunk

    async with blob_backend.streaming_store() as store:
        await store.ping()  # a client's own setup is not what is measured
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
    assert put_peak < blob_backend.memory_limit, put_peak
    assert read_peak < blob_backend.memory_limit, read_peak
