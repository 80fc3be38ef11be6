"""Kazoo (2600Hz) crossbar: call recordings pulled over the v2 REST API.

Why it looks the way it does:

- Auth is ``PUT /v2/api_auth`` with the account API key; the answer's ``auth_token`` goes in
  ``X-Auth-Token`` and lives about an hour. The token is reused until it nears that age (a
  fresh one per request would flood the auth endpoint) and renewed once on a 401.
- ``/v2/accounts/{id}/recordings`` filters on the recording document's *creation* time
  (CouchDB view keyed on ``pvt_created``, Gregorian seconds, both bounds inclusive), not on
  the call's ``start``, and refuses ranges over ``crossbar.maximum_range`` (31 days by
  default). A recording is stored after the call, so windows reach ``CREATED_SLACK`` past
  ``until`` and rows are kept by their own ``start``: a call belongs to exactly one
  ``[since, until)`` listing however late its document was written (up to the slack).
- Pages are a linked list: ``start_key`` in, ``next_start_key`` out, absent on the last page.

``CallRecord.external_id`` and ``recording_ref`` are both the recording document id (a
month-prefixed CouchDB id such as ``202405-3f2a...``): one recording per row, stable forever.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from service.connectors.base import (
    AudioStream,
    AuthenticationFailed,
    CallRecord,
    Direction,
    Outcome,
    RecordingNotFound,
    UnexpectedAnswer,
)
from service.connectors.common import finite_float, required_text, utc, windows
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

GREGORIAN_OFFSET = 62_167_219_200  # seconds from 0000-01-01 to 1970-01-01, Erlang's calendar
TOKEN_LIFETIME = 3600.0
TOKEN_MARGIN = 300.0  # renew this long before the token would lapse
WINDOW_SECONDS = 30 * 86_400  # under the 31-day crossbar.maximum_range, with room to spare
CREATED_SLACK = timedelta(hours=6)  # how late a recording document may be written after its call starts
PAGE_SIZE = 100
MAX_PAGES = 100_000  # a server that never ends its list is broken, not busy

_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_AUDIO_ACCEPT = "audio/mpeg"


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
        self._clock = clock
        self._client = ProviderClient(policy, base_url)
        self._account_path = f"/v2/accounts/{account_id}"
        self._token: str | None = None
        self._token_at = 0.0
        self._auth_lock = asyncio.Lock()

    async def check(self) -> None:
        """A fresh api_auth: proves the key, touches nothing else."""
        async with self._auth_lock:
            await self._authenticate()

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
        for first, end in windows(low, high, WINDOW_SECONDS):
            async for row in self._rows(first, end - 1):
                record = _record(row)
                if since <= record.started_at < until:
                    yield record

    @asynccontextmanager
    async def open_recording(self, ref: str) -> AsyncIterator[AudioStream]:
        """Stream the recording's audio attachment, chunk by chunk."""
        if not _ID.fullmatch(ref):
            raise RecordingNotFound()
        path = f"{self._account_path}/recordings/{ref}"
        async with self._authorized(path, headers={"Accept": _AUDIO_ACCEPT}) as response:
            raise_for_status(response, not_found=RecordingNotFound)
            content_type = media_type(response)
            if not content_type.startswith("audio/"):
                raise UnexpectedAnswer()
            async with audio_stream(response, content_type) as audio:
                yield audio

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
        start_key: str | None = None
        for _ in range(MAX_PAGES):
            query = params if start_key is None else {**params, "start_key": start_key}
            envelope = await self._get_envelope(f"{self._account_path}/recordings", query)
            data = envelope.get("data")
            if not isinstance(data, list):
                raise UnexpectedAnswer()
            for row in data:
                if not isinstance(row, dict):
                    raise UnexpectedAnswer()
                yield row
            next_key = envelope.get("next_start_key")
            if next_key is None or next_key == "":
                return
            if str(next_key) == start_key:
                raise UnexpectedAnswer()
            start_key = str(next_key)
        raise UnexpectedAnswer()

    async def _get_envelope(self, path: str, params: Mapping[str, str | int]) -> Mapping[str, Any]:
        async with self._authorized(path, params=params) as response:
            raise_for_status(response)
            body = await read_json(response, self._policy)
        return _success(body)

    # -- auth ---------------------------------------------------------------------------

    @asynccontextmanager
    async def _authorized(
        self,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """A streamed GET with a live token; on a 401, one new token and one retry."""
        token = await self._current_token()
        with connector_errors():
            async with AsyncExitStack() as stack:
                response = await self._open(stack, path, token, params, headers)
                if response.status_code == 401:
                    await response.aclose()
                    token = await self._renew(token)
                    response = await self._open(stack, path, token, params, headers)
                    if response.status_code == 401:
                        raise AuthenticationFailed()
                yield response

    async def _open(
        self,
        stack: AsyncExitStack,
        path: str,
        token: str,
        params: Mapping[str, str | int] | None,
        headers: Mapping[str, str] | None,
    ) -> httpx.Response:
        request = self._client.stream(
            "GET", path, params=params, headers=headers, auth=HeaderAuth("X-Auth-Token", token)
        )
        return await stack.enter_async_context(request)

    async def _current_token(self) -> str:
        async with self._auth_lock:
            age = self._clock() - self._token_at
            if self._token is None or age >= TOKEN_LIFETIME - TOKEN_MARGIN:
                return await self._authenticate()
            return self._token

    async def _renew(self, stale: str) -> str:
        """A new token unless another task already replaced the stale one."""
        async with self._auth_lock:
            if self._token is not None and self._token != stale:
                return self._token
            return await self._authenticate()

    async def _authenticate(self) -> str:
        """PUT /v2/api_auth; call with the auth lock held."""
        self._token = None
        payload = {"data": {"api_key": self._api_key}}
        with connector_errors():
            async with self._client.stream("PUT", "/v2/api_auth", json=payload) as response:
                if response.status_code in (400, 401, 403):  # the key was refused
                    raise AuthenticationFailed()
                raise_for_status(response)
                body = await read_json(response, self._policy)
        token = _success(body).get("auth_token")
        if not isinstance(token, str) or not token:
            raise UnexpectedAnswer()
        self._token, self._token_at = token, self._clock()
        return token


# -- helpers (pure) -------------------------------------------------------------------


def _success(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, dict) or body.get("status") != "success":
        raise UnexpectedAnswer()
    return body


def _record(row: Mapping[str, Any]) -> CallRecord:
    """One recording document as a CallRecord; rows without id or start cannot be placed."""
    rec_id = row.get("id", row.get("_id"))
    start = finite_float(row.get("start"))
    if not isinstance(rec_id, str) or not _ID.fullmatch(rec_id) or start is None:
        raise UnexpectedAnswer()
    if not GREGORIAN_OFFSET <= start < GREGORIAN_OFFSET + 1e10:
        raise UnexpectedAnswer()
    seconds = (finite_float(row.get("duration_ms")) or 0.0) / 1000
    return CallRecord(
        external_id=rec_id,
        started_at=datetime.fromtimestamp(start - GREGORIAN_OFFSET, UTC),
        duration_seconds=seconds,
        caller=_party(row, "caller_id_number", "from"),
        callee=_party(row, "callee_id_number", "to"),
        # Kazoo tells the recorded channel's direction only; it has no notion of "internal".
        direction=Direction.OUTBOUND if row.get("direction") == "outbound" else Direction.INBOUND,
        # A recording means media flowed; with no length we cannot tell.
        outcome=Outcome.ANSWERED if seconds > 0 else Outcome.UNKNOWN,
        recording_ref=rec_id,
    )


def _party(row: Mapping[str, Any], number_key: str, sip_key: str) -> str:
    """The caller-id number, else the user part of the SIP from/to ("1001@realm")."""
    number = row.get(number_key)
    if isinstance(number, str | int) and not isinstance(number, bool) and str(number):
        return str(number)
    sip = row.get(sip_key)
    return sip.split("@", 1)[0] if isinstance(sip, str) else ""
