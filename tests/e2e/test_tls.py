"""TLS on both listeners from certificate files, and client-certificate checks for gRPC."""

from __future__ import annotations

import ssl
from dataclasses import replace
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.config import TlsSettings
from tests.support.certs import make_pki
from tests.support.server import RunningServer, server_settings


def health(channel: grpc.Channel) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(reply.status)


def test_tls_and_client_certificates(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    settings = replace(
        server_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"),
        tls=TlsSettings(cert_file=pki.server_cert, key_file=pki.server_key, client_ca_file=pki.ca),
    )
    running = RunningServer(settings).start()
    assert running.server is not None
    try:
        https = f"https://127.0.0.1:{running.server.http_port}"
        assert httpx.get(f"{https}/healthz", verify=ssl.create_default_context(cafile=pki.ca)).json() == {
            "status": "SERVING"
        }
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{https}/healthz")  # not trusted without the test CA
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"http://127.0.0.1:{running.server.http_port}/healthz")  # plain HTTP is not served

        ca = pki.ca.read_bytes()
        with_client = grpc.ssl_channel_credentials(
            ca, pki.client_key.read_bytes(), pki.client_cert.read_bytes()
        )
        with grpc.secure_channel(running.grpc_target, with_client) as channel:
            assert health(channel) == health_pb2.HealthCheckResponse.SERVING
        with (
            grpc.secure_channel(running.grpc_target, grpc.ssl_channel_credentials(ca)) as channel,
            pytest.raises(grpc.RpcError) as raised,
        ):
            health(channel)  # no client certificate: refused
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(running.grpc_target) as channel, pytest.raises(grpc.RpcError):
            health(channel)
    finally:
        running.stop()


def test_half_configured_tls_is_refused(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    with pytest.raises(ValueError, match="both CALLVAULT_TLS_CERT and CALLVAULT_TLS_KEY"):
        TlsSettings(cert_file=pki.server_cert).check()
    with pytest.raises(ValueError, match="does not exist"):
        TlsSettings(cert_file=tmp_path / "nope.pem", key_file=pki.server_key).check()
