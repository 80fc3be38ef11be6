"""A fake 3CX v20 PBX: XAPI client credentials, web-client login, OData recordings.

Protocol as documented (PROVIDERS.md): ``POST /connect/token`` (form, client credentials)
and ``POST /webclient/api/Login/GetAccessToken`` (JSON user login) issue 60-second
bearer tokens; ``GET /xapi/v1/Defs`` proves one; ``GET /xapi/v1/Recordings`` takes a small
OData subset (``$filter`` with ``Id``/``StartTime`` comparisons joined by ``and``,
``$orderby=Id asc|desc``, ``$top`` at most 100 as the real one enforces, ``$skip``,
``$count``); ``GET /xapi/v1/Recordings/Pbx.DownloadRecording(recId=N)`` streams ``audio/x-wav``.

Helpers: ``add_call(start, ...)`` -> ``ThreeCXCall`` (its ``audio`` is a ``Blob``),
``expire_tokens()``; settings ``client_id``/``client_secret``, ``username``/``password``,
``tokens.lifetime``. A bad or expired bearer token answers 401 with an empty body, as 3CX does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from tests.fakes.httpserver import Blob, FakeServer, Handler, Request, Response, Tokens

MAX_TOP = 100
_CLAUSE = re.compile(r"(\w+) (eq|ne|gt|ge|lt|le) (\S+)")
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}


@dataclass(frozen=True, slots=True)
class ThreeCXCall:
    id: int
    start: datetime
    duration: float
    call_type: str
    from_number: str
    to_number: str
    audio: Blob

    def as_json(self) -> dict[str, Any]:
        end = self.start + timedelta(seconds=self.duration)
        return {
            "Id": self.id,
            "StartTime": _iso(self.start),
            "EndTime": _iso(end),
            "CallType": self.call_type,
            "FromCallerNumber": self.from_number,
            "FromDisplayName": f"Caller {self.from_number}",
            "ToCallerNumber": self.to_number,
            "FromDidNumber": "",
            "ToDidNumber": "",
            "RecordingUrl": f"/recordings/{self.id}.wav",
        }


class _BadQuery(Exception):
    pass


class FakeThreeCX(FakeServer):
    """A 3CX PBX holding recorded calls; handlers run on the server thread under ``lock``."""

    def __init__(
        self,
        *,
        client_id: str = "xapi-client",
        client_secret: str = "xapi-secret-value",
        username: str = "1000",
        password: str = "webclient-pass",
        token_lifetime: float = 60.0,
    ) -> None:
        super().__init__()
        self.client_id, self.client_secret = client_id, client_secret
        self.username, self.password = username, password
        self.tokens = Tokens(token_lifetime)
        self.calls: dict[int, ThreeCXCall] = {}
        self.route("POST", r"/connect/token", self._token)
        self.route("POST", r"/webclient/api/Login/GetAccessToken", self._login)
        self.route("GET", r"/xapi/v1/Defs", self._authed(self._defs))
        self.route("GET", r"/xapi/v1/Recordings", self._authed(self._recordings))
        download = r"/xapi/v1/Recordings/Pbx\.DownloadRecording\(recId=(?P<id>\d+)\)"
        self.route("GET", download, self._authed(self._download))

    def add_call(
        self,
        start: datetime,
        *,
        duration: float = 30.0,
        call_type: str = "InboundExternal",
        from_number: str = "0812345678",
        to_number: str = "101",
        size: int = 4096,
        audio: Blob | None = None,
    ) -> ThreeCXCall:
        """Record a call; Ids grow in insertion order, like the PBX's."""
        with self.lock:
            rec_id = max(self.calls, default=0) + 1
            blob = audio or Blob(seed=rec_id, size=size)
            call = ThreeCXCall(
                rec_id, start.astimezone(UTC), duration, call_type, from_number, to_number, blob
            )
            self.calls[rec_id] = call
            return call

    def expire_tokens(self) -> None:
        self.tokens.expire_all()

    # -- handlers ------------------------------------------------------------------------

    def _token(self, req: Request) -> Response:
        form = dict(parse_qsl(req.body.decode()))
        if form.get("grant_type") != "client_credentials":
            return Response.json({"error": "unsupported_grant_type"}, 400)
        if (form.get("client_id"), form.get("client_secret")) != (self.client_id, self.client_secret):
            return Response.json({"error": "unauthorized", "error_description": "bad client"}, 401)
        return Response.json(self._token_body())

    def _login(self, req: Request) -> Response:
        body = req.json()
        if (body.get("Username"), body.get("Password")) != (self.username, self.password):
            return Response.json({"Status": "AuthFailed", "Token": None, "TwoFactorAuth": None})
        return Response.json({"Status": "AuthSuccess", "Token": self._token_body(), "TwoFactorAuth": None})

    def _token_body(self) -> dict[str, Any]:
        lifetime = self.tokens.lifetime
        lifetime = int(lifetime) if lifetime.is_integer() else lifetime  # 3CX sends 60; tests go shorter
        return {"token_type": "Bearer", "expires_in": lifetime, "access_token": self.tokens.issue()}

    def _authed(self, handler: Handler) -> Handler:
        def check(req: Request) -> Response:
            auth = req.headers.get("authorization", "")
            token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
            return handler(req) if self.tokens.valid(token) else Response(401)

        return check

    def _defs(self, req: Request) -> Response:
        return Response.json({"@odata.context": "$metadata#Defs(Id)", "Id": 1})

    def _recordings(self, req: Request) -> Response:
        try:
            rows = self._query(req.query)
        except _BadQuery as exc:
            return Response.json({"error": {"code": "", "message": str(exc)}}, 400)
        body: dict[str, Any] = {"@odata.context": "$metadata#Recordings", "value": rows}
        if req.query.get("$count") == "true":
            body["@odata.count"] = len(rows)
        return Response.json(body)

    def _query(self, query: dict[str, str]) -> list[dict[str, Any]]:
        calls = [c for c in self.calls.values() if _matches(c, query.get("$filter", ""))]
        order = query.get("$orderby", "Id asc").split()
        if order[0] != "Id":
            raise _BadQuery("unsupported $orderby")
        calls.sort(key=lambda c: c.id, reverse=order[-1] == "desc")
        top, skip = _int(query, "$top", len(calls)), _int(query, "$skip", 0)
        if top > MAX_TOP:
            raise _BadQuery(f"The limit of '{MAX_TOP}' for Top query has been exceeded.")
        return [c.as_json() for c in calls[skip : skip + top]]

    def _download(self, req: Request) -> Response:
        call = self.calls.get(int(req.params["id"]))
        if call is None:
            return Response(404)
        headers = {"Content-Type": "audio/x-wav"}
        return Response(200, headers, call.audio.chunks(), length=call.audio.size)


def _matches(call: ThreeCXCall, expression: str) -> bool:
    if not expression:
        return True
    for clause in expression.split(" and "):
        match = _CLAUSE.fullmatch(clause.strip())
        if match is None:
            raise _BadQuery("unsupported $filter")
        name, op, literal = match.groups()
        if name == "Id":
            value: Any = (call.id, _parse_int(literal))
        elif name == "StartTime":
            value = (call.start, _parse_time(literal))
        else:
            raise _BadQuery(f"unknown property {name}")
        if not _OPS[op](*value):
            return False
    return True


def _parse_int(literal: str) -> int:
    try:
        return int(literal)
    except ValueError as exc:
        raise _BadQuery("bad integer literal") from exc


def _parse_time(literal: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(literal.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _BadQuery("bad DateTimeOffset literal") from exc
    if parsed.tzinfo is None:
        raise _BadQuery("DateTimeOffset literal needs an offset")
    return parsed


def _int(query: dict[str, str], key: str, default: int) -> int:
    raw = query.get(key)
    if raw is None:
        return default
    if not raw.isdigit():
        raise _BadQuery(f"bad {key}")
    return int(raw)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
