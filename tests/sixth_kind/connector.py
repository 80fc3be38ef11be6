"""The connector of the test-only "ledger" kind (protocol: tests/fakes/ledger.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from service.connectors.base import (
    AudioNotReady,
    AudioStream,
    CallRecord,
    Direction,
    Outcome,
    RecordingNotFound,
    UnreadableAnswer,
)
from service.connectors.common import json_object, utc
from service.connectors.http import (
    HeaderAuth,
    NetworkPolicy,
    ProviderClient,
    audio_stream,
    checked_json,
    connector_errors,
    raise_for_status,
    read_json,
)


class LedgerConnector:
    def __init__(self, config: Mapping[str, Any], policy: NetworkPolicy) -> None:
        self._policy = policy
        self._client = ProviderClient(
            policy, str(config["baseUrl"]), auth=HeaderAuth("X-Token", str(config["token"]))
        )

    async def check(self) -> None:
        now = datetime.now(UTC)
        await self._calls(now, now, None)

    async def list_calls(
        self, since: datetime, until: datetime, *, after: str | None = None
    ) -> AsyncIterator[CallRecord]:
        for row in await self._calls(utc(since), utc(until), after):
            yield _record(row)

    @asynccontextmanager
    async def open_recording(self, ref: str) -> AsyncIterator[AudioStream]:
        response = await self._client.send(self._client.build_request("GET", f"/calls/{ref}/audio"))
        try:
            if response.status_code == 404:
                with connector_errors():
                    body = json_object(await read_json(response, self._policy))
                raise AudioNotReady() if body.get("error") == "not ready" else RecordingNotFound()
            raise_for_status(response)
            async with audio_stream(response, response.headers.get("content-type", "")) as audio:
                yield audio
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _calls(self, since: datetime, until: datetime, after: str | None) -> list[dict[str, Any]]:
        params = {"from": since.isoformat(), "to": until.isoformat(), "after": after or "0"}
        request = self._client.build_request("GET", "/calls", params=params)
        body = json_object(await checked_json(await self._client.send(request), self._policy))
        rows = body.get("calls")
        if not isinstance(rows, list):
            raise UnreadableAnswer("calls")
        return [json_object(row) for row in rows]


def _record(row: dict[str, Any]) -> CallRecord:
    try:
        call_id = int(row["id"])
        started = datetime.fromisoformat(str(row["start"]))
    except (KeyError, TypeError, ValueError):
        raise UnreadableAnswer("calls[].id/start") from None
    return CallRecord(
        external_id=str(call_id),
        started_at=started.astimezone(UTC),
        duration_seconds=float(row.get("seconds") or 0),
        caller="0812345678",
        callee="1001",
        direction=Direction.INBOUND,
        outcome=Outcome.ANSWERED,
        recording_ref=str(call_id),
        position=str(call_id),
    )
