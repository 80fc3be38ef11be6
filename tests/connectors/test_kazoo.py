"""KazooConnector against the fake crossbar over loopback.

What every connector must do (bad credentials, faults, streaming) is in test_contract.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from service.connectors.base import (
    AccessDenied,
    AudioNotReady,
    AuthenticationFailed,
    Direction,
    Outcome,
    RateLimited,
    RecordingNotFound,
    UnreadableAnswer,
)
from service.connectors.kazoo import GREGORIAN_OFFSET, KazooConnector
from tests.connectors.kinds import KAZOO, KazooKind
from tests.connectors.support import POLICY, assert_secret_free, collect, digest, ids
from tests.fakes.httpserver import Fault, Request
from tests.fakes.kazoo import FakeKazoo, gregorian

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def kind() -> KazooKind:
    return KAZOO  # its fake serves pages of 3


# -- check ------------------------------------------------------------------------------


async def test_check_authenticates_with_the_api_key(fake: FakeKazoo, conn: KazooConnector) -> None:
    await conn.check()
    [auth] = [r for r in fake.requests if r.path == "/v2/api_auth"]
    assert auth.method == "PUT"
    assert auth.json() == {"data": {"api_key": fake.api_key}}


# -- listing ----------------------------------------------------------------------------


async def test_listing_walks_every_window_and_page_once(fake: FakeKazoo, conn: KazooConnector) -> None:
    since, until = T0, T0 + timedelta(days=75)
    inside = [
        fake.add_recording(since + timedelta(days=d, hours=h))
        for d in (0, 10, 29, 31, 59, 61, 74)
        for h in (1, 2)
    ]
    inside.append(fake.add_recording(since))  # first instant belongs
    # Started inside, written after `until`: the slack window still finds it.
    inside.append(fake.add_recording(until - timedelta(minutes=5), created_after=timedelta(hours=2)))
    fake.add_recording(until)  # starts at `until`: next listing's
    # Started before `since`, written after it: the previous listing's.
    fake.add_recording(since - timedelta(minutes=1), created_after=timedelta(minutes=30))
    fake.add_recording(since - timedelta(days=3))

    got = await ids(conn, since, until)

    assert sorted(got) == sorted(r.id for r in inside)
    listings = [r for r in fake.requests if r.path.endswith("/recordings")]
    windows = {(int(r.query["created_from"]), int(r.query["created_to"])) for r in listings}
    assert len(windows) == 3  # 75 days + slack in 30-day pieces
    assert all(high - low <= 2_682_000 for low, high in windows)
    assert sum("start_key" in r.query for r in listings) >= 4  # several pages per window were followed
    assert fake.auth_calls() == 1  # one token for the whole walk


async def test_adjacent_listings_share_no_call_and_miss_none(fake: FakeKazoo, conn: KazooConnector) -> None:
    edge = T0 + timedelta(days=5)
    recs = [
        fake.add_recording(edge - timedelta(seconds=1), created_after=timedelta(hours=1)),
        fake.add_recording(edge),
        fake.add_recording(edge - timedelta(hours=3)),
        fake.add_recording(edge + timedelta(hours=3)),
    ]
    first = await ids(conn, T0, edge)
    second = await ids(conn, edge, edge + timedelta(days=1))
    assert sorted(first) == sorted([recs[0].id, recs[2].id])
    assert sorted(second) == sorted([recs[1].id, recs[3].id])


async def test_records_are_normalised(fake: FakeKazoo, conn: KazooConnector) -> None:
    start = T0 + timedelta(hours=9, minutes=30)
    rec = fake.add_recording(start, duration=42.5, direction="outbound", caller="1001", callee="+15551234")
    [record] = [r async for r in conn.list_calls(T0, T0 + timedelta(days=1))]
    assert record.external_id == record.recording_ref == rec.id
    assert record.started_at == start and record.started_at.tzinfo is not None
    assert (record.caller, record.callee) == ("1001", "+15551234")
    assert record.duration_seconds == 42.5
    assert record.direction is Direction.OUTBOUND
    assert record.outcome is Outcome.ANSWERED


async def test_token_is_reused_then_renewed_before_it_lapses(fake: FakeKazoo) -> None:
    now = [1000.0]
    connector = KazooConnector(
        {"baseUrl": fake.base_url, "accountId": fake.account_id, "apiKey": fake.api_key},
        POLICY,
        clock=lambda: now[0],
    )
    fake.add_recording(T0 + timedelta(hours=1))
    await ids(connector, T0, T0 + timedelta(days=1))
    await ids(connector, T0, T0 + timedelta(days=1))
    assert fake.auth_calls() == 1
    now[0] += 3400  # within five minutes of the hour
    await ids(connector, T0, T0 + timedelta(days=1))
    assert fake.auth_calls() == 2
    tokens = [r.headers["x-auth-token"] for r in fake.requests if "x-auth-token" in r.headers]
    assert set(tokens) == set(fake.issued)  # no request went out with a stale token
    await connector.aclose()


async def test_token_expiring_mid_walk_is_renewed_once(fake: FakeKazoo, conn: KazooConnector) -> None:
    recs = [fake.add_recording(T0 + timedelta(hours=h)) for h in range(10)]
    fake.expire_tokens_after(2)
    got = await ids(conn, T0, T0 + timedelta(days=1))
    assert sorted(got) == sorted(r.id for r in recs)
    assert fake.auth_calls() == 2


async def test_revoked_key_mid_walk_fails_authentication(fake: FakeKazoo, conn: KazooConnector) -> None:
    for h in range(7):
        fake.add_recording(T0 + timedelta(hours=h))
    fake.expire_tokens_after(1)
    old_key, fake.api_key = fake.api_key, "rotated-key"
    with pytest.raises(AuthenticationFailed) as caught:
        await ids(conn, T0, T0 + timedelta(days=1))
    fake.api_key = old_key
    assert_secret_free(caught.value, KAZOO.leaks(fake))


async def test_fake_refuses_ranges_over_the_maximum(fake: FakeKazoo) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        auth = await client.put("/v2/api_auth", json={"data": {"api_key": fake.api_key}})
        token = auth.json()["auth_token"]
        low = gregorian(T0)
        answer = await client.get(
            f"/v2/accounts/{fake.account_id}/recordings",
            params={"created_from": low, "created_to": low + 2_682_001},
            headers={"X-Auth-Token": token},
        )
    assert answer.status_code == 400
    assert GREGORIAN_OFFSET == 62_167_219_200


# -- recordings -------------------------------------------------------------------------


async def test_recording_is_asked_for_as_audio_mpeg(fake: FakeKazoo, conn: KazooConnector) -> None:
    rec = fake.add_recording(T0)
    await digest(conn, rec.id)
    [download] = [r for r in fake.requests if r.path.endswith(rec.id)]
    assert download.headers["accept"] == "audio/mpeg"


async def test_recording_after_token_expiry_reauthenticates(fake: FakeKazoo, conn: KazooConnector) -> None:
    rec = fake.add_recording(T0)
    await conn.check()
    fake.expire_tokens()
    assert (await digest(conn, rec.id)).sha256 == rec.audio.sha256()
    assert fake.auth_calls() == 2


@pytest.mark.parametrize("ref", KAZOO.missing_refs)
async def test_a_ref_never_reaches_another_endpoint(fake: FakeKazoo, conn: KazooConnector, ref: str) -> None:
    with pytest.raises(RecordingNotFound):
        await digest(conn, ref)
    assert all("api_auth" not in r.path or r.method == "PUT" for r in fake.requests)


async def test_rate_limited_recording(fake: FakeKazoo, conn: KazooConnector) -> None:
    rec = fake.add_recording(T0)
    fake.faults.add(Fault.rate_limited(3), path=f"/v2/accounts/{fake.account_id}/recordings/{rec.id}")
    with pytest.raises(RateLimited) as caught:
        async with conn.open_recording(rec.id):
            pass
    assert caught.value.retry_after == 3


# -- Kazoo as it really behaves -----------------------------------------------------------


def _listings(fake: FakeKazoo) -> list[Request]:
    return [r for r in fake.requests if r.path.endswith("/recordings")]


async def test_raw_start_key_of_4_1_is_passed_back_as_received(kind: KazooKind) -> None:
    with FakeKazoo(max_page_size=3, key_style="raw") as fake:
        recs = [fake.add_recording(T0 + timedelta(hours=h)) for h in range(8)]
        connector = kind.make(fake)
        got = await ids(connector, T0, T0 + timedelta(days=1))
        await connector.aclose()
    assert sorted(got) == sorted(r.id for r in recs)
    sent = [r.query["start_key"] for r in _listings(fake) if "start_key" in r.query]
    assert len(sent) == 2  # 8 rows in pages of 3
    for key in sent:
        created, rec_id = json.loads(key)  # the array itself, as JSON text
        assert rec_id in fake.recordings and fake.recordings[rec_id].created == created


async def test_integer_start_key_of_later_4_1_is_passed_back_and_repeats_dropped(kind: KazooKind) -> None:
    with FakeKazoo(max_page_size=3, key_style="raw_created") as fake:
        # Two documents written in one second, the oldest, split across the page boundary.
        pair = [fake.add_recording(T0 + timedelta(hours=1)) for _ in range(2)]
        recs = [*pair, *(fake.add_recording(T0 + timedelta(hours=h)) for h in (2, 3))]
        connector = kind.make(fake)
        got = await ids(connector, T0, T0 + timedelta(days=1))
        await connector.aclose()
    assert sorted(got) == sorted(r.id for r in recs)  # each once
    sent = [r.query["start_key"] for r in _listings(fake) if "start_key" in r.query]
    assert sent == [str(pair[0].created)]  # the page after it serves both again


async def test_opaque_start_key_is_passed_back_untouched(fake: FakeKazoo, conn: KazooConnector) -> None:
    for h in range(5):
        fake.add_recording(T0 + timedelta(hours=h))
    await ids(conn, T0, T0 + timedelta(days=1))
    [first, second] = _listings(fake)
    assert "start_key" not in first.query
    assert second.query["start_key"].isascii() and not second.query["start_key"].startswith("[")


@pytest.mark.parametrize(
    ("call", "expected"),
    [("inbound", Direction.INBOUND), ("outbound", Direction.OUTBOUND), ("internal", Direction.INTERNAL)],
)
async def test_direction_is_the_business_s_on_every_leg(
    fake: FakeKazoo, conn: KazooConnector, call: str, expected: Direction
) -> None:
    legs = fake.add_call(T0 + timedelta(hours=1), call=call)
    assert {leg.direction for leg in legs} == {"inbound", "outbound"}  # the switch's reading differs
    records = await collect(conn, T0, T0 + timedelta(days=1))
    assert [r.direction for r in records] == [expected, expected]


@pytest.mark.parametrize(
    ("call", "expected"), [("inbound", Direction.INBOUND), ("outbound", Direction.OUTBOUND)]
)
async def test_direction_without_origin_comes_from_who_is_on_the_leg(
    fake: FakeKazoo, conn: KazooConnector, call: str, expected: Direction
) -> None:
    fake.add_call(T0 + timedelta(hours=1), call=call, origin=False)
    records = await collect(conn, T0, T0 + timedelta(days=1))
    assert [r.direction for r in records] == [expected, expected]


async def test_each_leg_s_recording_is_kept_and_names_the_call(fake: FakeKazoo, conn: KazooConnector) -> None:
    a_leg, b_leg = fake.add_call(T0 + timedelta(hours=1))
    [other] = fake.add_call(T0 + timedelta(hours=2), legs=("a",))
    records = {r.external_id: r for r in await collect(conn, T0, T0 + timedelta(days=1))}
    assert set(records) == {a_leg.id, b_leg.id, other.id}
    assert records[a_leg.id].call_id == records[b_leg.id].call_id == a_leg.interaction_id
    assert records[other.id].call_id == other.interaction_id != a_leg.interaction_id
    for leg in (a_leg, b_leg):
        assert (await digest(conn, leg.id)).sha256 == leg.audio.sha256()


async def test_audio_not_stored_yet_is_pending_not_missing(fake: FakeKazoo, conn: KazooConnector) -> None:
    rec = fake.add_recording(T0)
    fake.hold_audio(rec, 2)
    for _ in range(2):
        with pytest.raises(AudioNotReady):
            await digest(conn, rec.id)
    assert (await digest(conn, rec.id)).sha256 == rec.audio.sha256()
    with pytest.raises(RecordingNotFound):  # no document at all is still not found
        await digest(conn, "202401-" + "0" * 32)


async def test_a_401_again_after_a_new_login_is_retried_again(fake: FakeKazoo, conn: KazooConnector) -> None:
    recs = [fake.add_recording(T0 + timedelta(hours=h)) for h in range(4)]
    fake.faults.add(Fault.status(401), path=f"/v2/accounts/{fake.account_id}/recordings", times=2)
    got = await ids(conn, T0, T0 + timedelta(days=1))
    assert sorted(got) == sorted(r.id for r in recs)
    assert fake.auth_calls() == 3


@pytest.mark.parametrize(
    ("mangle", "field"),
    [
        (lambda body: {k: v for k, v in body.items() if k != "data"}, "data"),
        (lambda body: {**body, "data": [*body["data"], "row"]}, "data"),
        (lambda body: {**body, "status": "fatal"}, "status"),
        (lambda body: {**body, "data": [{**row, "start": "soon"} for row in body["data"]]}, "start"),
    ],
)
async def test_an_unreadable_listing_names_its_field(
    fake: FakeKazoo, conn: KazooConnector, mangle: Callable[[dict[str, Any]], dict[str, Any]], field: str
) -> None:
    fake.add_recording(T0 + timedelta(hours=1))
    fake.mangle_listing = mangle
    with pytest.raises(UnreadableAnswer) as caught:
        await ids(conn, T0, T0 + timedelta(days=1))
    assert caught.value.field == field and field in caught.value.message


async def test_an_account_the_key_may_not_see_is_access_denied(fake: FakeKazoo, kind: KazooKind) -> None:
    fake.add_recording(T0 + timedelta(hours=1))
    connector = kind.make(fake, accountId="0123456789abcdef0123456789abcdef")  # not the key's
    await connector.check()  # the key itself is fine
    with pytest.raises(AccessDenied):
        await ids(connector, T0, T0 + timedelta(days=1))
    await connector.aclose()
    assert fake.auth_calls() == 1  # a 403 is not a stale token
