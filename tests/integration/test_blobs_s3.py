"""S3 blob store against a real SeaweedFS server: what only the S3 backend does.

The BlobStore contract (atomic visibility, cleanup after failures, no unfinished multipart
upload left behind, bounded memory...) is checked for every backend in test_blob_contract.py.
Here: key layout, part limits, server-side copies, reads racing a delete, unusable
endpoints, bucket setup, secrets, client lifecycle and stale-upload cleanup. Each test
works under its own key prefix in one shared bucket.
"""

from __future__ import annotations

import uuid

import pytest

from service.blobs import BlobError, BlobNotFound, BlobTooLarge
from service.blobs import s3 as s3_module
from service.blobs.s3 import S3BlobStore
from tests.support.blob_backends import (
    BIG,
    BIG_SHA,
    BUCKET,
    DATA,
    DATA_SHA,
    PART,
    S3Backend,
    make_s3_store,
    read_all,
    source,
    split,
)
from tests.support.postgres import free_port
from tests.support.seaweed import SeaweedS3

pytest_plugins = ["tests.support.blob_backends"]


async def test_key_layout(s3_backend: S3Backend) -> None:
    store = s3_backend.store
    await store.put(source(DATA))

    assert store.key_for(DATA_SHA).endswith(f"/{DATA_SHA[:2]}/{DATA_SHA}")
    assert await s3_backend.objects() == [store.key_for(DATA_SHA)]


async def test_part_count_limit(s3_backend: S3Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 takes at most 10,000 parts: past that the put fails early, as past max_size."""
    monkeypatch.setattr(s3_module, "MAX_PARTS", 1)

    with pytest.raises(BlobTooLarge, match="parts"):
        await s3_backend.store.put(source(*split(BIG, 1 << 20)))

    await s3_backend.assert_nothing_left()


async def test_large_blobs_are_copied_in_parts(s3_backend: S3Backend) -> None:
    """Past CopyObject's 5 GiB limit the temp is copied with UploadPartCopy; shrunk here to test it."""
    store = s3_backend.store
    store._max_single_copy = PART
    store._copy_part_size = PART
    info = await store.put(source(*split(BIG, 1 << 20)))

    assert info.sha256 == BIG_SHA
    assert await read_all(store, BIG_SHA) == BIG
    await s3_backend.assert_holds(BIG_SHA)


async def test_deleted_between_open_and_read(s3_backend: S3Backend) -> None:
    """No open file to hold on to: a read not yet started fails (a local file would still be read)."""
    store = s3_backend.store
    await store.put(source(DATA))
    chunks = await store.open(DATA_SHA)

    await store.delete(DATA_SHA)

    with pytest.raises(BlobNotFound):
        await anext(chunks)


async def test_ping_of_unusable_stores(seaweed_s3: SeaweedS3, s3_backend: S3Backend) -> None:
    assert await s3_backend.store.ping() is True
    async with make_s3_store(seaweed_s3, bucket="no-such-bucket") as missing:
        assert await missing.ping() is False
    async with make_s3_store(seaweed_s3, secret_key="wrong-" + seaweed_s3.secret_key) as forged:
        assert await forged.ping() is False
    async with make_s3_store(seaweed_s3, endpoint_url=f"http://127.0.0.1:{free_port()}") as down:
        assert await down.ping() is False


async def test_create_bucket_if_missing(seaweed_s3: SeaweedS3, s3_backend: S3Backend) -> None:
    name = f"cv-{uuid.uuid4().hex[:12]}"
    async with make_s3_store(seaweed_s3, bucket=name) as store:
        assert await store.create_bucket_if_missing() is True
        assert await store.create_bucket_if_missing() is False
        assert await store.ping() is True
    await s3_backend.client.delete_bucket(Bucket=name)


async def test_secrets_stay_out_of_reprs_and_errors(seaweed_s3: SeaweedS3) -> None:
    store = make_s3_store(seaweed_s3, bucket="no-such-bucket")
    assert "no-such-bucket" in repr(store)
    assert seaweed_s3.secret_key not in repr(store)
    assert seaweed_s3.access_key not in repr(store)
    try:
        with pytest.raises(BlobError) as caught:
            await store.put(source(DATA))
    finally:
        await store.close()
    message = str(caught.value)
    assert message.startswith("S3 ") and len(message) < 80, message
    assert seaweed_s3.secret_key not in message and seaweed_s3.access_key not in message

    with pytest.raises(ValueError) as rejected:
        S3BlobStore(
            f"http://user:{seaweed_s3.secret_key}@127.0.0.1:1",
            BUCKET,
            access_key=seaweed_s3.access_key,
            secret_key=seaweed_s3.secret_key,
        )
    assert seaweed_s3.secret_key not in str(rejected.value)


async def test_client_is_reopened_after_close(s3_backend: S3Backend) -> None:
    store = s3_backend.store
    await store.put(source(DATA))
    await store.close()
    await store.close()  # idempotent

    assert await read_all(store, DATA_SHA) == DATA


async def test_clean_temp_removes_only_stale_leftovers(s3_backend: S3Backend) -> None:
    """What a crashed put leaves: an unfinished multipart upload and a completed temp object."""
    store, s3 = s3_backend.store, s3_backend.client
    await s3.create_multipart_upload(Bucket=BUCKET, Key=f"{store.prefix}tmp/crashed")
    await s3.put_object(Bucket=BUCKET, Key=f"{store.prefix}tmp/orphan", Body=b"partial")
    await store.put(source(DATA))

    assert await store.clean_temp() == 0  # younger than an hour: may be a live put elsewhere
    assert await store.clean_temp(older_than_seconds=-60) == 2

    await s3_backend.assert_holds(DATA_SHA)
