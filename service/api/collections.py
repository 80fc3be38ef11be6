"""CollectionService: authenticate, call the collections domain, shape the answer."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from callvault.v1 import collections_pb2 as pb
from callvault.v1 import collections_pb2_grpc

from service.api.convert import present, timestamp
from service.api.recordings import recording_message
from service.auth import Requirement, Scope
from service.recordings.collections import CollectionStore, CollectionView
from service.recordings.query import page_bounds
from service.transport.calls import CallAuth, MetadataContext

# Reading takes either scope. Not view_recording_self: a collection may hold any agent's
# recordings, and that scope reads only its key's agents' (service/auth.py).
VIEW: tuple[Requirement, ...] = ((Scope.VIEW_RECORDING_ALL, Scope.MANAGE_RECORDING_COLLECTION),)
MANAGE: tuple[Requirement, ...] = (Scope.MANAGE_RECORDING_COLLECTION,)


def _fields(view: CollectionView) -> dict[str, Any]:
    """What Collection and CollectionWithItems share."""
    row = view.row
    fields: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "item_count": view.item_count,
        "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
    }
    if row.color is not None:
        fields["color"] = row.color
    return fields


class CollectionServicer(collections_pb2_grpc.CollectionServiceServicer):
    def __init__(self, auth: CallAuth, store: CollectionStore, timezone: str) -> None:
        self._auth = auth
        self._store = store
        self._tz = ZoneInfo(timezone)

    async def ListCollections(self, request: pb.ListCollectionsRequest, context: MetadataContext) -> Any:
        business = await self._auth.business(context, *VIEW)
        limit, offset = page_bounds(present(request, "limit"), request.offset)
        views, total = await self._store.list_page(business, limit, offset)
        return pb.ListCollectionsResponse(
            items=[pb.Collection(**_fields(v)) for v in views], total=total, limit=limit, offset=offset
        )

    async def CreateCollection(self, request: pb.CreateCollectionRequest, context: MetadataContext) -> Any:
        business = await self._auth.business(context, *MANAGE)
        view = await self._store.create(
            business, name=request.name, description=request.description, color=present(request, "color")
        )
        return pb.Collection(**_fields(view))

    async def GetCollection(self, request: pb.GetCollectionRequest, context: MetadataContext) -> Any:
        business = await self._auth.business(context, *VIEW)
        limit, offset = page_bounds(present(request, "limit"), request.offset)
        view, items = await self._store.get(business, request.id, limit, offset)
        return pb.CollectionWithItems(
            **_fields(view),
            items=[
                pb.CollectionItem(
                    call_recording_id=item.recording.id,
                    added_at=timestamp(item.added_at),
                    recording=recording_message(item.recording, self._tz),
                )
                for item in items
            ],
            limit=limit,
            offset=offset,
        )

    async def UpdateCollection(self, request: pb.UpdateCollectionRequest, context: MetadataContext) -> Any:
        business = await self._auth.business(context, *MANAGE)
        await self._store.update(
            business,
            request.id,
            name=present(request, "name"),
            description=present(request, "description"),
            color=present(request, "color"),
        )
        return pb.UpdateCollectionResponse(ok=True)

    async def DeleteCollection(self, request: pb.DeleteCollectionRequest, context: MetadataContext) -> Any:
        business = await self._auth.business(context, *MANAGE)
        await self._store.delete(business, request.id)
        return pb.DeleteCollectionResponse(ok=True)

    async def AddCollectionItems(
        self, request: pb.AddCollectionItemsRequest, context: MetadataContext
    ) -> Any:
        business = await self._auth.business(context, *MANAGE)
        changed = await self._store.add(business, request.id, list(request.call_recording_ids))
        return pb.AddCollectionItemsResponse(ok=True, added=changed.changed, item_count=changed.item_count)

    async def RemoveCollectionItems(
        self, request: pb.RemoveCollectionItemsRequest, context: MetadataContext
    ) -> Any:
        business = await self._auth.business(context, *MANAGE)
        changed = await self._store.remove(business, request.id, list(request.call_recording_id))
        return pb.RemoveCollectionItemsResponse(
            ok=True, removed=changed.changed, item_count=changed.item_count
        )
