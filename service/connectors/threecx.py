"""3CX v20: recordings pulled over the XAPI (OData v4) with a bearer token.

Why it looks the way it does:

- Tokens come from ``POST /connect/token`` (XAPI client credentials) or, with ``headless``,
  from the web-client user login. They live about 60 s and issuing a new one may invalidate
  the old, so one token is shared (under a lock) until shortly before ``expires_in``, and is
  renewed once when a request answers 401.
- ``Recordings`` is walked by Id cursor (``Id gt N``, ``$orderby=Id asc``), restricted to
  ``StartTime`` in ``[since, until)``: a cursor cannot skip or repeat rows when new
  recordings arrive mid-walk, as ``$skip`` paging would. ``$top`` over 100 fails on 3CX.
- ``Recordings({id})`` 404s on v20; audio comes from ``Pbx.DownloadRecording(recId=N)``.

``CallRecord.external_id`` and ``recording_ref`` are both the recording ``Id`` (decimal).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
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
from service.connectors.common import object_list, utc
from service.connectors.http import (
    HeaderAuth,
    NetworkPolicy,
    ProviderClient,
    audio_stream,
    checked_json,
    raise_for_status,
)

PAGE_SIZE = 100  # the most 3CX accepts for $top
TOKEN_MARGIN = 10.0  # renew this long before expiry (at most a quarter of the lifetime)
DEFAULT_TOKEN_LIFETIME = 60.0
_FRACTION = re.compile(r"(\.\d{1,6})\d*")


class ThreeCXConnector:
    """One 3CX PBX, reached as an XAPI client or (headless) as a web-client user."""

    def __init__(self, config: Mapping[str, Any], policy: NetworkPolicy) -> None:
        self._username = str(config["username"])
        self._password = str(config["password"])
        self._headless = bool(config.get("headless", False))
        self._policy = policy
        self._client = ProviderClient(policy, str(config["baseUrl"]).rstrip("/"))
        self._token: str | None = None
        self._token_until = 0.0
        self._token_lock = asyncio.Lock()

    async def check(self) -> None:
        self._token = None  # prove the credentials, not a cached token
        await self._get_json("/xapi/v1/Defs", {"$select": "Id"})

    async def list_calls(
        self, since: datetime, until: datetime, *, after: str | None = None
    ) -> AsyncIterator[CallRecord]:
        since, until = utc(since), utc(until)
        cursor = 0
        while since < until:
            rows = _rows(await self._get_json("/xapi/v1/Recordings", _page_query(cursor, since, until)))
            for row in rows:
                record = _record(row)
                if int(record.external_id) <= cursor:
                    raise UnexpectedAnswer("recordings out of order")
                cursor = int(record.external_id)
                if since <= record.started_at < until:
                    yield record
            if len(rows) < PAGE_SIZE:
                return

    @asynccontextmanager
    async def open_recording(self, ref: str) -> AsyncIterator[AudioStream]:
        if not ref.isascii() or not ref.isdigit():
            raise RecordingNotFound()
        response = await self._send(f"/xapi/v1/Recordings/Pbx.DownloadRecording(recId={int(ref)})")
        try:
            raise_for_status(response, not_found=RecordingNotFound)
            async with audio_stream(response, response.headers.get("content-type", "audio/x-wav")) as audio:
                yield audio
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- requests ------------------------------------------------------------------------

    async def _get_json(self, path: str, params: dict[str, str]) -> Any:
        return await checked_json(await self._send(path, params), self._policy)

    async def _send(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        """A streamed authorised GET; a 401 renews the token once and tries again."""
        for attempt in range(2):
            token = await self._access_token()
            request = self._client.build_request("GET", path, params=params)
            response = await self._client.send(request, auth=HeaderAuth("Authorization", f"Bearer {token}"))
            if response.status_code != 401 or attempt:
                return response
            await response.aclose()
            self._forget(token)
        raise AssertionError("unreachable")

    async def _access_token(self) -> str:
        async with self._token_lock:
            if self._token is None or time.monotonic() >= self._token_until:
                token, lifetime = await (self._user_login() if self._headless else self._client_login())
                self._token = token
                self._token_until = time.monotonic() + lifetime - min(TOKEN_MARGIN, lifetime / 4)
            return self._token

    def _forget(self, token: str) -> None:
        if self._token == token:
            self._token = None

    async def _client_login(self) -> tuple[str, float]:
        form = {
            "client_id": self._username,
            "client_secret": self._password,
            "grant_type": "client_credentials",
        }
        body = await self._login(
            "/connect/token", self._client.build_request("POST", "/connect/token", data=form)
        )
        return _token_of(body)

    async def _user_login(self) -> tuple[str, float]:
        payload = {"Username": self._username, "Password": self._password, "SecurityCode": ""}
        path = "/webclient/api/Login/GetAccessToken"
        body = await self._login(path, self._client.build_request("POST", path, json=payload))
        if not isinstance(body, dict) or body.get("Status") != "AuthSuccess":
            raise AuthenticationFailed()
        return _token_of(body.get("Token"))

    async def _login(self, path: str, request: httpx.Request) -> Any:
        response = await self._client.send(request)
        if response.status_code in (400, 401, 403):  # the login endpoints' word for bad credentials
            await response.aclose()
            raise AuthenticationFailed()
        return await checked_json(response, self._policy)


def _page_query(cursor: int, since: datetime, until: datetime) -> dict[str, str]:
    window = f"StartTime ge {_odata_time(since)} and StartTime lt {_odata_time(until)}"
    return {"$filter": f"Id gt {cursor} and {window}", "$orderby": "Id asc", "$top": str(PAGE_SIZE)}


def _odata_time(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _token_of(body: Any) -> tuple[str, float]:
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        raise UnexpectedAnswer()
    lifetime = body.get("expires_in", DEFAULT_TOKEN_LIFETIME)
    if not isinstance(lifetime, int | float) or lifetime <= 0:
        lifetime = DEFAULT_TOKEN_LIFETIME
    return body["access_token"], float(lifetime)


def _rows(body: Any) -> list[dict[str, Any]]:
    return object_list(body.get("value") if isinstance(body, dict) else None)


def _record(row: dict[str, Any]) -> CallRecord:
    try:
        rec_id = int(row["Id"])
        start = _parse_time(row["StartTime"])
        end = _parse_time(row["EndTime"]) if row.get("EndTime") else start
    except (KeyError, TypeError, ValueError):
        raise UnexpectedAnswer() from None
    return CallRecord(
        external_id=str(rec_id),
        started_at=start,
        duration_seconds=max(0.0, (end - start).total_seconds()),
        caller=str(row.get("FromCallerNumber") or ""),
        callee=str(row.get("ToCallerNumber") or ""),
        direction=_direction(str(row.get("CallType") or "")),
        outcome=Outcome.ANSWERED,  # 3CX records only calls that were connected
        recording_ref=str(rec_id),
    )


def _direction(call_type: str) -> Direction:
    if call_type.startswith("Inbound"):
        return Direction.INBOUND
    if call_type.startswith("Outbound"):
        return Direction.OUTBOUND
    return Direction.INTERNAL


def _parse_time(raw: str) -> datetime:
    """ISO 8601 as 3CX writes it (up to 7 fractional digits, ``Z``) -> aware UTC."""
    parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", raw.replace("Z", "+00:00")))
    return utc(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
