"""AntBuddy cloud PBX (seed 003): appId and appSecret sign every request with sha256."""

from service.connectors.antbuddy import DEFAULT_BASE_URL, AntBuddyConnector
from service.kinds.base import ProviderKind, ReadAs, secret, text, url

KIND = ProviderKind(
    name="antbuddy",
    fields=(
        url("baseUrl", locates=True, default=DEFAULT_BASE_URL),
        text("appId", read_as=ReadAs.CONFIG),
        secret("appSecret"),
    ),
    connector=AntBuddyConnector,
    preview_user="appId",
)
