"""The hash chains: appending one event, and checking every chain.

Each business has one chain, and events no business owns (master keys, account keys)
form the "system" chain. An event's ``hash`` is the sha256 of the canonical encoding of
all its fields (events.py), ``prev_hash`` among them, so editing, removing, reordering or
inserting an event breaks a link that ``verify`` finds.

Serialising appends: the first statement of an append is an upsert of the chain's head
row (``auditchain``) that returns its sequence number and hash. On PostgreSQL the upsert
takes the row lock and a concurrent append waits and then reads the committed head; on
SQLite the write takes the database's write lock (within busy_timeout). So two
transactions never extend the same head, and the unique (chain, seq) would refuse it if
they did: the chain has no fork and no gap, whatever the number of processes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.audit.events import SYSTEM_CHAIN, Action, Actor, ByteSpan, Fields, Target, recording_target
from service.errors import AuditUnavailable
from service.ids import uuid7
from service.storage.db import Database, insert_for
from service.storage.models import AuditChain, AuditEvent, utcnow

log = logging.getLogger("callvault.audit")


def _dialect(session: AsyncSession) -> str:
    bind = session.bind
    assert bind is not None, "an audit append needs a session bound to the database"
    return bind.dialect.name


def fields_of(row: AuditEvent) -> Fields:
    return Fields(
        chain=row.chain,
        seq=row.seq,
        at=row.at,
        business_id=row.business_id,
        key_id=row.key_id,
        key_name=row.key_name,
        action=row.action,
        target_kind=row.target_kind,
        target_id=row.target_id,
        range_start=row.range_start,
        range_end=row.range_end,
        transport=row.transport,
        request_id=row.request_id,
        prev_hash=row.prev_hash,
    )


async def append(
    session: AsyncSession,
    chain: str,
    actor: Actor,
    action: Action,
    target: Target,
    *,
    business_id: str | None = None,
    span: ByteSpan | None = None,
) -> AuditEvent:
    """Add one event to ``chain`` in the caller's transaction (the caller commits): the
    action and its record commit together or not at all. An event that cannot be written
    is ``AuditUnavailable``, and the action is refused with it."""
    try:
        head = (
            await session.exec(
                insert_for(_dialect(session), AuditChain)
                .values(chain=chain, seq=0, head="")
                .on_conflict_do_update(index_elements=["chain"], set_={"seq": AuditChain.seq})
                .returning(col(AuditChain.seq), col(AuditChain.head))
            )
        ).one()
        seq, prev_hash = int(head[0]) + 1, str(head[1])
        fields = Fields(
            chain=chain,
            seq=seq,
            at=utcnow(),
            business_id=business_id,
            key_id=actor.key_id,
            key_name=actor.key_name,
            action=action.value,
            target_kind=target.kind.value,
            target_id=target.id,
            range_start=None if span is None else span.start,
            range_end=None if span is None else span.end,
            transport=actor.transport.value,
            request_id=actor.request_id,
            prev_hash=prev_hash,
        )
        digest = fields.digest()
        row = AuditEvent(id=uuid7(), hash=digest, **asdict(fields))
        session.add(row)
        await session.exec(
            update(AuditChain).where(col(AuditChain.chain) == chain).values(seq=seq, head=digest)
        )
        await session.flush()
    except SQLAlchemyError:
        log.exception("audit event could not be written", extra={"chain": chain})
        raise AuditUnavailable() from None
    return row


@dataclass(frozen=True, slots=True)
class Break:
    """The first broken link of a chain."""

    chain: str
    seq: int
    problem: str

    def __str__(self) -> str:
        return f"chain {self.chain}: at event {self.seq}: {self.problem}"


@dataclass(frozen=True, slots=True)
class ChainReport:
    chain: str
    events: int
    head: str
    broken: Break | None


async def _events(db: Database, chain: str, batch: int) -> AsyncIterator[AuditEvent]:
    after = 0
    while True:
        async with db.session() as session:
            rows = list(
                (
                    await session.exec(
                        select(AuditEvent)
                        .where(col(AuditEvent.chain) == chain, col(AuditEvent.seq) > after)
                        .order_by(col(AuditEvent.seq))
                        .limit(batch)
                    )
                ).all()
            )
        if not rows:
            return
        for row in rows:
            yield row
        after = rows[-1].seq


async def verify_chain(db: Database, chain: str, *, batch: int = 1000) -> ChainReport:
    """Walk one chain from its first event: numbers run 1, 2, 3 ..., each event's hash is
    that of its fields, each links to the one before, and the last is the head row's."""
    async with db.session() as session:
        head = await session.get(AuditChain, chain)
    expected_seq, prev_hash, count = 1, "", 0

    def report(seq: int, problem: str) -> ChainReport:
        return ChainReport(chain, count, prev_hash, Break(chain, seq, problem))

    async for row in _events(db, chain, batch):
        if row.seq != expected_seq:
            return report(expected_seq, f"missing (the next event is {row.seq}): removed")
        if row.prev_hash != prev_hash:
            return report(row.seq, "does not link to the event before it: removed, reordered or inserted")
        if fields_of(row).digest() != row.hash:
            return report(row.seq, "its fields do not match its hash: edited")
        expected_seq, prev_hash, count = expected_seq + 1, row.hash, count + 1
    if head is None:
        if count:
            return report(count, "the chain has no head row")
        return ChainReport(chain, 0, "", None)
    if head.seq != count or head.head != prev_hash:
        return report(
            count + 1 if head.seq > count else head.seq, f"the head says {head.seq} events: removed"
        )
    return ChainReport(chain, count, prev_hash, None)


async def verify_all(db: Database, only: str | None = None) -> list[ChainReport]:
    """Every chain (or the one named), each walked from its first event."""
    return [await verify_chain(db, name) for name in ([only] if only else await chains(db))]


async def chains(db: Database) -> list[str]:
    """Every chain that has a head or an event."""
    async with db.session() as session:
        heads = set((await session.exec(select(AuditChain.chain))).all())
        heads.update((await session.exec(select(AuditEvent.chain).distinct())).all())
    return sorted(heads)


async def record_in(
    session: AsyncSession,
    business_id: str,
    actor: Actor,
    action: Action,
    target: Target,
    *,
    span: ByteSpan | None = None,
) -> AuditEvent:
    """An event of a business, on its chain, in the caller's transaction."""
    return await append(session, business_id, actor, action, target, business_id=business_id, span=span)


async def audit_deletion(session: AsyncSession, business_id: str, actor: Actor, recording_id: str) -> None:
    """A recording's deletion (DELETE, a provider deleted with its recordings, retention)."""
    await record_in(session, business_id, actor, Action.RECORDING_DELETE, recording_target(recording_id))


async def record_system(db: Database, actor: Actor, action: Action, target: Target) -> None:
    """A fleet-wide event (master keys) on the system chain, in a transaction of its own."""
    async with db.session() as session:
        await append(session, SYSTEM_CHAIN, actor, action, target)
        await session.commit()
