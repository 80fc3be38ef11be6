"""The blob store the settings choose: local disk by default, or an S3-compatible bucket."""

from __future__ import annotations

from service.blobs.base import BlobStore
from service.blobs.local import LocalBlobStore
from service.config import Settings


def blob_store(settings: Settings) -> BlobStore:
    if settings.blob_backend == "s3":
        from service.blobs.s3 import S3BlobStore  # aiobotocore loads only when used

        s3 = settings.s3
        s3.check()
        return S3BlobStore(
            s3.endpoint_url,
            s3.bucket,
            access_key=s3.access_key,
            secret_key=s3.secret_key,
            region=s3.region,
            prefix=s3.prefix,
        )
    return LocalBlobStore(settings.resolved_blob_dir)


async def open_blob_store(store: BlobStore, settings: Settings) -> None:
    """Start-up work some backends need (a bucket to create in development)."""
    create = getattr(store, "create_bucket_if_missing", None)
    if settings.blob_backend == "s3" and settings.s3.create_bucket and create is not None:
        await create()


async def close_blob_store(store: BlobStore) -> None:
    close = getattr(store, "close", None)
    if close is not None:
        await close()
