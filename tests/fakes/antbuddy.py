"""A fake AntBuddy AntRing open API, as strict as its documentation.

- ``GET /oapi/v1/call/histories``: every request's ``hash`` must equal sha256_hex of the
  present parameter values in the documented order (appId, created_from, created_to, limit,
  page) then the app secret; dates must look like ``2018-02-07T02:19:33.000Z``; windows over
  ``max_days`` and limits over ``max_limit`` are refused. Any refusal is a 400, the only error
  the docs name for bad input. Rows are newest first, inclusive of both window ends.
- ``GET /oapi/v1/call/play_recording``: hash = sha256_hex(appId + media + secret); answers the
  URL of the file, in the shape chosen by ``play_shape``, pointing at this server's
  ``/media/{name}?sig=...`` (a signed storage URL: the sig must come back untouched).
- ``GET /media/{name}``: the audio, streamed from a deterministic ``Blob``.

Switches: ``hash_order`` (which order the history hash is checked in: "appIdFirst", the
seed's and the "Use API" page's ``appId + created_from + created_to + limit + page +
appSecret``, docs.antbuddy.us/integration-document-guide/antring/use-api; or "appIdLast",
``created_from + created_to + limit + page + appId + appSecret``, the order another page of
the same docs gives; a server checking the other order than ours answers 400 like any bad
hash), ``play_shape`` ("text", "json_string", "json_url", "json_data"), ``envelope``
("list" for a bare array, "data" for ``{"data": [...]}``, "other" for
``{"items": [...]}``, a shape the docs do not show: a what-if for unreadable answers), ``media_type``, ``on_history`` (a
hook run after each history answer is built, e.g. to add a call mid-walk), ``media_base``
(where the media URL points: the docs say "another address", so another origin; serve it
there with ``mount_media(server)``), ``cookie`` (a ``Set-Cookie`` value on every API answer,
as a load balancer's stickiness cookie would be: undocumented, a what-if for leaks).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from tests.fakes.httpserver import Blob, FakeServer, Request, Response

HISTORY_ORDER = ("appId", "created_from", "created_to", "limit", "page")
HISTORY_ORDERS = {"appIdFirst": HISTORY_ORDER, "appIdLast": (*HISTORY_ORDER[1:], "appId")}
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class FakeAntBuddy(FakeServer):
    """One open-API application and its company's call history."""

    def __init__(
        self,
        *,
        app_id: str = "6544646543674",
        app_secret: str = "ab-secret-9f8e7d6c5b4a",
        max_days: int = 31,
        max_limit: int = 100,
    ) -> None:
        super().__init__()
        self.app_id = app_id
        self.app_secret = app_secret
        self.max_window = timedelta(days=max_days)
        self.max_limit = max_limit
        self.calls: list[dict[str, Any]] = []
        self._times: list[float] = []  # each call's start, kept apart so a test may spoil the row's
        self.media: dict[str, Blob] = {}
        self.play_shape = "json_url"
        self.envelope = "list"
        self.hash_order = "appIdFirst"
        self.hash_refusals = 0  # history requests refused for their hash
        self.media_type = "audio/mpeg"
        self.on_history: Callable[[FakeAntBuddy], None] | None = None
        self.media_base: str | None = None  # where play_recording's URL points; None: this server
        self.cookie: str | None = None
        self._ids = itertools.count(1)
        self.route("GET", r"/oapi/v1/call/histories", self._histories)
        self.route("GET", r"/oapi/v1/call/play_recording", self._play)
        self.route("GET", r"/media/(?P<name>[^/]+)", self._media)

    # -- test helpers -------------------------------------------------------------------

    def add_call(
        self,
        at: datetime,
        *,
        caller: str = "01693608879",
        callee: str = "thutranhtkbee",
        direction: str = "to_ab",
        call_class: str = "trunking",
        status: str = "SUCCESS",
        duration: int = 50,
        billing: int = 43,
        did: str | None = "02873019555",
        recording: bool = True,
        audio_size: int = 2048,
    ) -> dict[str, Any]:
        """A history row as documented; with ``recording`` a media file to go with it."""
        with self.lock:
            n = next(self._ids)
            name = f"call_recording_{sha256_hex(f'rec{n}')[:20]}.mp3" if recording else ""
            if name:
                self.media[name] = Blob(seed=1000 + n, size=audio_size)
            row = {
                "caller": {"number": caller, "type": "realnumber"},
                "callee": {"number": callee, "type": "user", "username": callee[:7]},
                "class": call_class,
                "did_number": did,
                "direction": direction,
                "status_detail": status,
                "duration_seconds": duration,
                "unix_timestamp": int(at.timestamp()),
                "billing_seconds": billing,
                "recording": name,
            }
            self.calls.append(row)
            self._times.append(at.timestamp())
            return row

    def history_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path == "/oapi/v1/call/histories"]

    def mount_media(self, server: FakeServer) -> None:
        """Serve this fake's media files (and their signatures) from ``server`` too."""
        server.route("GET", r"/media/(?P<name>[^/]+)", self._media)

    # -- handlers (server thread, under the lock) ---------------------------------------

    def _histories(self, req: Request) -> Response:
        q = req.query
        signed = "".join(q[k] for k in HISTORY_ORDERS[self.hash_order] if k in q)
        if q.get("appId") != self.app_id or q.get("hash") != sha256_hex(signed + self.app_secret):
            self.hash_refusals += 1
            return _bad("invalid hash")
        try:
            low, high = _parse(q["created_from"]), _parse(q["created_to"])
            limit, page = int(q.get("limit", "20")), int(q.get("page", "1"))
        except (KeyError, ValueError):
            return _bad("invalid parameters")
        if high < low or high - low > self.max_window:
            return _bad("time range must not exceed 31 days")
        if not 1 <= limit <= self.max_limit or page < 1:
            return _bad("invalid limit or page")
        timed = [
            (t, c)
            for t, c in zip(self._times, self.calls, strict=True)
            if low.timestamp() <= t <= high.timestamp()
        ]
        timed.sort(key=lambda pair: pair[0], reverse=True)
        answer = [c for _, c in timed[(page - 1) * limit : page * limit]]
        if self.on_history is not None:
            self.on_history(self)
        body = {"list": answer, "data": {"data": answer}, "other": {"items": answer}}[self.envelope]
        return self._with_cookie(Response.json(body))

    def _play(self, req: Request) -> Response:
        q = req.query
        media = q.get("media", "")
        expected = sha256_hex(self.app_id + media + self.app_secret)
        if q.get("appId") != self.app_id or q.get("hash") != expected:
            return _bad("invalid hash")
        if media not in self.media:
            return Response.json({"message": "not found"}, 404)
        url = f"{self.media_base or self.base_url}/media/{quote(media)}?sig={self._sig(media)}"
        shapes: dict[str, Callable[[], Response]] = {
            "text": lambda: Response.text(url),
            "json_string": lambda: Response.json(url),
            "json_url": lambda: Response.json({"url": url}),
            "json_data": lambda: Response.json({"data": {"url": url}}),
        }
        return self._with_cookie(shapes[self.play_shape]())

    def _with_cookie(self, response: Response) -> Response:
        if self.cookie is not None:
            response.headers["Set-Cookie"] = f"{self.cookie}; Path=/"
        return response

    def _media(self, req: Request) -> Response:
        name = req.params["name"]
        blob = self.media.get(name)
        if blob is None or req.query.get("sig") != self._sig(name):
            return Response.text("AccessDenied", 403)
        return Response(200, {"Content-Type": self.media_type}, blob.chunks(), length=blob.size)

    def _sig(self, name: str) -> str:
        return sha256_hex(f"storage:{name}")[:24]


def _parse(text: str) -> datetime:
    if not _STAMP.fullmatch(text):
        raise ValueError(text)
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _bad(message: str) -> Response:
    return Response.json({"message": message}, 400)
