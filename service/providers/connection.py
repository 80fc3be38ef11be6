"""Proving a provider's credentials work: the connection test and `validate` on save."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from service.connectors.base import ConnectorError
from service.connectors.http import NetworkPolicy
from service.errors import Category, DomainError
from service.kinds.base import ProviderKind

log = logging.getLogger("callvault.connection")

UNEXPECTED = "unexpected answer from provider"


class ConnectionTestFailed(DomainError):
    """`validate: true` refused to store credentials that do not work."""

    category = Category.UNPROCESSABLE
    code = "provider_test_failed"

    def __init__(self, reason: str) -> None:
        super().__init__(f"connection test failed: {reason}", field="config")


class ConnectionChecker:
    def __init__(self, policy: NetworkPolicy) -> None:
        self._policy = policy

    async def problem(
        self, kind: ProviderKind, config: Mapping[str, Any], *, deadline: float | None = None
    ) -> str | None:
        """None when the provider accepts the credentials, else a short, secret-free reason.
        `deadline` is the caller's remaining time: the check gives up before the caller does."""
        limit = (
            self._policy.total_timeout
            if deadline is None
            else max(0.0, min(deadline, self._policy.total_timeout))
        )
        try:
            connector = kind.connector(config, self._policy)
        except (ValueError, TypeError):
            return "invalid settings"
        try:
            async with asyncio.timeout(limit):
                await connector.check()
        except ConnectorError as exc:
            return exc.message
        except TimeoutError:
            return "timed out"
        except Exception as exc:
            # The exception text may echo what the provider sent: log its type only.
            log.error(
                "connection check failed unexpectedly", extra={"kind": kind.name, "error": type(exc).__name__}
            )
            return UNEXPECTED
        finally:
            await connector.aclose()
        return None

    async def require(
        self, kind: ProviderKind, config: Mapping[str, Any], *, deadline: float | None = None
    ) -> None:
        reason = await self.problem(kind, config, deadline=deadline)
        if reason is not None:
            raise ConnectionTestFailed(reason)
