"""The process registry: live processes are seen by all, a silent one counts as gone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from service.processes import ProcessRegistry
from service.storage.db import Database
from tests.support.process import ServerProcess
from tests.support.server import RunningServer


def registry(server: RunningServer, heartbeat: float = 0.1, dead_after: float = 0.5) -> ProcessRegistry:
    return ProcessRegistry(server.service.db, heartbeat_seconds=heartbeat, dead_after_seconds=dead_after)


def test_beating_processes_are_live_and_silent_ones_are_not(server: RunningServer) -> None:
    first, second = registry(server), registry(server)
    first.note_keyring(2, [1, 2])

    async def scenario() -> None:
        await first.beat()
        await second.beat()
        live = {p.id: p for p in await first.live()}
        assert {first.id, second.id} <= set(live)
        assert (live[first.id].primary_key_id, live[first.id].key_ids) == (2, (1, 2))
        assert live[second.id].primary_key_id is None
        # `second` stops beating without saying goodbye, as a killed process would.
        beating = asyncio.create_task(first.run())
        await asyncio.sleep(0.8)
        assert await first.is_live(first.id)
        assert not await first.is_live(second.id)
        async with server.service.db.session() as session:
            ids = set((await session.exec(first.live_ids())).all())
        assert first.id in ids and second.id not in ids
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
        await first.stop()
        assert not await second.is_live(first.id)

    server.call(scenario())


def test_the_server_registers_itself(server: RunningServer) -> None:
    own = server.service.processes
    assert server.call(own.is_live(own.id))
    assert server.service.puller.owner == own.id
    (me,) = [p for p in server.call(own.live()) if p.id == own.id]
    assert me.primary_key_id == server.keyring.primary_id


def test_registry_refuses_a_dead_time_shorter_than_a_beat(server: RunningServer) -> None:
    with pytest.raises(ValueError, match="more than one heartbeat"):
        registry(server, heartbeat=1.0, dead_after=1.0)


def test_a_stopped_server_leaves_and_a_killed_one_goes_stale(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'callvault.db'}"
    env = {
        "CALLVAULT_DATABASE_URL": url,
        "CALLVAULT_SYNC_ENABLED": "0",
        "CALLVAULT_HEARTBEAT_SECONDS": "0.2",
        "CALLVAULT_PROCESS_DEAD_AFTER_SECONDS": "1",
    }
    clean = ServerProcess(tmp_path, **env)
    clean.cli("migrate")
    killed = ServerProcess(tmp_path, **env)
    clean.start()
    killed.start()

    async def live() -> set[int]:
        db = Database(url)
        try:
            watcher = ProcessRegistry(db, heartbeat_seconds=0.2, dead_after_seconds=1.0)
            return {p.pid for p in await watcher.live()}
        finally:
            await db.dispose()

    def live_pids() -> set[int]:
        return asyncio.run(live())

    try:
        assert {clean.pid, killed.pid} <= live_pids()
        assert clean.stop() == 0
        assert clean.pid not in live_pids()  # at once: it removed its own row
        killed.kill()
        assert killed.pid in live_pids()  # a SIGKILL leaves the row behind ...
        time.sleep(1.3)
        assert killed.pid not in live_pids()  # ... which goes stale within dead_after
    finally:
        clean.stop()
        if killed.proc and killed.proc.poll() is None:
            killed.kill()


def test_the_live_count_follows_the_beats_and_tells_its_watchers(server: RunningServer) -> None:
    watcher, newcomer = registry(server, dead_after=5), registry(server, dead_after=5)
    seen: list[int] = []
    watcher.on_live_count(seen.append)

    async def scenario() -> None:
        await watcher.beat()
        before = await watcher.count_live()
        await newcomer.beat()
        assert await watcher.count_live() == before + 1
        await newcomer.stop()
        assert await watcher.count_live() == before
        await watcher.stop()
        assert seen[-2:] == [before + 1, before]

    server.call(scenario())
