"""A provider's access token, shared by every request of one connector.

Providers that log in (3CX, Kazoo, DTAC) hand out tokens that lapse, and some cancel a
token when another one is issued (3CX keeps one active token per user: a connection test,
a second process or another integration on the same PBX revokes the one a pull is using).
So a token is cached and reused until shortly before it lapses, at most one login runs at
a time (a burst of stale answers makes one login, not one per request), and a request
whose token the provider calls stale logs in again and is retried with backoff, more than
once: only a login that is itself refused means the credentials are wrong.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from service.connectors.base import AuthenticationFailed

# Renew this long before a token would lapse; at most a quarter of its lifetime.
RENEW_MARGIN = 30.0


@dataclass(frozen=True, slots=True)
class Token:
    value: str = field(repr=False)
    # Seconds from issue until it lapses; None when the provider does not say.
    lifetime: float | None = None
    # A refresh token, where the provider issues one: the next login may use it instead of
    # the password.
    refresh: str | None = field(default=None, repr=False)


Login = Callable[[Token | None], Awaitable[Token]]
Send = Callable[[str], Awaitable[httpx.Response]]
IsStale = Callable[[httpx.Response], Awaitable[bool]]


async def answered_401(response: httpx.Response) -> bool:
    return response.status_code == 401


class TokenSession:
    """Cache, renew before expiry and on a stale answer, single-flight login.

    ``login(previous)`` gets the token being replaced (or None) so it can use its refresh
    token; it raises ``AuthenticationFailed`` when the provider refuses the credentials.
    """

    def __init__(
        self,
        login: Login,
        *,
        renewals: int = 3,
        backoff_base: float = 0.5,
        backoff_cap: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._login = login
        self._renewals = renewals
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._clock = clock
        self._token: Token | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()
        self.logins = 0  # how many logins this session made (for tests and metrics)

    def __repr__(self) -> str:
        return f"TokenSession(logins={self.logins}, cached={self._token is not None})"

    async def token(self) -> str:
        """The cached token, or a fresh one when there is none or it is about to lapse."""
        async with self._lock:
            if self._token is None or self._clock() >= self._renew_at:
                await self._log_in()
            assert self._token is not None
            return self._token.value

    async def renew(self, stale: str) -> str:
        """A new token in place of ``stale``, unless another request already replaced it."""
        async with self._lock:
            if self._token is None or self._token.value == stale:
                await self._log_in()
            assert self._token is not None
            return self._token.value

    def forget(self) -> None:
        """Drop the cached token, so the next request logs in (a connection test proves the
        credentials, not a cached token)."""
        self._token = None

    async def send(self, send: Send, *, is_stale: IsStale = answered_401) -> httpx.Response:
        """``send(token)``; while the provider calls the token stale, close that answer, log
        in again and retry after a backoff, up to ``renewals`` times. A stale answer after
        the last renewal means fresh tokens do not work either: AuthenticationFailed."""
        token = await self.token()
        for attempt in range(self._renewals + 1):
            response = await send(token)
            if not await is_stale(response):
                return response
            await response.aclose()
            if attempt == self._renewals:
                break
            if attempt:
                await asyncio.sleep(self._backoff(attempt))
            token = await self.renew(token)
        raise AuthenticationFailed()

    async def _log_in(self) -> None:
        token = await self._login(self._token)
        self.logins += 1
        lifetime = token.lifetime
        if lifetime is None or lifetime <= 0:
            self._renew_at = float("inf")
        else:
            self._renew_at = self._clock() + lifetime - min(RENEW_MARGIN, lifetime / 4)
        self._token = token

    def _backoff(self, attempt: int) -> float:
        delay: float = min(self._backoff_cap, self._backoff_base * 2.0 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0)
