"""CALLVAULT_WORKERS: several processes on the same ports, stopped together by SIGTERM."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.test_key_rotation import live, wait_until
from tests.support.process import ServerProcess


def workers_of(pid: int) -> set[int]:
    """The worker processes of a parent (multiprocessing's resource tracker is not one)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid and b"spawn_main" in command:
            found.add(int(entry.name))
    return found


def gone(pid: int) -> bool:
    try:
        return "zombie" in (Path("/proc") / str(pid) / "status").read_text().lower()
    except OSError:
        return True


def test_two_workers_share_the_ports_and_stop_together(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, CALLVAULT_WORKERS="2", CALLVAULT_SYNC_ENABLED="0").start()
    try:
        deadline = time.monotonic() + 20
        while len(workers := workers_of(server.pid)) < 2:
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.1)
        # Fresh connections are spread by the kernel; every one gets an answer.
        for _ in range(20):
            assert httpx.get(f"{server.base_url}/healthz", headers={"Connection": "close"}).status_code == 200
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        metrics = httpx.get(f"{server.base_url}/metrics").text
        assert "callvault_database_up" in metrics  # summed across the workers' metric files
    finally:
        assert server.stop() == 0, server.output()[-2000:]
    for pid in workers:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )
    assert server.output().count('"msg": "stopped"') == 2


def test_workers_need_fixed_ports(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, CALLVAULT_WORKERS="2", CALLVAULT_HTTP_PORT="0")
    result = server.cli("serve", check=False)
    assert result.returncode != 0 and "fixed ports" in result.stderr


def test_sighup_reloads_the_master_keys_in_every_worker(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path, CALLVAULT_WORKERS="2", CALLVAULT_SYNC_ENABLED="0", CALLVAULT_KEY_RELOAD_SECONDS="3600"
    ).start()
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'callvault.db'}"
    proc = server.proc
    assert proc is not None

    def primaries() -> list[int]:
        workers = workers_of(server.pid)
        return sorted(p.primary_key_id or 0 for p in live(database_url).values() if p.pid in workers)

    try:
        wait_until(lambda: primaries() == [1, 1], what="both workers to register")
        server.cli("master-keys", "add")
        proc.send_signal(signal.SIGHUP)  # to the parent, which passes it on
        wait_until(lambda: primaries() == [2, 2], what="both workers to load key 2")
        assert proc.poll() is None
    finally:
        assert server.stop() == 0, server.output()[-2000:]
