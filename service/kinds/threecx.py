"""3CX PBX (seed 000): XAPI client credentials, or the web-client user login when headless."""

from service.kinds.base import FieldSpec, FieldType, ProviderKind, ReadAs, lazy_connector, secret, text, url

KIND = ProviderKind(
    name="threecx",
    fields=(
        url("baseUrl", required=True),
        text("username", read_as=ReadAs.USERNAME),
        secret("password"),
        FieldSpec("headless", FieldType.BOOL),
    ),
    connector=lazy_connector("service.connectors.threecx", "ThreeCXConnector"),
    preview_user="username",
)
