"""The one interface every recording blob store implements.

Blobs are content-addressed by sha256 and streamed in both directions: nothing here
ever holds a whole recording in memory. The interface is async and says nothing about
where bytes live, so an S3-compatible backend can implement it unchanged.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class BlobInfo:
    sha256: str
    size: int


class BlobError(Exception):
    """Any failure of the blob store itself."""


class BlobNotFound(BlobError):
    """No complete blob exists under that sha256."""


class BlobVerificationFailed(BlobError):
    """The bytes did not match the expected sha256 or length; nothing was stored."""


class BlobTooLarge(BlobError):
    """The source went past max_size; nothing was stored."""


def is_sha256(value: str) -> bool:
    """True for exactly 64 lower-case hex digits, the only form a blob name may take."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def check_sha256(value: str) -> str:
    """Reject anything but a canonical sha256, so a crafted name can never become a path or key."""
    if not is_sha256(value):
        raise ValueError("sha256 must be 64 lower-case hex digits")
    return value


def check_put(expected_sha256: str | None, expected_size: int | None, max_size: int | None) -> None:
    """The arguments every backend's put() takes, refused before any byte is read."""
    if expected_sha256 is not None:
        check_sha256(expected_sha256)
    for name, value in (("expected_size", expected_size), ("max_size", max_size)):
        if value is not None and value < 0:
            raise ValueError(f"{name} must not be negative")


def check_range(start: int, end: int | None, size: int) -> int:
    """Validate [start, end) against a blob of `size` bytes and return the exclusive end."""
    stop = size if end is None else end
    if start < 0 or start > size or stop < start or stop > size:
        raise ValueError(f"invalid byte range [{start}, {end}) for a blob of {size} bytes")
    return stop


async def close_stream(chunks: AsyncIterator[bytes]) -> None:
    """Close a stream `open` answered that will not be read to its end, so the blob it holds
    open is let go now rather than whenever it is collected."""
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


class BlobStore(Protocol):
    """Where recordings live once pulled."""

    async def put(
        self,
        chunks: AsyncIterable[bytes],
        *,
        expected_sha256: str | None = None,
        expected_size: int | None = None,
        max_size: int | None = None,
    ) -> BlobInfo:
        """Stream `chunks` into the store while hashing, and return what was stored.

        The blob becomes visible under its sha256 only once complete and verified.
        On a mismatch with the expected values (BlobVerificationFailed), past max_size
        (BlobTooLarge), on cancellation, or when the source raises (its own exception,
        unchanged), the partial upload is removed. Identical content is stored once.
        """
        ...

    async def open(
        self, sha256: str, *, start: int = 0, end: int | None = None, chunk_size: int = 256 * 1024
    ) -> AsyncIterator[bytes]:
        """Return an iterator over bytes [start, end) of a blob (end exclusive, None = to the end).

        Awaiting this checks existence (BlobNotFound) and the range (ValueError) before
        any byte is produced, so a server can still answer 404/416 instead of a broken stream.
        """
        ...

    async def stat(self, sha256: str) -> BlobInfo | None:
        """Size of a complete blob, or None when there is none."""
        ...

    async def delete(self, sha256: str) -> bool:
        """Remove a blob; True if it existed."""
        ...

    async def ping(self) -> bool:
        """Whether the store can take writes now (for readiness checks); never raises."""
        ...
