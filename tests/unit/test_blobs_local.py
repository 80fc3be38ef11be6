"""Local blob store: what only files on disk do. The BlobStore contract itself, layout included,
is checked for every backend in tests/integration/test_blob_contract.py."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from service.blobs import LocalBlobStore
from tests.support.blob_backends import DATA, DATA_SHA, LocalBackend, source


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / "blobs")


async def test_modes(backend: LocalBackend) -> None:
    root = backend.root
    await backend.store.put(source(DATA))

    final = backend.path(DATA_SHA)
    assert stat.S_IMODE(final.stat().st_mode) == 0o640
    for d in (root, root / "tmp", final.parent, final.parent.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o750, d


async def test_open_iterator_survives_delete(backend: LocalBackend) -> None:
    """An open file outlives its name (an S3 read started before a delete fails instead)."""
    store = backend.store
    await store.put(source(DATA))
    chunks = await store.open(DATA_SHA, chunk_size=1000)
    first = await anext(chunks)

    await store.delete(DATA_SHA)

    rest = b"".join([c async for c in chunks])
    assert first + rest == DATA


async def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
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


async def test_ping_fails_without_temp_dir(backend: LocalBackend) -> None:
    assert await backend.store.ping() is True
    os.rmdir(backend.root / "tmp")
    assert await backend.store.ping() is False
