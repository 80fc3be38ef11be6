"""promptCall PBX web service (``/pbxws.php/<action>``): CDRs and their recordings.

What the sources say, and where they stop:

- Seed 001 (promptCall's own API page): the token is base64(apiKey:apiSecret), sent as
  ``Authorization: Basic``, ``?token=`` or a JSON ``token``; a public PHP client (a
  "protollcall" telephone API, host ``pbx-…-webapi.protollcall.com:4433/pbxws.php``) builds
  it the same way. It never expires, so there is no login round trip and nothing to renew.
- Seed 001: ``cdrapi`` takes ``numRecords`` (max rows), ``startTime``, ``endTime``
  (``yyyy-mm-dd hh:mm:ss``, "calldate start/end filter") and answers ``{"success": true,
  "value": [cdr, ...]}``. There is no paging: ranges are asked one ``window`` at a time; a
  range that comes back full may have been cut, so it is split in half and asked again,
  until every range is answered short. Rows are kept by their own time in ``[start, end)``
  so a call on a window edge is yielded once, whether the server's ends are inclusive or
  not. A success answer without a ``value`` list is ``UnreadableAnswer("value")``, never an
  empty range.
- Time zone: not documented. The service is Thai and its filters are the PBX's wall clock
  (Asterisk writes ``calldate`` in local time), so the provider setting ``timeZone`` (an IANA
  name) says which clock it is; default Asia/Bangkok (UTC+7, no daylight saving).
- Field names: not documented beyond ``uniqueid``, ``src``, ``dst`` and ``calldate``, which are
  Asterisk CDR columns. Asterisk's ``cdr`` table (cdr_mysql/cdr_adaptive_odbc schemas) has
  ``calldate, clid, src, dst, dcontext, channel, dstchannel, lastapp, lastdata, duration,
  billsec, disposition, amaflags, accountcode, uniqueid, userfield``; FreePBX adds
  ``recordingfile``, other schemas name it ``record``; Asterisk's own CDR variable for the
  start is ``start`` (docs.asterisk.org, "CDR Variables"). So the time is ``calldate``, else
  ``start``; the file is ``recordingfile``, else ``record``; a row without ``uniqueid`` or a
  time is ``UnreadableAnswer`` naming the field.
- Seed 001: ``recapi`` finds a recording "by 3 filter option": ``filename``, ``uniqueid``, or
  ``src`` + ``dst`` + ``calldate``, and answers ``application/octet-stream``, or JSON
  ``success: false``. Which a PBX honours is not said, so a recording is asked by
  ``uniqueid`` first, then by its ``filename``, then by ``src`` + ``dst`` + ``calldate`` (the
  CDR's own ``calldate`` text, so no clock conversion can make it miss); a "not found" moves
  on to the next, an auth failure stops.

``CallRecord.external_id`` is the CDR ``uniqueid``; ``recording_ref`` is the form-encoded set
of those look-ups (``uniqueid=…&filename=…&src=…&dst=…&calldate=…``; a bare uniqueid from
before is read as ``uniqueid=`` alone), None when the row names no recording file.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
    NetworkPolicy,
    ProviderClient,
    audio_stream,
    checked_json,
    connector_errors,
    raise_for_status,
    read_json,
)

DEFAULT_TIME_ZONE = "Asia/Bangkok"
NUM_RECORDS = 500
WINDOW = timedelta(days=1)
_TIME = "%Y-%m-%d %H:%M:%S"
_TIME_FIELDS = ("calldate", "start")
_FILE_FIELDS = ("recordingfile", "record")
_UNIQUEID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_FILENAME = re.compile(r"[A-Za-z0-9._+@/-]{1,255}")
_PARTY = re.compile(r"[^\x00-\x1f\x7f]{1,80}")
_CALLDATE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_AUTH_WORDS = ("auth", "token", "key", "secret", "permission", "denied", "login")
_INBOUND_CONTEXTS = ("from-trunk", "from-pstn", "from-did", "ext-did")
_OUTCOMES = {
    "ANSWERED": Outcome.ANSWERED,
    "NO ANSWER": Outcome.MISSED,
    "BUSY": Outcome.BUSY,
    "FAILED": Outcome.FAILED,
    "CONGESTION": Outcome.FAILED,
}


def pbx_zone(name: str | None) -> tzinfo:
    """The PBX's clock: an IANA zone; ValueError for a name that is not one. The default
    still works on a host without a zone database (Bangkok keeps no daylight saving)."""
    name = name or DEFAULT_TIME_ZONE
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        if name == DEFAULT_TIME_ZONE:
            return timezone(timedelta(hours=7), DEFAULT_TIME_ZONE)
        raise ValueError("not a known IANA time zone") from None


class PromptCallConnector:
    """One promptCall PBX, reached with its API key pair."""

    num_records = NUM_RECORDS
    window = WINDOW

    def __init__(self, config: Mapping[str, Any], policy: NetworkPolicy) -> None:
        base_url = str(config["baseUrl"]).rstrip("/").removesuffix("/pbxws.php")
        auth = httpx.BasicAuth(str(config["apiKey"]), str(config["apiSecret"]))
        self._zone = pbx_zone(config.get("timeZone"))
        self._policy = policy
        self._client = ProviderClient(policy, base_url, auth=auth)

    async def check(self) -> None:
        now = floor_second(datetime.now(UTC))
        await self._cdrs(now - timedelta(minutes=1), now, limit=1)

    async def list_calls(
        self, since: datetime, until: datetime, *, after: str | None = None
    ) -> AsyncIterator[CallRecord]:
        for start, end in windows(utc(since), utc(until), self.window):
            async for record in self._walk(start, end):
                yield record

    @asynccontextmanager
    async def open_recording(self, ref: str) -> AsyncIterator[AudioStream]:
        response = await self._find_recording(_lookups(ref))
        try:
            content_type = response.headers.get("content-type", "application/octet-stream")
            async with audio_stream(response, content_type) as audio:
                yield audio
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- listing -------------------------------------------------------------------------

    async def _walk(self, start: datetime, end: datetime) -> AsyncIterator[CallRecord]:
        """Calls in [start, end); a full answer may be cut, so its range is split."""
        rows = await self._cdrs(start, end, limit=self.num_records)
        if len(rows) >= self.num_records and (parts := halves(start, end)):
            for part in parts:
                async for record in self._walk(*part):
                    yield record
            return
        seen: set[str] = set()
        for record in sorted(map(self._record, rows), key=lambda r: r.started_at):
            if first_sighting(record, start, end, seen):
                yield record

    async def _cdrs(self, start: datetime, end: datetime, *, limit: int) -> list[dict[str, Any]]:
        query = {
            "numRecords": str(limit),
            "startTime": self._pbx_time(floor_second(start)),
            "endTime": self._pbx_time(ceil_second(end)),
        }
        body = json_object(await checked_json(await self._send("/pbxws.php/cdrapi", query), self._policy))
        _raise_failure(body)
        try:
            return object_list(body["value"])
        except (KeyError, UnexpectedAnswer):
            raise UnreadableAnswer("value") from None

    def _record(self, row: dict[str, Any]) -> CallRecord:
        uniqueid = row.get("uniqueid")
        if not isinstance(uniqueid, str | int) or not _UNIQUEID.fullmatch(str(uniqueid)):
            raise UnreadableAnswer("uniqueid")
        uniqueid = str(uniqueid)
        calldate = _first(row, _TIME_FIELDS)
        if calldate is None:
            raise UnreadableAnswer("calldate")
        try:
            started = datetime.strptime(calldate, _TIME).replace(tzinfo=self._zone).astimezone(UTC)
        except ValueError:
            raise UnreadableAnswer("calldate") from None
        duration = duration_field(row, "duration")
        src, dst = str(row.get("src") or ""), str(row.get("dst") or "")
        filename = _first(row, _FILE_FIELDS)
        # A row without any file column may still have audio; one with an empty file has none.
        recorded = bool(filename) or not any(name in row for name in _FILE_FIELDS)
        return CallRecord(
            external_id=uniqueid,
            started_at=started,
            duration_seconds=max(0.0, duration),
            caller=src,
            callee=dst,
            direction=_direction(src, dst, str(row.get("dcontext") or "")),
            outcome=_OUTCOMES.get(str(row.get("disposition") or "").upper(), Outcome.UNKNOWN),
            recording_ref=_ref(uniqueid, filename, src, dst, calldate) if recorded else None,
        )

    # -- recordings ----------------------------------------------------------------------

    async def _find_recording(self, lookups: list[dict[str, str]]) -> httpx.Response:
        """The first look-up the PBX answers with audio (the response, open); a "not found"
        tries the next, anything else (an auth failure, a fault) ends the search."""
        for params in lookups:
            response = await self._send("/pbxws.php/recapi", params)
            try:
                raise_for_status(response, not_found=RecordingNotFound)
                content_type = response.headers.get("content-type", "application/octet-stream")
                if "json" in content_type or content_type.startswith("text/"):
                    _raise_failure(await self._read_json(response), not_found=RecordingNotFound)
                    raise UnexpectedAnswer()
            except RecordingNotFound:
                await response.aclose()
                continue
            except BaseException:
                await response.aclose()
                raise
            return response
        raise RecordingNotFound()

    # -- requests ------------------------------------------------------------------------

    async def _send(self, path: str, params: dict[str, str]) -> httpx.Response:
        return await self._client.send(self._client.build_request("GET", path, params=params))

    async def _read_json(self, response: httpx.Response) -> dict[str, Any]:
        with connector_errors():
            return json_object(await read_json(response, self._policy))

    def _pbx_time(self, moment: datetime) -> str:
        return moment.astimezone(self._zone).strftime(_TIME)


def _first(row: dict[str, Any], names: tuple[str, ...]) -> str | None:
    """The first of ``names`` the row has, as text (None when it has none of them)."""
    for name in names:
        if name in row and row[name] is not None:
            return str(row[name])
    return None


def _ref(uniqueid: str, filename: str | None, src: str, dst: str, calldate: str) -> str:
    """Every look-up recapi may answer to, as one opaque string."""
    fields = {"uniqueid": uniqueid}
    if filename and _FILENAME.fullmatch(filename) and ".." not in filename:
        fields["filename"] = filename
    if _CALLDATE.fullmatch(calldate) and _PARTY.fullmatch(src) and _PARTY.fullmatch(dst):
        fields.update(src=src, dst=dst, calldate=calldate)
    return urlencode(fields)


def _lookups(ref: str) -> list[dict[str, str]]:
    """The recapi queries to try, in order; RecordingNotFound when the ref names none."""
    if _UNIQUEID.fullmatch(ref):  # a ref stored before look-ups were kept: uniqueid alone
        return [{"uniqueid": ref}]
    try:
        fields = dict(parse_qsl(ref, strict_parsing=True))
    except ValueError:
        raise RecordingNotFound() from None
    lookups = []
    if _UNIQUEID.fullmatch(fields.get("uniqueid", "")):
        lookups.append({"uniqueid": fields["uniqueid"]})
    filename = fields.get("filename", "")
    if _FILENAME.fullmatch(filename) and ".." not in filename:
        lookups.append({"filename": filename})
    src, dst, calldate = fields.get("src", ""), fields.get("dst", ""), fields.get("calldate", "")
    if _PARTY.fullmatch(src) and _PARTY.fullmatch(dst) and _CALLDATE.fullmatch(calldate):
        lookups.append({"src": src, "dst": dst, "calldate": calldate})
    if not lookups:
        raise RecordingNotFound()
    return lookups


def _raise_failure(body: dict[str, Any], *, not_found: type[ConnectorError] = UnexpectedAnswer) -> None:
    """Turn ``{"success": false, "msg": ...}`` into a fixed error; the msg is never shown."""
    if body.get("success") is True:
        return
    if "success" not in body:
        raise UnreadableAnswer("success")
    msg = str(body.get("msg") or "").lower()
    if any(word in msg for word in _AUTH_WORDS):
        raise AuthenticationFailed()
    raise not_found()


def _direction(src: str, dst: str, context: str) -> Direction:
    """Asterisk CDRs carry no direction: trunk contexts mean inbound, else extensions tell."""
    if context.startswith(_INBOUND_CONTEXTS):
        return Direction.INBOUND
    src_ext, dst_ext = _is_extension(src), _is_extension(dst)
    if src_ext and dst_ext:
        return Direction.INTERNAL
    return Direction.OUTBOUND if src_ext else Direction.INBOUND


def _is_extension(number: str) -> bool:
    return number.isdigit() and len(number) <= 5
