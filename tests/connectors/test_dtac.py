"""DtacConnector against the fake OrkTrack server over loopback: login, windows, pages, audio.

What every connector must do (bad credentials, faults, streaming) is in test_contract.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.connectors.base import (
    AuthenticationFailed,
    CallRecord,
    Direction,
    Outcome,
    UnexpectedAnswer,
    UnreadableAnswer,
)
from service.connectors.dtac import DEFAULT_BASE_URL, DtacConnector
from tests.connectors.kinds import DTAC, DtacKind, SmallPages
from tests.connectors.support import POLICY, collect, digest
from tests.fakes.dtac import FakeDtac

T0 = datetime(2026, 5, 1, tzinfo=UTC)
LIST = DTAC.LIST
make = DTAC.make


class QuickRenewal(SmallPages):
    backoff_base = 0.001


@pytest.fixture
def kind() -> DtacKind:
    return DTAC  # its `conn` reads pages of 7


def spread(fake: FakeDtac, count: int, start: datetime, step: timedelta) -> list[str]:
    return [str(fake.add_call(start + i * step).id) for i in range(count)]


# -- check ---------------------------------------------------------------------------------


async def test_check_logs_in_and_sends_the_bare_token(fake: FakeDtac) -> None:
    connector = make(fake)
    await connector.check()
    await connector.aclose()
    login, listing = fake.requests
    assert login.method == "POST" and login.path == "/orktrack/rest/user/login"
    assert login.query["version"] == "orktrack" and login.headers["authorization"].startswith("Basic ")
    assert listing.path == LIST and fake.tokens.valid(listing.headers["authorization"])


async def test_base_url_defaults_to_dtac() -> None:
    connector = DtacConnector({"username": "u", "password": "p", "pollIntervalMinutes": 15}, POLICY)
    assert (
        str(connector._client.base_url).rstrip("/")
        == DEFAULT_BASE_URL
        == "https://onecallvoicerecord.dtac.co.th"
    )
    await connector.aclose()


# -- listing -------------------------------------------------------------------------------


async def test_listing_walks_every_window_and_page_once(fake: FakeDtac, conn: DtacConnector) -> None:
    spread(fake, 4, T0 - timedelta(hours=5), timedelta(hours=1))  # before the range
    inside = spread(fake, 60, T0, timedelta(minutes=70))  # about 2.9 days: 3 windows, 9 pages
    spread(fake, 4, T0 + timedelta(days=3), timedelta(hours=1))  # after it
    records = await collect(conn, T0, T0 + timedelta(days=3))
    assert [r.external_id for r in records] == inside
    pages = [r for r in fake.requests if r.path == LIST]
    assert {p.query["startdate"] for p in pages} == {"20260501_000000", "20260502_000000", "20260503_000000"}
    # 21, 21 and 18 rows in pages of 7: a full last page is followed by an empty one, since
    # pages are asked by number until a short page, as public clients do
    assert len(pages) == 4 + 4 + 3


async def test_boundary_calls_belong_to_one_window(fake: FakeDtac, conn: DtacConnector) -> None:
    ids = [str(fake.add_call(T0 + timedelta(days=d)).id) for d in range(4)]  # on every window edge
    records = await collect(conn, T0, T0 + timedelta(days=3))
    assert [r.external_id for r in records] == ids[:3]


async def test_a_capped_range_is_split(fake: FakeDtac, conn: DtacConnector) -> None:
    fake.max_results = 20
    inside = spread(fake, 75, T0, timedelta(minutes=15))  # 75 rows in one day, 20 visible per range
    records = await collect(conn, T0, T0 + timedelta(days=1))
    assert [r.external_id for r in records] == inside


async def test_listing_normalises_rows(fake: FakeDtac, conn: DtacConnector) -> None:
    call = fake.add_call(T0, duration=42, direction="IN", local_party="1001", remote_party="+66891234567")
    missed = fake.add_call(T0 + timedelta(minutes=1), direction="OUT", recorded=False)
    first, second = await collect(conn, T0, T0 + timedelta(hours=1))
    assert first == CallRecord(
        external_id=str(call.id),
        started_at=T0,
        duration_seconds=42.0,
        caller="+66891234567",
        callee="1001",
        direction=Direction.INBOUND,
        outcome=Outcome.ANSWERED,
        recording_ref=f"{fake.base_url}/orktrack/rest/recordings/{call.id}/audio",
    )
    assert second.external_id == str(missed.id) and second.direction is Direction.OUTBOUND
    # no recordingURL: the mediastream URL public clients fetch for every row
    assert second.recording_ref == f"{fake.base_url}/orktrack/rest/mediastream/{missed.id}"


async def test_token_expiry_mid_walk_logs_in_again(fake: FakeDtac, conn: DtacConnector) -> None:
    inside = spread(fake, 30, T0, timedelta(minutes=10))
    seen: list[str] = []
    async for record in conn.list_calls(T0, T0 + timedelta(days=1)):
        seen.append(record.external_id)
        if len(seen) == 3:
            fake.expire_tokens()  # the next page answers 403
    assert seen == inside
    assert fake.tokens.issued == 2


async def test_over_wide_pages_are_refused_by_the_fake(fake: FakeDtac) -> None:
    class WidePages(DtacConnector):
        page_size = 501

    connector = make(fake, WidePages)
    with pytest.raises(UnexpectedAnswer):
        await collect(connector, T0, T0 + timedelta(days=1))
    await connector.aclose()


# -- recordings ------------------------------------------------------------------------------


async def test_recording_after_token_expiry_logs_in_again(fake: FakeDtac, conn: DtacConnector) -> None:
    call = fake.add_call(T0)
    [record] = await collect(conn, T0, T0 + timedelta(hours=1))
    fake.expire_tokens()
    assert record.recording_ref is not None
    assert (await digest(conn, record.recording_ref)).sha256 == call.audio.sha256()  # type: ignore[union-attr]


async def test_stale_token_answered_200_on_audio_logs_in_again(fake: FakeDtac, conn: DtacConnector) -> None:
    call = fake.add_call(T0)
    [record] = await collect(conn, T0, T0 + timedelta(hours=1))
    fake.stale_as_200, fake.recording_url = True, "empty"
    fake.expire_tokens()  # the audio request answers 200 {"error": "invalid access token"}
    assert record.recording_ref is not None
    assert (await digest(conn, record.recording_ref)).sha256 == call.audio.sha256()  # type: ignore[union-attr]
    assert fake.tokens.issued == 2


# -- how the real server behaves (issue 10, item 5) ----------------------------------------


async def test_stale_token_answered_200_logs_in_again_and_retries_the_page(
    fake: FakeDtac, conn: DtacConnector
) -> None:
    """DTAC may answer an expired token with HTTP 200 and an error body: not an empty page."""
    fake.stale_as_200 = True
    inside = spread(fake, 30, T0, timedelta(minutes=10))
    seen: list[str] = []
    async for record in conn.list_calls(T0, T0 + timedelta(days=1)):
        seen.append(record.external_id)
        if len(seen) == 3:
            fake.expire_tokens()  # the next page answers 200 {"error": "invalid access token"}
    assert seen == inside
    assert fake.tokens.issued == 2
    pages = [r.query["page"] for r in fake.requests if r.path == LIST]
    assert pages == ["1", "2", "2", "3", "4", "5"]  # page 2 asked again with the new token


async def test_token_stale_after_every_login_is_authentication_failed(fake: FakeDtac) -> None:
    fake.stale_as_200 = True
    fake.tokens.lifetime = 0.0  # every token is stale as soon as it is issued
    spread(fake, 3, T0, timedelta(minutes=10))
    connector = make(fake, QuickRenewal)
    with pytest.raises(AuthenticationFailed):
        await collect(connector, T0, T0 + timedelta(days=1))
    await connector.aclose()
    assert fake.tokens.issued > 2  # more than one renewal before giving up


async def test_answer_without_objects_is_unreadable_not_empty(fake: FakeDtac, conn: DtacConnector) -> None:
    spread(fake, 10, T0, timedelta(minutes=10))
    fake.drop_objects = 1  # HTTP 200 {"resultCount": 0}
    with pytest.raises(UnreadableAnswer) as caught:
        await collect(conn, T0, T0 + timedelta(days=1))
    assert caught.value.field == "objects" and "objects" in caught.value.message


async def test_listing_asks_as_public_clients_do(fake: FakeDtac, conn: DtacConnector) -> None:
    fake.strict_query = True  # 400 without sort and maxresults
    inside = spread(fake, 10, T0, timedelta(minutes=10))
    assert [r.external_id for r in await collect(conn, T0, T0 + timedelta(days=1))] == inside
    first, second = [r.query for r in fake.requests if r.path == LIST]
    assert first == {
        "range": "custom",
        "startdate": "20260501_000000",
        "enddate": "20260502_000000",
        "sort": "",
        "page": "1",
        "pagesize": "7",
        "maxresults": "-1",
    }
    assert second == {**first, "page": "2"}


async def test_pages_are_asked_by_number_without_next_page_uri(fake: FakeDtac, conn: DtacConnector) -> None:
    fake.next_page_uri = False  # public clients never read it
    inside = spread(fake, 30, T0, timedelta(minutes=10))
    assert [r.external_id for r in await collect(conn, T0, T0 + timedelta(days=1))] == inside


async def test_a_server_serving_smaller_pages_than_asked_is_read_to_the_end(
    fake: FakeDtac, conn: DtacConnector
) -> None:
    fake.page_cap = 5  # pages of 5 although 7 are asked, with "pageSize": 5
    inside = spread(fake, 23, T0, timedelta(minutes=10))
    assert [r.external_id for r in await collect(conn, T0, T0 + timedelta(days=1))] == inside
    assert len([r for r in fake.requests if r.path == LIST]) == 5


@pytest.mark.parametrize("shape", ["empty", "relative"])
async def test_empty_or_relative_recording_url_falls_back_to_mediastream(
    fake: FakeDtac, conn: DtacConnector, shape: str
) -> None:
    fake.recording_url = shape  # type: ignore[assignment]
    call = fake.add_call(T0)
    [record] = await collect(conn, T0, T0 + timedelta(hours=1))
    assert record.recording_ref == f"{fake.base_url}/orktrack/rest/mediastream/{call.id}"
    assert (await digest(conn, record.recording_ref)).sha256 == call.audio.sha256()  # type: ignore[union-attr]
    assert fake.requests[-1].path == f"/orktrack/rest/mediastream/{call.id}"


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"timestamp": "01/05/2026 00:00"}, "timestamp"),
        ({"id": "1 OR 1"}, "id"),
        ({"duration": "long"}, "duration"),
    ],
)
async def test_a_row_that_cannot_be_read_names_its_field(
    fake: FakeDtac, conn: DtacConnector, override: dict[str, str], field: str
) -> None:
    fake.add_call(T0)
    fake.row_fields = override
    with pytest.raises(UnreadableAnswer) as caught:
        await collect(conn, T0, T0 + timedelta(hours=1))
    assert caught.value.field == field
