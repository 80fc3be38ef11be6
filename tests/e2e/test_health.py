"""The standard gRPC health service, /healthz and /readyz, and their transitions."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support import postgres
from tests.support.server import RunningServer, server_settings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = ("", "callvault.v1.ProviderService", "callvault.v1.MetaService")


def check(server: RunningServer, service: str) -> int:
    with server.channel() as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return int(reply.status)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_serving_overall_and_per_service(server: RunningServer) -> None:
    for name in SERVICES:
        assert check(server, name) == SERVING
    with server.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=5)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    with server.http() as client:
        assert client.get("/healthz").json() == {"status": "SERVING"}
        assert client.get("/readyz").status_code == 200


def test_reflection_lists_services(server: RunningServer) -> None:
    with server.channel() as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"callvault.v1.ProviderService", "callvault.v1.MetaService", "grpc.health.v1.Health"} <= names


def test_not_serving_while_database_unreachable(tmp_path: Path) -> None:
    if not postgres.available():
        pytest.skip("needs PostgreSQL to take a database away from a running server")
    pg = postgres.PostgresServer()
    pg.start()
    running = RunningServer(server_settings(tmp_path, pg.create_database())).start()
    try:
        assert check(running, "") == SERVING
        pg.pause()
        assert wait_for(lambda: check(running, "") == NOT_SERVING)
        assert check(running, "callvault.v1.ProviderService") == NOT_SERVING
        with running.http() as client:
            assert client.get("/readyz").status_code == 503
            assert client.get("/healthz").status_code == 200  # alive, just not ready
        pg.resume()
        assert wait_for(lambda: check(running, "") == SERVING)
    finally:
        running.stop()
        pg.stop()


def test_not_serving_during_shutdown(tmp_path: Path) -> None:
    running = RunningServer(
        server_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    ).start()
    assert running.server is not None
    with running.channel() as channel:
        responses = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        assert next(responses).status == SERVING
        http = httpx.Client(base_url=running.http_base)
        running.loop.call_soon_threadsafe(lambda: running.loop.create_task(running.server.stop(2.0)))  # type: ignore[union-attr]
        assert next(responses).status == NOT_SERVING
    http.close()
    running.loop.call_soon_threadsafe(running.loop.stop)
