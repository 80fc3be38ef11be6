"""Domain errors. Each carries the documented error code; transports map the category
to a gRPC status and an HTTP status in exactly one place (service/transport/status.py)."""

from __future__ import annotations

import enum


class Category(enum.Enum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNPROCESSABLE = "UNPROCESSABLE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    CONFLICT = "CONFLICT"
    RANGE_NOT_SATISFIABLE = "RANGE_NOT_SATISFIABLE"
    TOO_LARGE = "TOO_LARGE"
    UNAVAILABLE = "UNAVAILABLE"
    DATA_LOSS = "DATA_LOSS"
    INTERNAL = "INTERNAL"


class DomainError(Exception):
    """An error a caller can act on. `code` is the documented error code (seed 000's
    `provider_not_found`, ...); the message is safe to show: it never holds a secret."""

    category = Category.INTERNAL
    code = "internal"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        # Messages may quote input (an unknown kind, a config key): bounded, so a huge value
        # cannot push a gRPC status past the metadata limit (the caller would see only that).
        message, field = _bounded(message, MAX_MESSAGE), None if field is None else _bounded(field, MAX_FIELD)
        super().__init__(message)
        self.message = message
        self.field = field


# UTF-8 bytes. A gRPC status carries the message three times (grpc-message, percent-encoded,
# and twice in grpc-status-details-bin): 500 bytes of emoji keep it well under the 8 KiB limit.
MAX_MESSAGE, MAX_FIELD = 500, 200


def _bounded(text: str, limit: int) -> str:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return data.decode("utf-8")
    return data[: limit - 3].decode("utf-8", "ignore") + "\u2026"


class InvalidArgument(DomainError):
    category = Category.INVALID_ARGUMENT
    code = "invalid_argument"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", field=field)


class MalformedRequest(DomainError):
    category = Category.INVALID_ARGUMENT
    code = "invalid_request"


class UnsupportedMediaType(DomainError):
    category = Category.UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_media_type"


class Unauthenticated(DomainError):
    category = Category.UNAUTHENTICATED
    code = "unauthenticated"


class MissingScope(DomainError):
    category = Category.PERMISSION_DENIED
    code = "insufficient_scope"

    def __init__(self, needed: str) -> None:
        super().__init__(f"this key lacks the {needed} scope")


class BusinessRequired(DomainError):
    category = Category.INVALID_ARGUMENT
    code = "business_required"

    def __init__(self) -> None:
        super().__init__("an account key must name a business with X-Business-Id", field="x-business-id")


class NotFound(DomainError):
    category = Category.NOT_FOUND
    code = "not_found"


class ProviderNotFound(NotFound):
    code = "provider_not_found"

    def __init__(self) -> None:
        super().__init__("no such provider in this business")


class BusinessNotFound(NotFound):
    code = "business_not_found"

    def __init__(self) -> None:
        super().__init__("no such business for this key", field="x-business-id")


class KindNotSupported(DomainError):
    category = Category.UNPROCESSABLE
    code = "provider_kind_not_supported"


class Unavailable(DomainError):
    category = Category.UNAVAILABLE
    code = "unavailable"


class RateLimited(DomainError):
    category = Category.RESOURCE_EXHAUSTED
    code = "rate_limited"

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(f"over {limit} requests per minute for this key; retry in {retry_after} s")
        self.retry_after = retry_after


class RecordingNotFound(NotFound):
    code = "recording_not_found"

    def __init__(self) -> None:
        super().__init__("no such recording in this business")


class SyncJobNotFound(NotFound):
    code = "sync_job_not_found"

    def __init__(self) -> None:
        super().__init__("no such sync job in this business")


class AudioNotStored(DomainError):
    category = Category.CONFLICT
    code = "recording_audio_not_stored"

    def __init__(self, status: str) -> None:
        super().__init__(f"the recording's audio is not stored (processing status: {status})")


class RangeNotSatisfiable(DomainError):
    category = Category.RANGE_NOT_SATISFIABLE
    code = "range_not_satisfiable"

    def __init__(self, size: int) -> None:
        super().__init__(f"the requested range is outside the {size} bytes of this recording", field="range")
        self.size = size


class AudioRejected(DomainError):
    category = Category.INVALID_ARGUMENT
    code = "audio_rejected"


class AudioTooLarge(DomainError):
    category = Category.TOO_LARGE
    code = "audio_too_large"


class AudioMissing(DomainError):
    """A stored recording whose bytes the blob store does not have: the server's fault
    (an operator must restore the blob), not the caller's, and no bug in the request."""

    category = Category.DATA_LOSS
    code = "recording_audio_missing"

    def __init__(self) -> None:
        super().__init__("the recording's audio is missing from the blob store; an operator has been alerted")


class AudioSealBroken(DomainError):
    """Sealed audio that does not open (service/recordings/sealed.py): a segment moved, cut or
    swapped, or its data key unreadable. The server's fault; no byte of it is served."""

    category = Category.DATA_LOSS
    code = "recording_audio_damaged"

    def __init__(self) -> None:
        super().__init__("the recording's stored audio does not open; an operator has been alerted")


class SecretUnavailable(DomainError):
    """A stored secret that the configured master keys cannot open (its key was retired or
    is not loaded, or the sealed value is damaged). Names no field and no value."""

    category = Category.CONFLICT
    code = "secret_unavailable"

    def __init__(self) -> None:
        super().__init__(
            "a stored secret of this provider cannot be opened with the configured master keys; "
            "send the provider's secrets again"
        )


class AudioReclaimed(DomainError):
    """The identical audio this upload reused was being freed at that moment; nothing changed."""

    category = Category.CONFLICT
    code = "audio_reclaimed"

    def __init__(self) -> None:
        super().__init__("the audio was freed while it was being stored; send it again")


class RecordingOnHold(DomainError):
    """A legal hold keeps the recording: nothing was deleted. Release the hold first."""

    category = Category.CONFLICT
    code = "recording_on_hold"

    def __init__(
        self, message: str = "the recording is on legal hold; release the hold to delete it"
    ) -> None:
        super().__init__(message)


class CollectionNotFound(NotFound):
    code = "collection_not_found"

    def __init__(self) -> None:
        super().__init__("no such collection in this business")


class CollectionRecordingsNotFound(NotFound):
    """Recordings named to be added to a collection that this business does not have."""

    code = "recording_not_found"

    def __init__(self, field: str, missing: list[str]) -> None:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        super().__init__(f"{field}: no such recording in this business: {shown}", field=field)


class UploadUrlRefused(DomainError):
    """A presigned upload URL that does not admit this upload (service/recordings/uploadlinks.py).
    The message says what the holder can do; it never says which check failed inside."""

    category = Category.PERMISSION_DENIED


class UploadUrlInvalid(UploadUrlRefused):
    code = "upload_url_invalid"

    def __init__(self) -> None:
        super().__init__("this upload URL is not valid for this recording")


class UploadUrlExpired(UploadUrlRefused):
    code = "upload_url_expired"

    def __init__(self) -> None:
        super().__init__("this upload URL has expired; register the recording again for a new one")


class UploadUrlUsed(UploadUrlRefused):
    code = "upload_url_used"

    def __init__(self) -> None:
        super().__init__("this upload URL has been used; register the recording again for a new one")


class AuditUnavailable(DomainError):
    """The audit log cannot take the event of a read: the read is refused (fail closed)."""

    category = Category.UNAVAILABLE
    code = "audit_unavailable"

    def __init__(self) -> None:
        super().__init__("the access could not be recorded in the audit log; try again")


class LinkRefused(DomainError):
    """A listen link that does not admit this request (service/recordings/listenlinks.py).
    Checked before anything is read, so it never says whether the recording exists."""

    category = Category.PERMISSION_DENIED


class LinkInvalid(LinkRefused):
    code = "link_invalid"

    def __init__(self) -> None:
        super().__init__("this listen link is not valid for this recording")


class LinkExpired(LinkRefused):
    code = "link_expired"

    def __init__(self) -> None:
        super().__init__("this listen link has expired; ask for a new one")
