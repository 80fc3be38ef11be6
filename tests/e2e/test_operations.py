"""What operators rely on: per-key rate limits, request ids, Prometheus metrics."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grpc
import httpx
import pytest
from callvault.v1 import providers_pb2 as pb
from callvault.v1 import providers_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.support.server import RunningServer, server_settings


def test_rate_limit_per_key_over_rest_and_grpc(tmp_path: Path) -> None:
    settings = replace(
        server_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"), rate_limit_per_minute=5
    )
    running = RunningServer(settings).start()
    try:
        tenant = running.new_tenant()
        with running.http(tenant.business_key) as client:
            answers = [client.get("/api/v1/providers") for _ in range(5)]
            assert [a.status_code for a in answers] == [200] * 5
            assert [a.headers["RateLimit-Remaining"] for a in answers] == ["4", "3", "2", "1", "0"]
            assert answers[0].headers["RateLimit-Limit"] == "5"
            refused = client.get("/api/v1/providers")
            assert refused.status_code == 429
            assert refused.json()["error"] == "rate_limited"
            assert 1 <= int(refused.headers["Retry-After"]) <= 12
        with running.channel() as channel, pytest.raises(grpc.RpcError) as raised:
            providers_pb2_grpc.ProviderServiceStub(channel).ListProviders(
                pb.ListProvidersRequest(), metadata=[("authorization", f"Bearer {tenant.business_key}")]
            )
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(raised.value)
        assert status is not None
        retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
        assert len(retry) == 1
        info = error_details_pb2.RetryInfo()
        retry[0].Unpack(info)
        assert info.retry_delay.seconds >= 1
        # Another key of the same business has its own bucket.
        with running.http(tenant.account_key, business=tenant.business_id) as client:
            assert client.get("/api/v1/providers").status_code == 200
    finally:
        running.stop()


def test_request_ids(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        fresh = client.get("/api/v1/providers")
        echoed = client.get("/api/v1/providers", headers={"X-Request-Id": "trace-abc.123"})
        unsafe = client.get("/api/v1/providers", headers={"X-Request-Id": "bad id\twith spaces"})
        failed = client.get("/api/v1/providers/nope")
    assert len(fresh.headers["x-request-id"]) == 32
    assert echoed.headers["x-request-id"] == "trace-abc.123"
    assert unsafe.headers["x-request-id"] != "bad id\twith spaces"
    assert failed.status_code == 404 and failed.headers["x-request-id"]
    with server.channel() as channel:
        stub = providers_pb2_grpc.ProviderServiceStub(channel)
        md = [("authorization", f"Bearer {tenant.business_key}"), ("x-request-id", "grpc-trace-1")]
        _, call = stub.ListProviders.with_call(pb.ListProvidersRequest(), metadata=md)
        assert ("x-request-id", "grpc-trace-1") in call.trailing_metadata()
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetProvider(pb.GetProviderRequest(id="nope"), metadata=md)
        trailing = dict(raised.value.trailing_metadata())
        assert trailing["x-request-id"] == "grpc-trace-1"
        assert "grpc-status-details-bin" in trailing  # the rich status survived the merge


def test_metrics_endpoint(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        client.get("/api/v1/providers")
        client.get("/api/v1/providers/missing")
    text = httpx.get(f"{server.http_base}/metrics").text
    assert (
        'callvault_calls_total{method="/callvault.v1.ProviderService/ListProviders",status="200",transport="rest"}'
        in text
    )
    assert (
        'callvault_calls_total{method="/callvault.v1.ProviderService/GetProvider",status="404",transport="rest"}'
        in text
    )
    assert "callvault_call_duration_seconds_bucket" in text
    assert "callvault_database_up 1.0" in text
