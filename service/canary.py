"""Key canaries: a known constant sealed under each master key, kept in the database.

A key source that holds other bytes under a valid key id (a key file copied wrongly, or a
second `master-keys add` run on another host) parses and loads, and would only fail
request by request. The canary catches it once: a keyring whose key does not open that
key's canary is refused, at start and on every reload. A key without a canary gets one
the first time it is seen, after proving itself on a stored secret sealed under it.
"""

from __future__ import annotations

from sqlalchemy import delete
from sqlmodel import col, select

from service.kinds import KINDS
from service.providers.store import seal_context
from service.sealing import Keyring, SealContext, SealingError
from service.storage.db import Database, insert_for
from service.storage.models import KeyCanary, Provider, ProviderSecret, utcnow

CANARY_TEXT = "callvault master key canary"
PURPOSE = "key-canary"


class WrongKey(SealingError):
    """This key source holds different bytes under a key id than the key the database knows."""

    def __init__(self, key_id: int, what: str) -> None:
        super().__init__(
            f"key {key_id} of this key source is not the key {key_id} that sealed {what}: "
            "the key file or CALLVAULT_MASTER_KEYS holds other bytes under that id"
        )
        self.key_id = key_id


def _context(key_id: int) -> SealContext:
    return SealContext(purpose=PURPOSE, business_id="-", row_id=str(key_id), field="canary")


def _opens(keyring: Keyring, key_id: int, sealed: bytes) -> bool:
    try:
        return keyring.only(key_id).open(sealed, _context(key_id)) == CANARY_TEXT
    except SealingError:
        return False


async def check_canaries(db: Database, keyring: Keyring) -> list[int]:
    """Raise ``WrongKey`` for the first key of ``keyring`` that does not open its canary;
    write canaries for keys that have none. Answers the ids whose canary was written here."""
    async with db.session() as session:
        query = select(KeyCanary).where(col(KeyCanary.key_id).in_(keyring.ids))
        stored = {row.key_id: row.sealed for row in (await session.exec(query)).all()}
    written = []
    for key_id in keyring.ids:
        if key_id not in stored:
            await _prove_on_a_secret(db, keyring, key_id)
            if await _write(db, keyring, key_id):
                written.append(key_id)
            # Another process may have written it first, with bytes of its own.
            stored[key_id] = await _read(db, key_id)
        if not _opens(keyring, key_id, stored[key_id]):
            raise WrongKey(key_id, "its canary")
    return written


async def forget_canary(db: Database, key_id: int) -> None:
    """A retired key's canary goes with it: the id may be given to a new key later."""
    async with db.session() as session:
        await session.exec(delete(KeyCanary).where(col(KeyCanary.key_id) == key_id))
        await session.commit()


async def _prove_on_a_secret(db: Database, keyring: Keyring, key_id: int) -> None:
    """Secrets sealed before canaries existed are the only witness to a key's bytes."""
    async with db.session() as session:
        query = (
            select(ProviderSecret, Provider)
            .join(Provider, col(Provider.id) == col(ProviderSecret.provider_id))
            .where(col(ProviderSecret.key_id) == key_id)
            .limit(1)
        )
        found = (await session.exec(query)).first()
    if found is None:
        return
    row, provider = found
    kind = KINDS.get(provider.kind)
    if kind is None:  # its origin cannot be worked out: no witness here
        return
    ctx = seal_context(row.business_id, row.provider_id, row.field, kind=kind, settings=provider.settings)
    try:
        keyring.open(row.sealed, ctx)
    except SealingError:
        raise WrongKey(key_id, "the stored secrets") from None


async def _write(db: Database, keyring: Keyring, key_id: int) -> bool:
    sealed = keyring.only(key_id).seal(CANARY_TEXT, _context(key_id))
    stmt = (
        insert_for(db.dialect, KeyCanary)
        .values(key_id=key_id, sealed=sealed, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["key_id"])
    )
    async with db.session() as session:
        result = await session.exec(stmt)
        await session.commit()
    return bool(result.rowcount)


async def _read(db: Database, key_id: int) -> bytes:
    async with db.session() as session:
        row = await session.get(KeyCanary, key_id)
    assert row is not None  # written above, by us or by whoever won
    return row.sealed
