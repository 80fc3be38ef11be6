from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor
JSON_ONLY_WITH_FIELD_NUMBER: _ClassVar[int]
json_only_with: _descriptor.FieldDescriptor
ERRORS_FIELD_NUMBER: _ClassVar[int]
errors: _descriptor.FieldDescriptor
NO_BUSINESS_FIELD_NUMBER: _ClassVar[int]
no_business: _descriptor.FieldDescriptor
