"""3CX PBX (seed 000): XAPI client credentials, or the web-client user login when headless."""

from service.connectors.threecx import ThreeCXConnector
from service.kinds.base import FieldSpec, FieldType, ProviderKind, ReadAs, secret, text, url

KIND = ProviderKind(
    name="threecx",
    fields=(
        url("baseUrl", locates=True, required=True),
        text("username", read_as=ReadAs.USERNAME),
        secret("password"),
        FieldSpec("headless", FieldType.BOOL),
    ),
    connector=ThreeCXConnector,
    preview_user="username",
)
