"""A hold placed while a delete, a provider deletion or a retention purge runs wins or
loses cleanly: never a deleted held recording, never half a provider deletion."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlmodel import col, select, update

from service.errors import RecordingNotFound, RecordingOnHold
from service.recordings.retention import purge_expired, set_retention
from service.storage.models import Provider, Recording
from tests.e2e.test_legal_hold import pulled
from tests.e2e.test_providers_rest import create
from tests.support.server import RunningServer, Tenant


async def _outcome(coro: object) -> str:
    try:
        await coro  # type: ignore[misc]
    except RecordingOnHold:
        return "on_hold"
    except RecordingNotFound:
        return "not_found"
    return "ok"


async def _exists(server: RunningServer, recording_id: str) -> Recording | None:
    async with server.service.db.session() as session:
        return await session.get(Recording, recording_id)


def _provider(server: RunningServer, tenant: Tenant, count: int) -> tuple[str, list[str]]:
    with server.http(tenant.business_key) as client:
        provider_id = create(client)
    return provider_id, pulled(server, tenant, provider_id, count)


def test_hold_and_delete_race_one_wins_whole(server: RunningServer) -> None:
    tenant = server.new_tenant()
    _, recordings = _provider(server, tenant, 24)
    holds, store = server.service.holds, server.service.recordings

    async def race(recording_id: str, hold_first: bool) -> tuple[str, str]:
        place = holds.place(tenant.business_id, recording_id, "race")
        delete = store.delete(tenant.business_id, recording_id)
        first, second = (place, delete) if hold_first else (delete, place)
        a, b = await asyncio.gather(_outcome(first), _outcome(second))
        return (a, b) if hold_first else (b, a)

    async def run() -> list[tuple[str, str]]:
        return list(await asyncio.gather(*(race(r, n % 2 == 0) for n, r in enumerate(recordings))))

    outcomes = server.call(run())
    for recording_id, (placed, deleted) in zip(recordings, outcomes, strict=True):
        row = server.call(_exists(server, recording_id))
        if placed == "ok":
            assert deleted == "on_hold" and row is not None and row.held_at is not None
        else:
            assert (placed, deleted) == ("not_found", "ok") and row is None


def test_a_hold_waits_for_a_provider_deletion_in_progress_and_loses(server: RunningServer) -> None:
    """The deletion holds the provider's lock: the hold waits for it, then finds the
    recording going with its provider."""
    tenant = server.new_tenant()
    provider_id, (recording_id,) = _provider(server, tenant, 1)

    async def run() -> str:
        async with server.service.db.session() as session:
            await session.exec(
                update(Provider).where(col(Provider.id) == provider_id).values(updated_at=datetime.now(UTC))
            )
            placing = asyncio.create_task(
                _outcome(server.service.holds.place(tenant.business_id, recording_id, "late"))
            )
            await asyncio.sleep(0.5)
            assert not placing.done()  # waiting for the deletion's lock
            provider = (await session.exec(select(Provider).where(col(Provider.id) == provider_id))).one()
            await session.delete(provider)
            await session.commit()
        return await placing

    assert server.call(run()) == "not_found"
    row = server.call(_exists(server, recording_id))
    assert row is not None and row.held_at is None  # still to be deleted by the deletion
    assert server.call(server.service.recordings.delete_many(tenant.business_id, [recording_id])) == 1


def test_hold_and_provider_deletion_race_all_or_nothing(server: RunningServer) -> None:
    for attempt in range(6):
        _provider_race(server, server.new_tenant(f"Race{attempt}"), deletion_first=attempt % 2 == 1)


def _provider_race(server: RunningServer, tenant: Tenant, *, deletion_first: bool) -> None:
    provider_id, recordings = _provider(server, tenant, 8)
    targets = recordings[::3]

    async def delete_provider() -> None:
        ids = await server.service.providers.delete(tenant.business_id, provider_id, with_recordings=True)
        await server.service.recordings.delete_many(tenant.business_id, ids)

    async def race() -> tuple[str, list[str]]:
        place = [_outcome(server.service.holds.place(tenant.business_id, r, "race")) for r in targets]
        delete = _outcome(delete_provider())
        if deletion_first:
            results = await asyncio.gather(delete, *place)
        else:
            results = await asyncio.gather(*place, delete)
            results = [results[-1], *results[:-1]]
        return results[0], list(results[1:])

    deleted, placed = server.call(race())
    rows = [server.call(_exists(server, r)) for r in recordings]
    if deleted == "ok":
        assert placed == ["not_found"] * len(targets)
        assert rows == [None] * len(recordings)
    else:
        assert deleted == "on_hold"
        assert all(row is not None and row.provider_id == provider_id for row in rows)
        held = [r for r, outcome in zip(targets, placed, strict=True) if outcome == "ok"]
        assert held and all(o in ("ok", "not_found") for o in placed)
        assert {row.id for row in rows if row is not None and row.held_at is not None} == set(held)


def test_holds_placed_during_a_retention_purge_are_kept_and_counted(server: RunningServer) -> None:
    tenant = server.new_tenant()
    provider_id, _ = _provider(server, tenant, 0)

    async def old_rows() -> list[str]:
        ids = []
        async with server.service.db.session() as session:
            for n in range(40):
                row = Recording(
                    business_id=tenant.business_id,
                    id=f"{tenant.business_id[:8]}-old-{n:03d}",
                    origin=provider_id,
                    provider_id=provider_id,
                    source="threecx",
                    external_id=f"old-{n}",
                    call_at=datetime.now(UTC) - timedelta(days=30 + n),
                    direction="in",
                )
                session.add(row)
                ids.append(row.id)
            await session.commit()
        return ids

    ids = server.call(old_rows())
    server.call(set_retention(server.service.db, tenant.business_id, 7))
    targets = ids[::4]
    try:
        _purge_during_holds(server, tenant, ids, targets)
    finally:
        server.call(set_retention(server.service.db, tenant.business_id, None))


def _purge_during_holds(server: RunningServer, tenant: Tenant, ids: list[str], targets: list[str]) -> None:
    async def race() -> tuple[int, int, list[str]]:
        async def place_slowly(recording_id: str, delay: float) -> str:
            await asyncio.sleep(delay)
            return await _outcome(server.service.holds.place(tenant.business_id, recording_id, "race"))

        purge = asyncio.create_task(purge_expired(server.service.db, server.service.recordings))
        placed = await asyncio.gather(*(place_slowly(r, n * 0.01) for n, r in enumerate(reversed(targets))))
        run = await purge
        return run.purged, run.held, list(reversed(placed))

    purged, held_count, placed = server.call(race())
    held = {r for r, outcome in zip(targets, placed, strict=True) if outcome == "ok"}
    for recording_id in ids:
        row = server.call(_exists(server, recording_id))
        assert (row is not None) == (recording_id in held), recording_id
    assert all(o in ("ok", "not_found") for o in placed)
    assert held_count == len(held) and purged == len(ids) - len(held)
