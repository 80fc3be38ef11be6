"""HTTP bindings read from the protos' google.api.http annotations: the only route table."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, message, message_factory

from service.transport.bodies import BYTES_SUFFIX

# protobuf's pure-Python and upb descriptors share one shape but not one static type.
MessageDescriptor = Any
FieldDescriptor = Any

_VERBS = ("get", "post", "put", "patch", "delete")
_PATH_PARAM = re.compile(r"\{([a-z_][a-z0-9_.]*)\}")


@dataclass(frozen=True, slots=True)
class Binding:
    method: descriptor.MethodDescriptor
    verb: str  # upper case
    path: str  # Starlette path syntax: /api/v1/providers/{id}
    body: str  # "*", a field name, or "" for no body
    handler: Callable[..., Any]
    request_type: type[message.Message]
    response_type: type[message.Message]
    # The servicer's `<Method>Bytes`, when it offers one (service/transport/bodies.py).
    bytes_handler: Callable[..., Any] | None = None

    @property
    def full_method(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(_PATH_PARAM.findall(self.path))

    @property
    def server_streaming(self) -> bool:
        return bool(self.method.server_streaming)

    @property
    def client_streaming(self) -> bool:
        return bool(self.method.client_streaming)


def _rule(method: descriptor.MethodDescriptor) -> http_pb2.HttpRule | None:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    return rule


def bindings_for(service: descriptor.ServiceDescriptor, servicer: object) -> list[Binding]:
    """One binding per annotated method (and per additional_bindings entry)."""
    found: list[Binding] = []
    for method in service.methods:
        rule = _rule(method)
        if rule is None:
            continue
        for each in (rule, *rule.additional_bindings):
            verb = each.WhichOneof("pattern")
            if verb not in _VERBS:
                continue
            found.append(
                Binding(
                    method=method,
                    verb=verb.upper(),
                    path=getattr(each, verb),
                    body=each.body,
                    handler=getattr(servicer, method.name),
                    request_type=message_factory.GetMessageClass(method.input_type),
                    response_type=message_factory.GetMessageClass(method.output_type),
                    bytes_handler=getattr(servicer, method.name + BYTES_SUFFIX, None),
                )
            )
    return found
