"""The shared token session: cached, renewed before it lapses and when called stale,
one login at a time, and "authentication failed" only when fresh tokens fail too."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from service.connectors.base import AuthenticationFailed
from service.connectors.session import Token, TokenSession


class Provider:
    """Issues numbered tokens; only the newest is valid, as on 3CX."""

    def __init__(self, lifetime: float | None = 60.0, refuse_login: bool = False) -> None:
        self.issued = 0
        self.lifetime = lifetime
        self.refuse_login = refuse_login
        self.previous: list[Token | None] = []
        self.refuse_all = False

    async def login(self, previous: Token | None) -> Token:
        self.previous.append(previous)
        await asyncio.sleep(0.01)  # a login takes a while: concurrent callers pile up
        if self.refuse_login:
            raise AuthenticationFailed()
        self.issued += 1
        return Token(f"t{self.issued}", self.lifetime, refresh=f"r{self.issued}")

    async def send(self, token: str) -> httpx.Response:
        valid = not self.refuse_all and token == f"t{self.issued}"
        return httpx.Response(200 if valid else 401, text=token)


def session(provider: Provider, clock: list[float] | None = None) -> TokenSession:
    now = clock if clock is not None else [0.0]
    return TokenSession(provider.login, backoff_base=0.001, clock=lambda: now[0])


async def test_a_token_is_reused_until_it_nears_its_lifetime() -> None:
    provider, now = Provider(lifetime=60.0), [0.0]
    tokens = session(provider, now)
    assert [await tokens.token() for _ in range(3)] == ["t1"] * 3
    now[0] = 44.0  # renews within min(30 s, a quarter of the lifetime) of the end
    assert await tokens.token() == "t1"
    now[0] = 46.0
    assert await tokens.token() == "t2"
    assert provider.previous[-1] == Token("t1", 60.0, "r1")  # login may use the refresh token


async def test_a_token_cancelled_by_another_login_is_renewed_once_for_a_burst() -> None:
    provider = Provider()
    tokens = session(provider)
    await tokens.token()
    provider.issued += 1  # someone else logged in: our t1 is cancelled
    answers = await asyncio.gather(*(tokens.send(provider.send) for _ in range(10)))
    assert {a.status_code for a in answers} == {200}
    assert tokens.logins == 2  # one login for the whole burst


async def test_repeated_cancellation_is_retried_more_than_once() -> None:
    provider = Provider()
    tokens = session(provider)
    cancels = iter([True, True, False])

    async def send(token: str) -> httpx.Response:
        if next(cancels, False):
            provider.issued += 1  # another integration logs in right after each of ours
        return await provider.send(token)

    assert (await tokens.send(send)).status_code == 200
    assert tokens.logins == 3


async def test_only_a_refused_login_or_stale_fresh_tokens_mean_authentication_failed() -> None:
    provider = Provider(refuse_login=True)
    with pytest.raises(AuthenticationFailed):
        await session(provider).send(provider.send)

    provider = Provider()
    provider.refuse_all = True
    tokens = session(provider)
    with pytest.raises(AuthenticationFailed):
        await tokens.send(provider.send)
    assert tokens.logins == 4  # the first login and three renewals


async def test_custom_staleness_reads_the_body() -> None:
    """DTAC answers an expired token with HTTP 200 and a JSON error."""
    provider = Provider()
    tokens = session(provider)
    await tokens.token()
    provider.issued += 1

    async def send(token: str) -> httpx.Response:
        ok = token == f"t{provider.issued}"
        return httpx.Response(200, json={"objects": []} if ok else {"error": "invalid access token"})

    async def stale(response: httpx.Response) -> bool:
        return "error" in response.json()

    answer = await tokens.send(send, is_stale=stale)
    assert answer.json() == {"objects": []}


def test_repr_shows_no_token() -> None:
    tokens = session(Provider())
    asyncio.run(tokens.token())
    assert "t1" not in repr(tokens) and "r1" not in repr(tokens)
    assert "t1" not in repr(Token("t1", 1.0, "r1"))
