"""Master-key rotation on a live fleet: which keys are still needed, and a re-seal that
waits for every live server process to seal with the new primary.

Each server process reports the keyring it holds in its heartbeat row
(``service.processes``). A process that has not loaded the new key file yet still seals
new writes under the old primary, so re-sealing before it catches up leaves work behind,
and retiring the old key would make those writes unreadable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection

from sqlmodel import col, func, select

from service.admin import AdminError, reseal_all
from service.processes import LiveProcess, ProcessRegistry
from service.recordings.sealed import rewrap_all
from service.sealing import Keyring
from service.storage.db import Database
from service.storage.models import ProviderSecret, RecordingKey


class RotationRefused(AdminError):
    """A rotation step that would leave a secret unreadable, or that the fleet has not caught up with."""


def describe(process: LiveProcess) -> str:
    return f"process {process.id} (seals with key {process.primary_key_id})"


async def still_needed(
    db: Database, registry: ProcessRegistry, key_ids: Collection[int], *, ignore_process: str | None = None
) -> list[str]:
    """Why any of ``key_ids`` cannot leave the keyring yet: stored secrets sealed with it,
    recordings' data keys wrapped with it, or a live process that seals with it. Empty when
    all of them can go."""
    wanted = sorted(set(key_ids))
    async with db.session() as session:
        counts = (
            await session.exec(
                select(ProviderSecret.key_id, func.count())
                .where(col(ProviderSecret.key_id).in_(wanted))
                .group_by(col(ProviderSecret.key_id))
            )
        ).all()
        wraps = (
            await session.exec(
                select(RecordingKey.key_id, func.count())
                .where(col(RecordingKey.key_id).in_(wanted))
                .group_by(col(RecordingKey.key_id))
            )
        ).all()
    reasons = [f"key {key_id} still seals {count} stored secrets" for key_id, count in sorted(counts)]
    reasons += [f"key {key_id} still wraps {count} recordings' data keys" for key_id, count in sorted(wraps)]
    reasons += [
        f"process {p.id} still seals new secrets with key {p.primary_key_id}"
        for p in await registry.live()
        if p.id != ignore_process and p.primary_key_id in wanted
    ]
    return reasons


async def _reseal_everything(db: Database, keyring: Keyring) -> int:
    """Secrets re-sealed and recordings' data keys re-wrapped (never their audio)."""
    return await reseal_all(db, keyring) + await rewrap_all(db, keyring)


async def reseal_fleet(
    db: Database,
    registry: ProcessRegistry,
    keyring: Keyring,
    *,
    wait_seconds: float,
    say: Callable[[str], None],
    poll_seconds: float = 0.5,
    settle_seconds: float = 1.0,
    progress_every: float = 5.0,
) -> int:
    """Re-seal every secret and re-wrap every data key under the primary; wait (up to ``wait_seconds``) until every live
    process seals with it, re-sealing meanwhile; then once more, after ``settle_seconds``
    (a write sealed under the old key just before its process swapped may commit just
    after). Answers how many were re-sealed; raises ``RotationRefused`` naming the
    processes that never caught up."""
    primary = keyring.primary_id
    total = await _reseal_everything(db, keyring)
    say(f"re-sealed {total} secrets and data keys under key {primary}")
    deadline = time.monotonic() + wait_seconds
    last_said: tuple[float, frozenset[str]] = (0.0, frozenset())
    while True:
        fleet = await registry.live()
        lagging = [p for p in fleet if p.primary_key_id != primary]
        if not lagging:
            break
        now = time.monotonic()
        names = frozenset(p.id for p in lagging)
        if now >= deadline:
            raise RotationRefused(
                f"after {wait_seconds:g} s, {len(lagging)} live processes still do not seal with key {primary}: "
                + "; ".join(describe(p) for p in lagging)
                + ". A process that reads CALLVAULT_MASTER_KEYS never reloads: restart it with the new keys."
                " What was re-sealed stays re-sealed; run reseal again when they have caught up"
            )
        if names != last_said[1] or now - last_said[0] >= progress_every:
            say(
                f"waiting for {len(lagging)} of {len(fleet)} live processes to load key {primary}: "
                + "; ".join(map(describe, lagging))
            )
            last_said = (now, names)
        await asyncio.sleep(poll_seconds)
        if more := await _reseal_everything(db, keyring):
            total += more
            say(f"re-sealed {more} more secrets and data keys written meanwhile under an older key")
    await asyncio.sleep(settle_seconds)
    if more := await _reseal_everything(db, keyring):
        total += more
        say(f"re-sealed {more} more secrets and data keys written while the processes swapped keys")
    say(f"every live process seals with key {primary}; {total} secrets and data keys re-sealed in all")
    return total
