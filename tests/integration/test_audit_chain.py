"""The audit hash chain on both databases: appends from two processes interleave into one
unbroken line, and `callvault audit verify` finds an edited, removed, reordered or
inserted event, naming the first broken link, with a non-zero exit."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlmodel import col, select

from service.audit.chain import append, verify_all, verify_chain
from service.audit.events import Action, Actor, ByteSpan, Target, TargetKind, Transport
from service.storage.db import Database, sync_url
from service.storage.migrate import upgrade
from service.storage.models import AuditEvent

CHAIN = "01a23100-0000-7000-8000-000000000001"


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    make: Callable[[str], str] = request.getfixturevalue("database_url_factory")
    made = make(request.param)
    upgrade(made)
    return made


def _append(url: str, count: int, chain: str = CHAIN) -> None:
    async def run() -> None:
        db = Database(url)
        try:
            for n in range(count):
                async with db.session() as session:
                    actor = Actor(Transport.REST, f"req-{n}", key_id="k1", key_name="tester")
                    await append(
                        session,
                        chain,
                        actor,
                        Action.AUDIO_READ,
                        Target(TargetKind.RECORDING, f"rec-{n}"),
                        business_id=chain,
                        span=ByteSpan(0, 100 + n),
                    )
                    await session.commit()
        finally:
            await db.dispose()

    asyncio.run(run())


def _verify(url: str, chain: str = CHAIN) -> str | None:
    async def run() -> str | None:
        db = Database(url)
        try:
            report = await verify_chain(db, chain)
        finally:
            await db.dispose()
        return None if report.broken is None else str(report.broken)

    return asyncio.run(run())


@pytest.fixture
def sql(url: str) -> Iterator[Callable[[str], None]]:
    """Run a statement on the database directly, as someone with its password would."""
    engine = create_engine(sync_url(url))

    def run(statement: str) -> None:
        with engine.begin() as conn:
            conn.execute(text(statement), {"chain": CHAIN} if ":chain" in statement else {})

    yield run
    engine.dispose()


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CALLVAULT_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "service", "audit", "verify", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_intact_chain_verifies_and_its_events_link(url: str) -> None:
    _append(url, 5)
    assert _verify(url) is None
    result = _cli(url)
    assert result.returncode == 0, result.stderr
    assert f"chain {CHAIN}: 5 events" in result.stdout and "intact" in result.stdout


@pytest.mark.parametrize(
    ("tamper", "seq", "problem"),
    [
        (["UPDATE auditevent SET range_end = 1 WHERE seq = 3"], 3, "edited"),
        (["UPDATE auditevent SET key_name = 'someone else' WHERE seq = 1"], 1, "edited"),
        (["DELETE FROM auditevent WHERE seq = 2"], 2, "removed"),
        (["DELETE FROM auditevent WHERE seq = 5"], 5, "removed"),  # the last one: the head knows
        (  # events 2 and 3 swap places
            [
                "UPDATE auditevent SET seq = 100 WHERE seq = 2",
                "UPDATE auditevent SET seq = 2 WHERE seq = 3",
                "UPDATE auditevent SET seq = 3 WHERE seq = 100",
            ],
            2,
            "reordered",
        ),
    ],
    ids=["edit-range", "edit-key-name", "remove", "remove-last", "reorder"],
)
def test_verify_finds_the_first_broken_link(
    url: str, sql: Callable[[str], None], tamper: list[str], seq: int, problem: str
) -> None:
    _append(url, 5)
    _append(url, 3, chain="other")  # an untouched chain stays intact
    for statement in tamper:
        sql(statement.replace("WHERE", "WHERE chain = :chain AND"))
    broken = _verify(url)
    assert broken is not None and f"at event {seq}:" in broken and problem in broken
    result = _cli(url)
    assert result.returncode != 0
    assert f"chain {CHAIN}" in result.stdout and "BROKEN" in result.stdout and problem in result.stdout
    assert "chain other: 3 events" in result.stdout and "1 of 2 audit chains are broken" in result.stderr
    assert _cli(url, "--business", "other").returncode == 0


def test_verify_finds_an_inserted_event(url: str, sql: Callable[[str], None]) -> None:
    """An event slipped in as number 3, the later ones moved up: its hash may be right, but
    event 4 does not link to it."""
    _append(url, 5)
    sql("UPDATE auditevent SET seq = seq + 10 WHERE chain = :chain AND seq >= 3")
    sql("UPDATE auditevent SET seq = seq - 9 WHERE chain = :chain AND seq >= 13")
    sql(
        "INSERT INTO auditevent (id, chain, seq, at, key_name, action, target_kind, target_id, transport,"
        " request_id, prev_hash, hash) SELECT 'forged', chain, 3, at, key_name, action, target_kind,"
        " target_id, transport, request_id, hash, hash FROM auditevent WHERE chain = :chain AND seq = 2"
    )
    broken = _verify(url)
    assert broken is not None and "at event 3:" in broken
    assert _cli(url).returncode != 0


_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tests.integration.test_audit_chain import _append_as
    go = Path(sys.argv[3])
    while not go.exists():
        time.sleep(0.01)
    _append_as(sys.argv[1], int(sys.argv[2]), sys.argv[4])
    """
)


def _append_as(url: str, count: int, writer: str) -> None:
    """What each writer process runs: ``count`` appends, each in its own transaction."""

    async def run() -> None:
        db = Database(url)
        try:
            for n in range(count):
                async with db.session() as session:
                    actor = Actor(Transport.GRPC, f"{writer}-{n}", key_id=writer)
                    await append(
                        session, CHAIN, actor, Action.PROVIDER_UPDATE, Target(TargetKind.PROVIDER, writer)
                    )
                    await session.commit()
        finally:
            await db.dispose()

    asyncio.run(run())


def test_appends_from_two_processes_make_one_unbroken_chain(url: str, tmp_path: Path) -> None:
    count = 150
    go = tmp_path / "go"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, url, str(count), str(go), name],
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    time.sleep(1.0)  # both imported and waiting
    go.touch()
    for writer in writers:
        _, err = writer.communicate(timeout=180)
        assert writer.returncode == 0, err

    async def rows() -> list[AuditEvent]:
        db = Database(url)
        try:
            async with db.session() as session:
                query = select(AuditEvent).where(col(AuditEvent.chain) == CHAIN).order_by(col(AuditEvent.seq))
                return list((await session.exec(query)).all())
        finally:
            await db.dispose()

    events = asyncio.run(rows())
    assert [e.seq for e in events] == list(range(1, 2 * count + 1))  # no gap, no fork
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(events))
    by = [e.key_id for e in events]
    assert by.count("a") == by.count("b") == count
    switches = sum(1 for x, y in itertools.pairwise(by) if x != y)
    assert switches > 1, "the two writers did not interleave"
    assert _verify(url) is None

    async def every() -> list[str]:
        db = Database(url)
        try:
            return [str(r.broken) for r in await verify_all(db) if r.broken]
        finally:
            await db.dispose()

    assert asyncio.run(every()) == []
