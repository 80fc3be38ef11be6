"""ThreeCXConnector against the fake 3CX over loopback: auth, paging, tokens.

What every connector must do (bad credentials, faults, streaming) is in test_contract.py.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from service.connectors.base import AuthenticationFailed, CallRecord, Direction, Outcome
from service.connectors.threecx import ThreeCXConnector
from tests.connectors.kinds import THREECX, ThreeCXKind
from tests.connectors.support import collect
from tests.fakes.threecx import FakeThreeCX

T0 = datetime(2026, 5, 1, tzinfo=UTC)
make = THREECX.make


@pytest.fixture
def kind() -> ThreeCXKind:
    return THREECX


# -- check ---------------------------------------------------------------------------------


@pytest.mark.parametrize("headless", [False, True])
async def test_check_passes_with_good_credentials(fake: FakeThreeCX, headless: bool) -> None:
    connector = make(fake, headless=headless)
    await connector.check()
    await connector.aclose()
    login = "/webclient/api/Login/GetAccessToken" if headless else "/connect/token"
    assert [r.path for r in fake.requests] == [login, "/xapi/v1/Defs"]
    assert fake.requests[1].headers["authorization"].startswith("Bearer ")


# -- listing -------------------------------------------------------------------------------


def spread(fake: FakeThreeCX, count: int, start: datetime, step: timedelta) -> list[int]:
    return [fake.add_call(start + i * step).id for i in range(count)]


async def test_listing_walks_every_page_once(fake: FakeThreeCX, conn: ThreeCXConnector) -> None:
    spread(fake, 5, T0 - timedelta(days=2), timedelta(hours=1))  # before the range
    inside = spread(fake, 250, T0, timedelta(minutes=20))  # about 3.5 days, 3 pages
    spread(fake, 5, T0 + timedelta(days=5), timedelta(hours=1))  # after it
    records = await collect(conn, T0, T0 + timedelta(days=4))
    assert [r.external_id for r in records] == [str(i) for i in inside]
    pages = [r for r in fake.requests if r.path == "/xapi/v1/Recordings"]
    assert len(pages) == 3
    assert all(int(p.query["$top"]) <= 100 for p in pages)


async def test_listing_is_half_open(fake: FakeThreeCX, conn: ThreeCXConnector) -> None:
    at_since = fake.add_call(T0).id
    fake.add_call(T0 + timedelta(hours=1))  # exactly at until: belongs to the next listing
    records = await collect(conn, T0, T0 + timedelta(hours=1))
    assert [r.external_id for r in records] == [str(at_since)]


async def test_listing_normalises_rows(fake: FakeThreeCX, conn: ThreeCXConnector) -> None:
    call = fake.add_call(
        T0, duration=95.5, call_type="OutboundExternal", from_number="101", to_number="029999999"
    )
    [record] = await collect(conn, T0, T0 + timedelta(minutes=1))
    assert record == CallRecord(
        external_id=str(call.id),
        started_at=T0,
        duration_seconds=95.5,
        caller="101",
        callee="029999999",
        direction=Direction.OUTBOUND,
        outcome=Outcome.ANSWERED,
        recording_ref=str(call.id),
    )


async def test_one_token_serves_many_requests(fake: FakeThreeCX, conn: ThreeCXConnector) -> None:
    spread(fake, 150, T0, timedelta(minutes=1))
    await collect(conn, T0, T0 + timedelta(days=1))
    await conn.check()
    await collect(conn, T0, T0 + timedelta(days=1))
    assert fake.tokens.issued == 2  # one for the walks, one because check() proves credentials afresh


async def test_token_expiry_mid_walk_renews_once(fake: FakeThreeCX, conn: ThreeCXConnector) -> None:
    ids = spread(fake, 230, T0, timedelta(minutes=1))
    seen: list[str] = []
    async for record in conn.list_calls(T0, T0 + timedelta(days=1)):
        seen.append(record.external_id)
        if len(seen) == 1:
            fake.expire_tokens()
    assert seen == [str(i) for i in ids]
    assert fake.tokens.issued == 2


async def test_token_is_renewed_before_expires_in(fake: FakeThreeCX) -> None:
    fake.tokens.lifetime = 0.4
    connector = make(fake)
    await connector.check()
    await asyncio.sleep(0.45)
    await connector._get_json("/xapi/v1/Defs", {})
    await connector.aclose()
    paths = [r.path for r in fake.requests]
    assert paths == ["/connect/token", "/xapi/v1/Defs", "/connect/token", "/xapi/v1/Defs"]  # no 401 round


async def test_rejected_credentials_mid_walk_are_authentication_failed(
    fake: FakeThreeCX, conn: ThreeCXConnector
) -> None:
    spread(fake, 120, T0, timedelta(minutes=1))
    with pytest.raises(AuthenticationFailed):
        async for _ in conn.list_calls(T0, T0 + timedelta(days=1)):
            fake.client_secret = "rotated"
            fake.expire_tokens()


async def test_fake_refuses_top_over_100(fake: FakeThreeCX) -> None:
    token = (await _raw_token(fake))["access_token"]
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        answer = await client.get(
            "/xapi/v1/Recordings", params={"$top": "101"}, headers={"Authorization": f"Bearer {token}"}
        )
    assert answer.status_code == 400


async def _raw_token(fake: FakeThreeCX) -> dict[str, str]:
    form = {
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        "grant_type": "client_credentials",
    }
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        answer: dict[str, str] = (await client.post("/connect/token", data=form)).json()
    return answer
