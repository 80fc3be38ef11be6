"""A fake DTAC OneCall voice record server (OrecX OrkTrack REST).

Protocol as documented (PROVIDERS.md) and as public OrkTrack clients use it (see the
connector's docstring for the sources): ``POST /orktrack/rest/user/login?...`` with
``Authorization: Basic base64(user:pass)`` answers ``{"accesstoken": GUID}`` (401 on bad
credentials); ``GET /orktrack/rest/recordings?range=custom&startdate=YYYYMMDD_HHMMSS&enddate=...
&sort=&page=N&pagesize=M&maxresults=-1`` with ``Authorization: <accesstoken>`` answers
``{"objects", "nextPageUri", "limitReached", "page", "pageSize", "resultCount"}``; audio is
``GET /orktrack/rest/mediastream/{id}`` (what public clients fetch) or the row's
``recordingURL``, with the same header. Unknown tokens answer 401, expired ones 403.

Inferred (not documented) and enforced so a connector must cope: both range ends are
inclusive; ``pagesize`` over ``max_pagesize`` (500) is a 400; a range holding more than
``max_results`` rows is cut there with ``limitReached: true`` (split the range); a positive
``maxresults`` lowers that cut, ``0`` or ``-1`` (what clients send) leaves the server's.

Switches for how real servers misbehave (each with its source):

- ``stale_as_200``: an expired or unknown token is answered HTTP 200
  ``{"error": "invalid access token"}`` instead of 401/403 (issue 10, reported of DTAC's
  server; public clients only look at 401/403, then read ``data.objects ?? []``).
- ``drop_objects = n``: the next n listing answers are HTTP 200 without ``objects``
  (``{"resultCount": 0}``): what a client reading ``objects ?? []`` takes for an empty page.
- ``strict_query``: a listing without ``sort`` and ``maxresults`` is a 400. Every public
  client sends ``sort=`` and ``maxresults`` (``-1``; one sends ``0``); what the server does
  without them is not known, so a connector may not rely on it.
- ``next_page_uri = False``: answers carry no ``nextPageUri``; public clients never read it,
  they ask ``page=N+1`` until a short page.
- ``recording_url``: ``"absolute"`` (default), ``"empty"`` or ``"relative"``; public clients
  ignore the field and fetch ``/orktrack/rest/mediastream/{id}``.
- ``page_cap``: serve at most this many rows a page, whatever ``pagesize`` asks, and say so
  in ``pageSize`` (inferred: clients ask 500 to 10000 and none says what the server caps).
- ``row_fields``: values merged into every row, for rows a connector cannot read (issue 10,
  item 7: that is an error naming the field, never a skipped row).

Helpers: ``add_call(start, ...)`` -> ``DtacCall`` (``audio`` is a ``Blob`` or None),
``expire_tokens()``; settings ``username``, ``password``, ``max_pagesize``, ``max_results``,
``link_base`` (point ``nextPageUri`` at another origin), ``media_base`` (``recordingURL``'s).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlencode

from tests.fakes.httpserver import Blob, FakeServer, Handler, Request, Response, Tokens

_STAMP = "%Y%m%d_%H%M%S"
STALE_ANSWER = {"error": "invalid access token"}


@dataclass(frozen=True, slots=True)
class DtacCall:
    id: int
    start: datetime
    duration: int
    direction: str
    local_party: str
    remote_party: str
    audio: Blob | None


class FakeDtac(FakeServer):
    """An OrkTrack server holding recorded calls; handlers run under ``lock``."""

    def __init__(
        self,
        *,
        username: str = "+66812345678",
        password: str = "dtac-pass-value",
        max_pagesize: int = 500,
        max_results: int = 10_000,
        token_lifetime: float = 3600.0,
    ) -> None:
        super().__init__()
        self.username, self.password = username, password
        self.max_pagesize, self.max_results = max_pagesize, max_results
        self.link_base: str | None = None  # where nextPageUri points; None: this server
        self.media_base: str | None = None  # where recordingURL points; None: this server
        self.stale_as_200 = False
        self.drop_objects = 0
        self.strict_query = False
        self.next_page_uri = True
        self.recording_url: Literal["absolute", "empty", "relative"] = "absolute"
        self.row_fields: dict[str, Any] = {}
        self.page_cap: int | None = None
        self.tokens = Tokens(token_lifetime)
        self.calls: dict[int, DtacCall] = {}
        self.route("POST", r"/orktrack/rest/user/login", self._login)
        self.route("GET", r"/orktrack/rest/recordings", self._authed(self._list))
        self.route("GET", r"/orktrack/rest/recordings/(?P<id>\d+)/audio", self._authed(self._audio))
        self.route("GET", r"/orktrack/rest/mediastream/(?P<id>\d+)", self._authed(self._audio))

    def add_call(
        self,
        start: datetime,
        *,
        duration: int = 30,
        direction: str = "IN",
        local_party: str = "1001",
        remote_party: str = "0812345678",
        size: int = 4096,
        recorded: bool = True,
        audio: Blob | None = None,
    ) -> DtacCall:
        with self.lock:
            rec_id = max(self.calls, default=1000) + 1
            blob = (audio or Blob(seed=rec_id, size=size)) if recorded else None
            start = start.astimezone(UTC).replace(microsecond=0)
            call = DtacCall(rec_id, start, duration, direction, local_party, remote_party, blob)
            self.calls[rec_id] = call
            return call

    def expire_tokens(self) -> None:
        self.tokens.expire_all()

    # -- handlers ------------------------------------------------------------------------

    def _login(self, req: Request) -> Response:
        if _basic(req.headers.get("authorization", "")) != (self.username, self.password):
            return Response.json({"error": "Invalid username or password"}, 401)
        token = self.tokens.issue()
        return Response.json({"accesstoken": token, "username": self.username, "userId": str(uuid.uuid4())})

    def _authed(self, handler: Handler) -> Handler:
        def check(req: Request) -> Response:
            token = req.headers.get("authorization")
            if self.tokens.valid(token):
                return handler(req)
            if self.stale_as_200:
                return Response.json(STALE_ANSWER)
            status = 403 if self.tokens.known(token) else 401
            return Response.json({"error": "Not authorized"}, status)

        return check

    def _list(self, req: Request) -> Response:
        q = req.query
        try:
            start, end = _stamp(q["startdate"]), _stamp(q["enddate"])
            page, size = int(q.get("page", "1")), int(q.get("pagesize", "50"))
            asked_max = int(q.get("maxresults") or "0")
        except (KeyError, ValueError):
            return Response.json({"error": "Bad request"}, 400)
        if q.get("range") != "custom" or page < 1 or not 1 <= size <= self.max_pagesize:
            return Response.json({"error": "Bad request"}, 400)
        if self.strict_query and ("sort" not in q or "maxresults" not in q):
            return Response.json({"error": "Bad request"}, 400)
        if self.drop_objects > 0:
            self.drop_objects -= 1
            return Response.json({"resultCount": 0})
        cap = min(self.max_results, asked_max) if asked_max > 0 else self.max_results
        size = min(size, self.page_cap or size)
        hits = sorted(
            (c for c in self.calls.values() if start <= c.start <= end), key=lambda c: (c.start, c.id)
        )
        limited = len(hits) > cap
        hits = hits[:cap]
        rows = hits[(page - 1) * size : page * size]
        more = page * size < len(hits)
        base = self.link_base or self.base_url
        next_uri = f"{base}{req.path}?{urlencode({**q, 'page': page + 1})}" if more else None
        answer: dict[str, Any] = {
            "objects": [self._row(c) for c in rows],
            "limitReached": limited,
            "page": page,
            "pageSize": size,
            "resultCount": len(hits),
        }
        if self.next_page_uri:
            answer["nextPageUri"] = next_uri
        return Response.json(answer)

    def _row(self, call: DtacCall) -> dict[str, Any]:
        base = self.media_base or self.base_url
        path = f"/orktrack/rest/recordings/{call.id}/audio"
        url = {"absolute": f"{base}{path}", "relative": path, "empty": ""}[self.recording_url]
        return {
            "type": "recordingDto",
            "id": call.id,
            "timestamp": call.start.strftime("%Y-%m-%d %H:%M:%S"),
            "duration": call.duration,
            "localParty": call.local_party,
            "remoteParty": call.remote_party,
            "direction": call.direction,
            "recordingURL": url if call.audio else "",
            **self.row_fields,
        }

    def _audio(self, req: Request) -> Response:
        call = self.calls.get(int(req.params["id"]))
        if call is None or call.audio is None:
            return Response.json({"error": "Not found"}, 404)
        headers = {"Content-Type": "audio/wav"}
        return Response(200, headers, call.audio.chunks(), length=call.audio.size)


def _basic(header: str) -> tuple[str, str] | None:
    if not header.startswith("Basic "):
        return None
    try:
        user, sep, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _stamp(raw: str) -> datetime:
    return datetime.strptime(raw, _STAMP).replace(tzinfo=UTC)
