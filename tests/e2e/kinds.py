"""One profile per provider kind: its fake, a working config, and what a read shows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tests.fakes.antbuddy import FakeAntBuddy
from tests.fakes.dtac import FakeDtac
from tests.fakes.httpserver import Blob, FakeServer
from tests.fakes.kazoo import FakeKazoo
from tests.fakes.promptcall import FakePromptCall
from tests.fakes.threecx import FakeThreeCX


@dataclass(frozen=True)
class KindProfile:
    kind: str
    fake: Callable[[], FakeServer]
    config: Callable[[Any], dict[str, Any]]
    # The one secret field a patch changes to break (and mend) the credentials.
    secret_field: str
    # What GET shows, besides id/kind/name/isActive (from the fake and the config).
    read: Callable[[Any], dict[str, Any]]
    preview: Callable[[Any], str]
    # Adds a recorded call that started at the given instant; answers its audio.
    record: Callable[[Any, datetime], Blob]

    def secrets(self, fake: Any) -> list[str]:
        from service.kinds import KINDS

        return [str(self.config(fake)[f]) for f in KINDS[self.kind].secret_fields]


def _host(fake: FakeServer) -> str:
    return "127.0.0.1"


PROFILES = [
    KindProfile(
        kind="threecx",
        fake=FakeThreeCX,
        config=lambda f: {"baseUrl": f.base_url, "username": f.client_id, "password": f.client_secret},
        secret_field="password",
        read=lambda f: {"baseUrl": f.base_url, "username": f.client_id},
        preview=lambda f: f"{f.client_id} @ {_host(f)}",
        record=lambda f, at: f.add_call(at, size=48_000).audio,
    ),
    KindProfile(
        kind="dtac",
        fake=FakeDtac,
        config=lambda f: {"baseUrl": f.base_url, "username": f.username, "password": f.password},
        secret_field="password",
        read=lambda f: {"baseUrl": f.base_url, "username": f.username},
        preview=lambda f: f"{f.username} @ {_host(f)}",
        record=lambda f, at: f.add_call(at, size=48_000).audio,
    ),
    KindProfile(
        kind="promptcall",
        fake=FakePromptCall,
        config=lambda f: {"baseUrl": f.base_url, "apiKey": f.api_key, "apiSecret": f.api_secret},
        secret_field="apiSecret",
        read=lambda f: {"baseUrl": f.base_url, "config": {"timeZone": "Asia/Bangkok"}},  # the default
        preview=lambda f: _host(f),
        record=lambda f, at: f.add_call(at, size=48_000).audio,
    ),
    KindProfile(
        kind="kazoo",
        fake=FakeKazoo,
        config=lambda f: {
            "baseUrl": f.base_url,
            "websocketUrl": "wss://ws.example.com",
            "accountId": f.account_id,
            "apiKey": f.api_key,
        },
        secret_field="apiKey",
        read=lambda f: {
            "baseUrl": f.base_url,
            "config": {"accountId": f.account_id, "websocketUrl": "wss://ws.example.com"},
        },
        preview=lambda f: f"{f.account_id} @ {_host(f)}",
        record=lambda f, at: f.add_recording(at, audio_size=48_000).audio,
    ),
    KindProfile(
        kind="antbuddy",
        fake=FakeAntBuddy,
        config=lambda f: {"baseUrl": f.base_url, "appId": f.app_id, "appSecret": f.app_secret},
        secret_field="appSecret",
        read=lambda f: {"baseUrl": f.base_url, "config": {"appId": f.app_id}},
        preview=lambda f: f"{f.app_id} @ {_host(f)}",
        record=lambda f, at: f.media[f.add_call(at, audio_size=48_000)["recording"]],
    ),
]
