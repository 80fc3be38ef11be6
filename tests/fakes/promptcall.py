"""A fake promptCall PBX web service (``/pbxws.php/<action>``, seed 001).

Protocol as documented (seed 001): token = base64(apiKey:apiSecret), accepted as
``Authorization: Basic <token>``, ``?token=``, or ``{"token": ...}`` in a JSON body; request
data from the query string or the JSON body. ``cdrapi`` (``numRecords``, ``startTime``,
``endTime`` as ``yyyy-mm-dd hh:mm:ss``) answers ``{"success":true,"value":[cdr,...]}``;
``recapi`` finds a recording by ``uniqueid``, by ``filename``, or by ``src`` + ``dst`` +
``calldate`` (the seed's "3 filter option") and answers ``application/octet-stream`` or
``{"success":false,"msg":...}``.

Inferred and enforced: CDR rows carry Asterisk's ``cdr`` table columns (``calldate``, ``clid``,
``src``, ``dst``, ``dcontext``, ``channel``, ``dstchannel``, ``lastapp``, ``duration``,
``billsec``, ``disposition``, ``uniqueid``, and FreePBX's ``recordingfile``); the window is
inclusive at both ends; rows come oldest first, cut at ``numRecords``; ``numRecords`` over
``max_records`` is refused. A bad token answers 401 ``{"success":false,"msg":...}``.

Switches for what the documentation leaves open (each a guess a connector must not rely on):

- ``tz``: the PBX's wall clock, in which ``calldate``, ``startTime`` and ``endTime`` are
  read and written. Default Asia/Bangkok (a Thai, Asterisk-based service; not documented).
- ``recapi_lookups``: which of ``"uniqueid"``, ``"filename"``, ``"src+dst+calldate"`` this
  PBX answers; the others are ignored, as if not sent ("File not found").
- ``columns``: renames of CDR columns, e.g. ``{"calldate": "start", "recordingfile":
  "record"}`` (Asterisk's own CDR variable is ``start``; some schemas name the file
  ``record``).
- ``drop_value = n``: the next n ``cdrapi`` answers are ``{"success": true}`` without ``value``.

Helpers: ``add_call(start, ...)`` -> ``PromptCallCdr`` (``audio`` is a ``Blob`` or None),
``token()`` (the valid token); settings ``api_key``, ``api_secret``, ``max_records``.
The token is static (derived from the key pair): change ``api_secret`` to revoke it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from tests.fakes.httpserver import Blob, FakeServer, Request, Response

PBX_TZ = timezone(timedelta(hours=7))  # Asia/Bangkok: UTC+7, no daylight saving
LOOKUPS = ("uniqueid", "filename", "src+dst+calldate")
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

    @property
    def filename(self) -> str:
        return f"{self.uniqueid}.wav" if self.audio else ""

    def calldate(self, tz: tzinfo) -> str:
        return self.start.astimezone(tz).strftime(_TIME)

    def as_json(self, tz: tzinfo) -> dict[str, Any]:
        return {
            "calldate": self.calldate(tz),
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
            "recordingfile": self.filename,
        }


class FakePromptCall(FakeServer):
    """A promptCall PBX holding CDRs; handlers run under ``lock``."""

    def __init__(
        self, *, api_key: str = "pc-key", api_secret: str = "pc-secret-value", max_records: int = 1000
    ) -> None:
        super().__init__()
        self.api_key, self.api_secret, self.max_records = api_key, api_secret, max_records
        self.tz: tzinfo = PBX_TZ
        self.recapi_lookups: set[str] = set(LOOKUPS)
        self.columns: dict[str, str] = {}
        self.drop_value = 0
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
            start, end = self._time(data["startTime"]), self._time(data["endTime"])
            limit = int(data.get("numRecords", 100))
        except (KeyError, ValueError):
            return _fail("Invalid parameter")
        if not 1 <= limit <= self.max_records:
            return _fail(f"numRecords must be 1-{self.max_records}")
        if self.drop_value > 0:
            self.drop_value -= 1
            return Response.json({"success": True})
        rows = sorted((c for c in self.calls.values() if start <= c.start <= end), key=lambda c: c.start)
        return Response.json({"success": True, "value": [self._row(c) for c in rows[:limit]]})

    def _row(self, cdr: PromptCallCdr) -> dict[str, Any]:
        return {self.columns.get(name, name): value for name, value in cdr.as_json(self.tz).items()}

    def _recapi(self, req: Request) -> Response:
        data = _data(req)
        if not self._authorised(req, data):
            return _fail("Authentication failed", 401)
        cdr = self._find(data)
        if cdr is None or cdr.audio is None:
            return _fail("File not found")
        headers = {"Content-Type": "application/octet-stream"}
        return Response(200, headers, cdr.audio.chunks(), length=cdr.audio.size)

    def _find(self, data: dict[str, Any]) -> PromptCallCdr | None:
        """The CDR a recapi request names, by the first look-up this PBX answers."""
        given = {
            key: str(data[key]) for key in ("uniqueid", "filename", "src", "dst", "calldate") if key in data
        }
        for cdr in self.calls.values():
            if "uniqueid" in self.recapi_lookups and given.get("uniqueid") == cdr.uniqueid:
                return cdr
            if "filename" in self.recapi_lookups and cdr.filename and given.get("filename") == cdr.filename:
                return cdr
            if "src+dst+calldate" in self.recapi_lookups and (
                given.get("src"),
                given.get("dst"),
                given.get("calldate"),
            ) == (cdr.src, cdr.dst, cdr.calldate(self.tz)):
                return cdr
        return None

    def _authorised(self, req: Request, data: dict[str, Any]) -> bool:
        header = req.headers.get("authorization", "")
        given = header[6:] if header.startswith("Basic ") else str(data.get("token", ""))
        return given == self.token()

    def _time(self, raw: str) -> datetime:
        return datetime.strptime(raw, _TIME).replace(tzinfo=self.tz)


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


def _fail(msg: str, status: int = 200) -> Response:
    return Response.json({"success": False, "msg": msg}, status)
