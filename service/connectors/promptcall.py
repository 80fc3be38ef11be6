"""promptCall PBX web service (``/pbxws.php/<action>``): CDRs and their recordings.

Why it looks the way it does:

- The token is base64(apiKey:apiSecret) sent as HTTP Basic; it never expires, so there is
  no login round trip and nothing to renew.
- ``cdrapi`` has no paging: it answers at most ``numRecords`` rows of a ``startTime`` ..
  ``endTime`` range. Ranges are asked one ``window`` at a time; a range that comes back
  full may have been cut, so it is split in half and asked again, until every range is
  answered short. Rows are kept by their own ``calldate`` in ``[start, end)`` so a call on a
  window edge is yielded once, whether the server's ends are inclusive or not.
- Times are the PBX's wall clock. The service is Thai and Asterisk-based (CDR columns
  ``calldate``, ``src``, ``dst``, ``uniqueid``), so they are read as Asia/Bangkok (UTC+7,
  no daylight saving): inferred, not documented.
- ``recapi`` answers audio as ``application/octet-stream``, or a JSON ``success: false``.

``CallRecord.external_id`` and ``recording_ref`` are both the CDR ``uniqueid``
(``recording_ref`` is None when the row names no ``recordingfile``).
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
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
    NetworkPolicy,
    ProviderClient,
    audio_stream,
    checked_json,
    connector_errors,
    raise_for_status,
    read_json,
)

PBX_TZ = timezone(timedelta(hours=7), "Asia/Bangkok")
NUM_RECORDS = 500
WINDOW = timedelta(days=1)
_TIME = "%Y-%m-%d %H:%M:%S"
_UNIQUEID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_AUTH_WORDS = ("auth", "token", "key", "secret", "permission", "denied", "login")
_INBOUND_CONTEXTS = ("from-trunk", "from-pstn", "from-did", "ext-did")
_OUTCOMES = {
    "ANSWERED": Outcome.ANSWERED,
    "NO ANSWER": Outcome.MISSED,
    "BUSY": Outcome.BUSY,
    "FAILED": Outcome.FAILED,
    "CONGESTION": Outcome.FAILED,
}


class PromptCallConnector:
    """One promptCall PBX, reached with its API key pair."""

    num_records = NUM_RECORDS
    window = WINDOW

    def __init__(self, config: Mapping[str, Any], policy: NetworkPolicy) -> None:
        base_url = str(config["baseUrl"]).rstrip("/").removesuffix("/pbxws.php")
        auth = httpx.BasicAuth(str(config["apiKey"]), str(config["apiSecret"]))
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
        if not _UNIQUEID.fullmatch(ref):
            raise RecordingNotFound()
        response = await self._send("/pbxws.php/recapi", {"uniqueid": ref})
        try:
            raise_for_status(response, not_found=RecordingNotFound)
            content_type = response.headers.get("content-type", "application/octet-stream")
            if "json" in content_type or content_type.startswith("text/"):
                _raise_failure(await self._read_json(response), not_found=RecordingNotFound)
                raise UnexpectedAnswer()
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
        for record in sorted(map(_record, rows), key=lambda r: r.started_at):
            if first_sighting(record, start, end, seen):
                yield record

    async def _cdrs(self, start: datetime, end: datetime, *, limit: int) -> list[dict[str, Any]]:
        query = {
            "numRecords": str(limit),
            "startTime": _pbx_time(floor_second(start)),
            "endTime": _pbx_time(ceil_second(end)),
        }
        body = json_object(await checked_json(await self._send("/pbxws.php/cdrapi", query), self._policy))
        _raise_failure(body)
        return object_list(body.get("value") or [])

    # -- requests ------------------------------------------------------------------------

    async def _send(self, path: str, params: dict[str, str]) -> httpx.Response:
        return await self._client.send(self._client.build_request("GET", path, params=params))

    async def _read_json(self, response: httpx.Response) -> dict[str, Any]:
        with connector_errors():
            return json_object(await read_json(response, self._policy))


def _raise_failure(body: dict[str, Any], *, not_found: type[ConnectorError] = UnexpectedAnswer) -> None:
    """Turn ``{"success": false, "msg": ...}`` into a fixed error; the msg is never shown."""
    if body.get("success") is True:
        return
    msg = str(body.get("msg") or "").lower()
    if any(word in msg for word in _AUTH_WORDS):
        raise AuthenticationFailed()
    raise not_found()


def _record(row: dict[str, Any]) -> CallRecord:
    try:
        uniqueid = str(row["uniqueid"])
        started = datetime.strptime(str(row["calldate"]), _TIME).replace(tzinfo=PBX_TZ).astimezone(UTC)
        duration = float(row.get("duration") or 0)
    except (KeyError, TypeError, ValueError):
        raise UnexpectedAnswer() from None
    if not math.isfinite(duration) or not _UNIQUEID.fullmatch(uniqueid):
        raise UnexpectedAnswer()
    src, dst = str(row.get("src") or ""), str(row.get("dst") or "")
    recorded = "recordingfile" not in row or bool(row.get("recordingfile"))
    return CallRecord(
        external_id=uniqueid,
        started_at=started,
        duration_seconds=max(0.0, duration),
        caller=src,
        callee=dst,
        direction=_direction(src, dst, str(row.get("dcontext") or "")),
        outcome=_OUTCOMES.get(str(row.get("disposition") or "").upper(), Outcome.UNKNOWN),
        recording_ref=uniqueid if recorded else None,
    )


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


def _pbx_time(moment: datetime) -> str:
    return moment.astimezone(PBX_TZ).strftime(_TIME)
