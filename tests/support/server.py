"""The real callvault server on loopback ports, in a thread with its own event loop, so
tests talk to it with ordinary (blocking) gRPC and HTTP clients."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx

from service.admin import Admin
from service.auth import Scope
from service.config import Settings, SyncSettings
from service.connectors.http import NetworkPolicy
from service.sealing import Keyring, generate_key
from service.server import Server, Service
from service.storage.migrate import upgrade

T = TypeVar("T")


def server_settings(data_dir: Path, database_url: str) -> Settings:
    return Settings(
        env="dev",
        data_dir=data_dir,
        database_url=database_url,
        grpc_port=0,
        http_port=0,
        grace_seconds=2.0,
        health_interval_seconds=0.2,
        network=NetworkPolicy(allow_private=True, connect_timeout=1.0, read_timeout=1.0, total_timeout=5.0),
        # The shared test server never pulls in the background: its providers point at
        # hosts that do not exist. Sync tests start servers of their own.
        sync=SyncSettings(enabled=False),
        # Released audio is freed by the first sweep a test runs, not behind its back.
        blob_grace_seconds=0.0,
        blob_sweep_seconds=24 * 3600.0,
    )


@dataclass
class Tenant:
    """An account with one business, a business key and an account key."""

    account_id: str
    business_id: str
    business_key: str
    account_key: str


class RunningServer:
    def __init__(
        self, settings: Settings, keyring: Keyring | None = None, *, follow_key_file: bool = False
    ) -> None:
        """``follow_key_file``: load the keys from settings' key file and follow it, as
        ``callvault serve`` does, instead of a fixed keyring."""
        self.settings = settings
        self.keyring = keyring or Keyring({1: generate_key()}, primary_id=1)
        self._follow_key_file = follow_key_file
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="callvault-server", daemon=True)
        self.server: Server | None = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def start(self) -> RunningServer:
        upgrade(self.settings.resolved_database_url)
        self._thread.start()

        async def build() -> Server:
            # grpc.aio binds to the loop that creates the server: build it on ours.
            server = Server(Service(self.settings, None if self._follow_key_file else self.keyring))
            await server.start()
            return server

        self.server = self.call(build())
        return self

    def stop(self, grace: float = 1.0) -> None:
        if self.server is not None:
            self.call(self.server.stop(grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    @property
    def service(self) -> Service:
        assert self.server is not None
        return self.server.service

    @property
    def grpc_target(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.grpc_port}"

    @property
    def http_base(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.http_port}"

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.grpc_target)

    def http(self, key: str | None = None, business: str | None = None) -> httpx.Client:
        headers = {}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        if business:
            headers["X-Business-Id"] = business
        return httpx.Client(base_url=self.http_base, headers=headers, timeout=30)

    def admin(self) -> Admin:
        return Admin(self.service.db)

    def new_tenant(self, name: str = "Acme", scopes: tuple[Scope, ...] = (Scope.MANAGE_ALL,)) -> Tenant:
        async def make() -> Tenant:
            admin = self.admin()
            account = await admin.create_account(name)
            business = await admin.create_business(account, name, slug=_unique_slug(name))
            business_key = await admin.create_key(account_id=account, business_id=business, scopes=scopes)
            account_key = await admin.create_key(account_id=account, scopes=scopes)
            return Tenant(account, business, business_key.plaintext, account_key.plaintext)

        return self.call(make())

    def with_settings(self, **changes: Any) -> Settings:
        return replace(self.settings, **changes)


_counter = iter(range(1_000_000))


def _unique_slug(name: str) -> str:
    return f"{name.lower().replace(' ', '-')}-{next(_counter)}-{threading.get_ident() % 10000}"
