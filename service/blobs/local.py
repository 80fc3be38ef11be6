"""Blobs on local disk: root/ab/cd/<sha256>, written under root/tmp/ and renamed into place.

A put writes a temp file in root/tmp (same filesystem, so the rename is atomic),
fsyncs it, renames it to its content address and fsyncs the directory, so after a
crash a blob is either complete or absent. Blocking I/O runs in worker threads, a
bounded batch at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import stat as stat_mod
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from service.blobs.base import (
    BlobError,
    BlobInfo,
    BlobNotFound,
    BlobTooLarge,
    BlobVerificationFailed,
    check_put,
    check_range,
    check_sha256,
)

if TYPE_CHECKING:
    from service.blobs.base import BlobStore

FILE_MODE = 0o640
DIR_MODE = 0o750
TEMP_SUFFIX = ".part"
# Bytes gathered from the source before one hop to a worker thread: few enough hops
# for small network chunks, and a small, fixed bound on what is held in memory.
WRITE_BATCH = 1024 * 1024
DEFAULT_STALE_TEMP_SECONDS = 3600.0

_T = TypeVar("_T")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dir(path: str) -> None:
    """Create one directory with DIR_MODE (whatever the umask) and persist its entry."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return
    os.chmod(path, DIR_MODE)
    _fsync_dir(os.path.dirname(path))


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


class _Offloaded:
    """Runs blocking calls in worker threads and remembers the one in flight.

    A cancelled await does not stop its thread, so cleanup (closing an fd, unlinking a
    temp) waits for that call to return; otherwise a recycled fd number could be
    written to, or a temp renamed into place after we removed it.
    """

    def __init__(self) -> None:
        self._inflight: asyncio.Future[Any] | None = None

    async def _run(self, fn: Callable[[], _T]) -> _T:
        fut = asyncio.get_running_loop().run_in_executor(None, fn)
        self._inflight = fut
        return await asyncio.shield(fut)

    def _when_idle(self, cleanup: Callable[[], None]) -> None:
        fut = self._inflight
        if fut is None or fut.done():
            cleanup()
        else:
            fut.add_done_callback(lambda _fut: cleanup())


class _TempBlob(_Offloaded):
    """One upload in progress: a temp file, its running hash and size."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.fd: int | None = None  # set and cleared in worker threads, read only when idle
        self.hasher = hashlib.sha256()

    async def create(self) -> None:
        await self._run(self._create)

    def _create(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        os.fchmod(self.fd, FILE_MODE)

    async def write(self, batch: list[bytes]) -> None:
        await self._run(lambda: self._write(batch))

    def _write(self, batch: list[bytes]) -> None:
        assert self.fd is not None
        for chunk in batch:
            self.hasher.update(chunk)  # releases the GIL for large buffers
            view = memoryview(chunk)
            while view:
                view = view[os.write(self.fd, view) :]

    async def commit(self, final: str) -> None:
        await self._run(lambda: self._commit(final))

    def _commit(self, final: str) -> None:
        fd, self.fd = self.fd, None
        assert fd is not None
        try:
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(final).st_size == size:
                # Already stored, and equal by construction. A wrong-sized file there
                # (damaged on disk) is replaced by the rename below instead.
                os.unlink(self.path)
                return
        parent = os.path.dirname(final)
        _make_dir(os.path.dirname(parent))
        _make_dir(parent)
        try:
            os.rename(self.path, final)
        except FileNotFoundError:
            raise BlobError("temp file vanished before commit (removed as stale?)") from None
        _fsync_dir(parent)

    def discard(self) -> None:
        """Close and remove the temp, now or as soon as the thread in flight returns."""

        def cleanup() -> None:
            if self.fd is not None:
                _close_quietly(self.fd)
                self.fd = None
            _unlink_quietly(self.path)

        self._when_idle(cleanup)


class _Reader(_Offloaded):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.fd: int | None = None

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)

    async def pread(self, n: int, offset: int) -> bytes:
        return await self._run(lambda: self._pread(n, offset))

    def _pread(self, n: int, offset: int) -> bytes:
        assert self.fd is not None
        return os.pread(self.fd, n, offset)

    def close(self) -> None:
        def cleanup() -> None:
            if self.fd is not None:
                _close_quietly(self.fd)
                self.fd = None

        self._when_idle(cleanup)


class LocalBlobStore:
    """BlobStore on a local directory.

    Construction creates the layout and removes temp files older than
    `stale_temp_seconds`, left by a crash; younger ones may belong to a live put in
    another process sharing the root, so they are kept.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, stale_temp_seconds: float = DEFAULT_STALE_TEMP_SECONDS
    ) -> None:
        self._root = os.path.abspath(os.fspath(root))
        self._tmp = os.path.join(self._root, "tmp")
        if not os.path.isdir(self._root):
            os.makedirs(self._root, DIR_MODE, exist_ok=True)
            os.chmod(self._root, DIR_MODE)
        _make_dir(self._tmp)
        self._clean_temp(stale_temp_seconds)

    def _blob_path(self, sha256: str) -> str:
        check_sha256(sha256)
        return os.path.join(self._root, sha256[:2], sha256[2:4], sha256)

    async def clean_temp(self, older_than_seconds: float = DEFAULT_STALE_TEMP_SECONDS) -> int:
        """Remove abandoned temp files; returns how many were removed."""
        return await asyncio.to_thread(self._clean_temp, older_than_seconds)

    def _clean_temp(self, older_than_seconds: float) -> int:
        cutoff = time.time() - older_than_seconds
        removed = 0
        with os.scandir(self._tmp) as entries:
            for entry in entries:
                if not entry.name.endswith(TEMP_SUFFIX):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                    if stat_mod.S_ISREG(st.st_mode) and st.st_mtime <= cutoff:
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed

    async def put(
        self,
        chunks: AsyncIterable[bytes],
        *,
        expected_sha256: str | None = None,
        expected_size: int | None = None,
        max_size: int | None = None,
    ) -> BlobInfo:
        check_put(expected_sha256, expected_size, max_size)
        temp = _TempBlob(os.path.join(self._tmp, secrets.token_hex(16) + TEMP_SUFFIX))
        committed = False
        try:
            await temp.create()
            size = 0
            batch: list[bytes] = []
            batched = 0
            async for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                # Fail as soon as the bound is crossed, not after pulling the whole source.
                if max_size is not None and size > max_size:
                    raise BlobTooLarge(f"blob exceeds {max_size} bytes")
                if expected_size is not None and size > expected_size:
                    raise BlobVerificationFailed(f"more than the expected {expected_size} bytes")
                batch.append(chunk)
                batched += len(chunk)
                if batched >= WRITE_BATCH:
                    await temp.write(batch)
                    batch, batched = [], 0
            if batch:
                await temp.write(batch)
                batch = []
            if expected_size is not None and size != expected_size:
                raise BlobVerificationFailed(f"got {size} bytes, expected {expected_size}")
            digest = temp.hasher.hexdigest()
            if expected_sha256 is not None and digest != expected_sha256:
                raise BlobVerificationFailed(f"sha256 is {digest}, expected {expected_sha256}")
            await temp.commit(self._blob_path(digest))
            committed = True
            return BlobInfo(sha256=digest, size=size)
        finally:
            if not committed:
                temp.discard()

    async def open(
        self, sha256: str, *, start: int = 0, end: int | None = None, chunk_size: int = 256 * 1024
    ) -> AsyncIterator[bytes]:
        path = self._blob_path(sha256)
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid byte range [{start}, {end})")
        info = await self.stat(sha256)
        if info is None:
            raise BlobNotFound(sha256)
        stop = check_range(start, end, info.size)
        return self._read(path, sha256, start, stop, chunk_size)

    async def _read(
        self, path: str, sha256: str, start: int, stop: int, chunk_size: int
    ) -> AsyncIterator[bytes]:
        """Opens the file only on first iteration, so an iterator never started holds no fd."""
        if start >= stop:
            return
        reader = _Reader(path)
        try:
            try:
                await reader.open()
            except FileNotFoundError:
                raise BlobNotFound(sha256) from None  # deleted since open() checked
            pos = start
            while pos < stop:
                data = await reader.pread(min(chunk_size, stop - pos), pos)
                if not data:
                    raise BlobError(f"blob {sha256} is shorter than recorded")
                pos += len(data)
                yield data
        finally:
            reader.close()

    async def stat(self, sha256: str) -> BlobInfo | None:
        path = self._blob_path(sha256)
        try:
            st = await asyncio.to_thread(os.stat, path)
        except FileNotFoundError:
            return None
        return BlobInfo(sha256=sha256, size=st.st_size)

    async def delete(self, sha256: str) -> bool:
        path = self._blob_path(sha256)
        try:
            await asyncio.to_thread(os.unlink, path)
        except FileNotFoundError:
            return False
        return True

    async def ping(self) -> bool:
        return await asyncio.to_thread(self._ping)

    def _ping(self) -> bool:
        try:
            return os.path.isdir(self._root) and os.access(self._tmp, os.W_OK | os.X_OK)
        except OSError:
            return False


if TYPE_CHECKING:

    def _implements_protocol(store: LocalBlobStore) -> BlobStore:
        return store
