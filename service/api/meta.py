"""MetaService: what the calling key is (GET /api/v1/meta/whoami)."""

from __future__ import annotations

from typing import Any

from callvault.v1 import meta_pb2 as pb
from callvault.v1 import meta_pb2_grpc

from service.transport.calls import CallAuth, MetadataContext


class MetaServicer(meta_pb2_grpc.MetaServiceServicer):
    def __init__(self, auth: CallAuth) -> None:
        self._auth = auth

    async def WhoAmI(self, request: pb.WhoAmIRequest, context: MetadataContext) -> Any:
        principal = await self._auth.principal(context)
        businesses = [
            pb.BusinessRef(id=b.id, name=b.name, slug=b.slug)
            for b in await self._auth.authenticator.businesses(principal)
        ]
        scopes = sorted(s.value for s in principal.scopes)
        if principal.bound_business_id is not None:
            return pb.WhoAmIResponse(level="business", business=businesses[0], scopes=scopes)
        return pb.WhoAmIResponse(
            level="account", user_id=principal.account_id, scopes=scopes, businesses=businesses
        )
