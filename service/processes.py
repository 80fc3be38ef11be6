"""Which server processes are alive, as every process on the database sees it.

Each server process keeps one row and beats it every ``heartbeat_seconds``; a row whose
last beat is older than ``dead_after_seconds`` belongs to a process that is gone (killed,
crashed or cut off). Rules that must not wait for their own long timeouts ask this: a
sync lease whose holder is not live can be taken at once, and a master key that a live
process still seals with must not be retired. The row also says which keyring the process
holds, so rotation can tell when every process has picked up a new primary key.

Only server processes register; CLI commands are short-lived and hold no leases.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, or_
from sqlalchemy.orm import Mapped
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from service.storage.db import Database, insert_for
from service.storage.models import ServerProcess, utcnow

log = logging.getLogger("callvault.processes")

# A row this long dead is nobody's business any more: pruned by whoever beats next.
FORGET_AFTER = timedelta(hours=1)


def new_process_id() -> str:
    """Unique per process start: a restarted process must not inherit its predecessor's
    leases or rows, even with the same pid on the same host."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True, slots=True)
class LiveProcess:
    id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    primary_key_id: int | None
    key_ids: tuple[int, ...]


def _ids_text(ids: Iterable[int]) -> str:
    return " ".join(str(i) for i in sorted(set(ids)))


def _ids_of(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split())


class ProcessRegistry:
    """This process's row, and the view of everybody's."""

    def __init__(
        self,
        db: Database,
        *,
        heartbeat_seconds: float = 2.0,
        dead_after_seconds: float = 10.0,
        process_id: str | None = None,
    ) -> None:
        if dead_after_seconds <= heartbeat_seconds:
            raise ValueError("a process must be given more than one heartbeat before it counts as dead")
        self._db = db
        self.id = process_id or new_process_id()
        self.heartbeat_seconds = heartbeat_seconds
        self.dead_after = timedelta(seconds=dead_after_seconds)
        self._started_at = utcnow()
        self._primary_key_id: int | None = None
        self._key_ids: tuple[int, ...] = ()
        # How many processes were live at the last beat (at least this one), and who wants
        # to know when it changes (the rate limiter splits each key's budget by it).
        self.live_count = 1
        self._on_live_count: list[Callable[[int], None]] = []

    def on_live_count(self, callback: Callable[[int], None]) -> None:
        self._on_live_count.append(callback)

    def note_keyring(self, primary_id: int, key_ids: Iterable[int]) -> None:
        """Record the keyring this process now seals with; written at the next beat."""
        self._primary_key_id = primary_id
        self._key_ids = tuple(sorted(set(key_ids)))

    async def beat(self) -> None:
        """Say we are alive (and which keyring we hold); prune long-dead rows."""
        now = utcnow()
        values = {
            "heartbeat_at": now,
            "primary_key_id": self._primary_key_id,
            "key_ids": _ids_text(self._key_ids),
        }
        stmt = insert_for(self._db.dialect, ServerProcess).values(
            id=self.id,
            host=socket.gethostname()[:100],
            pid=os.getpid(),
            started_at=self._started_at,
            **values,
        )
        async with self._db.session() as session:
            await session.exec(stmt.on_conflict_do_update(index_elements=["id"], set_=values))
            await session.exec(
                delete(ServerProcess).where(col(ServerProcess.heartbeat_at) < now - FORGET_AFTER)
            )
            await session.commit()

    async def run(self) -> None:
        """Beat until cancelled. A failed beat is logged and retried at the next one: a
        database blip must not stop the process from saying it lives."""
        while True:
            try:
                await self.beat()
                await self.count_live()
            except Exception:
                log.warning("heartbeat failed", exc_info=True)
            await asyncio.sleep(self.heartbeat_seconds)

    async def count_live(self) -> int:
        """How many processes are live now; tells the watchers when that changed."""
        async with self._db.session() as session:
            count = (await session.exec(select(func.count()).select_from(self.live_ids().subquery()))).one()
        count = max(1, int(count))
        if count != self.live_count:
            self.live_count = count
            for callback in self._on_live_count:
                callback(count)
        return count

    async def stop(self) -> None:
        """Remove our row on a clean shutdown, so nobody waits for it to go stale."""
        async with self._db.session() as session:
            await session.exec(delete(ServerProcess).where(col(ServerProcess.id) == self.id))
            await session.commit()

    def _beating(self, now: datetime | None = None) -> ColumnElement[bool]:
        """SQL: the row was beaten within dead_after: the one definition of "live"."""
        return col(ServerProcess.heartbeat_at) >= (now or utcnow()) - self.dead_after

    def live_ids(self, now: datetime | None = None) -> SelectOfScalar[str]:
        """A subquery of the ids of live processes, for conditions such as
        ``lease_owner.not_in(registry.live_ids())``."""
        return select(ServerProcess.id).where(self._beating(now))

    def gone(self, process: Mapped[str | None], now: datetime | None = None) -> ColumnElement[bool]:
        """SQL: `process` names no live process (none at all, or one gone silent). The one
        test for "its holder is gone", used by sync leases and running sync jobs alike."""
        return or_(process.is_(None), process.not_in(self.live_ids(now)))

    async def live(self) -> list[LiveProcess]:
        async with self._db.session() as session:
            rows = (
                await session.exec(
                    select(ServerProcess).where(self._beating()).order_by(col(ServerProcess.started_at))
                )
            ).all()
        return [
            LiveProcess(
                id=row.id,
                host=row.host,
                pid=row.pid,
                started_at=row.started_at,
                heartbeat_at=row.heartbeat_at,
                primary_key_id=row.primary_key_id,
                key_ids=_ids_of(row.key_ids),
            )
            for row in rows
        ]

    async def is_live(self, process_id: str) -> bool:
        return any(p.id == process_id for p in await self.live())
