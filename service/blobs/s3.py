"""Blobs in an S3-compatible bucket: prefix/ab/<sha256>, uploaded as a multipart upload.

A put buffers at most one part in memory while hashing. A blob smaller than one part is
verified before any byte is sent and lands with a single PutObject. A larger one goes
into a multipart upload, which the server shows under no key until it is completed:
under a temp key (then copied server-side to its content address) or, when the caller
gave the expected sha256, straight under the final key. Every failure aborts the
upload, so a reader never sees a partial blob. Parts left by a crash are removed by
`clean_temp` (or a bucket lifecycle rule on incomplete multipart uploads).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

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
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.literals import BucketLocationConstraintType
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef, CopySourceTypeDef

    from service.blobs.base import BlobStore

log = logging.getLogger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB
MIN_PART_SIZE = 5 * MiB  # S3's floor for every part but the last
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_STALE_TEMP_SECONDS = 3600.0
# CopyObject takes sources up to 5 GiB; larger ones are copied part by part.
MAX_SINGLE_COPY = 5 * GiB
COPY_PART_SIZE = 512 * MiB
PING_TIMEOUT = 5.0
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_BUCKET_MISSING = frozenset({"404", "NoSuchBucket", "NotFound"})
_NETWORK_ERRORS = (BotoCoreError, aiohttp.ClientError, asyncio.TimeoutError, OSError)


@functools.cache
def _session() -> AioSession:
    """One botocore session per process: it caches the parsed S3 model, so a new client is cheap."""
    return get_session()


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "unknown")


@contextlib.contextmanager
def _s3_errors(operation: str) -> Iterator[None]:
    """Turn client and transport errors into a BlobError with a short message.

    botocore's messages can carry request details; ours name only the operation and
    the S3 error code, so nothing sensitive reaches logs or API callers.
    """
    try:
        yield
    except ClientError as exc:
        raise BlobError(f"S3 {operation} failed: {_error_code(exc)}") from exc
    except _NETWORK_ERRORS as exc:
        raise BlobError(f"S3 {operation} failed: {type(exc).__name__}") from exc


@dataclass(frozen=True, slots=True)
class _Credentials:
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)


class S3BlobStore:
    """BlobStore on an S3-compatible bucket (AWS S3, SeaweedFS, MinIO, Ceph RGW...).

    The client (one connection pool) is created on first use and kept until `close()`;
    it belongs to the event loop that first used it.
    """

    def __init__(
        self,
        endpoint_url: str,
        bucket: str,
        *,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        prefix: str = "blobs/",
        part_size: int = DEFAULT_PART_SIZE,
    ) -> None:
        url = urlsplit(endpoint_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("endpoint_url must be an http(s) URL")
        if url.username is not None or url.password is not None:
            raise ValueError("endpoint_url must not carry credentials")
        if not bucket:
            raise ValueError("bucket must not be empty")
        if prefix.startswith("/") or (prefix and not prefix.endswith("/")):
            raise ValueError("prefix must be empty or a relative path ending in '/'")
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes")
        self._endpoint_url = endpoint_url
        self._bucket = bucket
        self._region = region
        self._prefix = prefix
        self._tmp_prefix = prefix + "tmp/"
        self._part_size = part_size
        self._credentials = _Credentials(access_key, secret_key)
        self._max_single_copy = MAX_SINGLE_COPY
        self._copy_part_size = COPY_PART_SIZE
        self._client: S3Client | None = None
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._client_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"S3BlobStore(endpoint_url={self._endpoint_url!r}, bucket={self._bucket!r}, prefix={self._prefix!r})"

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def prefix(self) -> str:
        """Every key this store writes starts with it, temp keys included."""
        return self._prefix

    def key_for(self, sha256: str) -> str:
        """The object key of a blob; rejects anything but a canonical sha256."""
        check_sha256(sha256)
        return f"{self._prefix}{sha256[:2]}/{sha256}"

    async def _get_client(self) -> S3Client:
        if self._client is not None:
            return self._client
        async with self._client_lock:
            if self._client is None:
                config = AioConfig(
                    signature_version="s3v4",
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=10,
                    read_timeout=60,
                    # Many S3-compatible servers reject the CRC trailers botocore now
                    # adds by default; content is verified by our own sha256 anyway.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                stack = contextlib.AsyncExitStack()
                with _s3_errors("connect"):
                    client = await stack.enter_async_context(
                        _session().create_client(
                            "s3",
                            endpoint_url=self._endpoint_url,
                            region_name=self._region,
                            aws_access_key_id=self._credentials.access_key,
                            aws_secret_access_key=self._credentials.secret_key,
                            config=config,
                        )
                    )
                self._exit_stack, self._client = stack, client
            return self._client

    async def close(self) -> None:
        """Close the client and its connections; a later call creates a new one."""
        async with self._client_lock:
            stack, self._exit_stack, self._client = self._exit_stack, None, None
            if stack is not None:
                await stack.aclose()

    async def __aenter__(self) -> S3BlobStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def create_bucket_if_missing(self) -> bool:
        """Create the bucket unless it exists; True if it was created (for tests and setup)."""
        client = await self._get_client()
        try:
            await client.head_bucket(Bucket=self._bucket)
            return False
        except ClientError as exc:
            if _error_code(exc) not in _BUCKET_MISSING:
                raise BlobError(f"S3 HeadBucket failed: {_error_code(exc)}") from exc
        except _NETWORK_ERRORS as exc:
            raise BlobError(f"S3 HeadBucket failed: {type(exc).__name__}") from exc
        try:
            if self._region == "us-east-1":
                await client.create_bucket(Bucket=self._bucket)
            else:
                await client.create_bucket(
                    Bucket=self._bucket,
                    CreateBucketConfiguration={
                        "LocationConstraint": cast("BucketLocationConstraintType", self._region)
                    },
                )
        except ClientError as exc:
            if _error_code(exc) in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return False  # created concurrently
            raise BlobError(f"S3 CreateBucket failed: {_error_code(exc)}") from exc
        except _NETWORK_ERRORS as exc:
            raise BlobError(f"S3 CreateBucket failed: {type(exc).__name__}") from exc
        return True

    async def _head_size(self, key: str) -> int | None:
        client = await self._get_client()
        with _s3_errors("HeadObject"):
            try:
                head = await client.head_object(Bucket=self._bucket, Key=key)
            except ClientError as exc:
                if _error_code(exc) in _NOT_FOUND:
                    return None
                raise
        return head["ContentLength"]

    async def put(
        self,
        chunks: AsyncIterable[bytes],
        *,
        expected_sha256: str | None = None,
        expected_size: int | None = None,
        max_size: int | None = None,
    ) -> BlobInfo:
        check_put(expected_sha256, expected_size, max_size)
        # Knowing the address up front, the upload can target it directly: an
        # uncompleted multipart upload is invisible, and completion comes after verifying.
        expected_key = self.key_for(expected_sha256) if expected_sha256 else None
        target = expected_key or self._tmp_prefix + uuid.uuid4().hex
        upload = _Upload(await self._get_client(), self._bucket, target, temp=target != expected_key)
        hasher = hashlib.sha256()
        size = 0
        buf = bytearray()
        done = False
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                # Fail as soon as a bound is crossed, not after pulling the whole source.
                if max_size is not None and size > max_size:
                    raise BlobTooLarge(f"blob exceeds {max_size} bytes")
                if expected_size is not None and size > expected_size:
                    raise BlobVerificationFailed(f"more than the expected {expected_size} bytes")
                if size > self._part_size * MAX_PARTS:
                    raise BlobTooLarge(f"blob exceeds {MAX_PARTS} parts of {self._part_size} bytes")
                hasher.update(chunk)
                buf += chunk
                while len(buf) >= self._part_size:
                    with memoryview(buf) as view:
                        part = bytes(view[: self._part_size])
                    del buf[: self._part_size]
                    await upload.add_part(part)
                    del part
            if expected_size is not None and size != expected_size:
                raise BlobVerificationFailed(f"got {size} bytes, expected {expected_size}")
            digest = hasher.hexdigest()
            if expected_sha256 is not None and digest != expected_sha256:
                raise BlobVerificationFailed(f"sha256 is {digest}, expected {expected_sha256}")
            final = self.key_for(digest)
            if upload.upload_id is None:
                # Smaller than one part: verified already, so it can go straight into place.
                if await self._head_size(final) != size:
                    with _s3_errors("PutObject"):
                        client = await self._get_client()
                        await client.put_object(Bucket=self._bucket, Key=final, Body=bytes(buf))
            elif await self._head_size(final) == size:
                done = True  # already stored: keep the existing object, drop the upload
                await _shielded(upload.discard())
            else:
                if buf:
                    await upload.add_part(bytes(buf))
                buf = bytearray()
                await upload.complete()
                if upload.temp:
                    # A wrong-sized object there (damaged) is replaced, as on local disk.
                    await self._copy(target, final, size)
                    done = True  # stored: a temp left behind is garbage for clean_temp, not a failure
                    await _shielded(upload.discard())
            done = True
            return BlobInfo(sha256=digest, size=size)
        finally:
            if not done:
                # Shielded: a cancelled put must still abort its upload.
                await _shielded(upload.discard())

    async def _copy(self, source: str, dest: str, size: int) -> None:
        client = await self._get_client()
        copy_source: CopySourceTypeDef = {"Bucket": self._bucket, "Key": source}
        if size <= self._max_single_copy:
            with _s3_errors("CopyObject"):
                await client.copy_object(Bucket=self._bucket, Key=dest, CopySource=copy_source)
            return
        part_size = max(self._copy_part_size, -(-size // MAX_PARTS))
        copy = _Upload(client, self._bucket, dest, temp=False)
        done = False
        try:
            await copy.start()
            assert copy.upload_id is not None
            for number, offset in enumerate(range(0, size, part_size), start=1):
                last = min(offset + part_size, size) - 1
                with _s3_errors("UploadPartCopy"):
                    result = await client.upload_part_copy(
                        Bucket=self._bucket,
                        Key=dest,
                        UploadId=copy.upload_id,
                        PartNumber=number,
                        CopySource=copy_source,
                        CopySourceRange=f"bytes={offset}-{last}",
                    )
                copy.parts.append({"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]})
            await copy.complete()
            done = True
        finally:
            if not done:
                await _shielded(copy.discard())

    async def open(
        self, sha256: str, *, start: int = 0, end: int | None = None, chunk_size: int = 256 * 1024
    ) -> AsyncIterator[bytes]:
        key = self.key_for(sha256)
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid byte range [{start}, {end})")
        size = await self._head_size(key)
        if size is None:
            raise BlobNotFound(sha256)
        stop = check_range(start, end, size)
        return self._read(key, sha256, start, stop, chunk_size)

    async def _read(
        self, key: str, sha256: str, start: int, stop: int, chunk_size: int
    ) -> AsyncIterator[bytes]:
        """Sends the GET only on first iteration, so an iterator never started holds no connection."""
        if start >= stop:
            return
        client = await self._get_client()
        with _s3_errors("GetObject"):
            try:
                response = await client.get_object(
                    Bucket=self._bucket, Key=key, Range=f"bytes={start}-{stop - 1}"
                )
            except ClientError as exc:
                if _error_code(exc) in _NOT_FOUND:
                    raise BlobNotFound(sha256) from None  # deleted since open() checked
                raise
        body = response["Body"]
        try:
            pos = start
            while pos < stop:
                want = min(chunk_size, stop - pos)
                data = bytearray()
                with _s3_errors("GetObject"):
                    while len(data) < want:
                        piece = await body.read(want - len(data))
                        if not piece:
                            break
                        data += piece
                if not data:
                    raise BlobError(f"blob {sha256} is shorter than recorded")
                pos += len(data)
                yield bytes(data)
        finally:
            body.close()

    async def stat(self, sha256: str) -> BlobInfo | None:
        size = await self._head_size(self.key_for(sha256))
        return None if size is None else BlobInfo(sha256=sha256, size=size)

    async def delete(self, sha256: str) -> bool:
        """DeleteObject answers alike for absent keys, so existence is asked first (racy, harmlessly)."""
        key = self.key_for(sha256)
        if await self._head_size(key) is None:
            return False
        client = await self._get_client()
        with _s3_errors("DeleteObject"):
            await client.delete_object(Bucket=self._bucket, Key=key)
        return True

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                client = await self._get_client()
                await client.head_bucket(Bucket=self._bucket)
        except Exception:
            return False
        return True

    async def clean_temp(self, older_than_seconds: float = DEFAULT_STALE_TEMP_SECONDS) -> int:
        """Abort multipart uploads and delete temp objects older than the cutoff, left by a crash.

        Younger ones may belong to a live put in another process, so they are kept.
        Returns how many were removed.
        """
        client = await self._get_client()
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        removed = 0
        with _s3_errors("ListMultipartUploads"):
            pages = client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self._bucket, Prefix=self._prefix
            )
            stale_uploads = [
                (upload["Key"], upload["UploadId"])
                async for page in pages
                for upload in page.get("Uploads", [])
                if upload["Initiated"] <= cutoff
            ]
        for key, upload_id in stale_uploads:
            with _s3_errors("AbortMultipartUpload"), contextlib.suppress(ClientError):
                await client.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)
                removed += 1
        with _s3_errors("ListObjectsV2"):
            objects = client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=self._tmp_prefix
            )
            stale_keys = [
                obj["Key"]
                async for page in objects
                for obj in page.get("Contents", [])
                if obj["LastModified"] <= cutoff
            ]
        for key in stale_keys:
            with _s3_errors("DeleteObject"):
                await client.delete_object(Bucket=self._bucket, Key=key)
            removed += 1
        return removed


class _Upload:
    """One multipart upload, started on its first part."""

    def __init__(self, client: S3Client, bucket: str, key: str, *, temp: bool) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.temp = temp
        self.completing = False
        self.upload_id: str | None = None
        self.parts: list[CompletedPartTypeDef] = []
        self.completed = False

    async def start(self) -> None:
        with _s3_errors("CreateMultipartUpload"):
            created = await self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)
        self.upload_id = created["UploadId"]

    async def add_part(self, data: bytes) -> None:
        if self.upload_id is None:
            await self.start()
            assert self.upload_id is not None
        number = len(self.parts) + 1
        with _s3_errors("UploadPart"):
            result = await self.client.upload_part(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=data
            )
        self.parts.append({"PartNumber": number, "ETag": result["ETag"]})

    async def complete(self) -> None:
        assert self.upload_id is not None
        self.completing = True
        with _s3_errors("CompleteMultipartUpload"):
            await self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},
            )
        self.completed = True

    async def abort(self) -> None:
        if self.upload_id is None or self.completed:
            return
        with _s3_errors("AbortMultipartUpload"):
            try:
                await self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
                )
            except ClientError as exc:
                if _error_code(exc) != "NoSuchUpload":
                    raise
        self.upload_id = None

    async def delete_object(self) -> None:
        with _s3_errors("DeleteObject"):
            await self.client.delete_object(Bucket=self.bucket, Key=self.key)

    async def discard(self) -> None:
        """Undo an upload: abort it, and remove its object if that is a temp one that may exist.

        Never raises, so the put's own exception reaches the caller unchanged.
        """
        try:
            await self.abort()
            if self.temp and self.completing:
                await self.delete_object()  # completed, or maybe so if interrupted mid-complete
        except Exception as exc:
            log.warning("could not clean up upload to %s: %s", self.key, exc)


async def _shielded(cleanup: Coroutine[object, object, None]) -> None:
    """Run cleanup to the end even if the caller is cancelled (again) meanwhile."""
    task = asyncio.ensure_future(cleanup)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        raise


if TYPE_CHECKING:

    def _implements_protocol(store: S3BlobStore) -> BlobStore:
        return store
