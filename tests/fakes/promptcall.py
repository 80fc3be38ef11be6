"""A fake promptCall PBX web service (``/pbxws.php/<action>``, seed 001).

Protocol as documented: token = base64(apiKey:apiSecret), accepted as
``Authorization: Basic <token>``, ``?token=``, or ``{"token": ...}`` in a JSON body; request
data from the query string or the JSON body. ``cdrapi`` (``numRecords``, ``startTime``,
``endTime`` as ``yyyy-mm-dd hh:mm:ss``) answers ``{"success":true,"value":[cdr,...]}``;
``recapi?uniqueid=`` answers ``application/octet-stream`` or ``{"success":false,"msg":...}``.

Inferred and enforced: times are the PBX's local time (Asia/Bangkok, UTC+7); the window is
inclusive at both ends; rows come oldest first, cut at ``numRecords``; ``numRecords`` over
``max_records`` is refused. A bad token answers 401 ``{"success":false,"msg":...}``.

Helpers: ``add_call(start, ...)`` -> ``PromptCallCdr`` (``audio`` is a ``Blob`` or None),
``token()`` (the valid token); settings ``api_key``, ``api_secret``, ``max_records``.
The token is static (derived from the key pair): change ``api_secret`` to revoke it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from tests.fakes.httpserver import Blob, FakeServer, Request, Response

PBX_TZ = timezone(timedelta(hours=7))
_TIME = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True, slots=True)
class PromptCallCdr:
    uniqueid: str
    start: datetime
    duration: int
    billsec: int
    src: str
    dst: str
    disposition: str
    dcontext: str
    audio: Blob | None

    def as_json(self) -> dict[str, Any]:
        return {
            "calldate": self.start.astimezone(PBX_TZ).strftime(_TIME),
            "clid": f'"{self.src}" <{self.src}>',
            "src": self.src,
            "dst": self.dst,
            "dcontext": self.dcontext,
            "channel": f"SIP/{self.src}-0000001",
            "dstchannel": f"SIP/{self.dst}-0000002",
            "lastapp": "Dial",
            "duration": str(self.duration),
            "billsec": str(self.billsec),
            "disposition": self.disposition,
            "uniqueid": self.uniqueid,
            "recordingfile": f"{self.uniqueid}.wav" if self.audio else "",
        }


class FakePromptCall(FakeServer):
    """A promptCall PBX holding CDRs; handlers run under ``lock``."""

    def __init__(
        self, *, api_key: str = "pc-key", api_secret: str = "pc-secret-value", max_records: int = 1000
    ) -> None:
        super().__init__()
        self.api_key, self.api_secret, self.max_records = api_key, api_secret, max_records
        self.calls: dict[str, PromptCallCdr] = {}
        for method in ("GET", "POST"):
            self.route(method, r"/pbxws\.php/cdrapi", self._cdrapi)
            self.route(method, r"/pbxws\.php/recapi", self._recapi)

    def add_call(
        self,
        start: datetime,
        *,
        duration: int = 40,
        billsec: int = 30,
        src: str = "0812345678",
        dst: str = "201",
        disposition: str = "ANSWERED",
        dcontext: str = "from-trunk",
        size: int = 4096,
        recorded: bool = True,
        audio: Blob | None = None,
    ) -> PromptCallCdr:
        with self.lock:
            n = len(self.calls) + 1
            start = start.replace(microsecond=0)
            uniqueid = f"{int(start.timestamp())}.{n}"
            blob = (audio or Blob(seed=n, size=size)) if recorded else None
            cdr = PromptCallCdr(uniqueid, start, duration, billsec, src, dst, disposition, dcontext, blob)
            self.calls[uniqueid] = cdr
            return cdr

    def token(self) -> str:
        with self.lock:
            return base64.b64encode(f"{self.api_key}:{self.api_secret}".encode()).decode()

    # -- handlers ------------------------------------------------------------------------

    def _cdrapi(self, req: Request) -> Response:
        data = _data(req)
        if not self._authorised(req, data):
            return _fail("Authentication failed", 401)
        try:
            start, end = _time(data["startTime"]), _time(data["endTime"])
            limit = int(data.get("numRecords", 100))
        except (KeyError, ValueError):
            return _fail("Invalid parameter")
        if not 1 <= limit <= self.max_records:
            return _fail(f"numRecords must be 1-{self.max_records}")
        rows = sorted((c for c in self.calls.values() if start <= c.start <= end), key=lambda c: c.start)
        return Response.json({"success": True, "value": [c.as_json() for c in rows[:limit]]})

    def _recapi(self, req: Request) -> Response:
        data = _data(req)
        if not self._authorised(req, data):
            return _fail("Authentication failed", 401)
        cdr = self.calls.get(str(data.get("uniqueid", "")))
        if cdr is None or cdr.audio is None:
            return _fail("File not found")
        headers = {"Content-Type": "application/octet-stream"}
        return Response(200, headers, cdr.audio.chunks(), length=cdr.audio.size)

    def _authorised(self, req: Request, data: dict[str, Any]) -> bool:
        header = req.headers.get("authorization", "")
        given = header[6:] if header.startswith("Basic ") else str(data.get("token", ""))
        return given == self.token()


def _data(req: Request) -> dict[str, Any]:
    """Query string and JSON body merged, as the PHP service reads either."""
    data: dict[str, Any] = dict(req.query)
    if req.body and req.headers.get("content-type", "").startswith("application/json"):
        try:
            body = json.loads(req.body)
        except ValueError:
            return data
        if isinstance(body, dict):
            data.update(body)
    return data


def _time(raw: str) -> datetime:
    return datetime.strptime(raw, _TIME).replace(tzinfo=PBX_TZ)


def _fail(msg: str, status: int = 200) -> Response:
    return Response.json({"success": False, "msg": msg}, status)
