"""Accounts, businesses and keys: the operator's side, used by the CLI and tests."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlmodel import col, select

from service.auth import Scope, generate_key, parse_scopes
from service.errors import InvalidArgument
from service.ids import uuid7
from service.providers.store import seal_context
from service.sealing import Keyring
from service.storage.db import Database
from service.storage.models import Account, ApiKey, Business, ProviderSecret, utcnow
from service.validation import check_text

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
        self, *, account_id: str, scopes: Iterable[str], business_id: str | None = None, name: str = ""
    ) -> CreatedKey:
        parsed = parse_scopes(scopes)
        if not parsed:
            raise AdminError(f"name at least one scope: {', '.join(s.value for s in Scope)}")
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
            await session.commit()
        return CreatedKey(id=key.id, plaintext=new.plaintext)

    async def list_keys(self, account_id: str | None = None) -> list[ApiKey]:
        async with self._db.session() as session:
            query = select(ApiKey).order_by(col(ApiKey.id))
            if account_id:
                query = query.where(col(ApiKey.account_id) == account_id)
            return list((await session.exec(query)).all())

    async def revoke_key(self, key_id: str) -> None:
        async with self._db.session() as session:
            key = await session.get(ApiKey, key_id)
            if key is None:
                raise AdminError(f"no key {key_id}")
            key.revoked_at = key.revoked_at or utcnow()
            session.add(key)
            await session.commit()


async def reseal_all(db: Database, keyring: Keyring, *, batch: int = 200) -> int:
    """Re-seal every secret not under the primary key. Commits per batch, so an
    interrupted run resumes where it stopped (the key_id column says what is left)."""
    done = 0
    while True:
        async with db.session() as session:
            rows = list(
                (
                    await session.exec(
                        select(ProviderSecret)
                        .where(col(ProviderSecret.key_id) != keyring.primary_id)
                        .limit(batch)
                    )
                ).all()
            )
            if not rows:
                return done
            for row in rows:
                row.sealed = keyring.reseal(
                    row.sealed, seal_context(row.business_id, row.provider_id, row.field)
                )
                row.key_id = keyring.primary_id
                session.add(row)
            await session.commit()
            done += len(rows)


async def keys_in_use(db: Database) -> set[int]:
    async with db.session() as session:
        return set((await session.exec(select(ProviderSecret.key_id).distinct())).all())
