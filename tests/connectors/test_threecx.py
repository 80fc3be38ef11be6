"""ThreeCXConnector against the fake 3CX over loopback: auth, paging, tokens.

What every connector must do (bad credentials, faults, streaming) is in test_contract.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from service.connectors.base import (
    AccessDenied,
    AudioNotReady,
    AuthenticationFailed,
    CallRecord,
    Direction,
    Outcome,
    UnexpectedAnswer,
    UnreadableAnswer,
)
from service.connectors.threecx import ArchiveOutOfReach, ThreeCXConnector
from tests.connectors.kinds import THREECX, ThreeCXKind
from tests.connectors.support import POLICY, collect, digest
from tests.fakes.httpserver import Blob, FakeServer, Response
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
    assert [r.path for r in fake.requests] == [login, "/xapi/v1/Recordings"]  # proves the role too
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
        position=str(call.id),
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


# -- one active token: cancelled by other logins -------------------------------------------


async def test_token_cancelled_repeatedly_mid_walk_is_renewed(
    fake: FakeThreeCX, conn: ThreeCXConnector
) -> None:
    ids = spread(fake, 350, T0, timedelta(minutes=1))  # four pages
    seen: list[str] = []
    async for record in conn.list_calls(T0, T0 + timedelta(days=1)):
        seen.append(record.external_id)
        if len(seen) in (1, 101, 201):  # on three pages, two logins in a row are cancelled
            fake.cancel_next(2)
    assert seen == [str(i) for i in ids]
    assert fake.cancelled_by_rival == 6
    assert fake.password_logins == 7


async def test_connection_test_elsewhere_does_not_fail_a_pull(
    fake: FakeThreeCX, conn: ThreeCXConnector
) -> None:
    ids = spread(fake, 250, T0, timedelta(minutes=1))
    other = make(fake)  # a connection test, another process: its login cancels our token
    seen = []
    async for record in conn.list_calls(T0, T0 + timedelta(days=1)):
        seen.append(record.external_id)
        if len(seen) % 100 == 1:
            await other.check()
    await other.aclose()
    assert seen == [str(i) for i in ids]


async def test_refused_login_after_a_cancelled_token_is_authentication_failed(
    fake: FakeThreeCX, conn: ThreeCXConnector
) -> None:
    spread(fake, 120, T0, timedelta(minutes=1))
    with pytest.raises(AuthenticationFailed):
        async for _ in conn.list_calls(T0, T0 + timedelta(days=1)):
            fake.client_secret = "rotated"
            fake.cancel_next(1)


async def test_a_burst_of_downloads_after_a_cancel_logs_in_once(
    fake: FakeThreeCX, conn: ThreeCXConnector
) -> None:
    calls = [fake.add_call(T0 + timedelta(minutes=i)) for i in range(6)]
    await collect(conn, T0, T0 + timedelta(days=1))
    fake.expire_tokens()  # another login cancelled the token every download shares
    got = await asyncio.gather(*(digest(conn, str(c.id)) for c in calls))
    assert [g.sha256 for g in got] == [c.audio.sha256() for c in calls]
    assert fake.password_logins == 2


# -- expires_in: minutes before 20.0.9, seconds since ----------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("unit", ["seconds", "minutes"])
async def test_token_lives_as_long_as_expires_in_says_in_either_unit(fake: FakeThreeCX, unit: str) -> None:
    fake.expires_in_unit = unit  # type: ignore[assignment]
    clock = Clock()
    config = {"baseUrl": fake.base_url, "username": fake.client_id, "password": fake.client_secret}
    connector = ThreeCXConnector(config, POLICY, clock=clock)
    await collect(connector, T0, T0 + timedelta(days=1))
    clock.now += 40  # well inside the minute: the token is reused
    await collect(connector, T0, T0 + timedelta(days=1))
    assert fake.password_logins == 1
    clock.now += 10  # 50 s: renewed before it lapses, without a 401 round
    await collect(connector, T0, T0 + timedelta(days=1))
    await connector.aclose()
    assert fake.password_logins == 2


def test_expires_in_is_read_in_minutes_when_small_and_seconds_otherwise() -> None:
    from service.connectors.threecx import _lifetime

    assert _lifetime(1) == 60.0  # before 20.0.9: one minute
    assert _lifetime(60) == 60.0  # since: sixty seconds
    assert _lifetime(3600) == 3600.0
    assert _lifetime(None) == _lifetime("60") == _lifetime(-5) == _lifetime(True) == 60.0


# -- roles -------------------------------------------------------------------------------------


@pytest.mark.parametrize("headless", [False, True])
async def test_check_without_the_recordings_role_is_access_denied(fake: FakeThreeCX, headless: bool) -> None:
    fake.recordings_role = False
    connector = make(fake, headless=headless)
    with pytest.raises(AccessDenied) as caught:
        await connector.check()
    await connector.aclose()
    assert caught.value.message == "access denied by provider"
    assert not caught.value.retryable


async def test_listing_without_the_recordings_role_is_access_denied(
    fake: FakeThreeCX, conn: ThreeCXConnector
) -> None:
    fake.add_call(T0)
    fake.recordings_role = False
    with pytest.raises(AccessDenied):
        await collect(conn, T0, T0 + timedelta(days=1))
    assert fake.password_logins == 1  # a 403 is not a stale token: no new logins


async def test_download_without_the_recordings_role_is_access_denied(
    fake: FakeThreeCX, conn: ThreeCXConnector
) -> None:
    call = fake.add_call(T0)
    fake.recordings_role = False
    with pytest.raises(AccessDenied):
        await digest(conn, str(call.id))


# -- nullable fields ---------------------------------------------------------------------------


async def test_null_fields_do_not_fail_the_listing(fake: FakeThreeCX, conn: ThreeCXConnector) -> None:
    nulls = ("EndTime", "CallType", "FromCallerNumber", "ToCallerNumber", "FromDnType", "SentimentScore")
    full = fake.add_call(T0, nulls=nulls)
    fake.add_call(T0 + timedelta(minutes=1), nulls=("StartTime",))  # outside any StartTime window
    [record] = await collect(conn, T0, T0 + timedelta(days=1))
    assert record == CallRecord(
        external_id=str(full.id),
        started_at=T0,
        duration_seconds=0.0,
        caller="",
        callee="",
        direction=Direction.INTERNAL,
        outcome=Outcome.ANSWERED,
        recording_ref=str(full.id),
        position=str(full.id),
    )


async def test_null_start_time_falls_back_on_end_time_and_rows_without_times_are_skipped(
    fake: FakeThreeCX, conn: ThreeCXConnector
) -> None:
    no_start = fake.add_call(T0, duration=90, nulls=("StartTime",))
    fake.add_call(T0, nulls=("StartTime", "EndTime"))
    last = fake.add_call(T0)
    records = [r async for r in conn.list_calls(T0, T0 + timedelta(days=1), after="0")]
    assert [r.external_id for r in records] == [str(no_start.id), str(last.id)]
    assert records[0].started_at == T0 + timedelta(seconds=90)


@pytest.mark.parametrize(("field", "value"), [("StartTime", "yesterday"), ("EndTime", 17), ("Id", "7")])
async def test_an_unreadable_row_names_its_field(
    fake: FakeThreeCX, conn: ThreeCXConnector, field: str, value: object
) -> None:
    fake.add_call(T0).extra[field] = value
    with pytest.raises(UnreadableAnswer) as caught:
        await collect(conn, T0, T0 + timedelta(days=1))
    assert caught.value.field == field


# -- listing by Id ---------------------------------------------------------------------------


async def test_rows_carry_their_id_as_position(fake: FakeThreeCX, conn: ThreeCXConnector) -> None:
    ids = spread(fake, 3, T0, timedelta(minutes=1))
    records = await collect(conn, T0, T0 + timedelta(days=1))
    assert [r.position for r in records] == [str(i) for i in ids]


async def test_after_returns_late_rows_whatever_their_start_time(
    fake: FakeThreeCX, conn: ThreeCXConnector
) -> None:
    spread(fake, 3, T0, timedelta(minutes=1))
    seen = await collect(conn, T0, T0 + timedelta(hours=1))
    highest = seen[-1].position
    assert highest is not None
    late = fake.add_call(T0 - timedelta(hours=5), duration=5 * 3600)  # a long call, written when it ended
    fresh = fake.add_call(T0 + timedelta(minutes=30))
    fake.clear_requests()
    records = [
        r async for r in conn.list_calls(T0 + timedelta(minutes=10), T0 + timedelta(hours=1), after=highest)
    ]
    assert [r.external_id for r in records] == [str(late.id), str(fresh.id)]
    [page] = [r for r in fake.requests if r.path == "/xapi/v1/Recordings"]
    assert page.query["$filter"] == f"Id gt {highest}"  # cheap: by Id, no time filter


async def test_after_walks_every_page(fake: FakeThreeCX, conn: ThreeCXConnector) -> None:
    ids = spread(fake, 230, T0, timedelta(minutes=1))
    records = [r async for r in conn.list_calls(T0, T0 + timedelta(hours=1), after=str(ids[9]))]
    assert [r.external_id for r in records] == [str(i) for i in ids[10:]]


# -- audio not there yet, archived rows ----------------------------------------------------------


async def test_audio_not_written_yet_is_not_ready_then_streams(
    fake: FakeThreeCX, conn: ThreeCXConnector
) -> None:
    call = fake.add_call(T0, audio_ready=False)
    with pytest.raises(AudioNotReady) as caught:
        await digest(conn, str(call.id))
    assert caught.value.retryable
    fake.release_audio(call.id)
    assert (await digest(conn, str(call.id))).sha256 == call.audio.sha256()


async def test_archiving_under_way_is_not_ready(fake: FakeThreeCX, conn: ThreeCXConnector) -> None:
    call = fake.add_call(T0, archiving=True)
    with pytest.raises(AudioNotReady):
        await digest(conn, str(call.id))


@pytest.mark.parametrize("relative", [False, True])
async def test_archived_on_the_pbx_origin_streams_with_the_token(
    fake: FakeThreeCX, conn: ThreeCXConnector, relative: bool
) -> None:
    call = fake.add_call(T0, size=200_000)
    url = fake.archive_url(call)
    call.archived, call.archived_url = True, url.removeprefix(fake.base_url) if relative else url
    got = await digest(conn, str(call.id))
    assert got.sha256 == call.audio.sha256()
    [archive] = [r for r in fake.requests if r.path.startswith("/archive/")]
    assert archive.headers["authorization"].startswith("Bearer ")
    assert not [r for r in fake.requests if "DownloadRecording" in r.path]


@pytest.fixture
def store() -> Iterator[FakeServer]:
    """Another origin, serving archived audio to anyone (a public or signed link)."""
    server = FakeServer()
    blob = Blob(seed=77, size=150_000)
    server.route(
        "GET", r"/pub/ok\.wav", lambda req: Response(200, {"Content-Type": "audio/x-wav"}, blob.read())
    )
    server.route("GET", r"/pub/login", lambda req: Response(200, {"Content-Type": "text/html"}, b"<html>"))
    server.route("GET", r"/pub/private\.wav", lambda req: Response(401))
    with server:
        yield server


async def test_archived_on_another_origin_is_fetched_without_credentials(
    fake: FakeThreeCX, conn: ThreeCXConnector, store: FakeServer
) -> None:
    call = fake.add_call(T0, archived_url=f"{store.base_url}/pub/ok.wav")
    got = await digest(conn, str(call.id))
    assert got.sha256 == Blob(seed=77, size=150_000).sha256()
    [fetched] = store.requests
    assert "authorization" not in fetched.headers and "cookie" not in fetched.headers
    assert fake.client_secret.encode() not in fetched.raw


@pytest.mark.parametrize(
    ("path", "error"),
    [("/pub/private.wav", "ArchiveOutOfReach"), ("/pub/login", "UnreadableAnswer")],
)
async def test_archived_link_that_is_not_public_audio_is_an_error(
    fake: FakeThreeCX, conn: ThreeCXConnector, store: FakeServer, path: str, error: str
) -> None:
    call = fake.add_call(T0, archived_url=f"{store.base_url}{path}")
    with pytest.raises(UnexpectedAnswer) as caught:
        await digest(conn, str(call.id))
    assert type(caught.value).__name__ == error


@pytest.mark.parametrize("url", ["ftp://nas.example/rec/1.wav", "sftp://nas/1.wav", "\\\\nas\\rec\\1.wav"])
async def test_archived_out_of_reach_is_a_permanent_error(
    fake: FakeThreeCX, conn: ThreeCXConnector, url: str
) -> None:
    call = fake.add_call(T0, archived_url=url)
    with pytest.raises(ArchiveOutOfReach) as caught:
        await digest(conn, str(call.id))
    assert not caught.value.retryable


# -- headless: the web-client refresh token ------------------------------------------------------


def web_user(fake: FakeThreeCX) -> dict[str, object]:
    return {"baseUrl": fake.base_url, "username": fake.username, "password": fake.password, "headless": True}


async def test_headless_renews_with_the_refresh_token_not_the_password(fake: FakeThreeCX) -> None:
    clock = Clock()
    connector = ThreeCXConnector(web_user(fake), POLICY, clock=clock)
    fake.add_call(T0)
    for _ in range(5):  # five minutes of pulls, one a minute
        await collect(connector, T0, T0 + timedelta(days=1))
        clock.now += 60
    fake.cancel_next(1)  # and a cancelled token is renewed the same way
    await collect(connector, T0, T0 + timedelta(days=1))
    await connector.aclose()
    assert (fake.password_logins, fake.refresh_logins) == (1, 6)
    refreshes = [r for r in fake.requests if r.path == "/connect/token"]
    assert all(fake.password.encode() not in r.raw for r in refreshes)
    assert all("RefreshTokenCookie=" in r.headers["cookie"] for r in refreshes)


async def test_headless_refused_refresh_falls_back_on_the_password(fake: FakeThreeCX) -> None:
    fake.refresh_tokens = False
    clock = Clock()
    connector = ThreeCXConnector(web_user(fake), POLICY, clock=clock)
    await collect(connector, T0, T0 + timedelta(days=1))
    clock.now += 60
    await collect(connector, T0, T0 + timedelta(days=1))
    await connector.aclose()
    assert (fake.password_logins, fake.refresh_logins) == (2, 0)
