"""Providers of a business: create, read, merge-update, delete; secrets sealed on the way in.

Everything here is scoped by business id: a provider of another business is not found.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import col, delete, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from service.connectors.http import NetworkPolicy
from service.errors import InvalidArgument, KindNotSupported, ProviderNotFound
from service.ids import uuid7
from service.kinds import KINDS
from service.kinds.base import KEPT, ProviderKind, ReadAs
from service.providers.connection import ConnectionChecker
from service.sealing import SealContext, Sealer
from service.storage.db import Database
from service.storage.models import Provider, ProviderSecret, Recording, utcnow
from service.sync.queue import forget_provider
from service.sync.state import last_error

SECRET_PURPOSE = "provider-secret"  # noqa: S105  (a label, not a secret)
NAME_MIN, NAME_MAX = 2, 60


@dataclass(frozen=True, slots=True)
class ProviderSummary:
    id: str
    kind: str
    name: str
    is_active: bool
    preview: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ProviderDetails:
    id: str
    kind: str
    name: str
    is_active: bool
    base_url: str | None
    username: str | None
    config: dict[str, Any]
    last_sync_error: str | None = None


def check_name(name: str) -> str:
    name = name.strip()
    if not NAME_MIN <= len(name) <= NAME_MAX:
        raise InvalidArgument("name", f"must be {NAME_MIN} to {NAME_MAX} characters")
    return name


def kind_of(name: str, *, field: str = "kind") -> ProviderKind:
    if not name:
        raise InvalidArgument(field, "is required")
    kind = KINDS.get(name)
    if kind is None:
        supported = ", ".join(sorted(KINDS))
        raise KindNotSupported(f"kind {name!r} is not supported; supported kinds: {supported}", field=field)
    return kind


def seal_context(business_id: str, provider_id: str, field: str) -> SealContext:
    return SealContext(purpose=SECRET_PURPOSE, business_id=business_id, row_id=provider_id, field=field)


class ProviderStore:
    def __init__(self, db: Database, keyring: Sealer, policy: NetworkPolicy) -> None:
        self._db = db
        self._keyring = keyring
        self._policy = policy
        self._connections = ConnectionChecker(policy)

    async def summaries(self, business_id: str) -> list[ProviderSummary]:
        async with self._db.session() as session:
            rows = await session.exec(
                select(Provider).where(col(Provider.business_id) == business_id).order_by(col(Provider.id))
            )
            return [self._summary(row) for row in rows.all()]

    async def create(
        self,
        business_id: str,
        *,
        kind: str,
        name: str,
        config: Mapping[str, Any],
        is_active: bool | None,
        validate: bool = False,
        deadline: float | None = None,
    ) -> str:
        """validate: refuse credentials the provider does not accept (checked before storing)."""
        spec = kind_of(kind)
        clean_name = check_name(name)
        clean = spec.validate(config, policy=self._policy)
        if validate:
            await self._connections.require(spec, spec.with_defaults(clean), deadline=deadline)
        settings, secrets = spec.split(clean)
        provider = Provider(
            id=uuid7(),
            business_id=business_id,
            kind=spec.name,
            name=clean_name,
            is_active=True if is_active is None else is_active,
            settings=settings,
        )
        async with self._db.session() as session:
            session.add(provider)
            await session.flush()
            self._put_secrets(session, provider, secrets)
            await session.commit()
        return provider.id

    async def get(self, business_id: str, provider_id: str) -> ProviderDetails:
        async with self._db.session() as session:
            row = await self._row(session, business_id, provider_id)
        spec = self._readable_kind(row)
        return ProviderDetails(
            last_sync_error=await last_error(self._db, row.id),
            id=row.id,
            kind=row.kind,
            name=row.name,
            is_active=row.is_active,
            base_url=spec.readable(row.settings, ReadAs.BASE_URL).get("baseUrl"),
            username=next(iter(spec.readable(row.settings, ReadAs.USERNAME).values()), None),
            config=spec.readable(row.settings, ReadAs.CONFIG),
        )

    async def update(
        self,
        business_id: str,
        provider_id: str,
        *,
        name: str | None,
        config: Mapping[str, Any] | None,
        is_active: bool | None,
        kind: str | None = None,
        validate: bool = False,
        deadline: float | None = None,
    ) -> None:
        """Merge `config` into what is stored and re-validate the result. With validate, the
        merged credentials are tested first, outside any transaction (it may take seconds)."""
        if validate:
            kind_spec, current = await self.open_config(business_id, provider_id)
            checked = kind_spec.validate({**current, **(config or {})}, policy=self._policy)
            await self._connections.require(kind_spec, kind_spec.with_defaults(checked), deadline=deadline)
        async with self._db.session() as session:
            row = await self._row(session, business_id, provider_id, for_update=True)
            if kind is not None and kind != row.kind:
                raise InvalidArgument("kind", "the kind of a provider cannot change")
            if name is not None:
                row.name = check_name(name)
            if is_active is not None:
                row.is_active = is_active
            if config:
                spec = self._readable_kind(row)
                stored = await self._secret_rows(session, row.id)
                merged: dict[str, Any] = {**row.settings, **{s.field: KEPT for s in stored}}
                merged.update(config)
                clean = spec.validate(merged, policy=self._policy)
                settings, secrets = spec.split(clean)
                row.settings = settings
                for secret_row in stored:
                    if secret_row.field not in secrets:
                        await session.delete(secret_row)
                self._put_secrets(
                    session, row, {k: v for k, v in secrets.items() if v is not KEPT}, existing=stored
                )
            row.updated_at = utcnow()
            session.add(row)
            await session.commit()

    async def delete(self, business_id: str, provider_id: str) -> list[str]:
        """Delete the provider and its secrets. Its recordings stay (detached from it);
        the answer lists their ids so a caller asked to delete them too can."""
        async with self._db.session() as session:
            row = await self._row(session, business_id, provider_id)
            recordings = list(
                (await session.exec(select(Recording.id).where(col(Recording.provider_id) == row.id))).all()
            )
            await forget_provider(session, row.id)  # its sync jobs and state, and pending audio
            await session.exec(
                update(Recording).where(col(Recording.provider_id) == row.id).values(provider_id=None)
            )
            await session.exec(delete(ProviderSecret).where(col(ProviderSecret.provider_id) == row.id))
            await session.delete(row)
            await session.commit()
        return recordings

    async def test(self, business_id: str, provider_id: str, *, deadline: float | None = None) -> str | None:
        """The connection test with the stored credentials: None, or why it failed."""
        spec, config = await self.open_config(business_id, provider_id)
        return await self._connections.problem(spec, config, deadline=deadline)

    async def open_config(self, business_id: str, provider_id: str) -> tuple[ProviderKind, dict[str, Any]]:
        """The whole config with secrets opened, for a connector. Never leaves the process."""
        async with self._db.session() as session:
            row = await self._row(session, business_id, provider_id)
            stored = await self._secret_rows(session, row.id)
        spec = self._readable_kind(row)
        config = spec.with_defaults(row.settings)
        for secret_row in stored:
            ctx = seal_context(row.business_id, row.id, secret_row.field)
            config[secret_row.field] = self._keyring.open(secret_row.sealed, ctx)
        return spec, config

    # -- internals ---------------------------------------------------------------------

    def _summary(self, row: Provider) -> ProviderSummary:
        spec = KINDS.get(row.kind)
        return ProviderSummary(
            id=row.id,
            kind=row.kind,
            name=row.name,
            is_active=row.is_active,
            preview=spec.preview(row.settings) if spec else "",
            created_at=row.created_at,
        )

    @staticmethod
    def _readable_kind(row: Provider) -> ProviderKind:
        spec = KINDS.get(row.kind)
        if spec is None:
            raise KindNotSupported(f"stored kind {row.kind!r} cannot be read back by this server")
        return spec

    @staticmethod
    async def _row(
        session: AsyncSession, business_id: str, provider_id: str, *, for_update: bool = False
    ) -> Provider:
        query = select(Provider).where(
            col(Provider.id) == provider_id, col(Provider.business_id) == business_id
        )
        if for_update:
            query = query.with_for_update()
        row = (await session.exec(query)).first()
        if row is None:
            raise ProviderNotFound()
        return row

    @staticmethod
    async def _secret_rows(session: AsyncSession, provider_id: str) -> list[ProviderSecret]:
        rows = await session.exec(
            select(ProviderSecret).where(col(ProviderSecret.provider_id) == provider_id)
        )
        return list(rows.all())

    def _put_secrets(
        self,
        session: AsyncSession,
        row: Provider,
        secrets: Mapping[str, Any],
        *,
        existing: list[ProviderSecret] | None = None,
    ) -> None:
        by_field = {s.field: s for s in existing or []}
        for field, value in secrets.items():
            sealed = self._keyring.seal(str(value), seal_context(row.business_id, row.id, field))
            secret_row = by_field.get(field) or ProviderSecret(
                provider_id=row.id, business_id=row.business_id, field=field, key_id=0, sealed=b""
            )
            secret_row.sealed = sealed
            secret_row.key_id = self._keyring.key_id_of(sealed)
            session.add(secret_row)
