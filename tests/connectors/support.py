"""What the connector tests share: network policies, a closed port, walking a listing,
streaming a recording, and the check that an error message gives nothing away."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple

from service.connectors.base import CallRecord, Connector, ConnectorError
from service.connectors.http import NetworkPolicy

# Loopback fakes are private addresses; the waits are short so a hang fails fast.
POLICY = NetworkPolicy(allow_private=True, connect_timeout=2.0, read_timeout=2.0, total_timeout=5.0)
# For answers a fake holds back on purpose: the read wait runs out long before the answer comes.
SLOW_POLICY = NetworkPolicy(allow_private=True, connect_timeout=1.0, read_timeout=0.2)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def collect(connector: Connector, since: datetime, until: datetime) -> list[CallRecord]:
    return [record async for record in connector.list_calls(since, until)]


async def ids(connector: Connector, since: datetime, until: datetime) -> list[str]:
    return [record.external_id async for record in connector.list_calls(since, until)]


class Streamed(NamedTuple):
    """What came out of one recording: its digest, the stream's headers, how many chunks."""

    sha256: str
    length: int | None
    content_type: str
    chunks: int


async def digest(connector: Connector, ref: str) -> Streamed:
    sha, chunks = hashlib.sha256(), 0
    async with connector.open_recording(ref) as audio:
        async for chunk in audio.chunks:
            sha.update(chunk)
            chunks += 1
    return Streamed(sha.hexdigest(), audio.length, audio.content_type, chunks)


def assert_secret_free(exc: ConnectorError, leaks: Iterable[str]) -> None:
    """No text in ``leaks`` shows in the error, however it is printed."""
    text = f"{exc} {exc.message} {exc.args!r}"
    for leak in leaks:
        assert leak not in text
