"""ProviderService over real gRPC: the same behaviour as REST, statuses with ErrorInfo."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from callvault.v1 import providers_pb2 as pb
from callvault.v1 import providers_pb2_grpc
from google.protobuf import struct_pb2

from tests.e2e.test_providers_rest import THREECX
from tests.fakes.threecx import FakeThreeCX
from tests.support.grpc_errors import error_info
from tests.support.server import RunningServer


def struct(**values: Any) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def metadata(key: str, business: str | None = None) -> list[tuple[str, str]]:
    md = [("authorization", f"Bearer {key}")]
    if business:
        md.append(("x-business-id", business))
    return md


def test_crud_over_grpc(server: RunningServer) -> None:
    tenant = server.new_tenant()
    md = metadata(tenant.account_key, tenant.business_id)
    with server.channel() as channel:
        stub = providers_pb2_grpc.ProviderServiceStub(channel)
        created = stub.CreateProvider(
            pb.CreateProviderRequest(
                kind="threecx",
                name="Main PBX",
                config=struct(baseUrl="https://pbx.example.com", username="apiuser", password="s3cret"),
            ),
            metadata=md,
        )
        got = stub.GetProvider(pb.GetProviderRequest(id=created.id), metadata=md)
        assert (got.kind, got.name, got.is_active, got.base_url, got.username) == (
            "threecx",
            "Main PBX",
            True,
            "https://pbx.example.com",
            "apiuser",
        )
        assert "s3cret" not in str(got)
        updated = stub.UpdateProvider(
            pb.UpdateProviderRequest(id=created.id, config=struct(headless=True), is_active=False),
            metadata=md,
        )
        assert updated.ok is True
        listed = stub.ListProviders(pb.ListProvidersRequest(), metadata=md)
        assert [(p.id, p.is_active, p.preview) for p in listed.items] == [
            (created.id, False, "apiuser @ pbx.example.com")
        ]
        assert stub.DeleteProvider(pb.DeleteProviderRequest(id=created.id), metadata=md).ok is True
        assert list(stub.ListProviders(pb.ListProvidersRequest(), metadata=md).items) == []


@pytest.mark.parametrize(
    ("call", "code", "reason"),
    [
        ("get_missing", grpc.StatusCode.NOT_FOUND, "provider_not_found"),
        ("bad_kind", grpc.StatusCode.FAILED_PRECONDITION, "provider_kind_not_supported"),
        ("bad_name", grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument"),
        ("no_business", grpc.StatusCode.INVALID_ARGUMENT, "business_required"),
        ("no_key", grpc.StatusCode.UNAUTHENTICATED, "unauthenticated"),
    ],
)
def test_grpc_errors_carry_error_info(
    server: RunningServer, call: str, code: grpc.StatusCode, reason: str
) -> None:
    tenant = server.new_tenant()
    md = metadata(tenant.business_key)
    with server.channel() as channel:
        stub = providers_pb2_grpc.ProviderServiceStub(channel)
        actions = {
            "get_missing": lambda: stub.GetProvider(pb.GetProviderRequest(id="nope"), metadata=md),
            "bad_kind": lambda: stub.CreateProvider(
                pb.CreateProviderRequest(kind="avaya", name="PBX", config=struct()), metadata=md
            ),
            "bad_name": lambda: stub.CreateProvider(
                pb.CreateProviderRequest(kind="threecx", name="x", config=struct()), metadata=md
            ),
            "no_business": lambda: stub.ListProviders(
                pb.ListProvidersRequest(), metadata=metadata(tenant.account_key)
            ),
            "no_key": lambda: stub.ListProviders(pb.ListProvidersRequest()),
        }
        with pytest.raises(grpc.RpcError) as raised:
            actions[call]()
    error = raised.value
    assert error.code() == code
    info = error_info(error)
    assert info.reason == reason
    assert info.domain == "callvault.dev"
    if reason == "invalid_argument":
        assert info.metadata["field"] == "name"
        assert error.details().startswith("name:")


def test_moving_base_url_over_grpc_needs_the_secret_again(server: RunningServer) -> None:
    tenant = server.new_tenant()
    md = metadata(tenant.business_key)
    with FakeThreeCX() as old, FakeThreeCX() as new, server.channel() as channel:
        stub = providers_pb2_grpc.ProviderServiceStub(channel)
        created = stub.CreateProvider(
            pb.CreateProviderRequest(kind="threecx", name="Main PBX", config=struct(**THREECX.config(old))),
            metadata=md,
        )
        with pytest.raises(grpc.RpcError) as raised:
            stub.UpdateProvider(
                pb.UpdateProviderRequest(id=created.id, config=struct(baseUrl=new.base_url), validate=True),
                metadata=md,
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.details() == "config.password: must be sent again when config.baseUrl changes"
        info = error_info(raised.value)
        assert (info.reason, info.metadata["field"]) == ("invalid_argument", "config.password")
        assert stub.GetProvider(pb.GetProviderRequest(id=created.id), metadata=md).base_url == old.base_url
        assert stub.TestProvider(pb.TestProviderRequest(id=created.id), metadata=md).ok is True
        assert old.requests and not new.requests

        moved = stub.UpdateProvider(
            pb.UpdateProviderRequest(
                id=created.id, config=struct(baseUrl=new.base_url, password=new.client_secret)
            ),
            metadata=md,
        )
        assert moved.ok is True
        old.clear_requests()
        assert stub.TestProvider(pb.TestProviderRequest(id=created.id), metadata=md).ok is True
        assert new.requests and not old.requests
