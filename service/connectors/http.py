"""The only way connectors reach the network (placeholder: the network-safety helper fills it in)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """Which addresses user-given URLs may reach. Private networks are off by default."""

    allow_private: bool = False
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    total_timeout: float = 60.0
    max_json_bytes: int = 8 * 1024 * 1024


def build_client(policy: NetworkPolicy, *, base_url: str = "") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        follow_redirects=False,
        timeout=httpx.Timeout(policy.read_timeout, connect=policy.connect_timeout),
    )
