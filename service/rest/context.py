"""The servicer context the REST shim hands to servicers: the same calls, over HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import grpc


class RestAbort(Exception):
    """A servicer aborted with a bare status (no domain error behind it)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class RestContext:
    """Headers as invocation metadata (lower-case names, like gRPC metadata); what a
    servicer sends as initial metadata becomes response headers."""

    def __init__(self, headers: Sequence[tuple[str, str]]) -> None:
        self._metadata = tuple((k.lower(), v) for k, v in headers)
        self.response_headers: dict[str, str] = {}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, Any]]) -> None:
        for key, value in metadata:
            self.response_headers[key] = value if isinstance(value, str) else value.decode()

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, Any]]) -> None:
        return None

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        raise RestAbort(code, details)

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        raise RestAbort(status.code, status.details)

    def peer(self) -> str:
        return "rest"
