"""AntBuddyConnector against the fake open API over loopback.

What every connector must do (bad credentials, faults, streaming) is in test_contract.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from service.connectors.antbuddy import DEFAULT_BASE_URL, AntBuddyConnector, HashOrder, external_id
from service.connectors.base import (
    AuthenticationFailed,
    Direction,
    Outcome,
    RateLimited,
    UnexpectedAnswer,
    UnreadableAnswer,
)
from tests.connectors.kinds import ANTBUDDY, AntBuddyKind
from tests.connectors.support import POLICY, assert_secret_free, digest, ids
from tests.fakes.antbuddy import FakeAntBuddy, sha256_hex
from tests.fakes.httpserver import Fault

T0 = datetime(2024, 3, 1, tzinfo=UTC)
HISTORIES = ANTBUDDY.HISTORIES
make = ANTBUDDY.make


@pytest.fixture
def kind() -> AntBuddyKind:
    return ANTBUDDY


# -- check ------------------------------------------------------------------------------


async def test_check_sends_one_signed_request(fake: FakeAntBuddy, conn: AntBuddyConnector) -> None:
    await conn.check()
    [request] = fake.requests
    q = request.query
    assert list(q) == ["appId", "created_from", "created_to", "limit", "page", "hash"]
    signed = q["appId"] + q["created_from"] + q["created_to"] + q["limit"] + q["page"] + fake.app_secret
    assert q["hash"] == sha256_hex(signed)
    span = datetime.fromisoformat(q["created_to"]) - datetime.fromisoformat(q["created_from"])
    assert timedelta(0) < span <= timedelta(hours=1)
    assert q["created_to"].endswith("Z") and len(q["created_to"]) == len("2018-02-07T02:19:33.000Z")


def test_default_base_url() -> None:
    connector = AntBuddyConnector({"appId": "a", "appSecret": "s"}, POLICY)
    assert DEFAULT_BASE_URL == "https://openapi.antbuddy.com"
    assert str(connector._client.base_url).rstrip("/") == DEFAULT_BASE_URL


# -- listing ----------------------------------------------------------------------------


@pytest.mark.parametrize("envelope", ["list", "data"])
async def test_listing_walks_every_window_and_page_once(
    fake: FakeAntBuddy, conn: AntBuddyConnector, envelope: str
) -> None:
    fake.envelope = envelope
    since, until = T0, T0 + timedelta(days=70)
    busy = [fake.add_call(since + timedelta(minutes=7 * i), caller=f"09{i:08d}") for i in range(230)]
    later = [fake.add_call(since + timedelta(days=d), caller=f"08{d:08d}") for d in (31, 45, 65, 69)]
    edges = [fake.add_call(since), fake.add_call(since + timedelta(days=30))]  # window edges: once each
    fake.add_call(until)  # the next listing's
    fake.add_call(since - timedelta(seconds=1))

    got = await ids(conn, since, until)

    expected = {external_id(row) for row in busy + later + edges}
    assert len(expected) == len(busy + later + edges)
    assert sorted(got) == sorted(expected)
    requests = fake.history_requests()
    assert {r.query["limit"] for r in requests} == {"100"}
    windows = {(r.query["created_from"], r.query["created_to"]) for r in requests}
    assert len(windows) == 3
    first_from = min(windows)[0]
    assert sorted(r.query["page"] for r in requests if r.query["created_from"] == first_from) == [
        "1",
        "2",
        "3",
    ]


async def test_rows_shifting_between_pages_are_yielded_once(
    fake: FakeAntBuddy, conn: AntBuddyConnector
) -> None:
    rows = [fake.add_call(T0 + timedelta(minutes=i), caller=f"07{i:08d}") for i in range(150)]

    def newer_call_arrives(server: FakeAntBuddy) -> None:
        if len(server.calls) == 150:  # after the first page only
            server.add_call(T0 + timedelta(hours=20), caller="0123")

    fake.on_history = newer_call_arrives
    got = await ids(conn, T0, T0 + timedelta(days=1))
    assert len(got) == len(set(got))
    assert set(got) == {external_id(row) for row in rows}


async def test_records_are_normalised(fake: FakeAntBuddy, conn: AntBuddyConnector) -> None:
    out = fake.add_call(
        T0 + timedelta(hours=1), direction="from_ab", status="BUSY", duration=0, did=None, recording=False
    )
    inbound = fake.add_call(
        T0 + timedelta(hours=2), caller="0909", callee="agent7", duration=61, status="SUCCESS"
    )
    internal = fake.add_call(
        T0 + timedelta(hours=3), call_class="one_one", direction="from_ab", status="CANCELLED"
    )
    failed = fake.add_call(T0 + timedelta(hours=4), status="ERROR")
    got = {r.external_id: r async for r in conn.list_calls(T0, T0 + timedelta(days=1))}

    o, i, n, f = (got[external_id(row)] for row in (out, inbound, internal, failed))
    assert (o.direction, o.outcome, o.recording_ref) == (Direction.OUTBOUND, Outcome.BUSY, None)
    assert (i.direction, i.outcome, i.recording_ref) == (
        Direction.INBOUND,
        Outcome.ANSWERED,
        inbound["recording"],
    )
    assert (i.caller, i.callee, i.duration_seconds) == ("0909", "agent7", 61.0)
    assert i.started_at == T0 + timedelta(hours=2)
    assert (n.direction, n.outcome) == (Direction.INTERNAL, Outcome.MISSED)
    assert f.outcome is Outcome.FAILED


def test_external_id_ignores_a_recording_filled_in_later() -> None:
    row = {
        "unix_timestamp": 1519639917,
        "caller": {"number": "1"},
        "callee": {"number": "2"},
        "recording": "",
    }
    assert external_id(row) == external_id({**row, "recording": "call_recording_x.mp3"})
    assert external_id(row) != external_id({**row, "unix_timestamp": 1519639918})


async def test_fake_enforces_hash_window_and_limit(fake: FakeAntBuddy) -> None:
    def signed(created_to: str, limit: str, secret: str = fake.app_secret) -> dict[str, str]:
        q = {"appId": fake.app_id, "created_from": "2024-03-01T00:00:00.000Z", "created_to": created_to}
        q |= {"limit": limit, "page": "1"}
        return {**q, "hash": sha256_hex("".join(q.values()) + secret)}

    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        ok = await client.get(HISTORIES, params=signed("2024-04-01T00:00:00.000Z", "100"))
        too_long = await client.get(HISTORIES, params=signed("2024-04-01T00:00:00.001Z", "100"))
        too_many = await client.get(HISTORIES, params=signed("2024-03-02T00:00:00.000Z", "101"))
        bad_hash = await client.get(HISTORIES, params=signed("2024-03-02T00:00:00.000Z", "100", "nope"))
    assert [r.status_code for r in (ok, too_long, too_many, bad_hash)] == [200, 400, 400, 400]


# -- recordings -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["text", "json_string", "json_url", "json_data"])
async def test_recording_streams_byte_identical(
    fake: FakeAntBuddy, conn: AntBuddyConnector, shape: str
) -> None:
    fake.play_shape = shape
    row = fake.add_call(T0, audio_size=2 * 1024 * 1024 + 5)
    blob = fake.media[row["recording"]]
    got = await digest(conn, row["recording"])
    assert (got.sha256, got.length, got.content_type) == (blob.sha256(), blob.size, "audio/mpeg")
    assert got.chunks > 1
    play = next(r for r in fake.requests if r.path.endswith("play_recording"))
    assert play.query["hash"] == sha256_hex(fake.app_id + row["recording"] + fake.app_secret)


async def test_octet_stream_audio_is_typed_from_its_name(fake: FakeAntBuddy, conn: AntBuddyConnector) -> None:
    fake.media_type = "application/octet-stream"
    row = fake.add_call(T0)
    async with conn.open_recording(row["recording"]) as audio:
        assert audio.content_type == "audio/mpeg"


async def test_recording_with_wrong_secret(fake: FakeAntBuddy) -> None:
    row = fake.add_call(T0)
    connector = make(fake, appSecret="wrong-secret")
    with pytest.raises(AuthenticationFailed) as caught:
        async with connector.open_recording(row["recording"]):
            pass
    await connector.aclose()
    assert_secret_free(caught.value, ANTBUDDY.leaks(fake))
    assert not any(r.path.startswith("/media/") for r in fake.requests)


async def test_rate_limited_play_recording(fake: FakeAntBuddy, conn: AntBuddyConnector) -> None:
    row = fake.add_call(T0)
    fake.faults.add(Fault.rate_limited(4, status=503), path="/oapi/v1/call/play_recording")
    with pytest.raises(RateLimited) as caught:
        async with conn.open_recording(row["recording"]):
            pass
    assert caught.value.retry_after == 4


async def test_refused_storage_url_is_not_an_authentication_failure(
    fake: FakeAntBuddy, conn: AntBuddyConnector
) -> None:
    row = fake.add_call(T0)
    fake.faults.add(Fault.status(403), path="/media/")
    with pytest.raises(UnexpectedAnswer) as caught:
        async with conn.open_recording(row["recording"]):
            pass
    assert caught.value.retryable


# -- the hash order, and answers that cannot be read ------------------------------------------


async def test_a_server_checking_the_other_hash_order_is_met(
    fake: FakeAntBuddy, conn: AntBuddyConnector
) -> None:
    fake.hash_order = "appIdLast"
    calls = [fake.add_call(T0 + timedelta(days=d)) for d in (1, 40)]  # two windows
    got = await ids(conn, T0, T0 + timedelta(days=60))
    assert sorted(got) == sorted(external_id(c) for c in calls)
    assert conn.hash_order is HashOrder.APP_ID_LAST
    assert fake.hash_refusals == 1  # the seed's order once, then the one that worked
    q = fake.history_requests()[1].query
    signed = q["created_from"] + q["created_to"] + q["limit"] + q["page"] + q["appId"] + fake.app_secret
    assert q["hash"] == sha256_hex(signed)
    await ids(conn, T0, T0 + timedelta(days=60))
    assert fake.hash_refusals == 1  # remembered by this connector


async def test_the_seed_s_order_is_tried_first(fake: FakeAntBuddy, conn: AntBuddyConnector) -> None:
    await conn.check()
    assert fake.hash_refusals == 0 and conn.hash_order is HashOrder.APP_ID_FIRST


async def test_a_stored_hash_order_is_tried_first(fake: FakeAntBuddy) -> None:
    fake.hash_order = "appIdLast"
    connector = make(fake, hashOrder="appIdLast")
    await connector.check()
    await connector.aclose()
    assert fake.hash_refusals == 0 and len(fake.history_requests()) == 1


@pytest.mark.parametrize("order", ["appIdFirst", "appIdLast"])
async def test_wrong_secret_is_refused_in_both_orders(fake: FakeAntBuddy, order: str) -> None:
    fake.hash_order = order
    connector = make(fake, appSecret="wrong-secret")
    with pytest.raises(AuthenticationFailed):
        await connector.check()
    await connector.aclose()
    assert fake.hash_refusals == 2


async def test_an_envelope_without_rows_is_unreadable_not_empty(
    fake: FakeAntBuddy, conn: AntBuddyConnector
) -> None:
    fake.add_call(T0 + timedelta(hours=1))
    fake.envelope = "other"
    with pytest.raises(UnreadableAnswer) as caught:
        await ids(conn, T0, T0 + timedelta(days=1))
    assert caught.value.field == "data" and "data" in caught.value.message


async def test_a_row_without_a_time_names_the_field(fake: FakeAntBuddy, conn: AntBuddyConnector) -> None:
    fake.add_call(T0 + timedelta(hours=1))["unix_timestamp"] = "yesterday"
    with pytest.raises(UnreadableAnswer) as caught:
        await ids(conn, T0 - timedelta(days=400), T0 + timedelta(days=1))
    assert caught.value.field == "unix_timestamp"
