"""The one interface every provider connector implements.

Connectors speak a provider's HTTP protocol and nothing else: they know no gRPC, no
database and no sealing. They get their settings (secrets already opened) as plain
values and an HTTP client (``http.ProviderClient``) that enforces the network-safety rules
and sends their credentials to the provider's own origin only.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable


class Direction(enum.StrEnum):
    INBOUND = "in"
    OUTBOUND = "out"
    INTERNAL = "internal"


class Outcome(enum.StrEnum):
    ANSWERED = "answered"
    MISSED = "missed"
    BUSY = "busy"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A call as every connector reports it, whatever the provider's own shape."""

    external_id: str
    started_at: datetime  # timezone-aware, UTC
    duration_seconds: float
    caller: str
    callee: str
    direction: Direction
    outcome: Outcome
    # Opaque to everyone but the connector that made it; None when the call has no recording.
    recording_ref: str | None
    # Where the provider's own listing order has reached with this row (3CX: its Id, which
    # grows as rows are written, so a late row of a long call sorts after earlier ones).
    # Opaque outside the connector, except for its order: the puller keeps the highest, where
    # a longer position is higher, then by text (decimal numbers, or fixed-width strings;
    # sync/state.py position_key). None for providers listed by time only.
    position: str | None = None
    # The provider's id of the call this row belongs to, where one call can give several rows
    # (Kazoo: one recording per recorded leg, all naming the call's interaction id). None
    # when each row is a call of its own.
    call_id: str | None = None


@dataclass(slots=True)
class AudioStream:
    content_type: str
    length: int | None
    chunks: AsyncIterator[bytes]


class ConnectorError(Exception):
    """A failure talking to a provider. The message is short, fixed and secret-free:
    it is shown to users as is (seed 000: {"ok": false, "error": "authentication failed"})."""

    message = "unexpected answer from provider"
    retryable = True

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        self.message = message or type(self).message
        self.retry_after = retry_after
        super().__init__(self.message)


class AuthenticationFailed(ConnectorError):
    message = "authentication failed"
    retryable = False


class Unreachable(ConnectorError):
    message = "host unreachable"


class TlsFailure(ConnectorError):
    message = "TLS handshake failed"


class TimedOut(ConnectorError):
    message = "timed out"


class UnexpectedAnswer(ConnectorError):
    message = "unexpected answer from provider"


class OtherOrigin(UnexpectedAnswer):
    """The provider handed back a URL (a next page, a download) on another origin than its
    own, where its credentials may not go. Retried like any odd answer: the provider's own
    setting (say, the public URL it writes into links) may be put right."""

    message = "provider URL on another origin refused"


class RateLimited(ConnectorError):
    message = "rate limited by provider"


class AddressNotAllowed(ConnectorError):
    message = "address not allowed"
    retryable = False


class RecordingNotFound(ConnectorError):
    message = "recording not found"
    retryable = False


class AudioNotReady(ConnectorError):
    """The provider lists the call but cannot serve its audio yet (Kazoo writes the
    recording document before its audio; 3CX may still be archiving). The recording stays
    pending and is tried again on later pulls, until it is too old to wait for."""

    message = "recording not ready yet"


class AccessDenied(ConnectorError):
    """The credentials work but the provider's role for them does not allow this (3CX:
    listing recordings needs a user role that may see them). Not "authentication failed":
    the fix is a role on the provider's side, not a new password."""

    message = "access denied by provider"
    retryable = False


class UnreadableAnswer(UnexpectedAnswer):
    """An answer the connector cannot read. The message names the field (one of ours or
    the provider's documented name, never a value), so lastSyncError says what was wrong;
    it is never taken for an empty page."""

    def __init__(self, field: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"unexpected answer from provider: {field}", retry_after=retry_after)
        self.field = field


class Connector(Protocol):
    """What the rest of callvault needs from a provider."""

    async def check(self) -> None:
        """Prove the credentials work; raise a ConnectorError saying why not."""

    def list_calls(
        self, since: datetime, until: datetime, *, after: str | None = None
    ) -> AsyncIterator[CallRecord]:
        """Every call that started in [since, until), each exactly once, walking the
        windows and pages the provider allows, oldest window first. ``after`` is the highest
        ``position`` stored from an earlier pull, for connectors that list by position: they
        also return rows beyond it whatever their start time (late rows)."""
        ...

    def open_recording(self, ref: str) -> AbstractAsyncContextManager[AudioStream]:
        """Stream one recording; the connection is released when the context exits."""
        ...

    async def aclose(self) -> None:
        """Release the HTTP client."""


@runtime_checkable
class LearnsHints(Protocol):
    """A connector that learns how its provider behaves (which of two documented forms it
    accepts, say) and would rather not learn it again on every pull. ``hints`` are small,
    non-secret strings: the sync state keeps them per provider and hands them back in the
    next connector's config, under the provider's own settings (a setting of the same name
    wins), so a connector reads them as it reads any optional setting."""

    @property
    def hints(self) -> Mapping[str, str]: ...
