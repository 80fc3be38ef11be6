import datetime

from callvault.v1 import options_pb2 as _options_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Recording(_message.Message):
    __slots__ = ("id", "data_id", "call_at", "direction", "customer_phone", "customer_phone_normalized", "tag", "score", "processing_status", "audio_url", "duration_seconds", "source_provider", "provider_id", "caller", "callee", "outcome", "callcenter_number", "callcenter_name", "note", "content_type", "size", "sha256", "call_id", "legal_hold")
    ID_FIELD_NUMBER: _ClassVar[int]
    DATA_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_AT_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_PHONE_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_PHONE_NORMALIZED_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_STATUS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_URL_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    CALLEE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    CALLCENTER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CALLCENTER_NAME_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    LEGAL_HOLD_FIELD_NUMBER: _ClassVar[int]
    id: str
    data_id: str
    call_at: str
    direction: str
    customer_phone: str
    customer_phone_normalized: str
    tag: str
    score: float
    processing_status: str
    audio_url: str
    duration_seconds: float
    source_provider: str
    provider_id: str
    caller: str
    callee: str
    outcome: str
    callcenter_number: str
    callcenter_name: str
    note: str
    content_type: str
    size: int
    sha256: str
    call_id: str
    legal_hold: LegalHold
    def __init__(self, id: _Optional[str] = ..., data_id: _Optional[str] = ..., call_at: _Optional[str] = ..., direction: _Optional[str] = ..., customer_phone: _Optional[str] = ..., customer_phone_normalized: _Optional[str] = ..., tag: _Optional[str] = ..., score: _Optional[float] = ..., processing_status: _Optional[str] = ..., audio_url: _Optional[str] = ..., duration_seconds: _Optional[float] = ..., source_provider: _Optional[str] = ..., provider_id: _Optional[str] = ..., caller: _Optional[str] = ..., callee: _Optional[str] = ..., outcome: _Optional[str] = ..., callcenter_number: _Optional[str] = ..., callcenter_name: _Optional[str] = ..., note: _Optional[str] = ..., content_type: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., call_id: _Optional[str] = ..., legal_hold: _Optional[_Union[LegalHold, _Mapping]] = ...) -> None: ...

class LegalHold(_message.Message):
    __slots__ = ("reason", "placed_at")
    REASON_FIELD_NUMBER: _ClassVar[int]
    PLACED_AT_FIELD_NUMBER: _ClassVar[int]
    reason: str
    placed_at: _timestamp_pb2.Timestamp
    def __init__(self, reason: _Optional[str] = ..., placed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PlaceRecordingHoldRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReleaseRecordingHoldRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ReleaseRecordingHoldResponse(_message.Message):
    __slots__ = ("ok", "released")
    OK_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    released: bool
    def __init__(self, ok: _Optional[bool] = ..., released: _Optional[bool] = ...) -> None: ...

class ListRecordingsRequest(_message.Message):
    __slots__ = ("limit", "offset", "direction", "source_provider", "call_date_from", "call_date_to", "customer_phone", "customer_phone_normalized", "search", "tag", "score_min", "score_max", "sort_by", "sort_dir", "provider_id", "agent_key")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    CALL_DATE_FROM_FIELD_NUMBER: _ClassVar[int]
    CALL_DATE_TO_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_PHONE_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_PHONE_NORMALIZED_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    SCORE_MIN_FIELD_NUMBER: _ClassVar[int]
    SCORE_MAX_FIELD_NUMBER: _ClassVar[int]
    SORT_BY_FIELD_NUMBER: _ClassVar[int]
    SORT_DIR_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_KEY_FIELD_NUMBER: _ClassVar[int]
    limit: int
    offset: int
    direction: str
    source_provider: str
    call_date_from: str
    call_date_to: str
    customer_phone: str
    customer_phone_normalized: str
    search: str
    tag: str
    score_min: float
    score_max: float
    sort_by: str
    sort_dir: str
    provider_id: str
    agent_key: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, limit: _Optional[int] = ..., offset: _Optional[int] = ..., direction: _Optional[str] = ..., source_provider: _Optional[str] = ..., call_date_from: _Optional[str] = ..., call_date_to: _Optional[str] = ..., customer_phone: _Optional[str] = ..., customer_phone_normalized: _Optional[str] = ..., search: _Optional[str] = ..., tag: _Optional[str] = ..., score_min: _Optional[float] = ..., score_max: _Optional[float] = ..., sort_by: _Optional[str] = ..., sort_dir: _Optional[str] = ..., provider_id: _Optional[str] = ..., agent_key: _Optional[_Iterable[str]] = ...) -> None: ...

class ListRecordingsResponse(_message.Message):
    __slots__ = ("items", "total", "limit", "offset")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Recording]
    total: int
    limit: int
    offset: int
    def __init__(self, items: _Optional[_Iterable[_Union[Recording, _Mapping]]] = ..., total: _Optional[int] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class ListRecordingAgentsRequest(_message.Message):
    __slots__ = ("limit", "offset")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    limit: int
    offset: int
    def __init__(self, limit: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class RecordingAgent(_message.Message):
    __slots__ = ("agent_key", "recording_count", "latest_call_at")
    AGENT_KEY_FIELD_NUMBER: _ClassVar[int]
    RECORDING_COUNT_FIELD_NUMBER: _ClassVar[int]
    LATEST_CALL_AT_FIELD_NUMBER: _ClassVar[int]
    agent_key: str
    recording_count: int
    latest_call_at: str
    def __init__(self, agent_key: _Optional[str] = ..., recording_count: _Optional[int] = ..., latest_call_at: _Optional[str] = ...) -> None: ...

class ListRecordingAgentsResponse(_message.Message):
    __slots__ = ("items", "total", "limit", "offset")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[RecordingAgent]
    total: int
    limit: int
    offset: int
    def __init__(self, items: _Optional[_Iterable[_Union[RecordingAgent, _Mapping]]] = ..., total: _Optional[int] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class GetRecordingRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DownloadRecordingRequest(_message.Message):
    __slots__ = ("id", "offset", "length", "link_token")
    ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    LINK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    offset: int
    length: int
    link_token: str
    def __init__(self, id: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., link_token: _Optional[str] = ...) -> None: ...

class CreateAudioLinkRequest(_message.Message):
    __slots__ = ("id", "expires_in_seconds")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    expires_in_seconds: int
    def __init__(self, id: _Optional[str] = ..., expires_in_seconds: _Optional[int] = ...) -> None: ...

class AudioLink(_message.Message):
    __slots__ = ("url", "expires_at", "token")
    URL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    url: str
    expires_at: _timestamp_pb2.Timestamp
    token: str
    def __init__(self, url: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., token: _Optional[str] = ...) -> None: ...

class CreateRecordingRequest(_message.Message):
    __slots__ = ("data_id", "call_at", "direction", "customer_phone", "callcenter_number", "callcenter_name", "tag", "score", "note", "content_type", "duration_seconds", "audio_presigned_upload_url")
    DATA_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_AT_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_PHONE_FIELD_NUMBER: _ClassVar[int]
    CALLCENTER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CALLCENTER_NAME_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_PRESIGNED_UPLOAD_URL_FIELD_NUMBER: _ClassVar[int]
    data_id: str
    call_at: str
    direction: str
    customer_phone: str
    callcenter_number: str
    callcenter_name: str
    tag: str
    score: float
    note: str
    content_type: str
    duration_seconds: float
    audio_presigned_upload_url: bool
    def __init__(self, data_id: _Optional[str] = ..., call_at: _Optional[str] = ..., direction: _Optional[str] = ..., customer_phone: _Optional[str] = ..., callcenter_number: _Optional[str] = ..., callcenter_name: _Optional[str] = ..., tag: _Optional[str] = ..., score: _Optional[float] = ..., note: _Optional[str] = ..., content_type: _Optional[str] = ..., duration_seconds: _Optional[float] = ..., audio_presigned_upload_url: _Optional[bool] = ...) -> None: ...

class CreateRecordingResponse(_message.Message):
    __slots__ = ("id", "upload_url", "created", "processing_status", "upload_url_expires_at", "upload_token")
    ID_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_URL_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_STATUS_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_URL_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_TOKEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    upload_url: str
    created: bool
    processing_status: str
    upload_url_expires_at: _timestamp_pb2.Timestamp
    upload_token: str
    def __init__(self, id: _Optional[str] = ..., upload_url: _Optional[str] = ..., created: _Optional[bool] = ..., processing_status: _Optional[str] = ..., upload_url_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., upload_token: _Optional[str] = ...) -> None: ...

class UploadRecordingAudioRequest(_message.Message):
    __slots__ = ("id", "chunk", "content_type", "sha256", "upload_token")
    ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_TOKEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    chunk: bytes
    content_type: str
    sha256: str
    upload_token: str
    def __init__(self, id: _Optional[str] = ..., chunk: _Optional[bytes] = ..., content_type: _Optional[str] = ..., sha256: _Optional[str] = ..., upload_token: _Optional[str] = ...) -> None: ...

class DeleteRecordingRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteRecordingResponse(_message.Message):
    __slots__ = ("ok",)
    OK_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    def __init__(self, ok: _Optional[bool] = ...) -> None: ...

class SyncProviderRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class SyncJob(_message.Message):
    __slots__ = ("id", "provider_id", "trigger", "state", "calls_seen", "recordings_stored", "bytes_stored", "failures", "error", "created_at", "started_at", "finished_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CALLS_SEEN_FIELD_NUMBER: _ClassVar[int]
    RECORDINGS_STORED_FIELD_NUMBER: _ClassVar[int]
    BYTES_STORED_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    provider_id: str
    trigger: str
    state: str
    calls_seen: int
    recordings_stored: int
    bytes_stored: int
    failures: int
    error: str
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., provider_id: _Optional[str] = ..., trigger: _Optional[str] = ..., state: _Optional[str] = ..., calls_seen: _Optional[int] = ..., recordings_stored: _Optional[int] = ..., bytes_stored: _Optional[int] = ..., failures: _Optional[int] = ..., error: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetSyncJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListSyncJobsRequest(_message.Message):
    __slots__ = ("provider_id", "limit")
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    limit: int
    def __init__(self, provider_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListSyncJobsResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[SyncJob]
    def __init__(self, items: _Optional[_Iterable[_Union[SyncJob, _Mapping]]] = ...) -> None: ...
