"""The one table from domain error categories to gRPC codes and HTTP statuses
(grpc-gateway's mapping, with seed 000's documented overrides)."""

from __future__ import annotations

import logging

import grpc

from service.blobs.base import BlobNotFound
from service.errors import AudioMissing, Category, DomainError, SecretUnavailable
from service.sealing import SealingError

ERROR_DOMAIN = "callvault.dev"

log = logging.getLogger("callvault.errors")

GRPC_CODE: dict[Category, grpc.StatusCode] = {
    Category.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Category.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Category.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Category.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Category.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Category.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    Category.UNPROCESSABLE: grpc.StatusCode.FAILED_PRECONDITION,
    Category.UNSUPPORTED_MEDIA_TYPE: grpc.StatusCode.INVALID_ARGUMENT,
    Category.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Category.CONFLICT: grpc.StatusCode.FAILED_PRECONDITION,
    Category.RANGE_NOT_SATISFIABLE: grpc.StatusCode.OUT_OF_RANGE,
    Category.TOO_LARGE: grpc.StatusCode.INVALID_ARGUMENT,
    Category.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Category.DATA_LOSS: grpc.StatusCode.DATA_LOSS,
    Category.INTERNAL: grpc.StatusCode.INTERNAL,
}

HTTP_STATUS: dict[Category, int] = {
    Category.INVALID_ARGUMENT: 400,
    Category.UNAUTHENTICATED: 401,
    Category.PERMISSION_DENIED: 403,
    Category.NOT_FOUND: 404,
    Category.ALREADY_EXISTS: 409,
    Category.FAILED_PRECONDITION: 400,
    Category.UNPROCESSABLE: 422,
    Category.UNSUPPORTED_MEDIA_TYPE: 415,
    Category.RESOURCE_EXHAUSTED: 429,
    Category.CONFLICT: 409,
    Category.RANGE_NOT_SATISFIABLE: 416,
    Category.TOO_LARGE: 413,
    Category.UNAVAILABLE: 503,
    # Not 500 (nothing failed in the request path) and not 4xx (the caller did nothing wrong).
    Category.DATA_LOSS: 503,
    Category.INTERNAL: 500,
}

# For errors that arrive as a bare gRPC status (no domain error behind them).
HTTP_FOR_GRPC: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


def domain_error(exc: Exception) -> DomainError | None:
    """The domain error a caller sees for `exc`, or None for a bug (answered INTERNAL).
    Storage and sealing failures that reach a servicer are named here, for both transports."""
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, BlobNotFound):
        log.error("a stored recording's blob is missing", extra={"error": str(exc)})
        return AudioMissing()
    if isinstance(exc, SealingError):
        log.error("a stored secret cannot be opened", extra={"error": str(exc)})
        return SecretUnavailable()
    return None
