"""What both transports share about a call: who is calling (auth from metadata or
headers), the one structured log line per call, and rich gRPC statuses for errors."""

from __future__ import annotations

import contextvars
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from service import metrics
from service.audit.events import Actor, Transport
from service.auth import Authenticator, Principal, Requirement
from service.errors import (
    BusinessNotFound,
    DomainError,
    LinkInvalid,
    MissingScope,
    RateLimited,
    Unauthenticated,
)
from service.ratelimit import Decision, RateLimiter
from service.recordings.listenlinks import ListenGrant, ListenLinks
from service.recordings.uploadlinks import UploadGrant, UploadLinks
from service.transport.status import ERROR_DOMAIN, GRPC_CODE

log = logging.getLogger("callvault.calls")


class MetadataContext(Protocol):
    """The part of grpc.aio.ServicerContext that servicers use; the REST shim provides it too."""

    def invocation_metadata(self) -> Any: ...

    def time_remaining(self) -> float | None: ...


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def new_request_id() -> str:
    """128 random bits as 32 hex digits, as uuid4().hex looks, at a fifth of its cost."""
    return os.urandom(16).hex()


def request_id(incoming: str | None) -> str:
    """The caller's x-request-id when it is a sane token, else a new one."""
    return incoming if incoming and _REQUEST_ID.match(incoming) else new_request_id()


@dataclass(slots=True)
class CallRecord:
    method: str
    transport: str
    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.perf_counter)
    business_id: str | None = None
    key_id: str | None = None
    rate: Decision | None = None


current_call: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar("current_call", default=None)


# The call metrics' children by (method, transport, status): `labels()` takes a lock and
# builds a key on every call; there are a few hundred combinations at most.
_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def _metrics_for(method: str, transport: str, status: str) -> tuple[Any, Any]:
    key = (method, transport, status)
    found = _children.get(key)
    if found is None:
        found = _children[key] = (
            metrics.CALLS.labels(method, transport, status),
            metrics.CALL_SECONDS.labels(method, transport),
        )
    return found


def log_call(call: CallRecord, status: str, **extra: Any) -> None:
    """The one line per call, and the call metrics."""
    seconds = time.perf_counter() - call.started
    calls, latency = _metrics_for(call.method, call.transport, status)
    calls.inc()
    latency.observe(seconds)
    if not log.isEnabledFor(logging.INFO):
        return
    # makeRecord and handle, as log.info would, less its walk of the stack for a file and
    # line the JSON line does not carry.
    record = log.makeRecord(
        log.name,
        logging.INFO,
        __file__,
        0,
        "call",
        (),
        None,
        extra={
            "rpc_method": call.method,
            "transport": call.transport,
            "request_id": call.request_id,
            "business_id": call.business_id,
            "key_id": call.key_id,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            **extra,
        },
    )
    log.handle(record)


def metadata_value(context: MetadataContext, name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else value.decode()
    return None


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    business_id: str

    def actor(self, transport: Transport | None = None) -> Actor:
        """Who this is, for the audit log: the key (id and name), the transport (the call's,
        unless a listen link stands in for the key) and the request id the call answers in
        x-request-id."""
        call = current_call.get()
        return Actor(
            transport=transport or (Transport(call.transport) if call is not None else Transport.GRPC),
            request_id=call.request_id if call is not None else new_request_id(),
            key_id=self.principal.key_id,
            key_name=self.principal.key_name,
        )


class CallAuth:
    """Authenticates a call, applies the key's rate limit and picks its business; one
    place for both transports."""

    def __init__(self, authenticator: Authenticator, limiter: RateLimiter) -> None:
        self.authenticator = authenticator
        self.limiter = limiter

    async def principal(self, context: MetadataContext) -> Principal:
        principal = await self.authenticator.principal(metadata_value(context, "authorization"))
        call = current_call.get()
        if call is not None:
            call.key_id = principal.key_id
        self.admit(principal.key_id)
        return principal

    def admit(self, bucket: str) -> None:
        """Take one request from ``bucket``'s rate limit (a key id; for a call without a key,
        what it acts on instead), or raise ``RateLimited``."""
        if not self.limiter.enabled:
            return
        call = current_call.get()
        decision = self.limiter.take(bucket)
        if call is not None:
            call.rate = decision
        if not decision.allowed:
            metrics.RATE_LIMITED.labels(call.transport if call else "unknown").inc()
            raise RateLimited(decision.limit, decision.retry_after)

    def bearer_sent(self, context: MetadataContext) -> bool:
        return metadata_value(context, "authorization") is not None

    def signed_upload(self, links: UploadLinks, token: str, recording_id: str) -> UploadGrant:
        """What a presigned upload URL's token admits, in place of an API key: only
        UploadRecordingAudio takes one. Rate limited per recording, as a key is per key."""
        self.admit(f"upload:{recording_id}")
        grant = links.verify(token, recording_id)
        call = current_call.get()
        if call is not None:
            call.business_id = grant.business_id
        return grant

    async def listen(
        self, links: ListenLinks, token: str, recording_id: str, *scopes: Requirement
    ) -> tuple[Caller, ListenGrant]:
        """What a listen link's token admits, in place of an API key: the key that minted it,
        in the business it was minted for, while that key is live (not revoked, within the
        key cache's bound) and holds ``scopes``; else the link is invalid, never saying why.
        Rate limited as that key."""
        grant = links.verify(token, recording_id)
        call = current_call.get()
        if call is not None:
            call.key_id, call.business_id = grant.key_id, grant.business_id
        self.admit(grant.key_id)
        try:
            principal = await self.authenticator.principal_by_id(grant.key_id)
            principal.require(*scopes)
            business_id = await self.authenticator.business_for(principal, grant.business_id)
        except (Unauthenticated, MissingScope, BusinessNotFound):
            raise LinkInvalid() from None
        if business_id != grant.business_id:
            raise LinkInvalid()
        return Caller(principal, business_id), grant

    async def caller(self, context: MetadataContext, *scopes: Requirement) -> Caller:
        """The key and the business it acts for, once it holds every scope named: scopes
        are checked before anything is read or changed."""
        principal = await self.principal(context)
        principal.require(*scopes)
        business_id = await self.authenticator.business_for(
            principal, metadata_value(context, "x-business-id")
        )
        call = current_call.get()
        if call is not None:
            call.business_id = business_id
        return Caller(principal, business_id)

    async def business(self, context: MetadataContext, *scopes: Requirement) -> str:
        return (await self.caller(context, *scopes)).business_id


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def rich_status(error: DomainError) -> grpc.Status:
    """AIP-193: the status code, the message, ErrorInfo with the documented code as reason,
    and BadRequest naming the field where there is one."""
    code = GRPC_CODE[error.category]
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=error.code,
                domain=ERROR_DOMAIN,
                metadata={"field": error.field} if error.field else {},
            )
        )
    ]
    if isinstance(error, RateLimited):
        details.append(
            _pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=error.retry_after)))
        )
    if error.field:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=error.field, description=error.message
                        )
                    ]
                )
            )
        )
    status = status_pb2.Status(code=code.value[0], message=error.message, details=details)
    return rpc_status.to_status(status)


def internal_status() -> grpc.Status:
    return rpc_status.to_status(status_pb2.Status(code=code_pb2.INTERNAL, message="internal error"))
