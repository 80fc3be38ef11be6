"""DTAC OneCall voice record (seed 000), an OrecX OrkTrack server at DTAC's host by default."""

from service.connectors.dtac import DEFAULT_BASE_URL, DtacConnector
from service.kinds.base import ProviderKind, ReadAs, poll_interval, secret, text, url

KIND = ProviderKind(
    name="dtac",
    fields=(
        url("baseUrl", locates=True, default=DEFAULT_BASE_URL),
        text("username", read_as=ReadAs.USERNAME),
        secret("password"),
        poll_interval("pollIntervalMinutes"),
    ),
    connector=DtacConnector,
    preview_user="username",
)
