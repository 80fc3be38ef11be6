"""A fake Kazoo (2600Hz) crossbar speaking what the connector relies on, strictly.

- ``PUT /v2/api_auth`` ``{"data":{"api_key"}}`` -> 201 envelope with ``auth_token``; a wrong
  key -> 401 ``invalid_credentials``. Tokens live ``token_ttl`` seconds.
- ``GET /v2/accounts/{id}/recordings``: ``X-Auth-Token`` required; filters on the document's
  creation time (inclusive both ends, Gregorian seconds), refuses ranges over ``max_range``
  with Kazoo's 400 validation error, serves at most ``max_page_size`` rows newest first and
  links pages with ``start_key``/``next_start_key`` (see ``key_style``); another account
  than the key's -> 403 ``forbidden``.
- ``GET /v2/accounts/{id}/recordings/{rec}``: the JSON document, or with ``Accept:
  audio/mpeg`` the audio, streamed from a deterministic ``Blob``.

Switches: ``expire_tokens()`` (every issued token dies now), ``expire_tokens_after(n)`` (after
n more authorised requests), ``api_key`` (change it to revoke). Faults come from FakeServer.
Behaviours of real servers, each with its source in 2600hz/kazoo:

- ``key_style``: "opaque" (4.2+: ``api_util:encode_start_keys`` sends ``start_key`` and
  ``next_start_key`` as base64url of the Erlang term, ``api_resource:maybe_decode_start_key``
  reads it back) or "raw" (4.1: ``crossbar_doc`` puts the raw CouchDB view key in the
  envelope, for recordings the JSON array ``[created, id]`` before KAZOO-5392; the fake reads
  ``start_key`` back as that JSON value's text and refuses anything else), or "raw_created"
  (4.1 from KAZOO-5392 on: ``cb_recordings:fix_resp_start_keys_fold`` answers only the
  integer ``created``, read back with ``kz_term:to_integer``, so rows of that second on the
  previous page come again).
- ``direction`` of a document is the recorded leg's, relative to the media switch
  (``kzc_recording:store_recording_meta`` stores ``kapps_call:direction``; ``cdrs.md``:
  "inbound - leg came into the media switch (typically the A-leg)"). ``add_call`` writes one
  document per recorded leg, as a call recorded on both legs has, with the shared
  ``interaction_id``, the leg's own ``call_id``, the ``origin`` label
  (``kz_account_recording``/``kz_endpoint_recording``: "inbound from offnet to account") and
  the leg's ``custom_channel_vars`` ``Authorizing-Type`` (device or resource, ``cdrs.md``);
  ``origin=False`` writes what older or callflow-started recordings have ("untracked : ...").
- ``hold_audio(rec, n)``: the document is saved before its audio (``store_recording_meta``,
  then ``store_recording``, retried); until then ``cb_recordings`` answers the audio with
  404 ``bad_identifier`` (no ``attachment_names``) while the document itself reads fine.

``mangle_listing`` (a hook rewriting each listing envelope) is a what-if, not Kazoo's: an
answer the connector cannot read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import time
from collections.abc import Callable
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
    call_id: str  # the recorded leg's own call id
    start: int  # Gregorian seconds
    created: int  # Gregorian seconds: what the listing filters on
    duration_ms: int
    direction: str  # the leg's, relative to the media switch
    caller: str
    callee: str
    audio: Blob
    interaction_id: str = ""  # shared by every leg of one call
    origin: str | None = None
    authorizing_type: str | None = None

    def document(self) -> dict[str, Any]:
        """The listing/summary shape of a call_recording document."""
        ccvs = {"Call-Interaction-ID": self.interaction_id}
        if self.authorizing_type is not None:
            ccvs["Authorizing-Type"] = self.authorizing_type
        return {
            "id": self.id,
            "interaction_id": self.interaction_id,
            "origin": self.origin if self.origin is not None else f"untracked : {self.callee}@fake.realm",
            "custom_channel_vars": ccvs,
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
        key_style: str = "opaque",
    ) -> None:
        super().__init__()
        self.account_id = account_id
        self.api_key = api_key
        self.max_range = max_range
        self.max_page_size = max_page_size
        self.token_ttl = token_ttl
        self.key_style = key_style
        self.held_audio: dict[str, int | None] = {}  # recording id -> audio requests still refused
        # A what-if, not a Kazoo behaviour: rewrites each listing envelope (an unreadable answer).
        self.mangle_listing: Callable[[dict[str, Any]], dict[str, Any]] | None = None
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
        interaction_id: str | None = None,
        origin: str | None = None,
        authorizing_type: str | None = None,
    ) -> FakeRecording:
        """A recording of a call started at ``start``; its document is written when the
        call ends unless ``created_after`` says otherwise."""
        with self.lock:
            n = next(self._ids)
            created = start + (created_after if created_after is not None else timedelta(seconds=duration))
            rec = FakeRecording(
                id=f"{created:%Y%m}-{hashlib.sha256(b'rec%d' % n).hexdigest()[:32]}",
                call_id=f"leg-{n}",
                interaction_id=interaction_id or f"{gregorian(start)}-{n:08x}",
                origin=origin,
                authorizing_type=authorizing_type,
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

    def add_call(
        self,
        start: datetime,
        *,
        call: str = "inbound",
        legs: tuple[str, ...] = ("a", "b"),
        origin: bool = True,
        authorizing: bool = True,
        duration: float = 60.0,
        outside: str = "+15550100",
        inside: str = "1001",
        audio_size: int = 2048,
    ) -> list[FakeRecording]:
        """One call, seen from the business as ``call`` ("inbound" from a carrier, "outbound"
        to one, "internal" between two devices), recorded on each of ``legs``: a document
        per leg as Kazoo writes it (see the module docstring), sharing one interaction id."""
        interaction = f"{gregorian(start)}-{next(self._ids):08x}"
        caller, callee = (outside, inside) if call == "inbound" else (inside, outside)
        if call == "internal":
            caller, callee = inside, "1002"
        # Which network each leg faces; the A-leg comes into the switch, the B-leg leaves it.
        network = "onnet" if call == "internal" else "offnet"
        a_type = "resource" if call == "inbound" else "device"
        b_type = "resource" if call == "outbound" else "device"
        label = {
            "inbound": f"inbound from {network} to account",
            "outbound": f"outbound to {network} from endpoint",
            "internal": f"inbound from {network} to endpoint",
        }[call]
        made = []
        for leg in legs:
            made.append(
                self.add_recording(
                    start,
                    duration=duration,
                    direction="inbound" if leg == "a" else "outbound",
                    caller=caller,
                    callee=callee,
                    interaction_id=interaction,
                    origin=label if origin else None,
                    authorizing_type=(a_type if leg == "a" else b_type) if authorizing else None,
                    audio_size=audio_size,
                )
            )
        return made

    def hold_audio(self, rec: FakeRecording, requests: int | None = None) -> None:
        """Answer ``requests`` more audio requests for ``rec`` (None: all, until released
        with ``requests=0``) as Kazoo does before the attachment is written."""
        with self.lock:
            self.held_audio[rec.id] = requests

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
            start = self._read_key(req.query["start_key"]) if "start_key" in req.query else None
        except (ValueError, KeyError, TypeError):
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
            extra["next_start_key"] = {
                "raw": list(rest[0]),
                "raw_created": rest[0][0],
            }.get(self.key_style) or _encode_key(rest[0])
        rows = [self.recordings[rec_id].document() for _, rec_id in page]
        body = _body(rows, req.headers.get("x-auth-token", ""), extra)
        if self.mangle_listing is not None:
            body = self.mangle_listing(body)
        return Response.json(body)

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
        if rec.id in self.held_audio:
            left = self.held_audio[rec.id]
            if left is None or left > 0:
                self.held_audio[rec.id] = None if left is None else left - 1
                return _error(404, "bad_identifier", {"details": rec.id})
        headers = {"Content-Type": "audio/mpeg", "Content-Disposition": f"attachment; filename={rec.id}.mp3"}
        return Response(200, headers, rec.audio.chunks(), length=rec.audio.size)

    def _read_key(self, text: str) -> tuple[int, str]:
        if self.key_style == "raw_created":
            return int(text), "\uffff"  # every id of that second sorts below
        if self.key_style != "raw":
            return _decode_key(text)
        created, rec_id = json.loads(text)  # the raw view key, sent back as its JSON text
        if not isinstance(created, int) or not isinstance(rec_id, str):
            raise ValueError("bad start_key")
        return created, rec_id


def _body(data: Any, token: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {"data": data, "auth_token": token, "status": "success", "request_id": _request_id(), **extra}


def _envelope(data: Any, *, status: int = 200, token: str = "", **extra: Any) -> Response:
    return Response.json(_body(data, token, extra), status)


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
