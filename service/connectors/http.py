"""The only way connectors reach the network.

Placeholder shapes: the network-safety work replaces the bodies (address checks at
connect time, redirect rules, size caps) but keeps these signatures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from service.connectors.base import (
    ConnectorError,
    TimedOut,
    TlsFailure,
    UnexpectedAnswer,
    Unreachable,
)


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """Which addresses user-given URLs may reach, and how long and how much to wait for."""

    allow_private: bool = False
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    total_timeout: float = 60.0
    max_json_bytes: int = 8 * 1024 * 1024


def build_client(policy: NetworkPolicy, *, base_url: str = "") -> httpx.AsyncClient:
    """An httpx client for one connector: connection reuse, bounded waits, safe addresses."""
    return httpx.AsyncClient(
        base_url=base_url,
        follow_redirects=False,
        timeout=httpx.Timeout(policy.read_timeout, connect=policy.connect_timeout),
    )


async def read_json(response: httpx.Response, policy: NetworkPolicy) -> Any:
    """The JSON body of a streamed or plain response, refusing bodies over the cap."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body.extend(chunk)
        if len(body) > policy.max_json_bytes:
            raise UnexpectedAnswer("answer too large")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise UnexpectedAnswer() from exc


def error_for(exc: httpx.HTTPError) -> ConnectorError:
    """The short, secret-free ConnectorError that an httpx failure means."""
    if isinstance(exc, httpx.TimeoutException):
        return TimedOut()
    if isinstance(exc, httpx.ConnectError):
        return TlsFailure() if "SSL" in str(exc) or "certificate" in str(exc) else Unreachable()
    if isinstance(exc, httpx.TransportError):
        return Unreachable()
    return UnexpectedAnswer()
