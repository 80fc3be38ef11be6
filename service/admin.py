"""Accounts, businesses and keys: the operator's side, used by the CLI and tests."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy import update as sa_update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select

from service.audit.chain import append
from service.audit.events import SYSTEM_CHAIN, Action, Actor, Target, TargetKind
from service.auth import Scope, bump_revocations, generate_key, note_revoked, parse_scopes
from service.errors import InvalidArgument, KindNotSupported
from service.ids import uuid7
from service.providers.store import seal_context, stored_kind
from service.recordings.agents import check_agent_keys
from service.sealing import Keyring
from service.storage.db import Database
from service.storage.models import (
    Account,
    ApiKey,
    ApiKeyAgent,
    Business,
    Provider,
    ProviderSecret,
    utcnow,
)
from service.validation import check_text


async def _audit_key(session: AsyncSession, key: ApiKey, actor: Actor | None, action: Action) -> None:
    """A key's creation or revocation, in its transaction: on its business's chain, or on
    the system chain for an account key (it belongs to no one business)."""
    chain = key.business_id or SYSTEM_CHAIN
    await append(
        session,
        chain,
        actor or Actor.cli(),
        action,
        Target(TargetKind.API_KEY, key.id),
        business_id=key.business_id,
    )


_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?$")


class AdminError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class CreatedKey:
    id: str
    plaintext: str  # shown once, never stored


def _text(value: str, field: str, column: Any) -> str:
    """The API's text rule (no NUL, the column's length) for the operator's input too."""
    try:
        return check_text(value, field, column)
    except InvalidArgument as exc:
        raise AdminError(exc.message) from None


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:100] or "business"


class Admin:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_account(self, name: str) -> str:
        if not name.strip():
            raise AdminError("account name must not be empty")
        account = Account(id=uuid7(), name=_text(name.strip(), "name", Account.name))
        async with self._db.session() as session:
            session.add(account)
            await session.commit()
        return account.id

    async def create_business(self, account_id: str, name: str, slug: str | None = None) -> str:
        slug = slug or slugify(name)
        if not _SLUG.match(slug):
            raise AdminError("slug must be lower-case letters, digits and dashes")
        async with self._db.session() as session:
            if await session.get(Account, account_id) is None:
                raise AdminError(f"no account {account_id}")
            taken = (await session.exec(select(Business.id).where(col(Business.slug) == slug))).first()
            if taken:
                raise AdminError(f"slug {slug!r} is taken")
            clean = _text(name.strip(), "name", Business.name)
            business = Business(id=uuid7(), account_id=account_id, name=clean, slug=slug)
            session.add(business)
            await session.commit()
        return business.id

    async def create_key(
        self,
        *,
        account_id: str,
        scopes: Iterable[str],
        business_id: str | None = None,
        name: str = "",
        agent_keys: Iterable[str] = (),
        actor: Actor | None = None,
    ) -> CreatedKey:
        """`agent_keys` bind the key to agents: with view_recording_self (and not
        view_recording_all) it reads exactly their recordings."""
        parsed = parse_scopes(scopes)
        if not parsed:
            raise AdminError(f"name at least one scope: {', '.join(s.value for s in Scope)}")
        given = list(agent_keys)
        try:
            agents = check_agent_keys(given, field="--agent") if given else ()
        except InvalidArgument as exc:
            raise AdminError(exc.message) from None
        async with self._db.session() as session:
            if await session.get(Account, account_id) is None:
                raise AdminError(f"no account {account_id}")
            if business_id is not None:
                business = await session.get(Business, business_id)
                if business is None or business.account_id != account_id:
                    raise AdminError(f"no business {business_id} in account {account_id}")
            new = generate_key()
            key = ApiKey(
                id=uuid7(),
                key_hash=new.key_hash,
                prefix=new.prefix,
                name=_text(name, "name", ApiKey.name),
                account_id=account_id,
                business_id=business_id,
                scopes=" ".join(sorted(s.value for s in parsed)),
            )
            session.add(key)
            await session.flush()
            session.add_all(ApiKeyAgent(key_id=key.id, agent_key=agent) for agent in agents)
            await _audit_key(session, key, actor, Action.KEY_CREATE)
            await session.commit()
        return CreatedKey(id=key.id, plaintext=new.plaintext)

    async def key_agents(self, key_ids: Iterable[str]) -> dict[str, list[str]]:
        """The agents each key is bound to, in key order; keys bound to none are absent."""
        out: dict[str, list[str]] = {}
        async with self._db.session() as session:
            rows = await session.exec(
                select(ApiKeyAgent)
                .where(col(ApiKeyAgent.key_id).in_(list(key_ids)))
                .order_by(col(ApiKeyAgent.key_id), col(ApiKeyAgent.agent_key))
            )
            for row in rows.all():
                out.setdefault(row.key_id, []).append(row.agent_key)
        return out

    async def list_keys(self, account_id: str | None = None) -> list[ApiKey]:
        async with self._db.session() as session:
            query = select(ApiKey).order_by(col(ApiKey.id))
            if account_id:
                query = query.where(col(ApiKey.account_id) == account_id)
            return list((await session.exec(query)).all())

    async def revoke_key(self, key_id: str, *, actor: Actor | None = None) -> None:
        async with self._db.session() as session:
            key = await session.get(ApiKey, key_id)
            if key is None:
                raise AdminError(f"no key {key_id}")
            key.revoked_at = key.revoked_at or utcnow()
            session.add(key)
            await bump_revocations(session, self._db.dialect)
            await _audit_key(session, key, actor, Action.KEY_REVOKE)
            await session.commit()
        note_revoked()


async def reseal_all(db: Database, keyring: Keyring, *, batch: int = 200) -> int:
    """Re-seal every secret not under the primary key or not in the current format; return
    how many. Walks the rows in id order and commits per batch, so an interrupted run can
    simply be run again (rows already done are skipped).

    Each row is written by compare-and-set on the sealed value it read: a PATCH that wrote
    the row meanwhile is never undone. Such a row is read again and retried; it may need
    nothing by then (the PATCH sealed it under the primary key)."""
    done, after = 0, 0
    while True:
        async with db.session() as session:
            rows = list(
                (
                    await session.exec(
                        _sealed_rows()
                        .where(col(ProviderSecret.id) > after)
                        .order_by(col(ProviderSecret.id))
                        .limit(batch)
                    )
                ).all()
            )
            if not rows:
                return done
            done += await _reseal_batch(session, keyring, rows)
            await session.commit()
            after = rows[-1][0].id or 0


def _sealed_rows() -> Select[ProviderSecret, Provider]:
    """A secret with its provider (whose settings its seal context needs), read in one
    statement so both are seen at the same instant, and read afresh each time."""
    return (
        select(ProviderSecret, Provider)
        .join(Provider, col(Provider.id) == col(ProviderSecret.provider_id))
        .execution_options(populate_existing=True)
    )


_TABLE = ProviderSecret.__table__  # type: ignore[attr-defined]
# Write the new value only where the row still holds the one read: compare-and-set.
_SWAP = (
    sa_update(_TABLE)
    .where(_TABLE.c.id == bindparam("row"), _TABLE.c.sealed == bindparam("read"))
    .values(sealed=bindparam("new"), key_id=bindparam("key"))
)


async def _reseal_batch(
    session: AsyncSession, keyring: Keyring, rows: list[tuple[ProviderSecret, Provider]]
) -> int:
    """Compare-and-set the rows that need it in one round trip, then read them back: a row
    not holding what was written had changed since it was read, and is retried on its own."""
    planned = {
        secret.id: (secret.sealed, _resealed(keyring, secret, provider))
        for secret, provider in rows
        if keyring.needs_reseal(secret.sealed)
    }
    if not planned:
        return 0
    connection = await session.connection()
    await connection.execute(
        _SWAP,
        [
            {"row": row, "read": read, "new": new, "key": keyring.key_id_of(new)}
            for row, (read, new) in planned.items()
        ],
    )
    done = 0
    written = await session.exec(_sealed_rows().where(col(ProviderSecret.id).in_(planned)))
    for secret, provider in written.all():
        if secret.sealed == planned[secret.id][1]:
            done += 1
        else:
            done += await _reseal_row(session, keyring, secret, provider)
    return done


async def _reseal_row(
    session: AsyncSession, keyring: Keyring, secret: ProviderSecret, provider: Provider
) -> int:
    """One row changed under a batch: compare-and-set it, re-reading until it holds what was
    written or needs nothing. 1 if this call re-sealed it, 0 if not (or it is gone)."""
    while keyring.needs_reseal(secret.sealed):
        resealed = _resealed(keyring, secret, provider)
        swap = {"row": secret.id, "read": secret.sealed, "new": resealed, "key": keyring.key_id_of(resealed)}
        if (await (await session.connection()).execute(_SWAP, swap)).rowcount == 1:
            return 1
        fresh = (await session.exec(_sealed_rows().where(col(ProviderSecret.id) == secret.id))).first()
        if fresh is None:
            return 0
        secret, provider = fresh
    return 0


def _resealed(keyring: Keyring, secret: ProviderSecret, provider: Provider) -> bytes:
    try:
        kind = stored_kind(provider.kind)
    except KindNotSupported:
        raise AdminError(
            f"provider {provider.id} is of kind {provider.kind!r}, which this version does not "
            "know, so its secrets cannot be re-sealed: delete it, or re-seal with a version that knows it"
        ) from None
    ctx = seal_context(
        secret.business_id, secret.provider_id, secret.field, kind=kind, settings=provider.settings
    )
    return keyring.reseal(secret.sealed, ctx)
