"""promptCall PBX (seed 001): apiKey and apiSecret make the Basic token for pbxws.php."""

from service.connectors.promptcall import PromptCallConnector
from service.kinds.base import ProviderKind, secret, url

KIND = ProviderKind(
    name="promptcall",
    fields=(url("baseUrl", locates=True, required=True), secret("apiKey"), secret("apiSecret")),
    connector=PromptCallConnector,
)
