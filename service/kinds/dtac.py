"""DTAC OneCall voice record (seed 000), an OrecX OrkTrack server at DTAC's host by default."""

from service.connectors.dtac import DEFAULT_BASE_URL, DtacConnector
from service.kinds.base import FieldSpec, FieldType, ProviderKind, ReadAs, secret, text, url

KIND = ProviderKind(
    name="dtac",
    fields=(
        url("baseUrl", locates=True, default=DEFAULT_BASE_URL),
        text("username", read_as=ReadAs.USERNAME),
        secret("password"),
        FieldSpec("pollIntervalMinutes", FieldType.INT, minimum=5, maximum=1440),
    ),
    connector=DtacConnector,
    preview_user="username",
)
