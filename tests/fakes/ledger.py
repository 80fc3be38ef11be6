"""A tiny provider that exists only in tests: the sixth kind ("ledger", tests/sixth_kind/).

Its protocol is ours, kept small, and models the two awkward behaviours the puller must
hold against, each behind a switch:

- ``GET /calls?from=&to=&after=`` (``X-Token`` required): the calls that started in
  [from, to), plus every call whose ``id`` is above ``after`` whatever its start time.
  Ids grow as rows are written, so a long call written when it ends, with a start well
  before the last pull, has an id above every earlier row (like 3CX's ``Id``).
- ``GET /calls/{id}/audio``: the audio; ``audio_not_ready(id, answers)`` makes it answer
  404 ``{"error": "not ready"}`` that many times first (like Kazoo before the audio of a
  saved recording document is stored).
- ``unreadable = True``: the listing answers without ``calls`` (an answer the connector
  cannot read, which must never pass for an empty page).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.fakes.httpserver import Blob, FakeServer, Request, Response


@dataclass(frozen=True, slots=True)
class LedgerCall:
    id: int
    start: datetime
    audio: Blob


class FakeLedger(FakeServer):
    def __init__(self, *, token: str = "ledger-token-value") -> None:
        super().__init__()
        self.token = token
        self.unreadable = False
        self.calls: dict[int, LedgerCall] = {}
        self._not_ready: dict[int, int] = {}
        self.route("GET", r"/calls", self._authed(self._list))
        self.route("GET", r"/calls/(?P<id>\d+)/audio", self._authed(self._audio))

    def add_call(self, start: datetime, *, size: int = 2048) -> LedgerCall:
        """A row written now (its id above every earlier one), for a call started at `start`."""
        with self.lock:
            call_id = max(self.calls, default=0) + 1
            call = LedgerCall(call_id, start.astimezone(UTC).replace(microsecond=0), Blob(call_id, size))
            self.calls[call_id] = call
            return call

    def audio_not_ready(self, call_id: int, answers: int) -> None:
        with self.lock:
            self._not_ready[call_id] = answers

    def _authed(self, handler: Any) -> Any:
        def check(req: Request) -> Response:
            if req.headers.get("x-token") != self.token:
                return Response.json({"error": "bad token"}, 401)
            result: Response = handler(req)
            return result

        return check

    def _list(self, req: Request) -> Response:
        try:
            since = datetime.fromisoformat(req.query["from"])
            until = datetime.fromisoformat(req.query["to"])
            after = int(req.query.get("after") or 0)
        except (KeyError, ValueError):
            return Response.json({"error": "bad request"}, 400)
        if self.unreadable:
            return Response.json({"items": []})
        hits = [c for c in self.calls.values() if since <= c.start < until or c.id > after]
        rows = [
            {"id": c.id, "start": c.start.isoformat(), "seconds": 30}
            for c in sorted(hits, key=lambda c: c.id)
        ]
        return Response.json({"calls": rows})

    def _audio(self, req: Request) -> Response:
        call_id = int(req.params["id"])
        call = self.calls.get(call_id)
        if call is None:
            return Response.json({"error": "no such call"}, 404)
        if self._not_ready.get(call_id, 0) > 0:
            self._not_ready[call_id] -= 1
            return Response.json({"error": "not ready"}, 404)
        return Response(200, {"Content-Type": "audio/wav"}, call.audio.chunks(), length=call.audio.size)
