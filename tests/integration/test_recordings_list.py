"""The recordings list query on both databases: the documented order with ties, filters,
a 7-day window, paging through every row once, other businesses invisible; the
trigger-kept unfiltered total through every write path (insert, sync upsert, delete);
and which pages run as short reads (`Database.reads`), with the async path's answers."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, delete, event, func, insert
from sqlmodel import col, select

from service.ids import uuid7
from service.recordings.query import build_query
from service.recordings.store import SHORT_MAX_OFFSET, RecordingStore
from service.storage.db import sync_url
from service.storage.migrate import upgrade
from service.storage.models import Account, Business, Recording, RecordingTotal
from service.sync.ingest import upsert
from tests.support.server import RunningServer

TZ = ZoneInfo("Asia/Bangkok")
BASE = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 10:00 in Bangkok
PHONES = ("+66811111111", "+66822222222", "+66833333333")


def _query(**given: Any) -> Any:
    params: dict[str, Any] = dict(
        limit=None,
        offset=0,
        direction="",
        source_provider="",
        provider_id="",
        call_date_from="",
        call_date_to="",
        customer_phone="",
        customer_phone_normalized="",
        search="",
        tag="",
        score_min=None,
        score_max=None,
        sort_by="",
        sort_dir="",
        tz=TZ,
    )
    params.update(given)
    return build_query(**params)


def _rows(business_id: str, n: int, seed: int) -> list[dict[str, Any]]:
    """Calls over 20 days with many ties: few distinct instants, durations and scores."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        tagged = rng.random() < 0.6
        rows.append(
            dict(
                id=uuid7(),
                business_id=business_id,
                origin="upload",
                source="upload",
                external_id=f"list-{seed}-{i}",
                call_at=BASE + timedelta(days=rng.randrange(20), hours=rng.choice((0, 5))),
                duration_seconds=float(rng.choice((10, 20, 30))),
                direction=rng.choice(("in", "out")),
                customer_phone_normalized=rng.choice(PHONES),
                tag="normal" if tagged else None,
                score=float(rng.choice((50, 80))) if tagged else None,
                processing_status="pending",
            )
        )
    return rows


def _documented_order(rows: list[dict[str, Any]], column: str, descending: bool) -> list[str]:
    """The sort column, nulls last either way; then callAt desc, id desc (callAt asc: id asc)."""
    if column == "call_at":
        ordered = sorted(rows, key=lambda r: (r["call_at"], r["id"]), reverse=descending)
        return [r["id"] for r in ordered]
    ordered = sorted(rows, key=lambda r: r["id"], reverse=True)
    ordered.sort(key=lambda r: r["call_at"], reverse=True)
    present = [r for r in ordered if r[column] is not None]
    present.sort(key=lambda r: r[column], reverse=descending)
    return [r["id"] for r in present + [r for r in ordered if r[column] is None]]


@pytest.fixture
def seeded(server: RunningServer) -> tuple[RecordingStore, str, list[dict[str, Any]]]:
    mine, other = server.new_tenant("Lister"), server.new_tenant("Neighbour")
    rows, theirs = _rows(mine.business_id, 90, 1), _rows(other.business_id, 30, 2)

    async def seed() -> None:
        async with server.service.db.session() as session:
            await session.exec(insert(Recording).values([*rows, *theirs]))
            await session.commit()

    server.call(seed())
    store = server.service.recordings
    return store, mine.business_id, rows


def _all_pages(server: RunningServer, store: RecordingStore, business_id: str, **given: Any) -> list[str]:
    """Every page of 7 until one comes back short; each answer's total is the same."""
    seen: list[str] = []
    totals = set()
    offset = 0
    while True:
        page, total = server.call(store.search(business_id, _query(limit=7, offset=offset, **given)))
        seen += [r.id for r in page]
        totals.add(total)
        if len(page) < 7:
            break
        offset += 7
    assert totals == {len(seen)}
    return seen


@pytest.mark.parametrize(
    ("sort_by", "column"), [("callAt", "call_at"), ("duration", "duration_seconds"), ("score", "score")]
)
@pytest.mark.parametrize("sort_dir", ["asc", "desc"])
def test_paging_through_every_order_sees_each_row_once_in_the_documented_order(
    server: RunningServer,
    seeded: tuple[RecordingStore, str, list[dict[str, Any]]],
    sort_by: str,
    column: str,
    sort_dir: str,
) -> None:
    store, business_id, rows = seeded
    seen = _all_pages(server, store, business_id, sort_by=sort_by, sort_dir=sort_dir)
    assert seen == _documented_order(rows, column, sort_dir == "desc")  # no other business's rows


def test_filters_and_their_totals(
    server: RunningServer, seeded: tuple[RecordingStore, str, list[dict[str, Any]]]
) -> None:
    store, business_id, rows = seeded
    phone = PHONES[1]
    seen = _all_pages(server, store, business_id, direction="in", customer_phone_normalized=phone)
    expected = [r for r in rows if r["direction"] == "in" and r["customer_phone_normalized"] == phone]
    assert seen == _documented_order(expected, "call_at", True)
    assert expected  # the filter picks some rows, not none
    untagged = _all_pages(server, store, business_id, tag="none")
    assert sorted(untagged) == sorted(r["id"] for r in rows if r["tag"] is None)


def test_a_seven_day_window_in_the_business_time_zone(
    server: RunningServer, seeded: tuple[RecordingStore, str, list[dict[str, Any]]]
) -> None:
    store, business_id, rows = seeded
    first = BASE.astimezone(TZ).date() + timedelta(days=3)
    last = first + timedelta(days=6)
    seen = _all_pages(
        server, store, business_id, call_date_from=first.isoformat(), call_date_to=last.isoformat()
    )
    inside = [r for r in rows if first <= r["call_at"].astimezone(TZ).date() <= last]
    assert seen == _documented_order(inside, "call_at", True)
    assert 0 < len(inside) < len(rows)


def test_unfiltered_total_through_every_write_path(
    server: RunningServer, seeded: tuple[RecordingStore, str, list[dict[str, Any]]]
) -> None:
    """Inserts count, a sync upsert of known calls (an update) does not, deletes uncount;
    the other business's total is its own."""
    store, business_id, rows = seeded
    dialect = server.service.db.dialect
    pulled = [
        {**r, "id": uuid7(), "origin": "p1", "provider_id": "p1", "external_id": f"x{i}"}
        for i, r in enumerate(rows[:5])
    ]

    async def total() -> int:
        return (await store.search(business_id, _query()))[1]

    async def scenario() -> list[int]:
        seen = [await total()]
        async with server.service.db.session() as session:
            await session.exec(upsert(dialect, pulled))
            await session.commit()
        seen.append(await total())
        again = [{**r, "id": uuid7(), "duration_seconds": 99.0} for r in pulled]
        async with server.service.db.session() as session:
            await session.exec(upsert(dialect, again))
            await session.commit()
        seen.append(await total())
        await store.purge_older_than(business_id, BASE + timedelta(days=1))
        seen.append(await total())
        async with server.service.db.session() as session:
            counted = await session.exec(
                select(func.count()).select_from(Recording).where(col(Recording.business_id) == business_id)
            )
            seen.append(int(counted.one()))
        return seen

    before_first_day = sum(1 for r in [*rows, *pulled] if r["call_at"] < BASE + timedelta(days=1))
    assert server.call(scenario()) == [90, 95, 95, 95 - before_first_day, 95 - before_first_day]
    assert before_first_day > 0


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migration_counts_existing_recordings_and_keeps_counting(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        url = request.getfixturevalue("pg_server").create_database()
    else:
        url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url, "0016")  # just before the totals
    now = datetime.now(UTC)
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(insert(Account).values(id="acc", name="Acme", created_at=now))
            for business in ("b1", "b2", "b3"):
                conn.execute(
                    insert(Business).values(
                        id=business, account_id="acc", name=business, slug=business, created_at=now
                    )
                )
            conn.execute(insert(Recording), [*_rows("b1", 7, 3), *_rows("b2", 4, 4)])
        upgrade(url)
        with engine.begin() as conn:
            conn.execute(insert(Recording), _rows("b3", 2, 5))
            conn.execute(
                delete(Recording).where(
                    col(Recording.id).in_(
                        select(col(Recording.id)).where(col(Recording.business_id) == "b1").limit(3)
                    )
                )
            )
            totals = dict(
                conn.execute(select(col(RecordingTotal.business_id), col(RecordingTotal.total))).all()
            )
    finally:
        engine.dispose()
    assert totals == {"b1": 4, "b2": 4, "b3": 2}


@contextmanager
def _list_statements(server: RunningServer) -> Iterator[list[str]]:
    """The list's statements (its page or its COUNT) run on the async engine meanwhile; a
    short read runs on the driver and is not among them. Other statements (the server's
    own background work) are left out."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if "recording.hold_reason" in statement or (
            "count(*)" in statement and "FROM recording" in statement
        ):
            seen.append(statement)

    engine = server.service.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _fresh(server: RunningServer) -> RecordingStore:
    """A store with an empty count cache: a filtered page's first call counts its total."""
    service = server.service
    return RecordingStore(
        service.db, service.blobs, phone_region="TH", max_bytes=1 << 20, keyring=service.keyring
    )


def _paths(server: RunningServer, business_id: str, **given: Any) -> tuple[Any, Any, bool, bool]:
    """The same query twice on a fresh store: each answer, and whether each call ran on the
    async engine."""
    store = _fresh(server)
    with _list_statements(server) as first_statements:
        first = server.call(store.search(business_id, _query(**given)))
    with _list_statements(server) as second_statements:
        second = server.call(store.search(business_id, _query(**given)))
    return first, second, bool(first_statements), bool(second_statements)


WINDOW = {"call_date_from": "2026-05-04", "call_date_to": "2026-05-10"}
SHORT_FILTERS: list[dict[str, Any]] = [
    {"customer_phone_normalized": PHONES[1]},
    {"customer_phone_normalized": PHONES[1], "direction": "in"},
    {"customer_phone_normalized": PHONES[0], "tag": "none"},
    {"customer_phone_normalized": PHONES[0], "tag": "normal", "score_min": 60.0},
    {"customer_phone_normalized": PHONES[2], "source_provider": "upload", "score_max": 60.0},
    WINDOW,
    {**WINDOW, "customer_phone_normalized": PHONES[2], "direction": "out"},
    {"call_date_from": "2026-04-01"},  # every row: the unfiltered page, counted
]


@pytest.mark.parametrize("filters", SHORT_FILTERS, ids=lambda f: "&".join(sorted(f)))
@pytest.mark.parametrize("sort_dir", ["asc", "desc"])
@pytest.mark.parametrize("offset", [0, 3])
def test_an_index_backed_page_is_a_short_read_with_the_async_answer(
    server: RunningServer,
    seeded: tuple[RecordingStore, str, list[dict[str, Any]]],
    filters: dict[str, Any],
    sort_dir: str,
    offset: int,
) -> None:
    """Its first call counts the total on the async path (page and COUNT on one
    connection); once the total is known the same page is a short read, and the answer,
    every value of every row, is the same."""
    _, business_id, _ = seeded
    first, second, first_async, second_async = _paths(
        server, business_id, limit=5, offset=offset, sort_dir=sort_dir, **filters
    )
    assert first_async and not second_async
    assert second == first
    assert first[0]  # the page has rows to compare
    assert [type(v) for v in second[0][0]] == [type(v) for v in first[0][0]]


@pytest.mark.parametrize("sort_dir", ["asc", "desc"])
def test_the_unfiltered_page_is_a_short_read_with_the_stored_total(
    server: RunningServer, seeded: tuple[RecordingStore, str, list[dict[str, Any]]], sort_dir: str
) -> None:
    """The unfiltered page (stored total in its statement) is short from the first call; it
    equals the async answer of a window that holds every row, beyond the end as well."""
    _, business_id, rows = seeded
    for offset in (0, 14, 200):
        given = dict(limit=7, offset=offset, sort_dir=sort_dir)
        everything, counted, everything_async, _ = _paths(
            server, business_id, call_date_from="2026-04-01", **given
        )
        unfiltered, again, unfiltered_async, again_async = _paths(server, business_id, **given)
        assert everything_async and not unfiltered_async and not again_async
        assert unfiltered == everything == counted == again
        assert unfiltered[1] == len(rows)
    assert not unfiltered[0]  # offset 200 is past the end: no rows, the total still


LONG_QUERIES: list[dict[str, Any]] = [
    {"sort_by": "duration"},
    {"sort_by": "score", "sort_dir": "asc"},
    {"sort_by": "duration", "customer_phone_normalized": PHONES[1]},
    {"direction": "in"},  # checked row by row along the whole business's index
    {"tag": "none", **WINDOW},
    {"search": "+668"},
    {"agent_key": ["nobody"]},
    {"offset": SHORT_MAX_OFFSET + 1},
]


@pytest.mark.parametrize("given", LONG_QUERIES, ids=lambda g: "&".join(sorted(g)))
def test_a_page_that_can_take_long_stays_on_the_async_path(
    server: RunningServer, seeded: tuple[RecordingStore, str, list[dict[str, Any]]], given: dict[str, Any]
) -> None:
    _, business_id, _ = seeded
    first, second, first_async, second_async = _paths(server, business_id, **given)
    assert first_async and second_async  # with its total known too
    assert second == first


def test_paging_up_to_the_short_offset_bound_is_short(
    server: RunningServer, seeded: tuple[RecordingStore, str, list[dict[str, Any]]]
) -> None:
    _, business_id, _ = seeded
    _, _, short_async, _ = _paths(server, business_id, offset=SHORT_MAX_OFFSET)
    assert not short_async


def _commit_in_another_process(server: RunningServer, row: dict[str, Any]) -> None:
    """A recording inserted and committed by another process, through its own driver."""
    script = (
        "import json, sys\n"
        "from datetime import datetime\n"
        "from sqlalchemy import create_engine, insert\n"
        "from service.storage.models import Recording\n"
        "row = json.loads(sys.argv[2])\n"
        "row['call_at'] = datetime.fromisoformat(row['call_at'])\n"
        "engine = create_engine(sys.argv[1])\n"
        "with engine.begin() as conn:\n"
        "    conn.execute(insert(Recording).values(**row))\n"
    )
    encoded = json.dumps({**row, "call_at": row["call_at"].isoformat()})
    subprocess.run(
        [sys.executable, "-c", script, sync_url(server.service.db.url), encoded], check=True, timeout=60
    )


def test_a_short_page_sees_another_process_commit_at_once(
    server: RunningServer, seeded: tuple[RecordingStore, str, list[dict[str, Any]]]
) -> None:
    store, business_id, rows = seeded
    phone = {"customer_phone_normalized": PHONES[1]}
    server.call(store.search(business_id, _query(**phone)))  # the phone's total is now known
    newest = {**_rows(business_id, 1, 9)[0], "call_at": BASE + timedelta(days=30), **phone}
    with _list_statements(server) as statements:
        page, total = server.call(store.search(business_id, _query()))
        assert page[0].id != newest["id"]
        _commit_in_another_process(server, newest)
        page, total = server.call(store.search(business_id, _query()))
        filtered, _ = server.call(store.search(business_id, _query(**phone)))
    assert statements == []  # every read above was short
    assert page[0].id == newest["id"] and page[0].call_at == newest["call_at"]
    assert total == len(rows) + 1
    assert filtered[0].id == newest["id"]  # the total may lag by the cache's TTL; the page does not


def test_a_short_page_shows_only_the_business_own_recordings(
    server: RunningServer, seeded: tuple[RecordingStore, str, list[dict[str, Any]]]
) -> None:
    """The neighbour has calls from the same phones in the same days: none of them shows."""
    store, business_id, rows = seeded
    mine = {r["id"] for r in rows}
    for given in ({}, {"customer_phone_normalized": PHONES[0]}, WINDOW):
        server.call(store.search(business_id, _query(limit=200, **given)))  # totals known
        with _list_statements(server) as statements:
            page, total = server.call(store.search(business_id, _query(limit=200, **given)))
        assert statements == []
        assert page and {r.id for r in page} <= mine
        assert total == len(page)
    stranger = server.new_tenant("Stranger").business_id
    with _list_statements(server) as statements:
        assert server.call(store.search(stranger, _query())) == ([], 0)
    assert statements == []
