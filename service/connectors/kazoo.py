"""Kazoo (2600Hz) crossbar: call recordings pulled over the v2 REST API.

Why it looks the way it does (sources: the 2600hz/kazoo repository, branches 4.1 to master):

- Auth is ``PUT /v2/api_auth`` with the account API key; the answer's ``auth_token`` goes in
  ``X-Auth-Token`` and lives about an hour. ``TokenSession`` reuses it until five minutes
  before that, and logs in again (with backoff, more than once) when an answer is a 401.
- A 403 with a live token is crossbar's ``forbidden`` (``cb_simple_authz``): the key's user
  may not see this account. That is ``AccessDenied``, not a bad key.
- ``/v2/accounts/{id}/recordings`` filters on the recording document's *creation* time
  (CouchDB view keyed on ``pvt_created``, Gregorian seconds, both bounds inclusive), not on
  the call's ``start``, and refuses ranges over ``crossbar.maximum_range`` (31 days by
  default). A recording is stored after the call, so windows reach ``CREATED_SLACK`` past
  ``until`` and rows are kept by their own ``start``: a call belongs to exactly one
  ``[since, until)`` listing however late its document was written (up to the slack).
- Pages are a linked list: ``start_key`` in, ``next_start_key`` out, absent on the last page.
  On 4.2+ both are opaque strings (``api_util:encode_start_keys``: base64url of the Erlang
  term; ``api_resource:maybe_decode_start_key`` reads it back). On 4.1 the envelope holds
  the raw view key as a JSON value (``crossbar_doc:load_view``): for recordings the array
  ``[created, id]``, which ``cb_recordings`` reduced to the integer ``created`` from
  KAZOO-5392 (#3474) on. The key is sent back exactly as received: a string as is, any other
  JSON value as its compact JSON text. (The issue says "an array for recordings"; the 4.1
  branch head answers an integer: both are handled, and rows repeated across pages by a
  coarse key are yielded once.)
- ``direction`` is the recorded leg's, relative to the media switch (``cdrs.md``:
  "inbound - leg came into the media switch (typically the A-leg)"; the document stores
  ``kapps_call:direction``, ``kzc_recording:store_recording_meta``), so an inbound call
  recorded on the callee's leg says "outbound". The business's direction is read, first
  from ``origin``, the label of the recording rule that started it
  (``kz_account_recording``/``kz_endpoint_recording``: "inbound from offnet to account",
  "outbound to offnet from endpoint"; ``onnet`` means both ends are devices of the platform,
  taken as internal), else from the leg's switch direction against who is on that leg
  (``custom_channel_vars`` ``Authorizing-Type``, ``cdrs.md``: ``device``/``mobile`` is one of
  the account's own, ``resource`` a carrier): our device's leg coming in, or a leg going out
  to a carrier, is an outbound call; a carrier's leg coming in, or a leg going out to our
  device, an inbound one. Without either (recordings started by a callflow action have
  ``origin`` "untracked : ..." on 4.x and "no origin" on master) the switch's reading is the
  only one left and is used as is.
- One call recorded on both legs has a document per leg, each with its own id and the leg's
  own ``call_id``, sharing ``interaction_id`` (the call's ``Call-Interaction-ID``). Each is a
  row of its own (``external_id`` the document id); ``CallRecord.call_id`` is the
  interaction id (else the leg's call id), so the legs name one call.
- The document is saved before its audio (``store_recording_meta``, then
  ``store_recording``, retried on failure); until then the audio answers 404
  ``bad_identifier`` (``cb_recordings``: a document with no ``attachment_names``), as a
  missing document does too. A 404 on the audio is told apart by reading the document: if
  it is there the audio is ``AudioNotReady`` (pending, tried again on later pulls), else
  ``RecordingNotFound``.

``CallRecord.external_id`` and ``recording_ref`` are both the recording document id (a
month-prefixed CouchDB id such as ``202405-3f2a...``): one recording per row, stable forever.
An answer this module cannot read raises ``UnreadableAnswer`` naming the field.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from service.connectors.base import (
    AccessDenied,
    AudioNotReady,
    AudioStream,
    AuthenticationFailed,
    CallRecord,
    ConnectorError,
    Direction,
    Outcome,
    RecordingNotFound,
    UnexpectedAnswer,
    UnreadableAnswer,
)
from service.connectors.common import finite_float, first_sighting, required_text, utc, windows
from service.connectors.http import (
    HeaderAuth,
    NetworkPolicy,
    ProviderClient,
    audio_stream,
    connector_errors,
    media_type,
    raise_for_status,
    read_json,
)
from service.connectors.session import Token, TokenSession

GREGORIAN_OFFSET = 62_167_219_200  # seconds from 0000-01-01 to 1970-01-01, Erlang's calendar
TOKEN_LIFETIME = 3600.0
TOKEN_MARGIN = 300.0  # renew this long before the token would lapse
WINDOW_SECONDS = 30 * 86_400  # under the 31-day crossbar.maximum_range, with room to spare
CREATED_SLACK = timedelta(hours=6)  # how late a recording document may be written after its call starts
PAGE_SIZE = 100
MAX_PAGES = 100_000  # a server that never ends its list is broken, not busy

_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_AUDIO_ACCEPT = "audio/mpeg"
# kz_account_recording / kz_endpoint_recording labels: "inbound from offnet to account" etc.
_ORIGIN = re.compile(r"(inbound from|outbound to) (onnet|offnet) (?:to|from) ")
_OURS = frozenset({"device", "mobile", "user"})  # Authorizing-Type of the account's own endpoints
_CARRIER = "resource"


class KazooConnector:
    """One Kazoo account, reached with its API key."""

    def __init__(
        self,
        config: Mapping[str, Any],
        policy: NetworkPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        base_url = required_text(config, "baseUrl").rstrip("/").removesuffix("/v2")
        account_id = required_text(config, "accountId")
        if not _ID.fullmatch(account_id):
            raise ValueError("accountId is malformed")
        self._api_key = required_text(config, "apiKey")
        self._policy = policy
        self._client = ProviderClient(policy, base_url)
        self._account_path = f"/v2/accounts/{account_id}"
        self._session = TokenSession(self._login, clock=clock)

    async def check(self) -> None:
        """A fresh api_auth: proves the key, touches nothing else."""
        self._session.forget()
        await self._session.token()

    async def list_calls(
        self, since: datetime, until: datetime, *, after: str | None = None
    ) -> AsyncIterator[CallRecord]:
        """Recordings whose call started in [since, until), oldest creation window first."""
        # Naive means UTC here, as this connector always read it; the others refuse naive times.
        since, until = utc(since, naive_is_utc=True), utc(until, naive_is_utc=True)
        if until <= since:
            return
        low = math.floor(since.timestamp()) + GREGORIAN_OFFSET
        high = math.ceil((until + CREATED_SLACK).timestamp()) + GREGORIAN_OFFSET
        seen: set[str] = set()
        for first, end in windows(low, high, WINDOW_SECONDS):
            async for row in self._rows(first, end - 1):
                record = _record(row)
                if first_sighting(record, since, until, seen):
                    yield record

    @asynccontextmanager
    async def open_recording(self, ref: str) -> AsyncIterator[AudioStream]:
        """Stream the recording's audio attachment, chunk by chunk."""
        if not _ID.fullmatch(ref):
            raise RecordingNotFound()
        path = f"{self._account_path}/recordings/{ref}"
        async with self._authorized(path, headers={"Accept": _AUDIO_ACCEPT}) as response:
            if response.status_code != 404:
                _raise_for_status(response)
                content_type = media_type(response)
                if not content_type.startswith("audio/"):
                    raise UnexpectedAnswer()
                async with audio_stream(response, content_type) as audio:
                    yield audio
                return
        await self._raise_missing(path)

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- listing ------------------------------------------------------------------------

    async def _rows(self, created_from: int, created_to: int) -> AsyncIterator[Mapping[str, Any]]:
        """Every row of one creation window, following next_start_key to the end."""
        params: dict[str, str | int] = {
            "created_from": created_from,
            "created_to": created_to,
            "page_size": PAGE_SIZE,
        }
        start_key: Any = None
        for _ in range(MAX_PAGES):
            query = params if start_key is None else {**params, "start_key": _key_text(start_key)}
            envelope = await self._get_envelope(f"{self._account_path}/recordings", query)
            data = envelope.get("data")
            if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
                raise UnreadableAnswer("data")
            for row in data:
                yield row
            next_key = envelope.get("next_start_key")
            if next_key is None or next_key == "":
                return
            if next_key == start_key:
                raise UnreadableAnswer("next_start_key")
            start_key = next_key
        raise UnreadableAnswer("next_start_key")

    async def _get_envelope(self, path: str, params: Mapping[str, str | int]) -> Mapping[str, Any]:
        async with self._authorized(path, params=params) as response:
            _raise_for_status(response)
            body = await read_json(response, self._policy)
        return _success(body)

    async def _raise_missing(self, path: str) -> None:
        """The audio was a 404: AudioNotReady if the document is there (its audio is not
        written yet), RecordingNotFound if the document is gone too."""
        async with self._authorized(path) as response:
            _raise_for_status(response, not_found=RecordingNotFound)
            body = await read_json(response, self._policy)
        _success(body)
        raise AudioNotReady()

    # -- auth ---------------------------------------------------------------------------

    @asynccontextmanager
    async def _authorized(
        self,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """A streamed GET with a live token; a 401 means a new token and a retry (TokenSession)."""
        with connector_errors():
            async with AsyncExitStack() as stack:

                async def send(token: str) -> httpx.Response:
                    request = self._client.stream(
                        "GET", path, params=params, headers=headers, auth=HeaderAuth("X-Auth-Token", token)
                    )
                    return await stack.enter_async_context(request)

                yield await self._session.send(send)

    async def _login(self, previous: Token | None) -> Token:
        """PUT /v2/api_auth (Kazoo has no refresh token: the key is sent each time)."""
        payload = {"data": {"api_key": self._api_key}}
        with connector_errors():
            async with self._client.stream("PUT", "/v2/api_auth", json=payload) as response:
                if response.status_code in (400, 401, 403):  # the key was refused
                    raise AuthenticationFailed()
                raise_for_status(response)
                body = await read_json(response, self._policy)
        token = _success(body).get("auth_token")
        if not isinstance(token, str) or not token:
            raise UnreadableAnswer("auth_token")
        return Token(token, lifetime=TOKEN_LIFETIME - TOKEN_MARGIN)


# -- helpers (pure) -------------------------------------------------------------------


def _success(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, dict) or body.get("status") != "success":
        raise UnreadableAnswer("status")
    return body


def _raise_for_status(
    response: httpx.Response, *, not_found: type[ConnectorError] = UnexpectedAnswer
) -> None:
    """A 403 with a token the provider took is crossbar's ``forbidden``: this key's user may
    not see the account (``cb_simple_authz``), a matter of rights, not of the key."""
    if response.status_code == 403:
        raise AccessDenied()
    raise_for_status(response, not_found=not_found)


def _key_text(key: Any) -> str:
    """A start key as the server gave it: a string as is (4.2+), any other JSON value (4.1's
    raw view key) as its compact JSON text."""
    return key if isinstance(key, str) else json.dumps(key, separators=(",", ":"), ensure_ascii=False)


def _record(row: Mapping[str, Any]) -> CallRecord:
    """One recording document as a CallRecord; rows without id or start cannot be placed."""
    rec_id = row.get("id", row.get("_id"))
    if not isinstance(rec_id, str) or not _ID.fullmatch(rec_id):
        raise UnreadableAnswer("id")
    start = finite_float(row.get("start"))
    if start is None or not GREGORIAN_OFFSET <= start < GREGORIAN_OFFSET + 1e10:
        raise UnreadableAnswer("start")
    seconds = (finite_float(row.get("duration_ms")) or 0.0) / 1000
    return CallRecord(
        external_id=rec_id,
        started_at=datetime.fromtimestamp(start - GREGORIAN_OFFSET, UTC),
        duration_seconds=seconds,
        caller=_party(row, "caller_id_number", "from"),
        callee=_party(row, "callee_id_number", "to"),
        direction=direction(row),
        # A recording means media flowed; with no length we cannot tell.
        outcome=Outcome.ANSWERED if seconds > 0 else Outcome.UNKNOWN,
        recording_ref=rec_id,
        call_id=_text(row.get("interaction_id")) or _text(row.get("call_id")),
    )


def direction(row: Mapping[str, Any]) -> Direction:
    """The call's direction as the business reads it (see the module docstring): from the
    recording rule's ``origin``, else the leg's switch direction against who is on it, else
    the switch direction as is."""
    origin = _ORIGIN.match(_text(row.get("origin")) or "")
    if origin is not None:
        if origin.group(2) == "onnet":
            return Direction.INTERNAL
        return Direction.INBOUND if origin.group(1) == "inbound from" else Direction.OUTBOUND
    leg = row.get("direction")
    ccvs = row.get("custom_channel_vars")
    who = None
    if isinstance(ccvs, dict):
        who = _text(ccvs.get("Authorizing-Type")) or _text(ccvs.get("authorizing_type"))
    if leg in ("inbound", "outbound") and (who in _OURS or who == _CARRIER):
        came_in, ours = leg == "inbound", who in _OURS
        # Ours coming in, or the switch calling a carrier: we called out.
        return Direction.OUTBOUND if came_in == ours else Direction.INBOUND
    return Direction.OUTBOUND if leg == "outbound" else Direction.INBOUND


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _party(row: Mapping[str, Any], number_key: str, sip_key: str) -> str:
    """The caller-id number, else the user part of the SIP from/to ("1001@realm")."""
    number = row.get(number_key)
    if isinstance(number, str | int) and not isinstance(number, bool) and str(number):
        return str(number)
    sip = row.get(sip_key)
    return sip.split("@", 1)[0] if isinstance(sip, str) else ""
