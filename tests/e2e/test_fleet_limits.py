"""Two real server processes on one database: a key revoked through the CLI is refused
by both within the cache's stated bound (1 s, asserted at 1.5 s), as are its listen links,
and the documented 600 requests a minute per key holds across them, not 600 each."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlmodel import col, select

from service.admin import Admin
from service.auth import Scope
from service.processes import ProcessRegistry
from service.storage.db import Database
from service.storage.models import KeyRevocation
from tests.support.process import ServerProcess

PER_MINUTE = 600
WHOAMI = "/api/v1/meta/whoami"


@dataclass
class Fleet:
    database_url: str
    servers: tuple[ServerProcess, ServerProcess]
    account: str
    business: str


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _with_db(url: str, fn: Any) -> Any:
    db = Database(url)
    try:
        return await fn(db)
    finally:
        await db.dispose()


def new_key(fleet: Fleet) -> tuple[str, str]:
    async def make(db: Database) -> tuple[str, str]:
        created = await Admin(db).create_key(
            account_id=fleet.account, business_id=fleet.business, scopes=[Scope.MANAGE_ALL]
        )
        return created.id, created.plaintext

    result: tuple[str, str] = _run(_with_db(fleet.database_url, make))
    return result


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, database_url_factory: Any
) -> Iterator[Fleet]:
    url: str = database_url_factory(request.param)
    root = tmp_path_factory.mktemp(f"fleet-{request.param}")
    env = {
        "CALLVAULT_DATABASE_URL": url,
        "CALLVAULT_MASTER_KEYS": "1:" + base64.b64encode(os.urandom(32)).decode(),
        "CALLVAULT_SYNC_ENABLED": "0",
        "CALLVAULT_HEARTBEAT_SECONDS": "0.5",
        "CALLVAULT_PROCESS_DEAD_AFTER_SECONDS": "3",
        "CALLVAULT_RATE_LIMIT_PER_MINUTE": str(PER_MINUTE),
        "CALLVAULT_LOG_LEVEL": "WARNING",
        "CALLVAULT_BLOB_DIR": str(root / "blobs"),  # one store, as replicas share a bucket
    }
    (root / "a").mkdir()
    (root / "b").mkdir()
    first = ServerProcess(root / "a", **env)
    first.cli("migrate")

    async def tenant(db: Database) -> tuple[str, str]:
        admin = Admin(db)
        account = await admin.create_account("Fleet Co")
        return account, await admin.create_business(
            account, "Fleet Co", slug=f"fleet-{uuid.uuid4().hex[:12]}"
        )

    account, business = _run(_with_db(url, tenant))
    second = ServerProcess(root / "b", **env)
    first.start()
    try:
        second.start()
        try:

            async def both_live(db: Database) -> None:
                registry = ProcessRegistry(db, heartbeat_seconds=0.5, dead_after_seconds=3)
                deadline = time.monotonic() + 20
                while len(await registry.live()) < 2:
                    assert time.monotonic() < deadline, "the two servers never both beat"
                    await asyncio.sleep(0.1)

            _run(_with_db(url, both_live))
            time.sleep(1.5)  # three beats: each has counted the other
            yield Fleet(url, (first, second), account, business)
        finally:
            second.stop()
    finally:
        first.stop()


def test_a_key_revoked_through_the_cli_is_refused_by_both_processes_within_the_bound(fleet: Fleet) -> None:
    key_id, plaintext = new_key(fleet)
    headers = {"Authorization": f"Bearer {plaintext}"}

    async def scenario(db: Database) -> tuple[float, float, float]:
        async def counter() -> int:
            async with db.session() as session:
                found = (
                    await session.exec(select(KeyRevocation.counter).where(col(KeyRevocation.id) == 1))
                ).first()
            return found or 0

        async with httpx.AsyncClient(timeout=5) as client:
            for server in fleet.servers:  # both have the key cached
                for _ in range(3):
                    assert (await client.get(server.base_url + WHOAMI, headers=headers)).status_code == 200
            before = await counter()
            cli = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "service", "keys", "revoke", key_id, env=fleet.servers[0].env
            )
            # The last instant the revocation was certainly not yet committed: a read
            # that began then still saw the old counter.
            not_yet = time.monotonic()
            refused: dict[int, float] = {}
            deadline = time.monotonic() + 60
            while len(refused) < 2:
                assert time.monotonic() < deadline, "the revoked key was still accepted after 60 s"
                await asyncio.sleep(0.05)  # 20 calls a second each: well inside the key's budget
                started = time.monotonic()
                if await counter() == before:
                    not_yet = started
                for i, server in enumerate(fleet.servers):
                    if i in refused:
                        continue
                    status = (await client.get(server.base_url + WHOAMI, headers=headers)).status_code
                    if status == 401:
                        refused[i] = time.monotonic()
                    else:
                        assert status == 200
                        assert i not in refused
            assert await cli.wait() == 0
        return not_yet, refused[0], refused[1]

    not_yet, first, second = _run(_with_db(fleet.database_url, scenario))
    print(f"refused {first - not_yet:.3f} s and {second - not_yet:.3f} s after the commit at the latest")
    # The bound is 1 s after the commit; 0.5 s of margin for polling and a loaded machine.
    assert max(first, second) - not_yet <= 1.5, (first - not_yet, second - not_yet)


def test_a_key_gets_the_documented_budget_across_two_processes(fleet: Fleet) -> None:
    """Hammered on both processes for WINDOW seconds from a full budget, a key is admitted
    the minute's budget (600) plus the refill over the window (10/s), in all: on a process
    per-process limiter it would be twice that."""
    window = 12.0
    _, plaintext = new_key(fleet)
    headers = {"Authorization": f"Bearer {plaintext}"}

    async def hammer() -> list[float]:
        admitted: list[float] = []
        start = time.monotonic()

        async def worker(client: httpx.AsyncClient, server: ServerProcess) -> None:
            while time.monotonic() - start < window:
                response = await client.get(server.base_url + WHOAMI, headers=headers)
                if response.status_code == 200:
                    admitted.append(time.monotonic() - start)
                else:
                    assert response.status_code == 429, response.text

        async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=16)) as client:
            await asyncio.gather(*(worker(client, s) for s in fleet.servers for _ in range(6)))
        return admitted

    admitted = _run(hammer())
    expected = PER_MINUTE + PER_MINUTE / 60 * window
    print(f"admitted {len(admitted)} in {window:.0f} s (expected {expected:.0f})")
    assert abs(len(admitted) - expected) <= 0.1 * expected, (len(admitted), expected)
    # After the budget is spent, the fleet refills at 600 a minute (10/s), not 20/s.
    late = [t for t in admitted if t >= window / 2]
    rate = len(late) / (window / 2) * 60
    print(f"refill {rate:.0f} a minute")
    assert abs(rate - PER_MINUTE) <= 0.25 * PER_MINUTE, rate


def test_a_listen_link_plays_on_every_process_until_its_key_is_revoked(fleet: Fleet) -> None:
    """A link minted on one process verifies on the other (its key derives from the shared
    master key), and stops on both within the revocation bound once its minting key is revoked."""
    key_id, plaintext = new_key(fleet)
    headers = {"Authorization": f"Bearer {plaintext}"}
    first = fleet.servers[0].base_url
    with httpx.Client(timeout=10, headers=headers) as client:
        body = {"dataId": "fleet-link", "callAt": "2026-05-20T08:14:00+07:00", "direction": "in"}
        recording = client.post(first + "/api/v1/recordings", json=body).json()["id"]
        audio = client.put(
            f"{first}/api/v1/recordings/{recording}/audio",
            content=b"RIFF" * 64,
            headers={"Content-Type": "audio/wav"},
        )
        assert audio.status_code == 200, audio.text
        url = urlsplit(client.post(f"{first}/api/v1/recordings/{recording}/audio-link").json()["url"])
    path = f"{url.path}?{url.query}"
    for server in fleet.servers:
        played = httpx.get(server.base_url + path, headers={"Range": "bytes=0-3"}, timeout=10)
        assert played.status_code == 206 and played.content == b"RIFF", played.text
    fleet.servers[0].cli("keys", "revoke", key_id)
    revoked = time.monotonic()  # committed by now
    refused: dict[int, float] = {}
    while len(refused) < 2:
        assert time.monotonic() < revoked + 10, "the revoked key's link still played after 10 s"
        for i, server in enumerate(fleet.servers):
            if i in refused:
                continue
            answer = httpx.get(server.base_url + path, timeout=10)
            if answer.status_code == 403:
                assert answer.json()["error"] == "link_invalid"
                refused[i] = time.monotonic()
            else:
                assert answer.status_code == 200, answer.text
        time.sleep(0.05)
    print(f"refused {refused[0] - revoked:.3f} s and {refused[1] - revoked:.3f} s after the revocation")
    assert max(refused.values()) - revoked <= 1.5
