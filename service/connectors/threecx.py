"""3CX v20: recordings pulled over the XAPI (OData v4) with a bearer token.

What the PBX does, with the source for each, and what this connector does about it:

- **One active token.** ``POST /connect/token`` (XAPI client credentials) or, with
  ``headless``, the web-client user login ``POST /webclient/api/Login/GetAccessToken``
  issue short-lived bearer tokens, and the PBX keeps one active token at a time
  (3cx/xapi-tutorial README.md: tests "must run sequentially — only one access token can
  be active at a time"; its auth.ts guards the login with a lock). A connection test, a
  second process or another integration on the same PBX therefore cancels the token a pull
  is using. All requests go through ``TokenSession``: one cached token, a single-flight
  login, and a 401 leads to a new login and a retry with backoff, more than once;
  ``AuthenticationFailed`` only when a fresh login is refused or fresh tokens fail too.
- **``expires_in`` units.** Seconds since 20.0.9, minutes before (3cx/xapi-tutorial commit
  1c6947c "expires_in is in seconds (according to OAuth) since 20.0.9" turns auth.ts's
  ``expires_in * 60 * 1000`` into ``expires_in * 1000``). 3CX tokens live about a minute
  (PROVIDERS.md: ``"expires_in":60``), so a value under ``MINUTES_BELOW`` is read as
  minutes (an old PBX's ``1``), anything else as seconds. Sources do not say which values
  old PBXs sent, so a value such as 60 is ambiguous; reading it as seconds is the cheaper
  mistake: too short a lifetime costs an early login, too long one a 401 and a renewal.
- **Roles.** The XAPI client is given a group and a role (3cx/xapi-tutorial README.md,
  "Select group and desired role"); a role that may not see recordings answers 403 on
  ``Recordings``: ``AccessDenied`` (the fix is the role, not the password). The connection
  test probes ``Recordings`` itself, so it says so too.
- **Nullable fields.** In swagger.yaml ``Pbx.Recording`` every field but ``Id`` is
  nullable, ``StartTime`` and ``EndTime`` included, and ``CallType`` is one of ``Local``,
  ``InboundExternal``, ``OutboundExternal`` (PROVIDERS.md also saw ``Internal``). A null
  ``StartTime`` falls back on ``EndTime``; a row with neither cannot be placed in time and
  is skipped with a warning; other nulls become empty values. An ``Id`` that is missing or
  not an integer, or a time that is not ISO 8601, is an ``UnreadableAnswer`` naming it.
- **Listing by Id.** ``Recordings`` is walked by Id cursor (``Id gt N``, ``$orderby=Id
  asc``; ``$top`` over 100 fails, PROVIDERS.md): a cursor cannot skip or repeat rows when
  new recordings arrive mid-walk, as ``$skip`` paging would. A row is written when its call
  ends, so its Id sorts after rows of calls that started later: each row's ``Id`` is its
  ``CallRecord.position``, and with ``after`` the listing is ``Id gt after`` with no time
  filter, which returns late rows whatever their ``StartTime``. Without ``after`` the walk
  is restricted to ``StartTime`` in ``[since, until)``.
- **Audio.** ``Recordings({id})`` 404s on v20 (PROVIDERS.md), so the row is looked up by
  ``$filter=Id eq N``: no row is ``RecordingNotFound``. Otherwise audio comes from
  ``Pbx.DownloadRecording(recId=N)`` (swagger.yaml), and its 404 for a listed row means the
  file is not written yet: ``AudioNotReady``, retried on later pulls.
- **Archived rows.** swagger.yaml gives ``IsArchived`` and ``ArchivedUrl`` (nullable) and
  nothing more; archives go to the places ``Pbx.FileSystemType`` names (Local, Ftp,
  GoogleDrive, NetworkShare, Sftp), none of which shares the PBX's token. So: archived
  without a URL yet is ``AudioNotReady`` (archiving under way); a URL on the PBX's own
  origin is fetched with the bearer token; an http(s) URL on another origin is fetched with
  ``stream_public`` (a bare GET, no credentials: the PBX token may not go there, and a
  link meant to be fetched from elsewhere must work without it), and must answer audio,
  not a login page; any other scheme (ftp, sftp, a share path) is ``ArchiveOutOfReach``.
  Sources do not say whether ``DownloadRecording`` still serves an archived file; this
  connector does not rely on it.
- **Web-client refresh.** The web-client login answers ``Token.refresh_token``; public v20
  clients (a 3CX Prometheus exporter in JavaScript) renew with ``POST /connect/token``,
  form ``client_id=Webclient&grant_type=refresh_token``, cookie
  ``RefreshTokenCookie=<refresh token>``, answered like a token request, sometimes with a
  new refresh token. With ``headless`` the session renews that way and posts the password
  only when there is no refresh token or the refresh is refused. (The tutorial's auth.ts
  also declares a ``refresh_token`` in the client-credentials answer, but no source shows
  a refresh grant for an XAPI client, so that login always posts the client secret.)

Where sources disagree: PROVIDERS.md saw ``CallType`` ``Internal``, swagger.yaml says
``Local`` (both read as internal); PROVIDERS.md says a new token "may" invalidate the old,
the tutorial says only one can be active (modelled as always).

``CallRecord.external_id``, ``recording_ref`` and ``position`` are all the recording ``Id``
(decimal).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
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
from service.connectors.common import object_list, utc
from service.connectors.http import (
    HeaderAuth,
    NetworkPolicy,
    ProviderClient,
    audio_stream,
    checked_json,
    media_type,
    origin_of,
    raise_for_status,
)
from service.connectors.session import Token, TokenSession

log = logging.getLogger("callvault.connectors.threecx")

PAGE_SIZE = 100  # the most 3CX accepts for $top
DEFAULT_TOKEN_LIFETIME = 60.0  # seconds, when the PBX does not say
MINUTES_BELOW = 10  # an expires_in under this is in minutes (before 20.0.9)
WEBCLIENT_ID = "Webclient"
RECORDINGS = "/xapi/v1/Recordings"
_FRACTION = re.compile(r"(\.\d{1,6})\d*")
_ARCHIVE_URL = re.compile(r"(?i)(https?://[^\\\s]+|/[^/\\\s][^\\\s]*)\Z")  # http(s), or a path on the PBX
_NOT_AUDIO = frozenset({"text/html", "application/json", "text/plain", "application/xml", "text/xml"})


class ArchiveOutOfReach(UnexpectedAnswer):
    """The PBX archived the recording somewhere callvault cannot fetch from (an FTP, SFTP
    or network share path). Not retried: only a change on the PBX side brings it back."""

    message = "recording archived where callvault cannot fetch it"
    retryable = False


class ThreeCXConnector:
    """One 3CX PBX, reached as an XAPI client or (headless) as a web-client user."""

    def __init__(
        self,
        config: Mapping[str, Any],
        policy: NetworkPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._username = str(config["username"])
        self._password = str(config["password"])
        self._headless = bool(config.get("headless", False))
        self._policy = policy
        self._client = ProviderClient(policy, str(config["baseUrl"]).rstrip("/"))
        self.session = TokenSession(self._log_in, clock=clock)

    async def check(self) -> None:
        """Prove the credentials and the role that lists recordings, with a fresh login."""
        self.session.forget()
        await self._get_json(RECORDINGS, {"$select": "Id", "$top": "1"})

    async def list_calls(
        self, since: datetime, until: datetime, *, after: str | None = None
    ) -> AsyncIterator[CallRecord]:
        since, until = utc(since), utc(until)
        if after is not None:
            cursor = _position(after)
            window = None
        elif since < until:
            cursor, window = 0, (since, until)
        else:
            return
        while True:
            rows = _rows(await self._get_json(RECORDINGS, _page_query(cursor, window)))
            for row in rows:
                rec_id = _rec_id(row)
                if rec_id <= cursor:
                    raise UnreadableAnswer("Id")  # out of order: the cursor would skip or repeat rows
                cursor = rec_id
                record = _record(rec_id, row)
                if record is None:
                    log.warning("3CX recording %d has neither StartTime nor EndTime; skipped", rec_id)
                elif window is None or window[0] <= record.started_at < window[1]:
                    yield record
            if len(rows) < PAGE_SIZE:
                return

    @asynccontextmanager
    async def open_recording(self, ref: str) -> AsyncIterator[AudioStream]:
        if not ref.isascii() or not ref.isdigit():
            raise RecordingNotFound()
        row = await self._row(int(ref))
        if row.get("IsArchived") is True:
            async with self._archived(row.get("ArchivedUrl")) as audio:
                yield audio
            return
        response = await self._send(f"{RECORDINGS}/Pbx.DownloadRecording(recId={int(ref)})")
        try:
            _raise_for_status(response, not_found=AudioNotReady)  # the row is there: its file is not yet
            async with audio_stream(response, response.headers.get("content-type", "audio/x-wav")) as audio:
                yield audio
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- recordings ----------------------------------------------------------------------

    async def _row(self, rec_id: int) -> dict[str, Any]:
        params = {"$filter": f"Id eq {rec_id}", "$select": "Id,IsArchived,ArchivedUrl"}
        rows = _rows(await self._get_json(RECORDINGS, params))
        if not rows:
            raise RecordingNotFound()
        return rows[0]

    @asynccontextmanager
    async def _archived(self, raw_url: Any) -> AsyncIterator[AudioStream]:
        if raw_url is None or raw_url == "":
            raise AudioNotReady()  # archived, but the PBX has not said where yet
        if not isinstance(raw_url, str):
            raise UnreadableAnswer("ArchivedUrl")
        if not _ARCHIVE_URL.match(raw_url):  # ftp:, sftp:, smb:, a share or file path
            raise ArchiveOutOfReach()
        url = self._client.resolve(raw_url)
        if origin_of(url) == self._client.origin:
            response = await self._send(url)
            try:
                _raise_for_status(response, not_found=AudioNotReady)
                async with audio_stream(
                    response, response.headers.get("content-type", "audio/x-wav")
                ) as audio:
                    yield audio
            finally:
                await response.aclose()
            return
        async with self._client.stream_public(url) as response:
            if response.status_code in (401, 403):  # the link needs credentials callvault has not got
                raise ArchiveOutOfReach()
            raise_for_status(response, not_found=AudioNotReady)
            if media_type(response) in _NOT_AUDIO:  # a login or error page, not the recording
                raise UnreadableAnswer("ArchivedUrl")
            async with audio_stream(response, response.headers.get("content-type", "audio/x-wav")) as audio:
                yield audio

    # -- requests ------------------------------------------------------------------------

    async def _get_json(self, path: str, params: dict[str, str]) -> Any:
        response = await self._send(path, params)
        if response.status_code == 403:
            await response.aclose()
            raise AccessDenied()
        return await checked_json(response, self._policy)

    async def _send(self, url: httpx.URL | str, params: dict[str, str] | None = None) -> httpx.Response:
        """A streamed authorised GET; the session renews a cancelled token and retries."""

        async def send(token: str) -> httpx.Response:
            request = self._client.build_request("GET", url, params=params)
            return await self._client.send(request, auth=HeaderAuth("Authorization", f"Bearer {token}"))

        return await self.session.send(send)

    async def _log_in(self, previous: Token | None) -> Token:
        if not self._headless:
            return await self._client_login()
        if previous is not None and previous.refresh is not None:
            refreshed = await self._refresh(previous.refresh)
            if refreshed is not None:
                return refreshed
        return await self._user_login()

    async def _client_login(self) -> Token:
        form = {
            "client_id": self._username,
            "client_secret": self._password,
            "grant_type": "client_credentials",
        }
        return _token_of(await self._login(self._client.build_request("POST", "/connect/token", data=form)))

    async def _user_login(self) -> Token:
        payload = {"Username": self._username, "Password": self._password, "SecurityCode": ""}
        request = self._client.build_request("POST", "/webclient/api/Login/GetAccessToken", json=payload)
        body = await self._login(request)
        if not isinstance(body, dict) or body.get("Status") != "AuthSuccess":
            raise AuthenticationFailed()
        return _token_of(body.get("Token"))

    async def _refresh(self, refresh: str) -> Token | None:
        """A new token from the web-client refresh token; None when the PBX refuses it
        (expired or spent), so the caller logs in with the password instead."""
        form = {"client_id": WEBCLIENT_ID, "grant_type": "refresh_token"}
        request = self._client.build_request("POST", "/connect/token", data=form)
        response = await self._client.send(
            request, auth=HeaderAuth("Cookie", f"RefreshTokenCookie={refresh}")
        )
        if response.status_code in (400, 401, 403):
            await response.aclose()
            return None
        token = _token_of(await checked_json(response, self._policy))
        return token if token.refresh is not None else Token(token.value, token.lifetime, refresh)

    async def _login(self, request: httpx.Request) -> Any:
        response = await self._client.send(request)
        if response.status_code in (400, 401, 403):  # the login endpoints' word for bad credentials
            await response.aclose()
            raise AuthenticationFailed()
        return await checked_json(response, self._policy)


def _raise_for_status(response: httpx.Response, *, not_found: type[ConnectorError]) -> None:
    """``raise_for_status``, but a 403 (after a good login) means the role: AccessDenied."""
    if response.status_code == 403:
        raise AccessDenied()
    raise_for_status(response, not_found=not_found)


def _page_query(cursor: int, window: tuple[datetime, datetime] | None) -> dict[str, str]:
    where = f"Id gt {cursor}"
    if window is not None:
        where += f" and StartTime ge {_odata_time(window[0])} and StartTime lt {_odata_time(window[1])}"
    return {"$filter": where, "$orderby": "Id asc", "$top": str(PAGE_SIZE)}


def _odata_time(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _position(after: str) -> int:
    if not after.isascii() or not after.isdigit():
        raise ValueError("a 3CX listing position is a recording Id")
    return int(after)


def _token_of(body: Any) -> Token:
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        raise UnreadableAnswer("access_token")
    refresh = body.get("refresh_token")
    return Token(
        body["access_token"],
        lifetime=_lifetime(body.get("expires_in")),
        refresh=refresh if isinstance(refresh, str) and refresh else None,
    )


def _lifetime(expires_in: Any) -> float:
    """Seconds a token lives: ``expires_in`` in minutes when small (before 20.0.9), else in
    seconds; the usual minute when it is absent or not a positive number."""
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or not expires_in > 0:
        return DEFAULT_TOKEN_LIFETIME
    if expires_in < MINUTES_BELOW:
        return float(expires_in) * 60.0
    return float(min(expires_in, 86_400))


def _rows(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or "value" not in body:
        raise UnreadableAnswer("value")
    try:
        return object_list(body["value"])
    except UnexpectedAnswer:
        raise UnreadableAnswer("value") from None


def _rec_id(row: dict[str, Any]) -> int:
    rec_id = row.get("Id")
    if isinstance(rec_id, bool) or not isinstance(rec_id, int):
        raise UnreadableAnswer("Id")
    return rec_id


def _record(rec_id: int, row: dict[str, Any]) -> CallRecord | None:
    """The row as a CallRecord; None when it has no time at all."""
    start, end = _time(row, "StartTime"), _time(row, "EndTime")
    started = start or end
    if started is None:
        return None
    return CallRecord(
        external_id=str(rec_id),
        started_at=started,
        duration_seconds=max(0.0, (end - started).total_seconds()) if end else 0.0,
        caller=_text(row.get("FromCallerNumber")),
        callee=_text(row.get("ToCallerNumber")),
        direction=_direction(_text(row.get("CallType"))),
        outcome=Outcome.ANSWERED,  # 3CX records only calls that were connected
        recording_ref=str(rec_id),
        position=str(rec_id),
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _direction(call_type: str) -> Direction:
    if call_type.startswith("Inbound"):
        return Direction.INBOUND
    if call_type.startswith("Outbound"):
        return Direction.OUTBOUND
    return Direction.INTERNAL  # Local, Internal, or null


def _time(row: dict[str, Any], name: str) -> datetime | None:
    """ISO 8601 as 3CX writes it (up to 12 fractional digits, ``Z`` or an offset) -> aware
    UTC; None when null or empty; UnreadableAnswer naming the field otherwise."""
    raw = row.get(name)
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise UnreadableAnswer(name)
    text = _FRACTION.sub(r"\1", raw.replace("Z", "+00:00"))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise UnreadableAnswer(name) from None
    return utc(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
