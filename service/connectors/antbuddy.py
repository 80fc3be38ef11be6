"""AntBuddy AntRing cloud PBX: call history and recordings over its signed open API.

Why it looks the way it does:

- There is no session: every request carries ``hash = sha256_hex`` of its parameter values in
  the documented order, then the app secret (plain concatenation). The secret itself never
  leaves this process.
- The docs give the history hash in two orders: the "Use API" page
  (docs.antbuddy.us/integration-document-guide/antring/use-api, and seed 003) puts appId first,
  ``appId + created_from + created_to + limit + page + appSecret`` (its worked example glues
  the appId to the first date, "65446465436742018-02-07..."); another page of the same docs
  gives ``created_from + created_to + limit + page + appId + appSecret``. A server checking
  the other order answers 400, as for any bad hash. So the seed's order is tried first, the
  other on a 400, and the one that worked is kept in ``hash_order`` for the rest of this
  connector's life and offered as the ``hashOrder`` hint (``base.LearnsHints``): the sync
  state keeps it per provider and hands it back, so later pulls start with the order that
  worked and pay no refused request. Only when both are refused are the credentials wrong. ``play_recording`` has one order
  (``appId + media + appSecret``).
- ``/oapi/v1/call/histories`` takes at most 31 days and at most 100 rows per page, with no
  cursor and no total: pages are walked until a short one. Pages are numbered, so a call
  arriving mid-walk can shift a row onto the next page; ids already yielded are skipped.
- Whether ``created_to`` is inclusive is undocumented, so rows are kept by their own
  ``unix_timestamp`` inside each half-open window: a call on a window edge is yielded once.
- The answer's envelope is undocumented (the docs list row fields only): a bare JSON array
  and ``{"data": [...]}`` are both accepted.
- ``play_recording`` answers "the URL of the media file" without saying how. Accepted: plain
  text, a JSON string, or a JSON object whose ``url``, ``value``, ``link`` or ``data`` (a
  string or such an object) holds it. That URL is another host (a signed storage link, meant
  to be public): it is fetched bare, without appId, hash or anything else of ours, wherever
  it points, and under the same network-safety checks as the API.
- Documented status codes: 400 bad input (with valid inputs built here, that means an unknown
  appId or a wrong hash, i.e. bad credentials), 500 server error, 503 rate limit.

``recording_ref`` is the row's ``recording`` file name (None when empty). ``external_id``: see
``external_id``.
An answer this module cannot read raises ``UnreadableAnswer`` naming the field.
"""

from __future__ import annotations

import enum
import hashlib
import json
import mimetypes
import re
from collections.abc import AsyncIterator, Generator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from service.connectors.base import (
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
    NetworkPolicy,
    ProviderClient,
    audio_stream,
    connector_errors,
    media_type,
    raise_for_status,
    read_json,
)

DEFAULT_BASE_URL = "https://openapi.antbuddy.com"
HISTORIES = "/oapi/v1/call/histories"
PLAY_RECORDING = "/oapi/v1/call/play_recording"
WINDOW = timedelta(days=30)  # the API allows 31; a day's margin costs one request a year
LIMIT = 100
MAX_PAGES = 10_000
MAX_URL_ANSWER = 64 * 1024
CHECK_WINDOW = timedelta(minutes=5)

_MEDIA = re.compile(r"[^\x00-\x1f\x7f]{1,512}")
_OUTCOMES = {
    "SUCCESS": Outcome.ANSWERED,
    "BUSY": Outcome.BUSY,
    "CANCELLED": Outcome.MISSED,
    "IVR": Outcome.MISSED,  # reached the system, nobody picked up
    "ERROR": Outcome.FAILED,
    "UNSUCCESS": Outcome.FAILED,
}


class HashOrder(enum.StrEnum):
    """Where appId goes in the history hash (see the module docstring)."""

    APP_ID_FIRST = "appIdFirst"  # the seed's and the "Use API" page's
    APP_ID_LAST = "appIdLast"  # the other page's


class AntBuddyConnector:
    """One AntBuddy open-API application (appId + appSecret)."""

    def __init__(self, config: Mapping[str, Any], policy: NetworkPolicy) -> None:
        base_url = config.get("baseUrl") or DEFAULT_BASE_URL
        if not isinstance(base_url, str):
            raise ValueError("baseUrl is malformed")
        app_id, secret = required_text(config, "appId"), required_text(config, "appSecret")
        self._signatures = {order: Signature(app_id, secret, order) for order in HashOrder}
        stored = config.get("hashOrder")
        # The history hash order that worked last; public so it can be stored and given back.
        self.hash_order = HashOrder(stored) if stored in set(HashOrder) else HashOrder.APP_ID_FIRST
        self._policy = policy
        self._client = ProviderClient(
            policy, base_url.strip().rstrip("/"), auth=self._signatures[HashOrder.APP_ID_FIRST]
        )

    @property
    def hints(self) -> dict[str, str]:
        """The history hash order that worked, for the next connector of this provider."""
        return {"hashOrder": self.hash_order.value}

    async def check(self) -> None:
        """One signed history request over the last few minutes."""
        until = datetime.now(UTC)
        await self._history_page(until - CHECK_WINDOW, until, page=1, limit=1)

    async def list_calls(
        self, since: datetime, until: datetime, *, after: str | None = None
    ) -> AsyncIterator[CallRecord]:
        """Calls started in [since, until): window by window (oldest first), page by page."""
        # Naive means UTC here, as this connector always read it; the others refuse naive times.
        since, until = utc(since, naive_is_utc=True), utc(until, naive_is_utc=True)
        seen: set[str] = set()
        for first, end in windows(since, until, WINDOW):
            async for row in self._window_rows(first, end):
                record = _record(row)
                if first_sighting(record, first, end, seen):
                    yield record

    @asynccontextmanager
    async def open_recording(self, ref: str) -> AsyncIterator[AudioStream]:
        """Ask for the media URL, then stream the file it names."""
        if not _MEDIA.fullmatch(ref):
            raise RecordingNotFound()
        url = await self._media_url(ref)
        async with self._client.stream_public(url) as response:
            # A refusal here is the storage host's (say, a signed URL that lapsed), not our key's.
            _raise_for_status(response, missing=RecordingNotFound, denied=UnexpectedAnswer)
            async with audio_stream(response, _audio_type(response, ref)) as audio:
                yield audio

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- requests -----------------------------------------------------------------------

    async def _window_rows(self, first: datetime, end: datetime) -> AsyncIterator[Mapping[str, Any]]:
        for page in range(1, MAX_PAGES + 1):
            rows = await self._history_page(first, end, page=page, limit=LIMIT)
            for row in rows:
                yield row
            if len(rows) < LIMIT:
                return
        raise UnexpectedAnswer()

    async def _history_page(
        self, first: datetime, end: datetime, *, page: int, limit: int
    ) -> list[dict[str, Any]]:
        params = {  # insertion order is the documented order (Signature puts appId first)
            "created_from": _stamp(first),
            "created_to": _stamp(end),
            "limit": str(limit),
            "page": str(page),
        }
        tried = self.hash_order
        for order in (tried, *(other for other in HashOrder if other is not tried)):
            auth = self._signatures[order]
            async with self._client.stream("GET", HISTORIES, params=params, auth=auth) as response:
                if response.status_code == 400:  # a wrong hash: perhaps the other order's
                    continue
                with connector_errors():
                    _raise_for_status(response)
                    body = await read_json(response, self._policy)
            self.hash_order = order
            return _rows(body)
        raise AuthenticationFailed()

    async def _media_url(self, media: str) -> httpx.URL:
        async with self._client.stream("GET", PLAY_RECORDING, params={"media": media}) as response:
            with connector_errors():
                _raise_for_status(response, missing=RecordingNotFound)
                body = await _read_small(response)
        return self._client.resolve(_url_in(body))


class Signature(httpx.Auth):
    """AntBuddy's request signing, attached by ``ProviderClient`` to requests for its origin
    only: ``appId`` first, then the request's own parameters in order, then ``hash``, the
    sha256_hex of all their values and the app secret, plainly concatenated (with
    ``APP_ID_LAST``, appId's value goes after the others' in the hash, not in the URL). The
    secret itself never leaves this process."""

    def __init__(self, app_id: str, secret: str, order: HashOrder = HashOrder.APP_ID_FIRST) -> None:
        self._app_id = app_id
        self._secret = secret
        self._order = order

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        own = [v for _, v in request.url.params.multi_items()]
        values = [*own, self._app_id] if self._order is HashOrder.APP_ID_LAST else [self._app_id, *own]
        digest = hashlib.sha256("".join([*values, self._secret]).encode()).hexdigest()
        params = [("appId", self._app_id), *request.url.params.multi_items(), ("hash", digest)]
        request.url = request.url.copy_with(params=params)
        yield request

    def __repr__(self) -> str:
        return "Signature(<hidden>)"


# -- normalisation --------------------------------------------------------------------


def external_id(row: Mapping[str, Any]) -> str:
    """A stable id for a history row, which has no id field of its own.

    Built from facts fixed once the call has ended (start second, both parties, direction,
    class, DID, length), never from ``recording``: that field can be filled in after the
    row first appears, and an id that changed then would make the same call count twice.
    Two rows agreeing on all of these are the same call for every purpose we have.
    """
    parts = [
        str(row.get("unix_timestamp", "")),
        _number(row.get("caller")),
        _number(row.get("callee")),
        str(row.get("direction", "")),
        str(row.get("class", "")),
        str(row.get("did_number") or ""),
        str(row.get("duration_seconds", "")),
    ]
    return "ab-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def _record(row: Mapping[str, Any]) -> CallRecord:
    stamp = finite_float(row.get("unix_timestamp"))
    if stamp is None or not 0 <= stamp < 1e14:
        raise UnreadableAnswer("unix_timestamp")
    seconds = stamp / 1000 if stamp > 1e11 else stamp  # tolerate milliseconds
    recording = row.get("recording")
    return CallRecord(
        external_id=external_id(row),
        started_at=datetime.fromtimestamp(seconds, UTC),
        duration_seconds=finite_float(row.get("duration_seconds")) or 0.0,
        caller=_number(row.get("caller")),
        callee=_number(row.get("callee")),
        direction=_direction(row),
        outcome=_OUTCOMES.get(str(row.get("status_detail", "")).upper(), Outcome.UNKNOWN),
        recording_ref=recording if isinstance(recording, str) and _MEDIA.fullmatch(recording) else None,
    )


def _direction(row: Mapping[str, Any]) -> Direction:
    """one_one is internal; from_ab out, to_ab in; otherwise a DID means the call came in."""
    if row.get("class") == "one_one":
        return Direction.INTERNAL
    direction = row.get("direction")
    if direction == "from_ab":
        return Direction.OUTBOUND
    if direction == "to_ab" or row.get("did_number"):
        return Direction.INBOUND
    return Direction.OUTBOUND


def _number(party: Any) -> str:
    """A party's number (for users, the device name), else its username."""
    if not isinstance(party, dict):
        return str(party) if isinstance(party, str | int) and not isinstance(party, bool) else ""
    for key in ("number", "username"):
        value = party.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
    return ""


def _rows(body: Any) -> list[dict[str, Any]]:
    """The rows of a bare array or of ``{"data": [...]}``; anything else is unreadable, never
    an empty page."""
    rows = body.get("data") if isinstance(body, dict) else body
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise UnreadableAnswer("data")
    return rows


def _url_in(body: bytes) -> str:
    """The media URL from any of the accepted answer shapes (see the module docstring)."""
    text = body.decode("utf-8", "replace").strip()
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = text
    for _ in range(3):
        if isinstance(value, dict):
            value = next((value[k] for k in ("url", "value", "link", "data") if value.get(k)), None)
    if not isinstance(value, str) or not value.strip():
        raise UnreadableAnswer("url")
    url: str = value.strip()
    return url


def _audio_type(response: httpx.Response, media: str) -> str:
    """The audio's type; storage often says octet-stream, so the file name decides then."""
    declared = media_type(response)
    if declared.startswith("audio/"):
        return declared
    if declared.startswith(("application/json", "text/")):
        raise UnexpectedAnswer()  # an error page, not audio
    guessed: str | None = mimetypes.guess_type(media)[0]
    return guessed or declared or "application/octet-stream"


# -- helpers (pure) -------------------------------------------------------------------


def _stamp(moment: datetime) -> str:
    """The documented form, 2018-02-07T02:19:33.000Z."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _raise_for_status(
    response: httpx.Response,
    *,
    missing: type[ConnectorError] = UnexpectedAnswer,
    denied: type[ConnectorError] = AuthenticationFailed,
) -> None:
    """AntBuddy's own meanings first (400 is an unknown appId or a wrong hash, see the module
    docstring; 410 a file gone), then the shared mapping."""
    if response.status_code in (400, 401, 403):
        raise denied()
    if response.status_code == 410:
        raise missing()
    raise_for_status(response, not_found=missing)


async def _read_small(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_URL_ANSWER:
            raise UnexpectedAnswer("answer too large")
    return bytes(body)
