"""Property-based fuzzing of every RPC of the real gRPC server with request messages
generated from their descriptors (tests/fuzz/messages.py), on both databases. No call may
end INTERNAL, UNKNOWN, DATA_LOSS or UNAVAILABLE, and a refused call must leave the
business's rows as they were."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
from callvault.v1 import audit_pb2, meta_pb2, providers_pb2, recordings_pb2
from google.protobuf import message, message_factory
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import EXAMPLES, Target
from tests.fuzz.messages import messages
from tests.support.snapshot import business_rows

SERVICES = (
    providers_pb2.DESCRIPTOR.services_by_name["ProviderService"],
    recordings_pb2.DESCRIPTOR.services_by_name["RecordingService"],
    meta_pb2.DESCRIPTOR.services_by_name["MetaService"],
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
)
METHODS = [method for service in SERVICES for method in service.methods]
NEVER = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNIMPLEMENTED,
    # The fuzz server has no rate limit: this is an error too big for its status trailer.
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _requests(target: Target, method: Any) -> st.SearchStrategy[list[message.Message]]:
    # Deletes get no real ids: the rest of the run would have nothing left to reach.
    ids = () if method.name.startswith("Delete") else target.ids
    one = messages(method.input_type, ids)
    return st.lists(one, min_size=1, max_size=3) if method.client_streaming else one.map(lambda m: [m])


def _requests_or_bytes(target: Target, method: Any) -> st.SearchStrategy[list[Any]]:
    """Mostly messages; sometimes bytes that may not decode as the request type at all."""
    raw = st.lists(st.binary(max_size=64), min_size=1, max_size=2 if method.client_streaming else 1)
    return st.one_of(_requests(target, method), _requests(target, method), raw)


def _invoke(channel: grpc.Channel, method: Any, requests: list[Any], md: Any) -> None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    response_type = message_factory.GetMessageClass(method.output_type)
    kwargs = {
        "request_serializer": lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
        "response_deserializer": response_type.FromString,
    }
    if method.client_streaming:

        def stream() -> Iterator[message.Message]:
            yield from requests

        channel.stream_unary(path, **kwargs)(stream(), metadata=md, timeout=30)
    elif method.server_streaming:
        list(channel.unary_stream(path, **kwargs)(requests[0], metadata=md, timeout=30))
    else:
        channel.unary_unary(path, **kwargs)(requests[0], metadata=md, timeout=30)


def _checker(channel: grpc.Channel, method: Any, md: Any, state: dict[str, Any], target: Target) -> Any:
    def check(requests: list[message.Message]) -> None:
        refused = False
        try:
            _invoke(channel, method, requests, md)
        except grpc.RpcError as error:
            where = f"{method.name}({requests!r:.500}) -> {error.code()} {error.details()}"
            assert error.code() not in NEVER, where
            refused = True
        rows = business_rows(target.server, target.tenant.business_id)
        if refused:
            assert rows == state["rows"], f"a refused {method.name} changed stored data"
        state["rows"] = rows

    return check


def test_no_message_gets_an_internal_error_or_changes_data_when_refused(target: Target) -> None:
    business = target.tenant.business_id
    md = [("authorization", f"Bearer {target.tenant.business_key}")]
    state = {"rows": business_rows(target.server, business)}

    with target.server.channel() as channel:
        for method in METHODS:
            # A presigned upload's or a listen link's token stands in for a key: try without one too.
            keyless = {"upload_token", "link_token"} & set(method.input_type.fields_by_name)
            for metadata in (md, []) if keyless else (md,):
                check = _checker(channel, method, metadata, state, target)
                settings(
                    max_examples=EXAMPLES * 2,  # an RPC costs a fraction of a REST case
                    deadline=None,
                    derandomize=True,
                    database=None,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    suppress_health_check=list(HealthCheck),
                )(given(requests=_requests_or_bytes(target, method))(check))()
