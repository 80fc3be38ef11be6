"""Recordings at rest, on both databases and both blob backends: no plaintext audio is stored
by an upload or a pull; sealed audio moved, cut, swapped or altered does not open (and a
stream already started stops rather than serve a wrong byte); ranges at segment boundaries;
a deleted recording's copied bytes never open again; rotation re-wraps keys and leaves every
recording playable; plain audio stored before sealing is served, then sealed by
`seal_legacy`, resumably and beside concurrent deletes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from service.admin import Admin
from service.audiocrypt.stream import HEADER_SIZE, SEGMENT_SIZE, TAG_SIZE, SegmentOpener, associated_data
from service.config import Settings, SyncSettings
from service.connectors.http import NetworkPolicy
from service.errors import AudioSealBroken
from service.processes import ProcessRegistry
from service.providers.store import ProviderStore
from service.recordings.blobrefs import BlobSweeper, hold
from service.recordings.sealed import SealedAudio, key_context, rewrap_all, seal_legacy
from service.recordings.store import NewUpload, RecordingStore
from service.rotation import still_needed
from service.sealing import Keyring, SealingError, add_key, generate_key, retire_key
from service.storage.db import Database
from service.storage.migrate import upgrade
from service.storage.models import Recording, RecordingKey
from service.sync.scheduler import Puller
from tests.fakes.kazoo import FakeKazoo
from tests.support.blob_backends import Backend, source

pytest_plugins = ["tests.support.blob_backends"]

DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
PATTERN = b"PLANTED-VOICE-PATTERN:card 4111 1111 1111 1111;"
POLICY = NetworkPolicy(allow_private=True, connect_timeout=2.0, read_timeout=1.0, total_timeout=5.0)
SYNC = replace(SyncSettings(), initial_lookback_days=1, retry_base_seconds=0.01, retry_cap_seconds=0.1)
MAX = 8 * 1024 * 1024


def planted(size: int, seed: int = 0) -> bytes:
    """Audio of `size` bytes full of the planted pattern, distinct per seed."""
    unit = PATTERN + seed.to_bytes(4, "big")
    return (unit * (size // len(unit) + 1))[:size]


@dataclass
class Env:
    db: Database
    keyring: Keyring
    store: RecordingStore
    backend: Backend
    business_id: str
    url: str

    def with_keyring(self, keyring: Keyring) -> RecordingStore:
        return RecordingStore(self.db, self.backend.store, phone_region="TH", max_bytes=MAX, keyring=keyring)


@pytest.fixture(params=DATABASES)
async def env(request: pytest.FixtureRequest, blob_backend: Backend) -> AsyncIterator[Env]:
    make_url = cast(Callable[[str], str], request.getfixturevalue("database_url_factory"))
    url = make_url(request.param)
    upgrade(url)
    db = Database(url)
    admin = Admin(db)
    account = await admin.create_account("Acme")
    business = await admin.create_business(account, "Acme", slug=f"acme-{uuid.uuid4().hex[:12]}")
    keyring = Keyring({1: generate_key()}, 1)
    store = RecordingStore(db, blob_backend.store, phone_region="TH", max_bytes=MAX, keyring=keyring)
    yield Env(db, keyring, store, blob_backend, business, url)
    await db.dispose()


async def upload(env: Env, data: bytes, store: RecordingStore | None = None) -> str:
    store = store or env.store
    row, _ = await store.register_upload(
        env.business_id, NewUpload(data_id=uuid.uuid4().hex, call_at=datetime.now(UTC), direction="in")
    )
    await store.store_upload(
        env.business_id, row.id, source(*[data[i : i + 65536] for i in range(0, len(data), 65536)])
    )
    return row.id


async def download(
    env: Env, recording_id: str, range_header: str | None = None, store: RecordingStore | None = None
) -> bytes:
    _, _, chunks = await (store or env.store).open_audio(env.business_id, recording_id, range_header)
    return b"".join([chunk async for chunk in chunks])


async def key_of(env: Env, recording_id: str) -> RecordingKey:
    async with env.db.session() as session:
        key = await session.get(RecordingKey, recording_id, populate_existing=True)
    assert key is not None
    return key


async def every_stored_byte(env: Env) -> list[bytes]:
    """Every object in the store, read behind its back (temp files and partial uploads too)."""
    out = [await env.backend.raw(name.rsplit("/", 1)[-1]) for name in await env.backend.objects()]
    assert await env.backend.partials() == []
    if env.url.startswith("sqlite"):
        db_file = Path(env.url.removeprefix("sqlite:///").split("?")[0])
        for path in (db_file, Path(f"{db_file}-wal")):
            if path.exists():
                out.append(path.read_bytes())
    return out


async def test_no_plaintext_audio_is_stored_by_uploads_or_pulls(env: Env, tmp_path: Path) -> None:
    uploaded = planted(600 * 1024 + 5)
    recording_id = await upload(env, uploaded)
    with FakeKazoo() as kazoo:
        call = kazoo.add_recording(datetime.now(UTC) - timedelta(hours=1), audio_size=300 * 1024)
        pulled = call.audio.read()
        providers = ProviderStore(env.db, env.keyring, POLICY)
        provider_id = await providers.create(
            env.business_id,
            kind="kazoo",
            name="Kazoo PBX",
            config={"baseUrl": kazoo.base_url, "accountId": kazoo.account_id, "apiKey": kazoo.api_key},
            is_active=True,
        )
        processes = ProcessRegistry(env.db)
        await processes.beat()
        settings = Settings(data_dir=tmp_path, network=POLICY, sync=SYNC)
        job = await Puller(env.db, providers, env.backend.store, settings, processes=processes).pull(
            provider_id
        )
        assert (job.state, job.recordings_stored) == ("succeeded", 1)
    async with env.db.session() as session:
        pulled_id = (
            await session.exec(select(Recording.id).where(col(Recording.origin) == provider_id))
        ).one()

    assert await download(env, recording_id) == uploaded
    assert await download(env, pulled_id) == pulled
    stored = await every_stored_byte(env)
    assert len(stored) >= 2
    samples = [PATTERN, pulled[1000:1048], pulled[-48:], uploaded[-48:]]
    for blob in stored:
        for sample in samples:
            assert sample not in blob


async def test_ranges_at_segment_boundaries(env: Env) -> None:
    data = planted(3 * SEGMENT_SIZE + 100, seed=1)
    recording_id = await upload(env, data)
    seg = SEGMENT_SIZE
    for start, end in [
        (0, 0),
        (seg - 1, seg),
        (seg - 1, seg + 1),
        (seg, 2 * seg - 1),
        (2 * seg + 5, 3 * seg + 99),
    ]:
        assert await download(env, recording_id, f"bytes={start}-{end}") == data[start : end + 1], (
            start,
            end,
        )
    assert await download(env, recording_id, "bytes=-10") == data[-10:]
    assert await download(env, recording_id, f"bytes={3 * seg}-") == data[3 * seg :]


async def test_altered_cut_or_swapped_audio_does_not_open(env: Env) -> None:
    a, b = planted(2 * SEGMENT_SIZE, seed=2), planted(2 * SEGMENT_SIZE, seed=3)
    first, second = await upload(env, a), await upload(env, b)
    key_a, key_b = await key_of(env, first), await key_of(env, second)
    sealed_a, sealed_b = await env.backend.raw(key_a.blob_sha256), await env.backend.raw(key_b.blob_sha256)

    async def refused(damaged: bytes, range_header: str | None = None) -> None:
        await env.backend.plant(key_a.blob_sha256, damaged)
        with pytest.raises(AudioSealBroken) as broken:
            await download(env, first, range_header)
        assert broken.value.code == "recording_audio_damaged"

    flipped = bytearray(sealed_a)
    flipped[HEADER_SIZE + SEGMENT_SIZE + TAG_SIZE + 7] ^= 1
    await refused(bytes(flipped))
    await refused(bytes(flipped), f"bytes={SEGMENT_SIZE}-")
    await refused(sealed_a[:-1])  # truncated
    await refused(sealed_a[: HEADER_SIZE + SEGMENT_SIZE + TAG_SIZE])  # last segment dropped
    one = SEGMENT_SIZE + TAG_SIZE
    moved = sealed_a[:HEADER_SIZE] + sealed_a[HEADER_SIZE + one :] + sealed_a[HEADER_SIZE : HEADER_SIZE + one]
    await refused(moved)
    await refused(sealed_b)  # another recording's audio, same size
    await env.backend.plant(key_a.blob_sha256, sealed_a)
    assert await download(env, first) == a  # the original still opens


async def test_a_stream_already_started_stops_at_a_damaged_segment(env: Env) -> None:
    data = planted(12 * SEGMENT_SIZE, seed=4)  # more than one blob read
    recording_id = await upload(env, data)
    key = await key_of(env, recording_id)
    sealed = bytearray(await env.backend.raw(key.blob_sha256))
    sealed[-5] ^= 1  # the last segment
    await env.backend.plant(key.blob_sha256, bytes(sealed))
    _, _, chunks = await env.store.open_audio(env.business_id, recording_id, None)
    served = bytearray()
    with pytest.raises(AudioSealBroken):
        async for chunk in chunks:
            served += chunk
    assert 0 < len(served) < len(data)
    assert bytes(served) == data[: len(served)]  # nothing wrong was served


async def test_a_deleted_recordings_copied_bytes_never_open(env: Env) -> None:
    data = planted(SEGMENT_SIZE + 10, seed=5)
    recording_id = await upload(env, data)
    other = await upload(env, data)
    key = await key_of(env, recording_id)
    copied = await env.backend.raw(key.blob_sha256)  # a backup, a bucket version
    await env.store.delete(env.business_id, recording_id)

    async with env.db.session() as session:
        assert await session.get(RecordingKey, recording_id) is None  # the data key is gone
        keys = list((await session.exec(select(RecordingKey))).all())
    assert [k.recording_id for k in keys] == [other]
    # Nothing left in the database opens the copy: not the keyring, not another data key.
    for left in keys:
        data_key = SealedAudio(env.db, env.backend.store, env.keyring)._data_key(left)
        opener = SegmentOpener(
            data_key, associated_data(env.business_id, recording_id), copied[:HEADER_SIZE], len(data)
        )
        with pytest.raises(Exception, match="does not authenticate"):
            opener.open(0, copied[HEADER_SIZE : HEADER_SIZE + SEGMENT_SIZE + TAG_SIZE])


async def test_rotation_rewraps_keys_and_leaves_every_recording_playable(env: Env) -> None:
    payloads = [planted(SEGMENT_SIZE // 2 + i, seed=10 + i) for i in range(5)]
    ids = [await upload(env, data) for data in payloads]
    blobs_before = {rid: (await key_of(env, rid)).blob_sha256 for rid in ids}
    rotated = add_key(env.keyring)
    registry = ProcessRegistry(env.db)

    reasons = await still_needed(env.db, registry, [1])
    assert reasons == ["key 1 still wraps 5 recordings' data keys"]
    assert await rewrap_all(env.db, rotated, batch=2) == 5
    assert await rewrap_all(env.db, rotated) == 0  # resumable: nothing left
    assert await still_needed(env.db, registry, [1]) == []
    retired = retire_key(rotated, 1)
    store = env.with_keyring(retired)
    for rid, data in zip(ids, payloads, strict=True):
        key = await key_of(env, rid)
        assert key.key_id == 2 and key.blob_sha256 == blobs_before[rid]  # audio not rewritten
        assert await download(env, rid, store=store) == data
    with pytest.raises(AudioSealBroken):  # the retired key alone no longer opens them
        await download(env, ids[0], store=env.with_keyring(env.keyring))


async def test_rewrap_never_undoes_a_concurrent_upload(env: Env) -> None:
    rid = await upload(env, planted(1000, seed=20))
    rotated = add_key(env.keyring)
    new_data = planted(2000, seed=21)
    await asyncio.gather(rewrap_all(env.db, rotated), upload_again(env, rid, new_data, rotated))
    key = await key_of(env, rid)
    assert key.key_id == 2
    assert await download(env, rid, store=env.with_keyring(rotated)) == new_data


async def upload_again(env: Env, recording_id: str, data: bytes, keyring: Keyring) -> None:
    await env.with_keyring(keyring).store_upload(env.business_id, recording_id, source(data))


async def legacy(env: Env, data: bytes) -> str:
    """A recording stored the way callvault stored audio before sealing: plain."""
    row, _ = await env.store.register_upload(
        env.business_id, NewUpload(data_id=uuid.uuid4().hex, call_at=datetime.now(UTC), direction="in")
    )
    blob = await env.backend.store.put(source(data))
    async with env.db.session() as session:
        await session.exec(
            update(Recording)
            .where(col(Recording.id) == row.id)
            .values(sha256=blob.sha256, size=blob.size, processing_status="completed")
        )
        await hold(session, env.backend.store, blob)
        await session.commit()
    return row.id


async def test_plain_audio_is_served_then_sealed_resumably_beside_deletes(env: Env) -> None:
    payloads = [planted(SEGMENT_SIZE + 7 * i, seed=30 + i) for i in range(6)]
    ids = [await legacy(env, data) for data in payloads]
    shared = await legacy(env, payloads[0])  # equal plain audio shares one blob
    for rid, data in zip(ids, payloads, strict=True):
        assert await download(env, rid) == data  # served plain meanwhile
        assert await download(env, rid, "bytes=5-9") == data[5:10]

    said: list[str] = []
    sealed = SealedAudio(env.db, env.backend.store, env.keyring)
    doomed = ids[3]
    counts = await asyncio.gather(
        seal_legacy(env.db, sealed, say=said.append, batch=2), env.store.delete(env.business_id, doomed)
    )
    assert counts[0] in (6, 7)  # the deleted one may have gone first
    assert await seal_legacy(env.db, sealed, say=said.append) == 0  # nothing left: resumable
    assert said[-1] == "sealed 0 recordings; none is left plain"

    alive = [
        (rid, data)
        for rid, data in zip([*ids, shared], [*payloads, payloads[0]], strict=True)
        if rid != doomed
    ]
    for rid, data in alive:
        await key_of(env, rid)
        assert await download(env, rid) == data
    await BlobSweeper(env.db, env.backend.store, grace_seconds=0).sweep()
    await env.backend.assert_holds(*[(await key_of(env, rid)).blob_sha256 for rid, _ in alive])
    for blob in await every_stored_byte(env):
        assert PATTERN not in blob


async def test_a_data_key_opens_only_for_its_business_and_recording(env: Env) -> None:
    rid = await upload(env, planted(500, seed=40))
    wrapped = (await key_of(env, rid)).wrapped
    env.keyring.open(wrapped, key_context(env.business_id, rid))
    for business, recording in (("other", rid), (env.business_id, "other")):
        with pytest.raises(SealingError):
            env.keyring.open(wrapped, key_context(business, recording))
    with pytest.raises(AudioSealBroken):  # a keyring without its master key
        await download(env, rid, store=env.with_keyring(Keyring({7: generate_key()}, 7)))
