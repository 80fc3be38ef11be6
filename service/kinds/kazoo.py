"""Kazoo (seed 002's profile): REST host, websocket host, account id and API key."""

from service.connectors.kazoo import KazooConnector
from service.kinds.base import ProviderKind, ReadAs, secret, text, url

KIND = ProviderKind(
    name="kazoo",
    fields=(
        url("baseUrl", locates=True, required=True),
        url("websocketUrl", locates=True, read_as=ReadAs.CONFIG, schemes=("ws", "wss")),
        text("accountId", read_as=ReadAs.CONFIG),
        secret("apiKey"),
    ),
    connector=KazooConnector,
    preview_user="accountId",
)
