"""ProviderService: authenticate, call the store, shape the answer. Nothing else."""

from __future__ import annotations

from typing import Any

from callvault.v1 import providers_pb2 as pb
from callvault.v1 import providers_pb2_grpc

from service.api.convert import dict_to_struct, present, struct_to_dict, timestamp
from service.auth import Scope
from service.providers.store import ProviderStore, ProviderSummary
from service.recordings.store import RecordingStore
from service.transport.calls import CallAuth, MetadataContext

SCOPE = Scope.MANAGE_PROVIDER_CONFIG
# Summary messages kept by the (immutable) summary they show: a list of a thousand
# providers that barely changes is then not built again on every call.
MAX_SHOWN = 20_000


class ProviderServicer(providers_pb2_grpc.ProviderServiceServicer):
    def __init__(self, auth: CallAuth, store: ProviderStore, recordings: RecordingStore) -> None:
        self._auth = auth
        self._store = store
        self._recordings = recordings
        self._shown: dict[ProviderSummary, pb.ProviderSummary] = {}

    async def ListProviders(self, request: pb.ListProvidersRequest, context: MetadataContext) -> Any:
        business = await self._auth.business(context, SCOPE)
        items = await self._store.summaries(business)
        shown = self._shown
        if len(shown) > MAX_SHOWN:
            shown.clear()
        messages = []
        for p in items:
            found = shown.get(p)
            if found is None:
                found = shown[p] = pb.ProviderSummary(
                    id=p.id,
                    kind=p.kind,
                    name=p.name,
                    is_active=p.is_active,
                    preview=p.preview,
                    created_at=timestamp(p.created_at),
                )
            messages.append(found)
        return pb.ListProvidersResponse(items=messages)

    async def CreateProvider(self, request: pb.CreateProviderRequest, context: MetadataContext) -> Any:
        caller = await self._auth.caller(context, SCOPE)
        business = caller.business_id
        provider_id = await self._store.create(
            business,
            kind=request.kind,
            name=request.name,
            config=struct_to_dict(request.config),
            is_active=present(request, "is_active"),
            validate=request.validate,
            deadline=context.time_remaining(),
            actor=caller.actor(),
        )
        return pb.CreateProviderResponse(id=provider_id)

    async def GetProvider(self, request: pb.GetProviderRequest, context: MetadataContext) -> Any:
        business = await self._auth.business(context, SCOPE)
        found = await self._store.get(business, request.id)
        provider = pb.Provider(id=found.id, kind=found.kind, name=found.name, is_active=found.is_active)
        if found.base_url is not None:
            provider.base_url = found.base_url
        if found.username is not None:
            provider.username = found.username
        if found.config:
            provider.config.CopyFrom(dict_to_struct(found.config))
        if found.last_sync_error:
            provider.last_sync_error = found.last_sync_error
        return provider

    async def UpdateProvider(self, request: pb.UpdateProviderRequest, context: MetadataContext) -> Any:
        caller = await self._auth.caller(context, SCOPE)
        await self._store.update(
            caller.business_id,
            request.id,
            name=present(request, "name"),
            config=struct_to_dict(request.config) if request.HasField("config") else None,
            is_active=present(request, "is_active"),
            kind=present(request, "kind"),
            validate=request.validate,
            deadline=context.time_remaining(),
            actor=caller.actor(),
        )
        return pb.UpdateProviderResponse(ok=True)

    async def DeleteProvider(self, request: pb.DeleteProviderRequest, context: MetadataContext) -> Any:
        # Deleting its recordings too is a recording delete: it needs that scope as well.
        scopes = (SCOPE, Scope.MANAGE_CALL_RECORDING) if request.delete_recordings else (SCOPE,)
        caller = await self._auth.caller(context, *scopes)
        business, actor = caller.business_id, caller.actor()
        recordings = await self._store.delete(
            business, request.id, with_recordings=request.delete_recordings, actor=actor
        )
        if request.delete_recordings:
            await self._recordings.delete_many(business, recordings, actor=actor)
        return pb.DeleteProviderResponse(ok=True)

    async def TestProvider(self, request: pb.TestProviderRequest, context: MetadataContext) -> Any:
        business = await self._auth.business(context, SCOPE)
        problem = await self._store.test(business, request.id, deadline=context.time_remaining())
        return (
            pb.TestProviderResponse(ok=True)
            if problem is None
            else pb.TestProviderResponse(ok=False, error=problem)
        )
