"""Content-addressed, streamed storage for call recordings."""

from service.blobs.base import (
    BlobError,
    BlobInfo,
    BlobNotFound,
    BlobStore,
    BlobTooLarge,
    BlobVerificationFailed,
    is_sha256,
)
from service.blobs.local import LocalBlobStore

__all__ = [
    "BlobError",
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "BlobTooLarge",
    "BlobVerificationFailed",
    "LocalBlobStore",
    "is_sha256",
]
