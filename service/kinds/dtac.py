"""DTAC OneCall voice record (seed 000), an OrecX OrkTrack server at DTAC's host by default."""

from service.kinds.base import FieldSpec, FieldType, ProviderKind, ReadAs, lazy_connector, secret, text, url

KIND = ProviderKind(
    name="dtac",
    fields=(
        url("baseUrl", default="https://onecallvoicerecord.dtac.co.th"),
        text("username", read_as=ReadAs.USERNAME),
        secret("password"),
        FieldSpec("pollIntervalMinutes", FieldType.INT, minimum=5, maximum=1440),
    ),
    connector=lazy_connector("service.connectors.dtac", "DtacConnector"),
    preview_user="username",
)
