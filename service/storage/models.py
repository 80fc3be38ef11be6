"""Tables. Secrets live only in ProviderSecret, sealed; nothing else holds one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes: they were stored as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(**kw: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=DateTime(timezone=True), **kw)


class Account(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=36)
    name: str = Field(max_length=200)
    created_at: datetime = _ts()


class Business(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=36)
    account_id: str = Field(foreign_key="account.id", index=True, max_length=36)
    name: str = Field(max_length=200)
    slug: str = Field(max_length=100, unique=True)
    created_at: datetime = _ts()


class ApiKey(SQLModel, table=True):
    """A key is kept only as the sha256 of its full text: a key is 256 random bits,
    so a plain digest is as good as a slow hash and allows an indexed lookup."""

    id: str = Field(primary_key=True, max_length=36)
    key_hash: str = Field(max_length=64, unique=True)
    # The first characters of the key, shown in listings so people can tell keys apart.
    prefix: str = Field(max_length=16)
    name: str = Field(default="", max_length=200)
    account_id: str = Field(foreign_key="account.id", index=True, max_length=36)
    # Set for a business key; None for an account key.
    business_id: str | None = Field(default=None, foreign_key="business.id", max_length=36)
    scopes: str = Field(max_length=500)  # space-separated
    created_at: datetime = _ts()
    revoked_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class Provider(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=36)
    business_id: str = Field(foreign_key="business.id", index=True, max_length=36)
    kind: str = Field(max_length=40)
    name: str = Field(max_length=60)
    is_active: bool = True
    # The kind's non-secret settings, lowerCamelCase keys as on the wire.
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class ProviderSecret(SQLModel, table=True):
    """One sealed secret field of a provider. key_id repeats what the sealed header says,
    so rotation can find what is left to re-seal with an indexed query and resume."""

    __table_args__ = (UniqueConstraint("provider_id", "field"),)

    id: int | None = Field(default=None, primary_key=True)
    provider_id: str = Field(foreign_key="provider.id", index=True, max_length=36, ondelete="CASCADE")
    business_id: str = Field(max_length=36)
    field: str = Field(max_length=60)
    key_id: int = Field(index=True)
    sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
