"""PromptCallConnector against the fake promptCall PBX over loopback: auth, windows, audio."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from service.connectors.base import (
    AuthenticationFailed,
    CallRecord,
    ConnectorError,
    Direction,
    Outcome,
    RateLimited,
    RecordingNotFound,
    TimedOut,
    UnexpectedAnswer,
    Unreachable,
)
from service.connectors.http import NetworkPolicy
from service.connectors.promptcall import PromptCallConnector
from tests.fakes.httpserver import Blob, Fault
from tests.fakes.promptcall import FakePromptCall

POLICY = NetworkPolicy(allow_private=True, connect_timeout=2.0, read_timeout=2.0, total_timeout=5.0)
T0 = datetime(2026, 5, 1, tzinfo=UTC)
CDR = "/pbxws.php/cdrapi"
REC = "/pbxws.php/recapi"


class SmallAnswers(PromptCallConnector):
    num_records = 10


@pytest.fixture
def fake() -> Iterator[FakePromptCall]:
    with FakePromptCall() as server:
        yield server


def make(
    fake: FakePromptCall,
    cls: type[PromptCallConnector] = PromptCallConnector,
    *,
    policy: NetworkPolicy = POLICY,
    **over: str,
) -> PromptCallConnector:
    config = {"baseUrl": fake.base_url, "apiKey": fake.api_key, "apiSecret": fake.api_secret, **over}
    return cls(config, policy)


@pytest.fixture
async def conn(fake: FakePromptCall) -> AsyncIterator[PromptCallConnector]:
    connector = make(fake)
    yield connector
    await connector.aclose()


async def collect(connector: PromptCallConnector, since: datetime, until: datetime) -> list[CallRecord]:
    return [record async for record in connector.list_calls(since, until)]


async def digest(connector: PromptCallConnector, ref: str) -> tuple[str, int | None, str]:
    sha = hashlib.sha256()
    async with connector.open_recording(ref) as audio:
        async for chunk in audio.chunks:
            sha.update(chunk)
    return sha.hexdigest(), audio.length, audio.content_type


def spread(fake: FakePromptCall, count: int, start: datetime, step: timedelta) -> list[str]:
    return [fake.add_call(start + i * step).uniqueid for i in range(count)]


# -- check and auth ------------------------------------------------------------------------


async def test_check_sends_the_basic_token(fake: FakePromptCall, conn: PromptCallConnector) -> None:
    await conn.check()
    [request] = fake.requests
    assert request.path == CDR and request.query["numRecords"] == "1"
    assert request.headers["authorization"] == f"Basic {fake.token()}"


async def test_check_refuses_bad_credentials_without_leaking_them(fake: FakePromptCall) -> None:
    connector = make(fake, apiSecret="wrong-Pa55word-xyz")
    with pytest.raises(AuthenticationFailed) as caught:
        await connector.check()
    await connector.aclose()
    assert "wrong-Pa55word-xyz" not in str(caught.value)
    assert fake.api_key not in str(caught.value)


async def test_check_reports_a_closed_port_as_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = {"baseUrl": f"http://127.0.0.1:{port}", "apiKey": "k", "apiSecret": "s"}
    connector = PromptCallConnector(config, POLICY)
    with pytest.raises(Unreachable):
        await connector.check()
    await connector.aclose()


async def test_check_times_out_on_a_slow_answer(fake: FakePromptCall) -> None:
    fake.faults.add(Fault.slow(delay=1.0), path=CDR)
    connector = make(fake, policy=NetworkPolicy(allow_private=True, read_timeout=0.2))
    with pytest.raises(TimedOut):
        await connector.check()
    await connector.aclose()


@pytest.mark.parametrize("how", ["query", "json"])
async def test_fake_accepts_the_other_documented_token_placements(fake: FakePromptCall, how: str) -> None:
    data = {"numRecords": "5", "startTime": "2026-05-01 00:00:00", "endTime": "2026-05-02 00:00:00"}
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        if how == "query":
            good = await client.get(CDR, params={**data, "token": fake.token()})
            bad = await client.get(CDR, params={**data, "token": "nope"})
        else:
            good = await client.post(CDR, json={**data, "token": fake.token()})
            bad = await client.post(CDR, json={**data, "token": "nope"})
    assert good.json() == {"success": True, "value": []}
    assert bad.json()["success"] is False


# -- listing -------------------------------------------------------------------------------


async def test_listing_walks_every_window_once(fake: FakePromptCall, conn: PromptCallConnector) -> None:
    spread(fake, 3, T0 - timedelta(hours=3), timedelta(hours=1))  # before the range
    inside = spread(fake, 50, T0, timedelta(minutes=85))  # about 2.9 days
    spread(fake, 3, T0 + timedelta(days=3), timedelta(hours=1))  # after it
    records = await collect(conn, T0, T0 + timedelta(days=3))
    assert [r.external_id for r in records] == inside
    windows = [(r.query["startTime"], r.query["endTime"]) for r in fake.requests]
    assert windows == [  # the PBX's wall clock, UTC+7
        ("2026-05-01 07:00:00", "2026-05-02 07:00:00"),
        ("2026-05-02 07:00:00", "2026-05-03 07:00:00"),
        ("2026-05-03 07:00:00", "2026-05-04 07:00:00"),
    ]


async def test_a_full_answer_is_split_until_nothing_is_cut(fake: FakePromptCall) -> None:
    inside = spread(fake, 47, T0, timedelta(minutes=29))  # 47 rows in one day, 10 per answer
    connector = make(fake, SmallAnswers)
    records = await collect(connector, T0, T0 + timedelta(days=1))
    await connector.aclose()
    assert [r.external_id for r in records] == inside
    assert {r.query["numRecords"] for r in fake.requests} == {"10"}
    assert len(fake.requests) > 5


async def test_boundary_calls_belong_to_one_window(fake: FakePromptCall, conn: PromptCallConnector) -> None:
    ids = [fake.add_call(T0 + timedelta(days=d)).uniqueid for d in range(4)]  # on every window edge
    records = await collect(conn, T0, T0 + timedelta(days=3))
    assert [r.external_id for r in records] == ids[:3]


async def test_over_large_answers_are_refused_by_the_fake(fake: FakePromptCall) -> None:
    class Greedy(PromptCallConnector):
        num_records = 1001

    connector = make(fake, Greedy)
    with pytest.raises(UnexpectedAnswer):
        await collect(connector, T0, T0 + timedelta(days=1))
    await connector.aclose()


async def test_listing_normalises_rows(fake: FakePromptCall, conn: PromptCallConnector) -> None:
    out = fake.add_call(T0, duration=61, src="201", dst="0812345678", dcontext="from-internal")
    missed = fake.add_call(
        T0 + timedelta(minutes=1), src="0899999999", dst="202", disposition="NO ANSWER", recorded=False
    )
    first, second = await collect(conn, T0, T0 + timedelta(hours=1))
    assert first == CallRecord(
        external_id=out.uniqueid,
        started_at=T0,
        duration_seconds=61.0,
        caller="201",
        callee="0812345678",
        direction=Direction.OUTBOUND,
        outcome=Outcome.ANSWERED,
        recording_ref=out.uniqueid,
    )
    assert (second.external_id, second.direction, second.outcome) == (
        missed.uniqueid,
        Direction.INBOUND,
        Outcome.MISSED,
    )
    assert second.recording_ref is None


async def test_revoked_key_mid_walk_is_authentication_failed(
    fake: FakePromptCall, conn: PromptCallConnector
) -> None:
    spread(fake, 5, T0, timedelta(days=1))
    with pytest.raises(AuthenticationFailed) as caught:
        async for _ in conn.list_calls(T0, T0 + timedelta(days=5)):
            fake.api_secret = "rotated"
    assert "pc-secret-value" not in str(caught.value)


async def test_rate_limit_carries_retry_after(fake: FakePromptCall, conn: PromptCallConnector) -> None:
    fake.faults.add(Fault.rate_limited(30), path=CDR)
    with pytest.raises(RateLimited) as caught:
        await collect(conn, T0, T0 + timedelta(days=1))
    assert caught.value.retry_after == 30.0


async def test_server_error_is_unexpected_answer(fake: FakePromptCall, conn: PromptCallConnector) -> None:
    fake.faults.add(Fault.status(500), path=CDR)
    with pytest.raises(UnexpectedAnswer):
        await collect(conn, T0, T0 + timedelta(days=1))


# -- recordings ------------------------------------------------------------------------------


async def test_recording_streams_byte_identical(fake: FakePromptCall, conn: PromptCallConnector) -> None:
    blob = Blob(seed=99, size=2 * 1024 * 1024 + 1)
    cdr = fake.add_call(T0, audio=blob)
    assert await digest(conn, cdr.uniqueid) == (blob.sha256(), blob.size, "application/octet-stream")
    assert fake.requests[-1].query == {"uniqueid": cdr.uniqueid}


@pytest.mark.parametrize("fault", [Fault.reset(after=40_000), Fault.truncate(after=40_000)])
async def test_cut_recording_raises(fake: FakePromptCall, conn: PromptCallConnector, fault: Fault) -> None:
    cdr = fake.add_call(T0, size=200_000)
    fake.faults.add(fault, path=REC)
    with pytest.raises(ConnectorError):
        await digest(conn, cdr.uniqueid)


@pytest.mark.parametrize("ref", ["1714521600.999", "../../etc/passwd", "a b", ""])
async def test_unknown_or_malformed_ref_is_not_found(
    fake: FakePromptCall, conn: PromptCallConnector, ref: str
) -> None:
    fake.add_call(T0)
    with pytest.raises(RecordingNotFound):
        await digest(conn, ref)


async def test_recording_with_revoked_key_is_authentication_failed(
    fake: FakePromptCall, conn: PromptCallConnector
) -> None:
    cdr = fake.add_call(T0)
    fake.api_secret = "rotated"
    with pytest.raises(AuthenticationFailed):
        await digest(conn, cdr.uniqueid)
