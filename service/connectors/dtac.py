"""DTAC OneCall voice record: an OrecX OrkTrack server, read over its REST API.

Why it looks the way it does:

- Login is ``POST /orktrack/rest/user/login`` with HTTP Basic credentials; the answer's
  ``accesstoken`` goes bare in ``Authorization``. It is reused until a request answers
  401/403, then the connector logs in again once.
- ``/orktrack/rest/recordings`` takes a second-granular ``startdate``/``enddate`` range (UTC)
  and pages linked by ``nextPageUri``. Ranges are asked one ``WINDOW`` at a time, a little
  wider than needed, and rows are kept by their own timestamp, so a call on a boundary
  belongs to exactly one window whether the server's ends are inclusive or not. A range
  answering ``limitReached`` is split in half rather than read short.
- ``nextPageUri`` and the audio's ``recordingURL`` are fetched with the token, as OrkTrack
  serves both from its own REST API ("GET the recordingURL with the same header"). So one
  on another origin than the configured base URL (another host or port, or ``http://`` for
  an ``https://`` server) is refused (``OtherOrigin``) rather than fetched bare, which could
  only answer 401; ``ProviderClient`` enforces it, before any token leaves.

``CallRecord.external_id`` is the OrkTrack recording id; ``recording_ref`` is its absolute
``recordingURL`` (None when the row has none).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from service.connectors.base import (
    AudioStream,
    CallRecord,
    Direction,
    Outcome,
    RecordingNotFound,
    UnexpectedAnswer,
)
from service.connectors.common import (
    ceil_second,
    first_sighting,
    floor_second,
    halves,
    json_object,
    object_list,
    utc,
    windows,
)
from service.connectors.http import (
    HeaderAuth,
    NetworkPolicy,
    ProviderClient,
    audio_stream,
    checked_json,
    raise_for_status,
)

DEFAULT_BASE_URL = "https://onecallvoicerecord.dtac.co.th"
LOGIN_PATH = "/orktrack/rest/user/login"
LOGIN_QUERY = {"version": "orktrack", "accesspolicy": "all", "licenseinfo": "true"}
LIST_PATH = "/orktrack/rest/recordings"
PAGE_SIZE = 500  # the most OrkTrack clients ask for
WINDOW = timedelta(days=1)
MAX_PAGES = 10_000  # per window: a server that never ends its list is broken, not busy
_STAMP = "%Y%m%d_%H%M%S"


class DtacConnector:
    """One DTAC OneCall account (an OrkTrack user)."""

    page_size = PAGE_SIZE
    window = WINDOW

    def __init__(self, config: Mapping[str, Any], policy: NetworkPolicy) -> None:
        base_url = str(config.get("baseUrl") or DEFAULT_BASE_URL).rstrip("/")
        self._basic = httpx.BasicAuth(str(config["username"]), str(config["password"]))
        self._policy = policy
        self._client = ProviderClient(policy, base_url)
        self._token: str | None = None
        self._token_lock = asyncio.Lock()

    async def check(self) -> None:
        self._token = None  # prove the credentials, not a cached token
        now = floor_second(datetime.now(UTC))
        await self._get_json(_list_url(now - timedelta(seconds=1), now, page_size=1))

    async def list_calls(
        self, since: datetime, until: datetime, *, after: str | None = None
    ) -> AsyncIterator[CallRecord]:
        for start, end in windows(utc(since), utc(until), self.window):
            async for record in self._walk(start, end):
                yield record

    @asynccontextmanager
    async def open_recording(self, ref: str) -> AsyncIterator[AudioStream]:
        url = _absolute_url(ref)
        if url is None:
            raise RecordingNotFound()
        response = await self._send(url)
        try:
            raise_for_status(response, not_found=RecordingNotFound)
            async with audio_stream(response, response.headers.get("content-type", "audio/wav")) as audio:
                yield audio
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- listing -------------------------------------------------------------------------

    async def _walk(self, start: datetime, end: datetime) -> AsyncIterator[CallRecord]:
        """Calls in [start, end): split when the server caps the range, else follow pages."""
        page = await self._get_json(_list_url(start, end, page_size=self.page_size))
        if page.get("limitReached") is True and (parts := halves(start, end)):
            for part in parts:
                async for record in self._walk(*part):
                    yield record
            return
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            for record in map(_record, _objects(page)):
                if first_sighting(record, start, end, seen):
                    yield record
            next_uri = page.get("nextPageUri")
            if not next_uri:
                return
            page = await self._get_json(self._client.resolve(next_uri))
        raise UnexpectedAnswer("too many pages")

    # -- requests ------------------------------------------------------------------------

    async def _get_json(self, url: httpx.URL | str) -> dict[str, Any]:
        return json_object(await checked_json(await self._send(url), self._policy))

    async def _send(self, url: httpx.URL | str) -> httpx.Response:
        """A streamed authorised GET; a 401/403 logs in again once and tries again."""
        for attempt in range(2):
            token = await self._access_token()
            request = self._client.build_request("GET", url)
            response = await self._client.send(request, auth=HeaderAuth("Authorization", token))
            if response.status_code not in (401, 403) or attempt:
                return response
            await response.aclose()
            if self._token == token:
                self._token = None
        raise AssertionError("unreachable")

    async def _access_token(self) -> str:
        async with self._token_lock:
            if self._token is None:
                self._token = await self._login()
            return self._token

    async def _login(self) -> str:
        request = self._client.build_request("POST", LOGIN_PATH, params=LOGIN_QUERY)
        body = await checked_json(await self._client.send(request, auth=self._basic), self._policy)
        token = body.get("accesstoken") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token or not token.isprintable():
            raise UnexpectedAnswer()
        return token


def _list_url(start: datetime, end: datetime, *, page_size: int) -> str:
    """First page of a range; the end rounds up so the asked range covers [start, end)."""
    query = {
        "range": "custom",
        "startdate": floor_second(start).strftime(_STAMP),
        "enddate": ceil_second(end).strftime(_STAMP),
        "page": "1",
        "pagesize": str(page_size),
    }
    return str(httpx.URL(LIST_PATH, params=query))


def _objects(page: dict[str, Any]) -> list[dict[str, Any]]:
    return object_list(page.get("objects", []))


def _record(row: dict[str, Any]) -> CallRecord:
    try:
        rec_id = str(row["id"])
        started = datetime.strptime(str(row["timestamp"]), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        duration = float(row.get("duration") or 0)
    except (KeyError, TypeError, ValueError):
        raise UnexpectedAnswer() from None
    if not math.isfinite(duration):
        raise UnexpectedAnswer()
    local, remote = str(row.get("localParty") or ""), str(row.get("remoteParty") or "")
    direction = {"IN": Direction.INBOUND, "OUT": Direction.OUTBOUND}.get(str(row.get("direction")).upper())
    inbound = direction is Direction.INBOUND
    url = row.get("recordingURL")
    return CallRecord(
        external_id=rec_id,
        started_at=started,
        duration_seconds=max(0.0, duration),
        caller=remote if inbound else local,
        callee=local if inbound else remote,
        direction=direction or Direction.INTERNAL,
        outcome=Outcome.ANSWERED,  # OrkTrack holds recorded, hence connected, calls
        recording_ref=url if isinstance(url, str) and _absolute_url(url) else None,
    )


def _absolute_url(ref: str) -> httpx.URL | None:
    try:
        url = httpx.URL(ref)
    except (httpx.InvalidURL, TypeError):
        return None
    return url if url.scheme in ("http", "https") and url.host else None
