"""Providers of a business: create, read, merge-update, delete; secrets sealed on the way in.

Everything here is scoped by business id: a provider of another business is not found.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy import select as core_select
from sqlmodel import col, delete, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from service.audit.chain import record_in
from service.audit.events import Action, Actor, provider_target
from service.connectors.http import NetworkPolicy
from service.errors import InvalidArgument, KindNotSupported, ProviderNotFound
from service.ids import uuid7
from service.kinds import KINDS
from service.kinds.base import KEPT, ProviderKind
from service.providers.connection import ConnectionChecker
from service.recordings.holds import refuse_if_provider_holds
from service.sealing import SealContext, Sealer
from service.storage.db import Database
from service.storage.models import Provider, ProviderSecret, ProviderSync, Recording, utcnow
from service.sync.queue import forget_provider
from service.validation import check_plain, max_length

SECRET_PURPOSE = "provider-secret"  # noqa: S105  (a label, not a secret)
NAME_MIN, NAME_MAX = 2, max_length(Provider.name)

# The hot reads, as Core statements for `Database.reads` (compiled once per dialect). One
# provider with its sync state's last error in one statement; the summaries of a business.
_P, _S = Provider.__table__.c, ProviderSync.__table__.c  # type: ignore[attr-defined]
_GET = (
    core_select(_P.id, _P.kind, _P.name, _P.is_active, _P.settings, _S.last_error)
    .select_from(Provider.__table__.outerjoin(ProviderSync.__table__, _S.provider_id == _P.id))  # type: ignore[attr-defined]
    .where(_P.id == bindparam("provider_id"), _P.business_id == bindparam("business_id"))
)
_SUMMARIES = (
    core_select(_P.id, _P.kind, _P.name, _P.is_active, _P.settings, _P.created_at)
    .where(_P.business_id == bindparam("business_id"))
    .order_by(_P.id)
)


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
    name = check_plain(name, "name").strip()
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


def stored_kind(name: str) -> ProviderKind:
    """The kind of a stored provider, which this server may no longer know."""
    spec = KINDS.get(name)
    if spec is None:
        raise KindNotSupported(f"stored kind {name!r} cannot be read back by this server")
    return spec


def seal_context(
    business_id: str, provider_id: str, field: str, *, kind: ProviderKind, settings: Mapping[str, Any]
) -> SealContext:
    """Where a provider's secret belongs: its business, row and field, and the origins of
    the kind's host fields, so it opens only while the provider points where it was saved for."""
    return SealContext(
        purpose=SECRET_PURPOSE,
        business_id=business_id,
        row_id=provider_id,
        field=field,
        origin=kind.origin(settings),
    )


def _summary(row: tuple[Any, ...]) -> ProviderSummary:
    provider_id, kind, name, is_active, settings, created_at = row
    spec = KINDS.get(kind)
    return ProviderSummary(
        id=provider_id,
        kind=kind,
        name=name,
        is_active=is_active,
        preview=spec.preview(settings) if spec else "",
        created_at=created_at,
    )


class ProviderStore:
    def __init__(self, db: Database, keyring: Sealer, policy: NetworkPolicy) -> None:
        self._db = db
        self._keyring = keyring
        self._policy = policy
        self._connections = ConnectionChecker(policy)

    @property
    def keyring(self) -> Sealer:
        """The keyring secrets are sealed with; recordings' data keys are wrapped with it too."""
        return self._keyring

    async def summaries(self, business_id: str) -> list[ProviderSummary]:
        return await self._db.reads.each(_SUMMARIES, _summary, business_id=business_id)

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
        actor: Actor | None = None,
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
            await _audit(session, business_id, actor, Action.PROVIDER_CREATE, provider.id)
            await session.commit()
        return provider.id

    async def get(self, business_id: str, provider_id: str) -> ProviderDetails:
        """One short read: the provider (of this business only) and its last sync error."""
        row = await self._db.reads.first(_GET, provider_id=provider_id, business_id=business_id)
        if row is None:
            raise ProviderNotFound()
        found_id, kind, name, is_active, settings, error = row
        shown = stored_kind(kind).read_back(settings)
        return ProviderDetails(
            last_sync_error=error,
            id=found_id,
            kind=kind,
            name=name,
            is_active=is_active,
            base_url=shown.base_url,
            username=shown.username,
            config=shown.config,
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
        actor: Actor | None = None,
    ) -> None:
        """Merge `config` into what is stored and re-validate the result. With validate, the
        merged credentials are tested first, outside any transaction (it may take seconds),
        after the same checks, so a stored secret is never tested against a new host."""
        if validate:
            kind_spec, stored_settings, opened = await self._load(business_id, provider_id)
            checked = self._merge(kind_spec, stored_settings, opened, config or {})
            trial = {k: opened[k] if v is KEPT else v for k, v in checked.items()}
            await self._connections.require(kind_spec, kind_spec.with_defaults(trial), deadline=deadline)
        async with self._db.session() as session:
            row = await self._row(session, business_id, provider_id, for_update=True)
            if kind is not None and kind != row.kind:
                raise InvalidArgument("kind", "the kind of a provider cannot change")
            if name is not None:
                row.name = check_name(name)
            if is_active is not None:
                row.is_active = is_active
            if config:
                spec = stored_kind(row.kind)
                stored = await self._secret_rows(session, row.id)
                clean = self._merge(spec, row.settings, [s.field for s in stored], config)
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
            await _audit(session, business_id, actor, Action.PROVIDER_UPDATE, row.id)
            await session.commit()

    async def delete(
        self, business_id: str, provider_id: str, *, with_recordings: bool = False, actor: Actor | None = None
    ) -> list[str]:
        """Delete the provider and its secrets. Its recordings stay (detached from it);
        the answer lists their ids so a caller asked to delete them too can. Deleting them
        too (`with_recordings`) is refused whole while any is on legal hold, and leaves them
        pointing at the provider until they are deleted, so no hold lands on one meanwhile
        (service/recordings/holds.py)."""
        async with self._db.session() as session:
            # Locked first, as placing a hold locks it: the two are ordered.
            row = await self._row(session, business_id, provider_id, for_update=True)
            if with_recordings:
                await refuse_if_provider_holds(session, row.id)
            recordings = list(
                (await session.exec(select(Recording.id).where(col(Recording.provider_id) == row.id))).all()
            )
            await forget_provider(session, row.id)  # its sync jobs and state, and pending audio
            if not with_recordings:
                await session.exec(
                    update(Recording).where(col(Recording.provider_id) == row.id).values(provider_id=None)
                )
            await session.exec(delete(ProviderSecret).where(col(ProviderSecret.provider_id) == row.id))
            await session.delete(row)
            await _audit(session, business_id, actor, Action.PROVIDER_DELETE, row.id)
            await session.commit()
        return recordings

    async def test(self, business_id: str, provider_id: str, *, deadline: float | None = None) -> str | None:
        """The connection test with the stored credentials: None, or why it failed."""
        spec, config = await self.open_config(business_id, provider_id)
        return await self._connections.problem(spec, config, deadline=deadline)

    async def open_config(self, business_id: str, provider_id: str) -> tuple[ProviderKind, dict[str, Any]]:
        """The whole config with secrets opened, for a connector. Never leaves the process."""
        spec, settings, opened = await self._load(business_id, provider_id)
        return spec, {**spec.with_defaults(settings), **opened}

    # -- internals ---------------------------------------------------------------------

    async def _load(
        self, business_id: str, provider_id: str
    ) -> tuple[ProviderKind, dict[str, Any], dict[str, str]]:
        """(kind, stored settings, opened secrets by field) of one provider."""
        async with self._db.session() as session:
            row = await self._row(session, business_id, provider_id)
            stored = await self._secret_rows(session, row.id)
        spec = stored_kind(row.kind)
        opened = {
            s.field: self._keyring.open(
                s.sealed, seal_context(row.business_id, row.id, s.field, kind=spec, settings=row.settings)
            )
            for s in stored
        }
        return spec, row.settings, opened

    def _merge(
        self,
        spec: ProviderKind,
        settings: Mapping[str, Any],
        stored_secrets: Iterable[str],
        config: Mapping[str, Any],
    ) -> dict[str, Any]:
        """A PATCH's config merged into what is stored and validated, stored secrets not
        sent again KEPT. Moving a host field to another origin needs every secret again."""
        merged = {**settings, **dict.fromkeys(stored_secrets, KEPT), **config}
        clean = spec.validate(merged, policy=self._policy)
        spec.require_secrets_if_moved(settings, clean)
        return clean

    @staticmethod
    async def _row(
        session: AsyncSession, business_id: str, provider_id: str, *, for_update: bool = False
    ) -> Provider:
        mine = (col(Provider.id) == provider_id, col(Provider.business_id) == business_id)
        if for_update:
            # Lock before reading, so PATCHes merge one after another (a merge written over
            # a newer move would leave its secrets sealed for another origin). A write does
            # it on both databases: PostgreSQL locks the row; SQLite, with no row locks and
            # no write lock until a transaction's first write, takes its write lock.
            await session.exec(update(Provider).where(*mine).values(updated_at=utcnow()))
        row = (await session.exec(select(Provider).where(*mine))).first()
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
        spec = stored_kind(row.kind)
        for field, value in secrets.items():
            ctx = seal_context(row.business_id, row.id, field, kind=spec, settings=row.settings)
            sealed = self._keyring.seal(str(value), ctx)
            secret_row = by_field.get(field) or ProviderSecret(
                provider_id=row.id, business_id=row.business_id, field=field, key_id=0, sealed=b""
            )
            secret_row.sealed = sealed
            secret_row.key_id = self._keyring.key_id_of(sealed)
            session.add(secret_row)


async def _audit(
    session: AsyncSession, business_id: str, actor: Actor | None, action: Action, provider_id: str
) -> None:
    """A provider change's audit event, in the change's own transaction."""
    if actor is not None:
        await record_in(session, business_id, actor, action, provider_target(provider_id))
