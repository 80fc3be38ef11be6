"""Figure `sealed`: what sealing recordings at rest costs. Downloads of a sealed recording
over gRPC and REST beside the same download of a plain one (seeded the way recordings stored
before sealing are served) in the same server; the write path that uploads and ingests share
(a sealed put beside a plain put of the same bytes into the same store); peak RSS of a fresh
server serving a large sealed recording; segments decrypted for a 64 KiB Range at its end."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator

import httpx

from bench import limits
from bench.audio import MIB, Stored, _download, audio_chunks, audio_sha256
from bench.context import Bench
from bench.report import Row, pct, verdict
from bench.seed import Tenant, make_tenants, settings_for
from bench.servers import ServerProcess
from service.blobs.local import LocalBlobStore
from service.recordings.blobrefs import hold
from service.recordings.sealed import SealedAudio
from service.sealing import Keyring, generate_key
from service.storage.db import Database
from service.storage.models import Recording

RATIO = 0.85
RSS_LIMIT_MIB = 150.0
RANGE = 64 * 1024
RUNS = 3
SEGMENTS = re.compile(r"^callvault_audio_segments_decrypted_total (\S+)$", re.MULTILINE)


def _register(server: ServerProcess, tenant: Tenant, name: str) -> str:
    headers = {"Authorization": f"Bearer {tenant.key}"}
    with httpx.Client(base_url=server.http_base, headers=headers, timeout=60) as client:
        created = client.post(
            "/api/v1/recordings",
            json={
                "dataId": f"bench-sealed-{name}-{uuid.uuid4().hex[:8]}",
                "callAt": "2026-05-20T08:14:00+07:00",
                "direction": "in",
            },
        )
        created.raise_for_status()
        return str(created.json()["id"])


def upload_sealed(server: ServerProcess, tenant: Tenant, mib: int, seed: int) -> Stored:
    """A REST PUT, as clients upload: the server seals it."""
    recording_id = _register(server, tenant, f"up-{seed}")
    headers = {"Authorization": f"Bearer {tenant.key}", "Content-Type": "audio/wav"}
    started = time.perf_counter()
    with httpx.Client(base_url=server.http_base, headers=headers, timeout=600) as client:
        answer = client.put(f"/api/v1/recordings/{recording_id}/audio", content=audio_chunks(mib, seed))
    seconds = time.perf_counter() - started
    expected = audio_sha256(mib, seed)
    if answer.status_code != 200 or answer.json().get("sha256") != expected:
        raise RuntimeError(f"sealed upload of {mib} MiB failed: {answer.status_code} {answer.text[:300]}")
    return Stored(recording_id, expected, mib * MIB, seconds)


async def _source(mib: int, seed: int) -> AsyncIterator[bytes]:
    for chunk in audio_chunks(mib, seed):
        yield chunk


def seed_plain(bench: Bench, server: ServerProcess, tenant: Tenant, mib: int, seed: int) -> Stored:
    """A recording stored the way callvault stored audio before sealing (plain, no data key):
    the server serves it plain until `callvault recordings seal`."""
    recording_id = _register(server, tenant, f"plain-{seed}")
    settings = settings_for(bench.dir("sealed"))

    async def run() -> None:
        db, store = Database(settings.resolved_database_url), LocalBlobStore(settings.resolved_blob_dir)
        try:
            blob = await store.put(_source(mib, seed))
            async with db.session() as session:
                row = await session.get(Recording, recording_id)
                assert row is not None
                row.sha256, row.size, row.processing_status = blob.sha256, blob.size, "completed"
                session.add(row)
                await session.flush()
                await hold(session, store, blob)
                await session.commit()
        finally:
            await db.dispose()

    asyncio.run(run())
    return Stored(recording_id, audio_sha256(mib, seed), mib * MIB, 0.0)


def put_rates(bench: Bench, mib: int) -> tuple[float, float]:
    """MiB/s of the write path uploads and ingests share: plain put, sealed put (median of 3)."""
    store = LocalBlobStore(bench.dir("sealed-puts"))
    sealed = SealedAudio(None, store, Keyring({1: generate_key()}, 1))  # type: ignore[arg-type]  # put needs no database

    async def plain_put() -> float:
        started = time.perf_counter()
        blob = await store.put(_source(mib, 7))
        seconds = time.perf_counter() - started
        await store.delete(blob.sha256)
        return mib / seconds

    async def sealed_put() -> float:
        started = time.perf_counter()
        put = await sealed.put("bench", uuid.uuid4().hex, _source(mib, 7))
        seconds = time.perf_counter() - started
        await store.delete(put.blob.sha256)
        return mib / seconds

    plain = limits.median_of(3, lambda: asyncio.run(plain_put()))
    return plain, limits.median_of(3, lambda: asyncio.run(sealed_put()))


def segments_decrypted(server: ServerProcess) -> float:
    found = SEGMENTS.search(httpx.get(f"{server.http_base}/metrics", timeout=10).text)
    return float(found.group(1)) if found else 0.0


def range_at_end(server: ServerProcess, tenant: Tenant, stored: Stored) -> tuple[int, bool]:
    """Segments the server decrypted for one 64 KiB Range at the end, and whether the bytes were right."""
    before = segments_decrypted(server)
    headers = {"Authorization": f"Bearer {tenant.key}", "Range": f"bytes=-{RANGE}"}
    answer = httpx.get(f"{server.http_base}/api/v1/recordings/{stored.id}/audio", headers=headers, timeout=60)
    block = b"".join(audio_chunks(1, 1))  # the recording is this MiB, repeated
    right = answer.status_code == 206 and answer.content == block[-RANGE:]
    return round(segments_decrypted(server) - before), right


def run(bench: Bench) -> None:
    plan = bench.plan
    data = bench.dir("sealed")
    (tenant,) = make_tenants(data, ["Sealed"])
    small, big = plan.audio_mib, plan.big_mib
    report = bench.report

    bench.say(
        f"figure sealed: {small} MiB downloads, sealed beside plain, gRPC and REST (h2load, {RUNS} each)"
    )
    with ServerProcess(data) as server:
        report.command("sealed", server.describe())
        sealed = upload_sealed(server, tenant, small, seed=2)
        plain = seed_plain(bench, server, tenant, small, seed=3)
        rates: dict[tuple[str, bool], float] = {}
        for rest in (False, True):  # interleaved, so a noisy neighbour hits both alike
            for name, stored in (("plain", plain), ("sealed", sealed)):
                _, rates[(name, rest)], _ = _download(
                    bench, server, tenant, stored, rest=rest, runs=RUNS, figure="sealed"
                )

    bench.say(f"figure sealed: {small} MiB puts, sealed beside plain, in process")
    plain_put, sealed_put = put_rates(bench, small)

    bench.say(f"figure sealed: {big} MiB sealed recording on a fresh server (peak RSS, Range at the end)")
    with ServerProcess(data) as server:
        large = upload_sealed(server, tenant, big, seed=1)
    with ServerProcess(data) as server:
        report.command("sealed", server.describe())
        idle = server.peak_rss_mib()
        _download(bench, server, tenant, large, rest=True, runs=1, figure="sealed")
        _download(bench, server, tenant, large, rest=False, runs=1, figure="sealed")
        rss = server.peak_rss_mib()
        segments, range_ok = range_at_end(server, tenant, large)

    for rest in (False, True):
        transport = "REST GET .../audio" if rest else "gRPC DownloadRecording"
        got, beside = rates[("sealed", rest)], rates[("plain", rest)]
        report.add(
            Row(
                "sealed",
                f"{transport}, {small} MiB sealed",
                f"{got:,.0f} MiB/s",
                f"plain {beside:,.0f} MiB/s",
                pct(got, beside),
                f">= {RATIO:.0%}",
                verdict(got >= RATIO * beside),
            )
        )
    report.add(
        Row(
            "sealed",
            f"sealed put (upload/ingest write path), {small} MiB",
            f"{sealed_put:,.0f} MiB/s",
            f"plain put {plain_put:,.0f} MiB/s",
            pct(sealed_put, plain_put),
            f">= {RATIO:.0%}",
            verdict(sealed_put >= RATIO * plain_put),
        )
    )
    report.add(
        Row(
            "sealed",
            f"sealed upload (REST PUT), {big} MiB",
            f"{big / large.upload_seconds:,.0f} MiB/s",
            "",
            "",
            "(no target)",
            "",
        )
    )
    report.add(
        Row(
            "sealed",
            f"peak RSS serving {big} MiB sealed (REST, then gRPC)",
            f"{rss:,.0f} MiB (idle {idle:,.0f})",
            f"{RSS_LIMIT_MIB:g} MiB",
            pct(rss, RSS_LIMIT_MIB),
            f"< {RSS_LIMIT_MIB:g} MiB",
            verdict(rss < RSS_LIMIT_MIB),
        )
    )
    report.add(
        Row(
            "sealed",
            f"segments decrypted, 64 KiB Range at the end of {big} MiB",
            f"{segments}",
            "2 segments",
            "",
            "<= 2",
            verdict(segments <= 2, range_ok),
        )
    )
    report.note(
        "[sealed] downloads: h2load, interleaved plain/sealed on one server; plain = a recording stored the way "
        "audio was stored before sealing (served plain until `callvault recordings seal`)"
    )
    report.note(
        "[sealed] puts: LocalBlobStore.put of the bytes beside SealedAudio.put (sha256 of the plaintext, AES-GCM "
        "segments, sha256 of the ciphertext) into the same store, in the bench process, median of 3; REST "
        "uploads and provider pulls both go through SealedAudio.put"
    )
    report.note(
        f"[sealed] Range: GET bytes=-{RANGE} of the {big} MiB recording; segments counted by the server's "
        f"callvault_audio_segments_decrypted_total; bytes {'match' if range_ok else 'DIFFER'}"
    )
