"""DTAC OneCall voice record: an OrecX OrkTrack server, read over its REST API.

What the sources say: PROVIDERS.md; issue 10; and public OrkTrack clients written against
DTAC's own host, onecallvoicerecord.dtac.co.th, found by content in public GitHub code (the
code index names their files, not their repositories): a PHP ``Services/OneCallClient.php``
with ``api/sync/process_single.php``, TypeScript ``lib/oreka.ts`` clients and their audio
routes, a React talk-time dashboard, and a Node server with a userscript relaying the token.

- Login is ``POST /orktrack/rest/user/login?version=orktrack&accesspolicy=all&licenseinfo=true``
  with HTTP Basic credentials and an empty body; the answer's ``accesstoken`` goes bare in
  ``Authorization`` (every client does this: a PHP ``OneCallClient``, TypeScript ``lib/oreka.ts``
  clients, a Node server that keeps a relayed token alive with ``/orktrack/rest/keepalive``).
  The answer gives no lifetime, so the token is kept until an answer calls it stale.
- A stale token: clients re-login on 401 or 403. Issue 10 reports that DTAC's server may
  instead answer HTTP 200 ``{"error": "invalid access token"}``, and the same clients then
  read ``data.objects ?? []``: an empty page, which would move the cursor past real calls.
  So a 200 JSON answer with an ``error`` about the token (and no ``objects``) is stale too
  (``TokenSession`` logs in again and retries the page, with backoff, more than once), and
  any other listing answer without ``objects`` is ``UnreadableAnswer("objects")``, never an
  empty page.
- ``GET /orktrack/rest/recordings?range=custom&startdate=YYYYMMDD_HHMMSS&enddate=...`` (UTC,
  second-granular). Every client sends ``sort=`` (empty) and ``maxresults``: ``-1`` in the PHP
  client, the React dashboard and the Node server, ``0`` in one TypeScript client (sources
  disagree; we send ``-1``, the majority); several add ``includetags``/``includemetadata``/
  ``includeprograms``, which only widen rows and are not sent. Clients page by ``page=N``
  and stop at a short page (one also requires ``nextPageUri``, the rest never read it), so
  pages are asked by number here too and ``nextPageUri`` is ignored: the walk never leaves
  the configured origin. Sources disagree on ``pagesize`` too (the Node server 500, one
  TypeScript client 1000, the PHP client 5000, the dashboard 10000) and none says what the
  server caps, so 500 is asked, and a smaller ``pageSize`` in the answer is taken as the
  page size when telling a short page. A range answering
  ``limitReached`` is split in half rather than read short. Rows are kept by their own
  ``timestamp`` (UTC, ``YYYY-MM-DD HH:MM:SS``), so a call on a window edge belongs to exactly
  one window whether the server's ends are inclusive or not, and a row repeated by a shifting
  page (one client guards against this "offset pagination race") is yielded once.
- Audio: clients fetch ``/orktrack/rest/mediastream/{id}`` with the token (one also puts it
  in the query as ``at=``, which we never do: URLs get logged), not the row's
  ``recordingURL``. So an absolute ``recordingURL`` is used as given, and an empty or relative
  one falls back to the mediastream URL on the configured base. Any URL is fetched with the
  token, so one on another origin (another host or port, or ``http://`` for an ``https://``
  server) is refused (``OtherOrigin``) by ``ProviderClient`` before any token leaves.

``CallRecord.external_id`` is the OrkTrack recording id; ``recording_ref`` is the absolute
audio URL (every OrkTrack row is a recording).
"""

from __future__ import annotations

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
    UnreadableAnswer,
)
from service.connectors.common import (
    ceil_second,
    duration_field,
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
    connector_errors,
    media_type,
    raise_for_status,
    read_json,
)
from service.connectors.session import Token, TokenSession

DEFAULT_BASE_URL = "https://onecallvoicerecord.dtac.co.th"
LOGIN_PATH = "/orktrack/rest/user/login"
LOGIN_QUERY = {"version": "orktrack", "accesspolicy": "all", "licenseinfo": "true"}
LIST_PATH = "/orktrack/rest/recordings"
MEDIA_PATH = "/orktrack/rest/mediastream/{id}"
PAGE_SIZE = 500  # the most OrkTrack clients ask for
MAX_RESULTS = "-1"  # what public clients send: no cap of ours, the server's own still applies
WINDOW = timedelta(days=1)
MAX_PAGES = 10_000  # per window: a server that never ends its list is broken, not busy
_STAMP = "%Y%m%d_%H%M%S"
_STALE_WORDS = ("token", "session", "expired", "login")


class DtacConnector:
    """One DTAC OneCall account (an OrkTrack user)."""

    page_size = PAGE_SIZE
    window = WINDOW
    backoff_base = 0.5  # seconds before the second re-login in a row (TokenSession)

    def __init__(self, config: Mapping[str, Any], policy: NetworkPolicy) -> None:
        base_url = str(config.get("baseUrl") or DEFAULT_BASE_URL).rstrip("/")
        self._basic = httpx.BasicAuth(str(config["username"]), str(config["password"]))
        self._policy = policy
        self._client = ProviderClient(policy, base_url)
        self._session = TokenSession(self._login, backoff_base=self.backoff_base)

    async def check(self) -> None:
        self._session.forget()  # prove the credentials, not a cached token
        now = floor_second(datetime.now(UTC))
        await self._get_json(_list_url(now - timedelta(seconds=1), now, page=1, page_size=1))

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
        answer = _Answer(self._policy)
        response = await self._send(url, answer)
        try:
            raise_for_status(response, not_found=RecordingNotFound)
            if answer.read or "json" in media_type(response):
                raise UnexpectedAnswer()  # an error body where audio was asked for
            async with audio_stream(response, response.headers.get("content-type", "audio/wav")) as audio:
                yield audio
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- listing -------------------------------------------------------------------------

    async def _walk(self, start: datetime, end: datetime) -> AsyncIterator[CallRecord]:
        """Calls in [start, end): split when the server caps the range, else ask page by page
        until a short one."""
        page = await self._get_json(_list_url(start, end, page=1, page_size=self.page_size))
        if page.get("limitReached") is True and (parts := halves(start, end)):
            for part in parts:
                async for record in self._walk(*part):
                    yield record
            return
        seen: set[str] = set()
        for number in range(1, MAX_PAGES + 1):
            rows = _objects(page)
            for record in map(self._record, rows):
                if first_sighting(record, start, end, seen):
                    yield record
            if len(rows) < _page_size(page, self.page_size):
                return
            page = await self._get_json(_list_url(start, end, page=number + 1, page_size=self.page_size))
        raise UnexpectedAnswer("too many pages")

    def _record(self, row: dict[str, Any]) -> CallRecord:
        rec_id = str(row.get("id", ""))
        if not rec_id.isascii() or not rec_id.isdigit():  # it goes into the mediastream path
            raise UnreadableAnswer("id")
        try:
            started = datetime.strptime(str(row["timestamp"]), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        except (KeyError, ValueError):
            raise UnreadableAnswer("timestamp") from None
        duration = duration_field(row, "duration")
        local, remote = str(row.get("localParty") or ""), str(row.get("remoteParty") or "")
        direction = {"IN": Direction.INBOUND, "OUT": Direction.OUTBOUND}.get(
            str(row.get("direction")).upper()
        )
        inbound = direction is Direction.INBOUND
        given = row.get("recordingURL")
        url = _absolute_url(given) if isinstance(given, str) else None
        if url is None:  # empty or relative: where public clients fetch every recording
            url = self._client.base_url.join(MEDIA_PATH.format(id=rec_id))
        return CallRecord(
            external_id=rec_id,
            started_at=started,
            duration_seconds=max(0.0, duration),
            caller=remote if inbound else local,
            callee=local if inbound else remote,
            direction=direction or Direction.INTERNAL,
            outcome=Outcome.ANSWERED,  # OrkTrack holds recorded, hence connected, calls
            recording_ref=str(url),
        )

    # -- requests ------------------------------------------------------------------------

    async def _get_json(self, url: httpx.URL | str) -> dict[str, Any]:
        answer = _Answer(self._policy)
        response = await self._send(url, answer)
        if not answer.read:
            return json_object(await checked_json(response, self._policy))
        await response.aclose()
        return json_object(answer.body)

    async def _send(self, url: httpx.URL | str, answer: _Answer) -> httpx.Response:
        """A streamed authorised GET; while the answer calls the token stale, the session
        logs in again and retries."""

        async def send(token: str) -> httpx.Response:
            request = self._client.build_request("GET", url)
            return await self._client.send(request, auth=HeaderAuth("Authorization", token))

        return await self._session.send(send, is_stale=answer.stale)

    async def _login(self, previous: Token | None) -> Token:
        request = self._client.build_request("POST", LOGIN_PATH, params=LOGIN_QUERY)
        body = await checked_json(await self._client.send(request, auth=self._basic), self._policy)
        token = body.get("accesstoken") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token or not token.isprintable():
            raise UnreadableAnswer("accesstoken")
        return Token(token)


class _Answer:
    """The stale check for one request. A 200 JSON answer is read here, once, to see whether
    it is OrkTrack's "invalid access token"; the caller then takes ``body`` from here."""

    def __init__(self, policy: NetworkPolicy) -> None:
        self._policy = policy
        self.read = False
        self.body: Any = None

    async def stale(self, response: httpx.Response) -> bool:
        self.read, self.body = False, None
        if response.status_code in (401, 403):
            return True
        if response.status_code != 200 or "json" not in media_type(response):
            return False
        with connector_errors():
            self.body = await read_json(response, self._policy)
        self.read = True
        return _says_stale(self.body)


def _says_stale(body: Any) -> bool:
    if not isinstance(body, dict) or "objects" in body:
        return False
    error = body.get("error")
    return isinstance(error, str) and any(word in error.lower() for word in _STALE_WORDS)


def _list_url(start: datetime, end: datetime, *, page: int, page_size: int) -> str:
    """One page of a range, asked as public clients ask; the end rounds up so the asked range
    covers [start, end)."""
    query = {
        "range": "custom",
        "startdate": floor_second(start).strftime(_STAMP),
        "enddate": ceil_second(end).strftime(_STAMP),
        "sort": "",
        "page": str(page),
        "pagesize": str(page_size),
        "maxresults": MAX_RESULTS,
    }
    return str(httpx.URL(LIST_PATH, params=query))


def _objects(page: dict[str, Any]) -> list[dict[str, Any]]:
    """The page's rows; an answer without ``objects`` is unreadable, never an empty page."""
    if "objects" not in page:
        raise UnreadableAnswer("objects")
    try:
        return object_list(page["objects"])
    except UnexpectedAnswer:
        raise UnreadableAnswer("objects") from None


def _page_size(page: dict[str, Any], asked: int) -> int:
    """The size the server says it served (it may serve fewer than asked), else ``asked``."""
    size = page.get("pageSize")
    if isinstance(size, int) and not isinstance(size, bool) and 0 < size <= asked:
        return size
    return asked


def _absolute_url(ref: str) -> httpx.URL | None:
    try:
        url = httpx.URL(ref)
    except (httpx.InvalidURL, TypeError):
        return None
    return url if url.scheme in ("http", "https") and url.host else None
