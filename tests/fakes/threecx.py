"""A fake 3CX v20 PBX: XAPI client credentials, web-client login, OData recordings.

Protocol (PROVIDERS.md, and the sources named beside each switch below):
``POST /connect/token`` (form, client credentials; or ``grant_type=refresh_token`` with
``client_id=Webclient`` and the ``RefreshTokenCookie`` cookie) and
``POST /webclient/api/Login/GetAccessToken`` (JSON user login, answering ``Token`` with an
``access_token`` and a ``refresh_token``) issue bearer tokens; ``GET /xapi/v1/Recordings``
takes a small OData subset (``$filter`` with ``Id``/``StartTime`` comparisons joined by
``and``, ``$orderby=Id asc|desc``, ``$top`` at most 100 as the real one enforces, ``$skip``,
``$count``, ``$select``); ``GET /xapi/v1/Recordings/Pbx.DownloadRecording(recId=N)``
streams ``audio/x-wav``; ``GET /archive/{id}.wav`` (bearer) stands for an archive on the
PBX's own origin. A bad or cancelled bearer token answers 401 with an empty body.

Behaviours, each a switch:

- ``one_active_token`` (default on): issuing a token cancels every earlier one, as the PBX
  keeps one active token (3cx/xapi-tutorial README.md: "only one access token can be
  active at a time"). ``cancel_next(n)``: the next ``n`` tokens are cancelled by another
  login (a connection test, a second process, another integration) before their first use.
- ``expires_in_unit``: ``"seconds"`` (20.0.9 and later) or ``"minutes"`` (before: the
  3cx/xapi-tutorial commit "expires_in is in seconds (according to OAuth) since 20.0.9"
  changes auth.ts from ``expires_in * 60 * 1000`` to ``expires_in * 1000``).
- ``recordings_role`` (default on): off, ``Recordings`` and its download answer 403, as
  for a client whose role may not see recordings (3cx/xapi-tutorial README.md: the API
  client is given a group and a role).
- ``add_call(..., nulls=(...))``: those fields of the row are null (swagger.yaml,
  ``Pbx.Recording``: every field but ``Id`` is nullable, ``StartTime`` and ``EndTime`` too).
- ``add_call(..., archived_url=...)``: ``IsArchived`` true and that ``ArchivedUrl``
  (swagger.yaml ``Pbx.Recording``); ``archiving=True``: ``IsArchived`` true, no URL yet.
  An archived row's audio has left the PBX: ``DownloadRecording`` answers 404.
- ``add_call(..., audio_ready=False)``: the row is listed but its download 404s until
  ``release_audio(id)``.
- ``refresh_tokens`` (default on): the web-client login hands out refresh tokens that
  ``/connect/token`` accepts (a public 3CX v20 client, a Prometheus exporter, posts
  ``client_id=Webclient&grant_type=refresh_token`` with ``RefreshTokenCookie=<token>``);
  off, every refresh answers 400 ``invalid_grant``. ``password_logins`` and
  ``refresh_logins`` count each kind of login.

Helpers: ``add_call(start, ...)`` -> ``ThreeCXCall`` (its ``audio`` is a ``Blob``),
``expire_tokens()``; settings ``client_id``/``client_secret``, ``username``/``password``,
``tokens.lifetime`` (seconds, whatever unit ``expires_in`` is written in).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from typing import Any, Literal
from urllib.parse import parse_qsl

from tests.fakes.httpserver import Blob, FakeServer, Handler, Request, Response, Tokens

MAX_TOP = 100
WEBCLIENT_ID = "Webclient"
_CLAUSE = re.compile(r"(\w+) (eq|ne|gt|ge|lt|le) (\S+)")
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}


@dataclass(slots=True)
class ThreeCXCall:
    id: int
    start: datetime
    duration: float
    call_type: str
    from_number: str
    to_number: str
    audio: Blob
    nulls: frozenset[str] = frozenset()
    archived: bool = False
    archived_url: str | None = None
    audio_ready: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        end = self.start + timedelta(seconds=self.duration)
        row: dict[str, Any] = {
            "Id": self.id,
            "StartTime": _iso(self.start),
            "EndTime": _iso(end),
            "CallType": self.call_type,
            "FromCallerNumber": self.from_number,
            "FromDisplayName": f"Caller {self.from_number}",
            "ToCallerNumber": self.to_number,
            "FromDidNumber": "",
            "ToDidNumber": "",
            "FromDnType": 0,
            "SentimentScore": 0,
            "RecordingUrl": f"/recordings/{self.id}.wav",
            "IsArchived": self.archived,
            "ArchivedUrl": self.archived_url,
            **self.extra,
        }
        return {k: (None if k in self.nulls else v) for k, v in row.items()}

    def start_or_none(self) -> datetime | None:
        return None if "StartTime" in self.nulls else self.start


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
        one_active_token: bool = True,
        expires_in_unit: Literal["seconds", "minutes"] = "seconds",
        recordings_role: bool = True,
        refresh_tokens: bool = True,
    ) -> None:
        super().__init__()
        self.client_id, self.client_secret = client_id, client_secret
        self.username, self.password = username, password
        self.tokens = Tokens(token_lifetime)
        self.one_active_token = one_active_token
        self.expires_in_unit = expires_in_unit
        self.recordings_role = recordings_role
        self.refresh_tokens = refresh_tokens
        self.password_logins = 0
        self.refresh_logins = 0
        self.cancelled_by_rival = 0
        self._cancel_next = 0
        self._refresh: set[str] = set()
        self.calls: dict[int, ThreeCXCall] = {}
        self.route("POST", r"/connect/token", self._token)
        self.route("POST", r"/webclient/api/Login/GetAccessToken", self._login)
        self.route("GET", r"/xapi/v1/Defs", self._authed(self._defs))
        self.route("GET", r"/xapi/v1/Recordings", self._authed(self._recordings))
        download = r"/xapi/v1/Recordings/Pbx\.DownloadRecording\(recId=(?P<id>\d+)\)"
        self.route("GET", download, self._authed(self._download))
        self.route("GET", r"/archive/(?P<id>\d+)\.wav", self._authed(self._archive))

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
        nulls: tuple[str, ...] = (),
        archived_url: str | None = None,
        archiving: bool = False,
        audio_ready: bool = True,
    ) -> ThreeCXCall:
        """Record a call; Ids grow in insertion order, like the PBX's (a late row of a long
        call gets a higher Id than rows of calls that started after it)."""
        with self.lock:
            rec_id = max(self.calls, default=0) + 1
            blob = audio or Blob(seed=rec_id, size=size)
            call = ThreeCXCall(
                rec_id,
                start.astimezone(UTC),
                duration,
                call_type,
                from_number,
                to_number,
                blob,
                nulls=frozenset(nulls),
                archived=archiving or archived_url is not None,
                archived_url=archived_url,
                audio_ready=audio_ready,
            )
            self.calls[rec_id] = call
            return call

    def archive_url(self, call: ThreeCXCall) -> str:
        """Where this PBX serves an archived call's audio on its own origin."""
        return f"{self.base_url}/archive/{call.id}.wav"

    def release_audio(self, rec_id: int) -> None:
        with self.lock:
            self.calls[rec_id].audio_ready = True

    def expire_tokens(self) -> None:
        self.tokens.expire_all()

    def cancel_next(self, count: int) -> None:
        """Another login cancels each of the next ``count`` tokens before it is first used."""
        with self.lock:
            self._cancel_next = count

    # -- handlers ------------------------------------------------------------------------

    def _token(self, req: Request) -> Response:
        form = dict(parse_qsl(req.body.decode()))
        grant = form.get("grant_type")
        if grant == "refresh_token":
            return self._refreshed(req, form)
        if grant != "client_credentials":
            return Response.json({"error": "unsupported_grant_type"}, 400)
        if (form.get("client_id"), form.get("client_secret")) != (self.client_id, self.client_secret):
            return Response.json({"error": "unauthorized", "error_description": "bad client"}, 401)
        self.password_logins += 1
        return Response.json(self._token_body(refresh=False))

    def _refreshed(self, req: Request, form: dict[str, str]) -> Response:
        cookie = SimpleCookie(req.headers.get("cookie", ""))
        morsel = cookie.get("RefreshTokenCookie")
        presented = morsel.value if morsel is not None else None
        if form.get("client_id") != WEBCLIENT_ID or not self.refresh_tokens or presented not in self._refresh:
            return Response.json({"error": "invalid_grant"}, 400)
        self.refresh_logins += 1
        return Response.json(self._token_body(refresh=True))

    def _login(self, req: Request) -> Response:
        body = req.json()
        if (body.get("Username"), body.get("Password")) != (self.username, self.password):
            return Response.json({"Status": "AuthFailed", "Token": None, "TwoFactorAuth": None})
        self.password_logins += 1
        return Response.json(
            {"Status": "AuthSuccess", "Token": self._token_body(refresh=True), "TwoFactorAuth": None}
        )

    def _token_body(self, *, refresh: bool) -> dict[str, Any]:
        lifetime = self.tokens.lifetime
        if self.expires_in_unit == "minutes":
            lifetime = lifetime / 60
        lifetime = int(lifetime) if float(lifetime).is_integer() else lifetime  # 3CX sends 60 (or 1)
        if self.one_active_token:
            self.tokens.expire_all()
        refresh_token = None
        if refresh:
            refresh_token = secrets.token_hex(16)
            self._refresh = {refresh_token}  # a refresh rotates it: the old one is spent
        return {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "access_token": self.tokens.issue(),
            "refresh_token": refresh_token,
        }

    def _authed(self, handler: Handler) -> Handler:
        def check(req: Request) -> Response:
            auth = req.headers.get("authorization", "")
            token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
            if self.tokens.valid(token) and self._cancel_next > 0:
                self._cancel_next -= 1
                self.cancelled_by_rival += 1
                self.tokens.expire_all()  # someone else logged in: ours is cancelled
            return handler(req) if self.tokens.valid(token) else Response(401)

        return check

    def _defs(self, req: Request) -> Response:
        return Response.json({"@odata.context": "$metadata#Defs(Id)", "Id": 1})

    def _forbidden(self) -> Response:
        return Response.json({"error": {"code": "", "message": "Forbidden"}}, 403)

    def _recordings(self, req: Request) -> Response:
        if not self.recordings_role:
            return self._forbidden()
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
        rows = [c.as_json() for c in calls[skip : skip + top]]
        select = [name for name in query.get("$select", "").split(",") if name]
        return [{k: v for k, v in row.items() if k in select} for row in rows] if select else rows

    def _download(self, req: Request) -> Response:
        if not self.recordings_role:
            return self._forbidden()
        call = self.calls.get(int(req.params["id"]))
        if call is None or call.archived or not call.audio_ready:
            return Response(404)
        return _audio(call)

    def _archive(self, req: Request) -> Response:
        call = self.calls.get(int(req.params["id"]))
        return Response(404) if call is None else _audio(call)


def _audio(call: ThreeCXCall) -> Response:
    return Response(200, {"Content-Type": "audio/x-wav"}, call.audio.chunks(), length=call.audio.size)


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
            start = call.start_or_none()
            if start is None:  # OData: a comparison with null is false
                return False
            value = (start, _parse_time(literal))
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
