"""A fake Kazoo (2600Hz) crossbar speaking what the connector relies on, strictly.

- ``PUT /v2/api_auth`` ``{"data":{"api_key"}}`` -> 201 envelope with ``auth_token``; a wrong
  key -> 401 ``invalid_credentials``. Tokens live ``token_ttl`` seconds.
- ``GET /v2/accounts/{id}/recordings``: ``X-Auth-Token`` required; filters on the document's
  creation time (inclusive both ends, Gregorian seconds), refuses ranges over ``max_range``
  with Kazoo's 400 validation error, serves at most ``max_page_size`` rows newest first and
  links pages with opaque ``start_key``/``next_start_key``.
- ``GET /v2/accounts/{id}/recordings/{rec}``: the JSON document, or with ``Accept:
  audio/mpeg`` the audio, streamed from a deterministic ``Blob``.

Switches: ``expire_tokens()`` (every issued token dies now), ``expire_tokens_after(n)`` (after
n more authorised requests), ``api_key`` (change it to revoke). Faults come from FakeServer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fakes.httpserver import Blob, FakeServer, Request, Response

GREGORIAN_OFFSET = 62_167_219_200
MAX_RANGE = 2_682_000  # crossbar.maximum_range default: 31 days


def gregorian(moment: datetime) -> int:
    return int(moment.timestamp()) + GREGORIAN_OFFSET


@dataclass(frozen=True, slots=True)
class FakeRecording:
    id: str
    call_id: str
    start: int  # Gregorian seconds
    created: int  # Gregorian seconds: what the listing filters on
    duration_ms: int
    direction: str
    caller: str
    callee: str
    audio: Blob

    def document(self) -> dict[str, Any]:
        """The listing/summary shape of a call_recording document."""
        return {
            "id": self.id,
            "call_id": self.call_id,
            "start": self.start,
            "duration_ms": self.duration_ms,
            "duration": self.duration_ms // 1000,
            "content_type": "audio/mpeg",
            "media_type": "mp3",
            "media_source": "recorded",
            "source_type": "kz_media_recording",
            "name": f"call_recording_{self.call_id}.mp3",
            "direction": self.direction,
            "caller_id_number": self.caller,
            "caller_id_name": self.caller,
            "callee_id_number": self.callee,
            "callee_id_name": self.callee,
            "from": f"{self.caller}@fake.realm",
            "to": f"{self.callee}@fake.realm",
            "_read_only": {"content_types": ["audio/mpeg"]},
        }


class FakeKazoo(FakeServer):
    """One Kazoo account with its API key and its recordings."""

    def __init__(
        self,
        *,
        account_id: str = "4d1f8a6e0c2b49f7a3e5d7c9b1a20304",
        api_key: str = "kz-api-key-0123456789abcdef0123456789abcdef",
        max_range: int = MAX_RANGE,
        max_page_size: int = 50,
        token_ttl: float = 3600.0,
    ) -> None:
        super().__init__()
        self.account_id = account_id
        self.api_key = api_key
        self.max_range = max_range
        self.max_page_size = max_page_size
        self.token_ttl = token_ttl
        self.recordings: dict[str, FakeRecording] = {}
        self.issued: list[str] = []
        self._tokens: dict[str, float] = {}
        self._expire_after: int | None = None
        self._ids = itertools.count(1)
        self.route("PUT", r"/v2/api_auth", self._api_auth)
        self.route("GET", r"/v2/accounts/(?P<account>[^/]+)/recordings", self._list)
        self.route("GET", r"/v2/accounts/(?P<account>[^/]+)/recordings/(?P<rec>[^/]+)", self._fetch)

    # -- test helpers -------------------------------------------------------------------

    def add_recording(
        self,
        start: datetime,
        *,
        created_after: timedelta | None = None,
        duration: float = 60.0,
        direction: str = "inbound",
        caller: str = "+15550100",
        callee: str = "1001",
        audio_size: int = 2048,
    ) -> FakeRecording:
        """A recording of a call started at ``start``; its document is written when the
        call ends unless ``created_after`` says otherwise."""
        with self.lock:
            n = next(self._ids)
            created = start + (created_after if created_after is not None else timedelta(seconds=duration))
            rec = FakeRecording(
                id=f"{created:%Y%m}-{hashlib.sha256(b'rec%d' % n).hexdigest()[:32]}",
                call_id=f"call-{n}",
                start=gregorian(start),
                created=gregorian(created),
                duration_ms=int(duration * 1000),
                direction=direction,
                caller=caller,
                callee=callee,
                audio=Blob(seed=n, size=audio_size),
            )
            self.recordings[rec.id] = rec
            return rec

    def expire_tokens(self) -> None:
        with self.lock:
            self._tokens.clear()

    def expire_tokens_after(self, requests: int) -> None:
        """Let ``requests`` more authorised requests through, then expire every token."""
        with self.lock:
            self._expire_after = requests

    def auth_calls(self) -> int:
        return sum(1 for r in self.requests if r.path == "/v2/api_auth")

    # -- handlers (server thread, under the lock) ---------------------------------------

    def _api_auth(self, req: Request) -> Response:
        try:
            key = req.json()["data"]["api_key"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "invalid_request", {"api_key": {"required": {"message": "Field is required"}}})
        if key != self.api_key:
            return _error(401, "invalid_credentials")
        token = hashlib.sha256(f"{key}:{next(self._ids)}".encode()).hexdigest()
        self._tokens[token] = time.monotonic() + self.token_ttl
        self.issued.append(token)
        data = {"account_id": self.account_id, "apps": [], "is_reseller": False, "language": "en-us"}
        return _envelope(data, status=201, token=token)

    def _authorise(self, req: Request) -> Response | None:
        """None when the token is live and the account is ours, else the error answer."""
        token = req.headers.get("x-auth-token", "")
        if self._tokens.get(token, 0.0) < time.monotonic():
            return _error(401, "invalid_credentials")
        if req.params["account"] != self.account_id:
            return _error(403, "forbidden")
        if self._expire_after is not None:
            self._expire_after -= 1
            if self._expire_after < 0:
                self._expire_after = None
                self._tokens.clear()
                return _error(401, "invalid_credentials")
        return None

    def _list(self, req: Request) -> Response:
        denied = self._authorise(req)
        if denied is not None:
            return denied
        try:
            now = gregorian(datetime.now(UTC))
            created_to = int(req.query.get("created_to", now))
            created_from = int(req.query.get("created_from", created_to - self.max_range))
            page_size = min(int(req.query.get("page_size", 50)), self.max_page_size)
            start = _decode_key(req.query["start_key"]) if "start_key" in req.query else None
        except (ValueError, KeyError):
            return _error(400, "invalid_request")
        if created_to < created_from or created_to - created_from > self.max_range or page_size < 1:
            return _range_error(self.max_range, created_to)
        return self._page(req, created_from, created_to, page_size, start)

    def _page(self, req: Request, low: int, high: int, size: int, start: tuple[int, str] | None) -> Response:
        keys = sorted(
            ((r.created, r.id) for r in self.recordings.values() if low <= r.created <= high), reverse=True
        )
        if start is not None:
            keys = [key for key in keys if key <= start]
        page, rest = keys[:size], keys[size:]
        extra: dict[str, Any] = {"page_size": len(page), "start_key": req.query.get("start_key", "")}
        if rest:
            extra["next_start_key"] = _encode_key(rest[0])
        rows = [self.recordings[rec_id].document() for _, rec_id in page]
        return _envelope(rows, token=req.headers.get("x-auth-token", ""), **extra)

    def _fetch(self, req: Request) -> Response:
        denied = self._authorise(req)
        if denied is not None:
            return denied
        rec = self.recordings.get(req.params["rec"])
        if rec is None:
            return _error(404, "bad_identifier", {"cause": req.params["rec"]})
        accept = req.query.get("accept") or req.headers.get("accept", "")
        if "audio/mpeg" not in accept:
            return _envelope(rec.document(), token=req.headers.get("x-auth-token", ""))
        headers = {"Content-Type": "audio/mpeg", "Content-Disposition": f"attachment; filename={rec.id}.mp3"}
        return Response(200, headers, rec.audio.chunks(), length=rec.audio.size)


def _envelope(data: Any, *, status: int = 200, token: str = "", **extra: Any) -> Response:
    body = {"data": data, "auth_token": token, "status": "success", "request_id": _request_id(), **extra}
    return Response.json(body, status)


def _error(status: int, message: str, data: dict[str, Any] | None = None) -> Response:
    body = {
        "data": data or {"message": message},
        "error": str(status),
        "message": message,
        "status": "error",
        "auth_token": "",
        "request_id": _request_id(),
    }
    return Response.json(body, status)


def _range_error(max_range: int, cause: int) -> Response:
    message = f"created_to is more than {max_range} seconds from created_from"
    return _error(
        400, "validation error", {"created_from": {"date_range": {"message": message, "cause": cause}}}
    )


def _encode_key(key: tuple[int, str]) -> str:
    """Opaque, URL-safe, unpadded: like Kazoo 4.2+'s encoded Erlang terms."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def _decode_key(text: str) -> tuple[int, str]:
    try:
        created, rec_id = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError("bad start_key") from exc
    return int(created), str(rec_id)


_request_ids = itertools.count(1)


def _request_id() -> str:
    return f"req-{next(_request_ids):06d}"
