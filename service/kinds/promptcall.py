"""promptCall PBX (seed 001): apiKey and apiSecret make the Basic token for pbxws.php."""

from service.kinds.base import ProviderKind, lazy_connector, secret, url

KIND = ProviderKind(
    name="promptcall",
    fields=(url("baseUrl", required=True), secret("apiKey"), secret("apiSecret")),
    connector=lazy_connector("service.connectors.promptcall", "PromptCallConnector"),
)
