"""A server-streaming google.api.HttpBody answer as plain bytes, for both transports.

A servicer that streams HttpBody messages may also offer `<Method>Bytes(request,
context)`: the whole call up to the first byte (authentication, lookups, response
headers), returning a ByteStream. gRPC wraps each chunk in one HttpBody message; the
REST shim sends the chunks as they are, rather than building an HttpBody per chunk only
to take its bytes out again (two copies of every chunk).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

BYTES_SUFFIX = "Bytes"


@dataclass(frozen=True, slots=True)
class ByteStream:
    content_type: str
    chunks: AsyncIterator[bytes]
