"""A provider's sync state (ProviderSync): where its listing stands and how its pulls went.

Only sync/ writes it: this module the state, lease.py the lease columns. Every write of a
pull is made only while the writer still holds the lease, so a process that lost it can
neither move the cursor nor overwrite the new holder's state.

Where a pull lists (the window):

- [cursor - overlap, now), the first pull from `initial_lookback_days` back;
- reaching back the provider's trailing window for late rows as well (`lateRowsHours`,
  default a day): providers write a call's row when the call ends, so a long call turns
  up with a start time well before the last pull;
- except for providers listed by position (3CX: Id): they are asked for rows beyond the
  highest position stored (`after`), which finds late rows without re-reading a day.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from service.config import SyncSettings
from service.storage.db import Database, insert_for
from service.storage.models import Provider, ProviderSync, as_utc, utcnow

FAILURE_BACKOFF_SECONDS = 60.0  # a failing provider waits 1, 2, 4... minutes, up to its interval
MAX_ERROR = 200
MAX_HINTS, MAX_HINT_NAME, MAX_HINT = 8, 40, 200  # connector hints: a few short strings


class ProviderGone(Exception):
    """The provider was deleted: its sync row (or the provider row itself) is gone."""


class LeaseLost(Exception):
    """Another process took the provider's lease over: our writes no longer count."""


def failure_backoff(failures: int, interval: timedelta) -> timedelta:
    """How long a provider rests after `failures` failed pulls in a row: doubling, capped."""
    seconds = FAILURE_BACKOFF_SECONDS * 2.0 ** min(max(failures - 1, 0), 32)
    return min(timedelta(seconds=seconds), interval)


def position_key(position: str) -> tuple[int, str]:
    """Positions are the connector's own, compared as it writes them: decimal numbers
    (3CX Ids) or fixed-width strings. A longer one is higher, so "10" is above "9"."""
    return len(position), position


def highest(current: str | None, seen: str | None) -> str | None:
    if seen is None:
        return current
    if current is None or position_key(seen) > position_key(current):
        return seen
    return current


@dataclass(frozen=True, slots=True)
class Window:
    """What one pull lists: calls started in [since, until), and rows beyond `after`."""

    since: datetime
    until: datetime
    after: str | None


async def ensure_state(db: Database, provider_id: str, business_id: str) -> None:
    """Create the provider's ProviderSync row unless it exists (first pull or request)."""
    stmt = insert_for(db.dialect, ProviderSync).values(provider_id=provider_id, business_id=business_id)
    async with db.session() as session:
        try:
            await session.exec(stmt.on_conflict_do_nothing(index_elements=["provider_id"]))
            await session.commit()
        except IntegrityError:  # the foreign key: no such provider any more
            raise ProviderGone() from None


async def read(db: Database, provider_id: str) -> ProviderSync | None:
    async with db.session() as session:
        return await session.get(ProviderSync, provider_id, populate_existing=True)


def bounded_hints(hints: Mapping[str, str]) -> dict[str, str]:
    """The hints worth keeping: a few short strings. Anything larger is not a hint (and is
    dropped rather than clipped, since a clipped value would be a wrong one)."""
    kept = {
        k: v
        for k, v in hints.items()
        if isinstance(k, str) and isinstance(v, str) and len(k) <= MAX_HINT_NAME and len(v) <= MAX_HINT
    }
    return dict(sorted(kept.items())[:MAX_HINTS])


async def last_error(db: Database, provider_id: str) -> str | None:
    """The provider's lastSyncError: why its last pull failed, None after a success."""
    state = await read(db, provider_id)
    return state.last_error if state else None


class PullState:
    """The sync-state writes of one process's pulls: `owner` is its lease owner id."""

    def __init__(self, db: Database, sync: SyncSettings, owner: str) -> None:
        self._db = db
        self._sync = sync
        self._owner = owner

    async def window(self, provider_id: str, late_rows: timedelta) -> Window:
        state = await read(self._db, provider_id)
        until = utcnow()
        if state is None or state.cursor is None:
            return Window(until - timedelta(days=self._sync.initial_lookback_days), until, None)
        since = as_utc(state.cursor) - timedelta(minutes=self._sync.overlap_minutes)
        if state.position is None:  # listed by time: re-read the trailing window too
            since = min(since, until - late_rows)
        return Window(since, until, state.position)

    async def listed(self, provider_id: str, window: Window, position: str | None) -> None:
        """Every call of `window` is upserted: the cursor moves to its end, and the stored
        position to the highest this listing reached."""
        values: dict[str, object] = {"cursor": window.until}
        top = highest(window.after, position)
        if top != window.after:
            values["position"] = top
        await self._write(provider_id, values)

    async def succeeded(self, provider_id: str, interval: timedelta) -> None:
        now = utcnow()
        values = {
            "last_error": None,
            "consecutive_failures": 0,
            "last_success_at": now,
            "next_run_at": now + interval,
        }
        await self._write(provider_id, values)

    async def failed(self, provider_id: str, message: str, interval: timedelta) -> None:
        """Count a failed pull and rest the provider; nothing to mark if it was deleted or
        taken over meanwhile."""
        state = await read(self._db, provider_id)
        failures = (state.consecutive_failures if state else 0) + 1
        values = {
            "last_error": message[:MAX_ERROR],
            "consecutive_failures": failures,
            "next_run_at": utcnow() + failure_backoff(failures, interval),
        }
        with contextlib.suppress(ProviderGone, LeaseLost):
            await self._write(provider_id, values)

    async def learned(self, provider_id: str, before: Mapping[str, str], hints: Mapping[str, str]) -> None:
        """Keep what the connector learned for the provider's next pull, when it changed;
        nothing to keep if it was deleted or taken over meanwhile."""
        kept = bounded_hints(hints)
        if kept != dict(before):
            with contextlib.suppress(ProviderGone, LeaseLost):
                await self._write(provider_id, {"hints": kept or None})

    async def why_lost(self, provider_id: str) -> Exception:
        """Our lease or sync row vanished: the provider was deleted, or another process took over."""
        async with self._db.session() as session:
            found = await session.exec(select(Provider.id).where(col(Provider.id) == provider_id))
            gone = found.first() is None
        return ProviderGone() if gone else LeaseLost()

    async def _write(self, provider_id: str, values: Mapping[str, object]) -> None:
        async with self._db.session() as session:
            result = await session.exec(
                update(ProviderSync)
                .where(
                    col(ProviderSync.provider_id) == provider_id, col(ProviderSync.lease_owner) == self._owner
                )
                .values(values)
            )
            await session.commit()
        if result.rowcount != 1:
            raise await self.why_lost(provider_id)
