"""The process: one grpc.aio server and one REST shim on the same event loop, sharing
the servicers; health, reflection and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import grpc
import uvicorn
from callvault.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    collections_pb2,
    collections_pb2_grpc,
    meta_pb2,
    meta_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
    recordings_pb2,
    recordings_pb2_grpc,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import __version__, allocator, metrics
from service.api.audit import AuditServicer
from service.api.collections import CollectionServicer
from service.api.meta import MetaServicer
from service.api.providers import ProviderServicer
from service.api.recordings import RecordingServicer
from service.audit.log import AuditLog
from service.auth import Authenticator
from service.blobs.factory import blob_store, close_blob_store, open_blob_store
from service.config import (
    Settings,
    TlsSettings,
    check_public_base_url,
    check_upload_url_ttl,
    listener_base_url,
)
from service.keys import load_keyring
from service.livekeys import LiveKeyring
from service.processes import ProcessRegistry
from service.providers.store import ProviderStore
from service.ratelimit import RateLimiter
from service.recordings.blobrefs import BlobSweeper
from service.recordings.collections import CollectionStore
from service.recordings.holds import LegalHolds
from service.recordings.listenlinks import ListenLinks
from service.recordings.retention import run_retention
from service.recordings.store import RecordingStore
from service.recordings.uploadlinks import UploadLinks
from service.rest.app import build_app
from service.rest.bindings import Binding, bindings_for
from service.rest.openapi import openapi_document
from service.sealing import Keyring
from service.storage.db import Database
from service.sync.queue import SyncJobs
from service.sync.scheduler import Puller
from service.transport.calls import CallAuth
from service.transport.interceptor import CallInterceptor

log = logging.getLogger("callvault.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Service:
    """The domain objects and servicers of one process, built from settings."""

    def __init__(self, settings: Settings, keyring: Keyring | None = None) -> None:
        self.settings = settings
        self.db = Database(settings.resolved_database_url)
        self.processes = ProcessRegistry(
            self.db,
            heartbeat_seconds=settings.heartbeat_seconds,
            dead_after_seconds=settings.dead_after_seconds,
        )
        follow = None if keyring is not None or settings.master_keys else settings.resolved_key_file
        self.keyring = LiveKeyring(
            keyring or load_keyring(settings),
            db=self.db,
            registry=self.processes,
            path=follow,
            fixed_by="the caller" if keyring is not None else "CALLVAULT_MASTER_KEYS",
        )
        limiter = RateLimiter(settings.rate_limit_per_minute)
        self.processes.on_live_count(limiter.set_shares)
        self.auth = CallAuth(Authenticator(self.db), limiter)
        self.providers = ProviderStore(self.db, self.keyring, settings.network)
        self.blobs = blob_store(settings)
        self.recordings = RecordingStore(
            self.db,
            self.blobs,
            phone_region=settings.phone_region,
            max_bytes=settings.sync.max_recording_bytes,
            keyring=self.keyring,
        )
        self.upload_links = UploadLinks(
            self.keyring,
            self.db,
            ttl_seconds=check_upload_url_ttl(settings.upload_url_ttl_seconds),
            base_url=check_public_base_url(settings.public_base_url),
        )
        self.audit = AuditLog(self.db, self.keyring)
        self.listen_links = ListenLinks(
            self.keyring,
            default_seconds=settings.audio_link_ttl_seconds,
            max_seconds=settings.audio_link_max_seconds,
            base_url=self.upload_links.base_url,
        )
        self.holds = LegalHolds(self.db)
        self.sweeper = BlobSweeper(self.db, self.blobs, grace_seconds=settings.blob_grace_seconds)
        self.puller = Puller(
            self.db,
            self.providers,
            self.blobs,
            settings,
            processes=self.processes,
            on_change=self.recordings.counts.invalidate,
        )
        self.servicers: list[tuple[Any, object, Any]] = [
            (
                providers_pb2.DESCRIPTOR.services_by_name["ProviderService"],
                ProviderServicer(self.auth, self.providers, self.recordings),
                providers_pb2_grpc.add_ProviderServiceServicer_to_server,
            ),
            (
                recordings_pb2.DESCRIPTOR.services_by_name["RecordingService"],
                RecordingServicer(
                    self.auth,
                    self.recordings,
                    SyncJobs(self.db),
                    self.puller,
                    settings.timezone,
                    self.upload_links,
                    self.listen_links,
                    self.holds,
                    self.audit,
                ),
                recordings_pb2_grpc.add_RecordingServiceServicer_to_server,
            ),
            (
                collections_pb2.DESCRIPTOR.services_by_name["CollectionService"],
                CollectionServicer(self.auth, CollectionStore(self.db), settings.timezone),
                collections_pb2_grpc.add_CollectionServiceServicer_to_server,
            ),
            (
                meta_pb2.DESCRIPTOR.services_by_name["MetaService"],
                MetaServicer(self.auth),
                meta_pb2_grpc.add_MetaServiceServicer_to_server,
            ),
            (
                audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
                AuditServicer(self.auth, self.audit, settings.timezone),
                audit_pb2_grpc.add_AuditServiceServicer_to_server,
            ),
        ]

    @property
    def service_names(self) -> list[str]:
        return [descriptor.full_name for descriptor, _, _ in self.servicers]

    def bindings(self) -> list[Binding]:
        return [b for descriptor, servicer, _ in self.servicers for b in bindings_for(descriptor, servicer)]


def _grpc_credentials(tls: TlsSettings) -> grpc.ServerCredentials | None:
    if not tls.enabled:
        return None
    tls.check()
    assert tls.cert_file is not None and tls.key_file is not None
    client_ca = tls.client_ca_file.read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the process's shutdown is ours."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen(host: str, port: int, *, shared: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns on TCP_NODELAY only for sockets that say so,
    # and without it small answers wait for the client's delayed ACK (~40 ms each).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class Server:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.settings = service.settings
        self.health = health.aio.HealthServicer()
        self.grpc = grpc.aio.server(
            interceptors=[CallInterceptor()],
            options=[
                ("grpc.so_reuseport", 1 if service.settings.workers > 1 else 0),
                ("grpc.max_receive_message_length", 8 * 1024 * 1024),
            ],
        )
        self.grpc_port = 0
        self.http_port = 0
        self.shutting_down = False
        self._ready = False
        self._uvicorn: _EmbeddedUvicorn | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []
        self._heartbeat: asyncio.Task[None] | None = None
        self._key_watch: asyncio.Task[None] | None = None

    def _rest_app(self) -> Any:
        bindings = self.service.bindings()
        document = openapi_document(bindings, title="callvault", version=__version__)

        async def healthz(_: Request) -> Response:
            status = "NOT_SERVING" if self.shutting_down else "SERVING"
            return JSONResponse({"status": status}, status_code=503 if self.shutting_down else 200)

        async def readyz(_: Request) -> Response:
            ready = self._ready and not self.shutting_down
            return JSONResponse(
                {"status": "SERVING" if ready else "NOT_SERVING"}, status_code=200 if ready else 503
            )

        async def openapi(_: Request) -> Response:
            return JSONResponse(document)

        async def prometheus(_: Request) -> Response:
            body, content_type = metrics.exposition()
            return Response(body, media_type=content_type)

        extra = [
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ]
        return build_app(bindings, extra)

    async def start(self) -> None:
        allocator.tune(self.settings.malloc_mmap_threshold)
        # Before listening: a process with the wrong master key must not serve at all.
        await self.service.keyring.start()
        await open_blob_store(self.service.blobs, self.settings)
        for _, servicer, add in self.service.servicers:
            add(servicer, self.grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        names = [*self.service.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, self.grpc)
        address = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        credentials = _grpc_credentials(self.settings.tls)
        self.grpc_port = (
            self.grpc.add_secure_port(address, credentials)
            if credentials
            else self.grpc.add_insecure_port(address)
        )
        if not self.grpc_port:
            raise OSError(f"cannot listen for gRPC on {self.settings.grpc_host}:{self.settings.grpc_port}")
        await self.grpc.start()

        sock = _listen(self.settings.http_host, self.settings.http_port, shared=self.settings.workers > 1)
        self.http_port = sock.getsockname()[1]
        if not self.service.upload_links.base_url:
            self.service.upload_links.base_url = listener_base_url(
                self.settings.http_host, self.http_port, tls=self.settings.tls.enabled
            )
        self.service.listen_links.base_url = self.service.upload_links.base_url
        tls = self.settings.tls
        config = uvicorn.Config(
            self._rest_app(),
            log_config=None,
            lifespan="off",
            access_log=False,
            ssl_certfile=str(tls.cert_file) if tls.cert_file else None,
            ssl_keyfile=str(tls.key_file) if tls.key_file else None,
        )
        self._uvicorn = _EmbeddedUvicorn(config)
        self._http_task = asyncio.create_task(self._uvicorn.serve(sockets=[sock]))

        await self.service.processes.beat()
        self._heartbeat = asyncio.create_task(self.service.processes.run(), name="heartbeat")
        self._key_watch = asyncio.create_task(
            self.service.keyring.run(self.settings.key_reload_seconds), name="key-watch"
        )
        await self._check_health()
        self._monitor = asyncio.create_task(self._watch_health())
        if self.settings.sync.enabled:
            self._background = [
                asyncio.create_task(self.service.puller.run(), name="puller"),
                asyncio.create_task(
                    run_retention(self.service.db, self.service.recordings), name="retention"
                ),
            ]
        # Any number of processes may sweep at once (service/recordings/blobrefs.py).
        sweep = self.service.sweeper.run(self.settings.blob_sweep_seconds)
        self._background.append(asyncio.create_task(sweep, name="blob-sweeper"))
        log.info(
            "serving",
            extra={
                "grpc_port": self.grpc_port,
                "http_port": self.http_port,
                "database": self.service.db.dialect,
            },
        )

    async def _check_health(self) -> None:
        database = await self.service.db.ping()
        metrics.DATABASE_UP.set(1 if database else 0)
        if not database:
            metrics.DATABASE_ERRORS.inc()
        blobs = await self.service.blobs.ping()
        if not blobs:
            metrics.BLOB_ERRORS.labels("ping").inc()
        ready = database and blobs
        if ready != self._ready:
            log.log(
                logging.INFO if ready else logging.WARNING,
                "database %s",
                "reachable" if ready else "unreachable",
            )
        self._ready = ready
        status = SERVING if ready else NOT_SERVING
        for name in ("", *self.service.service_names):
            await self.health.set(name, status)

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval_seconds)
            await self._check_health()

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING first so balancers drain us, then finish in-flight calls."""
        if self.shutting_down:
            return
        self.shutting_down = True
        grace = self.settings.grace_seconds if grace is None else grace
        log.info("shutting down", extra={"grace_seconds": grace})
        await self.health.enter_graceful_shutdown()
        if self._monitor:
            self._monitor.cancel()
        if self._key_watch:
            self._key_watch.cancel()
            await asyncio.gather(self._key_watch, return_exceptions=True)
        # Pulls stop where they are: a pull resumes from its cursor, and no blob is
        # visible before it is complete, so cancelling loses nothing.
        for task in self._background:
            task.cancel()
        await self.service.puller.close()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._uvicorn:
            self._uvicorn.should_exit = True
        await self.grpc.stop(grace)
        if self._http_task:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._http_task, timeout=grace + 1)
        await self._forget_process()
        await self.service.db.dispose()
        await close_blob_store(self.service.blobs)
        log.info("stopped")

    async def _forget_process(self) -> None:
        """Stop beating and remove our row: the others need not wait for it to go stale."""
        if self._heartbeat is None:
            return
        self._heartbeat.cancel()
        await asyncio.gather(self._heartbeat, return_exceptions=True)
        try:
            await self.service.processes.stop()
        except Exception:
            log.warning("could not remove this process's heartbeat row", exc_info=True)

    async def wait(self) -> None:
        await self.grpc.wait_for_termination()
