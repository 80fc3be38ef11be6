from callvault.v1 import options_pb2 as _options_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BusinessRef(_message.Message):
    __slots__ = ("id", "name", "slug")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SLUG_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    slug: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., slug: _Optional[str] = ...) -> None: ...

class WhoAmIResponse(_message.Message):
    __slots__ = ("level", "business", "user_id", "scopes", "businesses")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    BUSINESS_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    BUSINESSES_FIELD_NUMBER: _ClassVar[int]
    level: str
    business: BusinessRef
    user_id: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    businesses: _containers.RepeatedCompositeFieldContainer[BusinessRef]
    def __init__(self, level: _Optional[str] = ..., business: _Optional[_Union[BusinessRef, _Mapping]] = ..., user_id: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., businesses: _Optional[_Iterable[_Union[BusinessRef, _Mapping]]] = ...) -> None: ...
