"""Tables. Secrets live only in ProviderSecret, sealed; nothing else holds one."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Computed,
    DateTime,
    Dialect,
    Index,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Instants stored as UTC everywhere: SQLite keeps no offset, so a value written with
    +07:00 would read back as a wrong naive time. Naive input is taken to be UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes: they were stored as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class RecordingStatus(enum.StrEnum):
    """Recording.processing_status."""

    PENDING = "pending"  # audio not stored yet (or not served yet): tried on every pull
    COMPLETED = "completed"  # the audio is stored and served (the mirrored API's word)
    FAILED = "failed"  # given up; last_error says why
    NO_AUDIO = "no_audio"  # the provider lists the call without a recording


class JobState(enum.StrEnum):
    """SyncJob.state."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def _ts(**kw: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=UtcDateTime, **kw)


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
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class KeyRevocation(SQLModel, table=True):
    """One row (id 1) whose counter every key revocation bumps in its own transaction:
    each process reads it at most once a second and drops its key cache when it moves."""

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    counter: int = 0


class ApiKeyAgent(SQLModel, table=True):
    """An agent a key is bound to: with only view_recording_self, the key sees exactly
    the recordings whose agent_key is one of its agents (service/recordings/agents.py)."""

    key_id: str = Field(primary_key=True, max_length=36, foreign_key="apikey.id", ondelete="CASCADE")
    agent_key: str = Field(primary_key=True, max_length=200)


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


# The one definition of a recording's agent key, the mirrored API's
# COALESCE(callcenterNumber, callcenterName): callvault stores an absent value as "", so
# an empty number falls back to the name.
AGENT_KEY_SQL = "coalesce(nullif(callcenter_number, ''), callcenter_name)"


class Recording(SQLModel, table=True):
    """A call and, once pulled or uploaded and verified, its audio (sha256 names the blob).

    `origin` is the provider id for pulled calls and "upload" for uploaded ones; with the
    provider's external id (the dataId of an upload) it makes every call land once."""

    __table_args__ = (
        UniqueConstraint("business_id", "origin", "external_id"),
        Index("ix_recording_business_call_at", "business_id", "call_at", "id"),
        # Equality on the phone, then already in callAt order: a filtered page reads only its rows.
        Index("ix_recording_business_phone", "business_id", "customer_phone_normalized", "call_at", "id"),
        Index("ix_recording_provider_status", "provider_id", "processing_status"),
        # The agents listing groups by agent_key per business and reads the latest call_at
        # from the index; agentKey filters and the view_recording_self scope seek on it.
        Index("ix_recording_business_agent", "business_id", "agent_key", "call_at"),
        # The legs of one call (call_id) are looked up together within a business.
        Index("ix_recording_business_call", "business_id", "call_id"),
    )

    id: str = Field(primary_key=True, max_length=36)
    business_id: str = Field(foreign_key="business.id", max_length=36)
    origin: str = Field(max_length=36)
    # Null for uploads, and once the provider is deleted with its recordings kept.
    provider_id: str | None = Field(default=None, max_length=36)
    source: str = Field(max_length=40)  # the provider kind, or "upload"
    external_id: str = Field(max_length=200)
    # The provider's id of the call this row is one leg of (CallRecord.call_id: Kazoo keeps
    # a recording per recorded leg); rows sharing it are one call. Null when a row is a call.
    call_id: str | None = Field(default=None, max_length=200)
    call_at: datetime = Field(sa_type=UtcDateTime)
    duration_seconds: float = 0.0
    direction: str = Field(max_length=10)  # in | out | internal
    outcome: str = Field(default="unknown", max_length=20)
    caller: str = Field(default="", max_length=100)
    callee: str = Field(default="", max_length=100)
    customer_phone: str = Field(default="", max_length=100)
    customer_phone_normalized: str = Field(default="", max_length=32)
    callcenter_number: str = Field(default="", max_length=100)
    callcenter_name: str = Field(default="", max_length=200)
    # Who took the call: the number when there is one, else the name ("" for neither).
    # Computed by the database from the two columns, so no write path can disagree
    # (stored on PostgreSQL; on SQLite, which cannot add a stored column, virtual and indexed).
    agent_key: str | None = Field(
        default=None, sa_column=Column(String(200), Computed(AGENT_KEY_SQL, persisted=True), nullable=True)
    )
    tag: str | None = Field(default=None, max_length=20)
    score: float | None = None
    note: str = Field(default="", max_length=2000)
    processing_status: str = Field(default=RecordingStatus.PENDING, max_length=20)  # RecordingStatus
    recording_ref: str | None = Field(default=None, max_length=2000)
    content_type: str = Field(default="audio/wav", max_length=100)
    size: int | None = None
    sha256: str | None = Field(default=None, max_length=64, index=True)
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=200)
    # Legal hold (service/recordings/holds.py): while held_at is set, no path deletes the row.
    held_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    hold_reason: str | None = Field(default=None, max_length=500)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class RecordingTotal(SQLModel, table=True):
    """How many recordings a business holds. Database triggers on recording (migration
    0017) keep it in the same transaction as every insert and delete, from any code path
    or process, so the unfiltered list's `total` is one row read, not a count."""

    business_id: str = Field(primary_key=True, max_length=36)
    total: int = Field(default=0, sa_type=BigInteger)


class RecordingKey(SQLModel, table=True):
    """A recording's data key, sealed by a master key (service/recordings/sealed.py), and the
    blob its sealed audio lives in. Deleting the row shreds the audio: no copy of the blob
    opens without it. key_id repeats the sealed header, so rotation finds what to re-wrap."""

    recording_id: str = Field(foreign_key="recording.id", primary_key=True, max_length=36, ondelete="CASCADE")
    business_id: str = Field(max_length=36)
    key_id: int = Field(index=True)
    wrapped: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    format: int  # service.audiocrypt.stream.FORMAT_VERSION the audio was sealed in
    blob_sha256: str = Field(max_length=64, index=True)
    blob_size: int


class Blob(SQLModel, table=True):
    """A stored blob and whether any recording still uses it (service/recordings/blobrefs.py).

    Null `unreferenced_since` means recordings refer to it; otherwise its bytes may be
    reclaimed once that instant is older than the grace period."""

    sha256: str = Field(primary_key=True, max_length=64)
    size: int
    unreferenced_since: datetime | None = Field(default=None, sa_type=UtcDateTime, index=True)


class ProviderSync(SQLModel, table=True):
    """Where a provider's pull stands. The lease makes one process at a time pull it,
    across processes and replicas sharing the database."""

    provider_id: str = Field(primary_key=True, max_length=36, foreign_key="provider.id", ondelete="CASCADE")
    business_id: str = Field(max_length=36)
    # Calls that started before this instant have been listed and upserted.
    cursor: datetime | None = Field(default=None, sa_type=UtcDateTime)
    # The highest listing position (CallRecord.position) upserted, for providers listed by
    # position (3CX: Id): the next pull asks for the rows beyond it.
    position: str | None = Field(default=None, max_length=200)
    # What the connector learned about the provider (non-secret strings, such as AntBuddy's
    # hash order) and is handed back on the next pull: service/sync/hints.py.
    hints: dict[str, str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    next_run_at: datetime | None = Field(default=None, sa_type=UtcDateTime, index=True)
    consecutive_failures: int = 0
    last_error: str | None = Field(default=None, max_length=200)
    last_success_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    lease_owner: str | None = Field(default=None, max_length=100)
    lease_until: datetime | None = Field(default=None, sa_type=UtcDateTime)


class SyncJob(SQLModel, table=True):
    # The scheduler looks for queued jobs on every tick.
    __table_args__ = (
        Index("ix_syncjob_provider_state", "provider_id", "state"),
        Index("ix_syncjob_state", "state"),
    )

    id: str = Field(primary_key=True, max_length=36)
    business_id: str = Field(foreign_key="business.id", index=True, max_length=36)
    provider_id: str = Field(max_length=36)
    trigger: str = Field(max_length=20)  # manual | schedule
    state: str = Field(default=JobState.QUEUED, max_length=20)  # JobState
    # The process (ServerProcess.id) running it; a running job whose runner is gone is
    # queued again and continued by the next pull of its provider.
    runner: str | None = Field(default=None, max_length=100)
    calls_seen: int = 0
    recordings_stored: int = 0
    bytes_stored: int = 0
    failures: int = 0
    error: str | None = Field(default=None, max_length=200)
    created_at: datetime = _ts()
    started_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class BusinessSettings(SQLModel, table=True):
    business_id: str = Field(primary_key=True, max_length=36, foreign_key="business.id")
    # Recordings older than this many days are deleted; None keeps them for ever.
    retention_days: int | None = None


class ProviderSettings(SQLModel, table=True):
    """A provider's own retention, overriding its business's (service/recordings/retention.py)."""

    provider_id: str = Field(primary_key=True, max_length=36, foreign_key="provider.id", ondelete="CASCADE")
    business_id: str = Field(max_length=36, index=True)
    retention_days: int


class ServerProcess(SQLModel, table=True):
    """A running server process, beaten every few seconds (service/processes.py); a row
    that stops being beaten belongs to a process that is gone."""

    id: str = Field(primary_key=True, max_length=100)
    host: str = Field(max_length=100)
    pid: int
    started_at: datetime = Field(sa_type=UtcDateTime)
    heartbeat_at: datetime = Field(sa_type=UtcDateTime, index=True)
    # The keyring it seals with: rotation waits until every live process has the new primary.
    primary_key_id: int | None = None
    key_ids: str = Field(default="", max_length=500)  # space-separated


class KeyCanary(SQLModel, table=True):
    """A known constant sealed under one master key, written when the key is first seen.
    A process whose key source holds other bytes under that id cannot open it, and
    refuses the keyring (at start, or on reload) instead of failing request by request."""

    key_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = _ts()


class Collection(SQLModel, table=True):
    """A named group of a business's recordings (service/recordings/collections.py)."""

    __table_args__ = (Index("ix_collection_business_created", "business_id", "created_at", "id"),)

    id: str = Field(primary_key=True, max_length=36)
    business_id: str = Field(foreign_key="business.id", max_length=36)
    name: str = Field(max_length=100)
    description: str = Field(default="", max_length=1000)
    color: str | None = Field(default=None, max_length=7)  # #RRGGBB
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class CollectionItem(SQLModel, table=True):
    """A recording in a collection. Both keys cascade: deleting a collection deletes its
    items, deleting a recording takes it out of every collection; neither touches the other."""

    __table_args__ = (
        Index("ix_collectionitem_collection_added", "collection_id", "added_at", "recording_id"),
    )

    collection_id: str = Field(
        primary_key=True, max_length=36, foreign_key="collection.id", ondelete="CASCADE"
    )
    recording_id: str = Field(
        primary_key=True, max_length=36, foreign_key="recording.id", ondelete="CASCADE", index=True
    )
    added_at: datetime = _ts()


class UploadUrlClaim(SQLModel, table=True):
    """A presigned upload URL in use or used (service/recordings/uploadlinks.py): the primary
    key on its nonce lets one PUT claim it and every other fail. Rows past their URL's
    expiry mean nothing (the URL is refused anyway) and are deleted."""

    nonce: str = Field(primary_key=True, max_length=32)
    recording_id: str = Field(max_length=36)
    expires_at: datetime = Field(sa_type=UtcDateTime, index=True)
    claimed_at: datetime = _ts()


class AuditChain(SQLModel, table=True):
    """The head of one audit hash chain (a business's, or "system"): an append locks this
    row first, so a chain grows by one event at a time across processes
    (service/audit/chain.py). It also says where the chain ends, so a removed last event shows."""

    chain: str = Field(primary_key=True, max_length=36)
    seq: int = 0
    head: str = Field(default="", max_length=64)


class AuditEvent(SQLModel, table=True):
    """One audited action, append-only; `hash` covers every other field and `prev_hash`
    (the previous event of the same chain), so an edit, removal or reordering shows."""

    __table_args__ = (
        UniqueConstraint("chain", "seq"),
        Index("ix_auditevent_chain_target", "chain", "target_id", "seq"),
        Index("ix_auditevent_chain_key", "chain", "key_id", "seq"),
    )

    id: str = Field(primary_key=True, max_length=36)
    chain: str = Field(max_length=36)
    seq: int
    at: datetime = Field(sa_type=UtcDateTime)
    business_id: str | None = Field(default=None, max_length=36)
    key_id: str | None = Field(default=None, max_length=36)
    key_name: str = Field(default="", max_length=200)
    action: str = Field(max_length=40)
    target_kind: str = Field(max_length=20)
    target_id: str = Field(max_length=100)
    # The bytes an audio read served, [start, end); null for other actions.
    range_start: int | None = Field(default=None, sa_type=BigInteger)
    range_end: int | None = Field(default=None, sa_type=BigInteger)
    transport: str = Field(max_length=10)
    request_id: str = Field(max_length=64)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
