"""Local blob store: only complete, verified blobs ever appear; nothing is held whole in memory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.blobs import (
    BlobNotFound,
    BlobStore,
    BlobTooLarge,
    BlobVerificationFailed,
    LocalBlobStore,
    is_sha256,
)

DATA = bytes(range(256)) * 40 + b"tail"  # 10244 bytes
DATA_SHA = hashlib.sha256(DATA).hexdigest()


async def source(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def blob_path(root: Path, sha256: str) -> Path:
    return root / sha256[:2] / sha256[2:4] / sha256


async def read_all(
    store: BlobStore, sha256: str, start: int = 0, end: int | None = None, chunk_size: int = 256 * 1024
) -> bytes:
    out = bytearray()
    async for chunk in await store.open(sha256, start=start, end=end, chunk_size=chunk_size):
        out += chunk
    return bytes(out)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.fixture
def store(root: Path) -> LocalBlobStore:
    return LocalBlobStore(root)


class Boom(Exception):
    pass


async def test_round_trip(store: LocalBlobStore, root: Path) -> None:
    info = await store.put(source(*split(DATA, 1000)))

    assert (info.sha256, info.size) == (DATA_SHA, len(DATA))
    assert blob_path(root, DATA_SHA).read_bytes() == DATA
    assert await store.stat(DATA_SHA) == info
    assert await read_all(store, DATA_SHA) == DATA
    assert files_under(root) == [str(blob_path(root, DATA_SHA).relative_to(root))]


async def test_modes(store: LocalBlobStore, root: Path) -> None:
    await store.put(source(DATA))

    final = blob_path(root, DATA_SHA)
    assert stat.S_IMODE(final.stat().st_mode) == 0o640
    for d in (root, root / "tmp", final.parent, final.parent.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o750, d


async def test_empty_blob(store: LocalBlobStore) -> None:
    info = await store.put(source())

    assert info.size == 0
    assert info.sha256 == hashlib.sha256(b"").hexdigest()
    assert await read_all(store, info.sha256) == b""


async def test_visible_only_when_complete(store: LocalBlobStore, root: Path) -> None:
    first_sent = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield DATA[:100]
        first_sent.set()
        await release.wait()
        yield DATA[100:]

    put = asyncio.create_task(store.put(slow()))
    await asyncio.wait_for(first_sent.wait(), 5)

    assert len(os.listdir(root / "tmp")) == 1  # really mid-stream
    assert not blob_path(root, DATA_SHA).exists()
    assert await store.stat(DATA_SHA) is None
    with pytest.raises(BlobNotFound):
        await store.open(DATA_SHA)

    release.set()
    info = await asyncio.wait_for(put, 5)
    assert info.sha256 == DATA_SHA
    assert await store.stat(DATA_SHA) == info
    assert os.listdir(root / "tmp") == []


async def test_source_error_propagates_and_leaves_nothing(store: LocalBlobStore, root: Path) -> None:
    boom = Boom("provider hung up")

    async def failing() -> AsyncIterator[bytes]:
        yield DATA[:2000]
        raise boom

    with pytest.raises(Boom) as caught:
        await store.put(failing())

    assert caught.value is boom
    assert files_under(root) == []


async def test_cancelled_put_leaves_nothing(store: LocalBlobStore, root: Path) -> None:
    started = asyncio.Event()

    async def stuck() -> AsyncIterator[bytes]:
        yield DATA
        started.set()
        await asyncio.Event().wait()
        yield b""  # pragma: no cover

    put = asyncio.create_task(store.put(stuck()))
    await asyncio.wait_for(started.wait(), 5)
    assert len(os.listdir(root / "tmp")) == 1
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put

    assert files_under(root) == []


@pytest.mark.parametrize(
    ("expected_sha256", "expected_size", "message"),
    [
        ("0" * 64, None, "sha256"),
        (None, len(DATA) + 1, "expected"),
        (None, len(DATA) - 1, "expected"),
        (DATA_SHA, 5, "expected"),
    ],
)
async def test_verification_failure_leaves_nothing(
    store: LocalBlobStore, root: Path, expected_sha256: str | None, expected_size: int | None, message: str
) -> None:
    chunks = source(*split(DATA, 1000))
    with pytest.raises(BlobVerificationFailed, match=message):
        await store.put(chunks, expected_sha256=expected_sha256, expected_size=expected_size)

    assert files_under(root) == []
    assert await store.stat(DATA_SHA) is None


async def test_expected_values_that_match_are_accepted(store: LocalBlobStore) -> None:
    info = await store.put(source(DATA), expected_sha256=DATA_SHA, expected_size=len(DATA))

    assert info.sha256 == DATA_SHA


async def test_max_size(store: LocalBlobStore, root: Path) -> None:
    assert (await store.put(source(DATA), max_size=len(DATA))).size == len(DATA)
    await store.delete(DATA_SHA)

    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while pulled < 10_000:
            pulled += 1
            yield b"x" * 1024

    with pytest.raises(BlobTooLarge):
        await store.put(endless(), max_size=4096)

    assert pulled == 5  # stopped at the first chunk past the limit, not at the end
    assert files_under(root) == []


async def test_identical_content_is_stored_once(store: LocalBlobStore, root: Path) -> None:
    first = await store.put(source(DATA))
    inode = blob_path(root, DATA_SHA).stat().st_ino
    second = await store.put(source(*split(DATA, 7)))
    both = await asyncio.gather(store.put(source(DATA)), store.put(source(DATA)))

    assert first == second == both[0] == both[1]
    assert blob_path(root, DATA_SHA).stat().st_ino == inode  # the existing blob was kept
    assert len(files_under(root)) == 1


async def test_ranged_reads(store: LocalBlobStore) -> None:
    await store.put(source(DATA))
    n = len(DATA)

    for start, end in [(0, None), (0, 1), (10, 20), (0, n), (n - 1, n), (n - 1, None), (999, 5000)]:
        got = await read_all(store, DATA_SHA, start=start, end=end, chunk_size=333)
        assert got == DATA[start:end], (start, end)
    assert await read_all(store, DATA_SHA, start=n, end=n) == b""
    assert await read_all(store, DATA_SHA, start=n) == b""
    assert await read_all(store, DATA_SHA, start=5, end=5) == b""


async def test_reads_come_in_chunks(store: LocalBlobStore) -> None:
    await store.put(source(DATA))

    sizes = [len(c) async for c in await store.open(DATA_SHA, start=1, chunk_size=4096)]

    assert sizes == [4096, 4096, len(DATA) - 1 - 8192]


@pytest.mark.parametrize(
    ("start", "end"),
    [(-1, None), (len(DATA) + 1, None), (10, 5), (0, len(DATA) + 1), (len(DATA) + 1, len(DATA) + 2)],
)
async def test_invalid_ranges(store: LocalBlobStore, start: int, end: int | None) -> None:
    await store.put(source(DATA))

    with pytest.raises(ValueError, match="range"):
        await store.open(DATA_SHA, start=start, end=end)


async def test_invalid_chunk_size(store: LocalBlobStore) -> None:
    await store.put(source(DATA))

    with pytest.raises(ValueError, match="chunk_size"):
        await store.open(DATA_SHA, chunk_size=0)


async def test_missing_blob(store: LocalBlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await store.open("ab" * 32)
    assert await store.stat("ab" * 32) is None
    assert await store.delete("ab" * 32) is False


async def test_delete(store: LocalBlobStore, root: Path) -> None:
    await store.put(source(DATA))

    assert await store.delete(DATA_SHA) is True
    assert not blob_path(root, DATA_SHA).exists()
    assert await store.stat(DATA_SHA) is None
    assert await store.delete(DATA_SHA) is False


async def test_open_iterator_survives_delete(store: LocalBlobStore) -> None:
    await store.put(source(DATA))
    chunks = await store.open(DATA_SHA, chunk_size=1000)
    first = await anext(chunks)

    await store.delete(DATA_SHA)

    rest = b"".join([c async for c in chunks])
    assert first + rest == DATA


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
async def test_crafted_names_are_rejected(store: LocalBlobStore, tmp_path: Path, name: str) -> None:
    victim = tmp_path / "victim"
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


def test_is_sha256() -> None:
    assert is_sha256(DATA_SHA)
    assert not is_sha256("g" * 64)


async def test_stale_temp_files_are_removed(root: Path) -> None:
    LocalBlobStore(root)
    tmp = root / "tmp"
    stale, fresh, foreign = tmp / "old.part", tmp / "new.part", tmp / "notes.txt"
    for p in (stale, fresh, foreign):
        p.write_bytes(b"partial")
    an_hour_ago = time.time() - 3700
    os.utime(stale, (an_hour_ago, an_hour_ago))
    os.utime(foreign, (an_hour_ago, an_hour_ago))

    store = LocalBlobStore(root)  # startup cleanup

    assert sorted(os.listdir(tmp)) == ["new.part", "notes.txt"]  # a live put may own the fresh one
    assert await store.clean_temp(older_than_seconds=0) == 1
    assert os.listdir(tmp) == ["notes.txt"]


async def test_ping(store: LocalBlobStore, root: Path) -> None:
    assert await store.ping() is True
    os.rmdir(root / "tmp")
    assert await store.ping() is False


async def test_large_blob_is_streamed_in_bounded_memory(store: LocalBlobStore) -> None:
    chunk_size, chunks = 64 * 1024, 1024  # 64 MiB in all
    sent = hashlib.sha256()

    async def generated() -> AsyncIterator[bytes]:
        for i in range(chunks):
            chunk = i.to_bytes(4, "big") * (chunk_size // 4)
            sent.update(chunk)
            yield chunk

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
    assert put_peak < 16 * 1024 * 1024, put_peak
    assert read_peak < 16 * 1024 * 1024, read_peak
