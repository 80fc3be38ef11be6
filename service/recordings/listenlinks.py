"""Listen links: a URL that plays one recording's audio, with Range, to whoever holds it,
with no API key, for a few minutes (a browser's ``<audio src>``, a ticket system's link).

The token (``signedtokens``) names the business, the recording and the API key that minted
it; its holder acts as that key for this one recording's audio, so the key's revocation (within
the key cache's bound), its scopes and its agents still apply at every use (``CallAuth.listen``).
The audio is streamed through callvault by the authenticated download's own code, never from
the blob store's URL. Every mint and every use is an event of the access audit log (service/audit), under the
key that minted the link.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from service.config import check_link_seconds
from service.errors import InvalidArgument, LinkExpired, LinkInvalid
from service.recordings.signedtokens import BadToken, SigningKeys, TokenSigner
from service.recordings.uploadlinks import audio_path

PURPOSE = b"callvault listen-link v1"
TOKEN_FIELD = "linkToken"  # noqa: S105  (the query parameter: DownloadRecordingRequest.link_token)
EXPIRES_FIELD = "expiresInSeconds"
_ID = re.compile(r"[A-Za-z0-9-]{1,36}")  # the ids callvault makes (UUIDs)


@dataclass(frozen=True, slots=True)
class ListenGrant:
    """What a verified token admits: this recording's audio, as the key that minted it."""

    business_id: str
    recording_id: str
    key_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ListenLink:
    # The token is the capability itself: kept out of reprs (and so of logs and tracebacks).
    url: str = field(repr=False)
    token: str = field(repr=False)
    expires_at: datetime


class ListenLinks:
    def __init__(
        self,
        keys: SigningKeys,
        *,
        default_seconds: int,
        max_seconds: int,
        base_url: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._signer = TokenSigner(keys, PURPOSE)
        self.default_seconds, self.max_seconds = check_link_seconds(default_seconds, max_seconds)
        self._clock = clock
        self.base_url = base_url

    def __repr__(self) -> str:
        return f"ListenLinks(base_url={self.base_url!r}, default_seconds={self.default_seconds})"

    def lifetime(self, requested: int | None) -> int:
        """How long a link asked for lives: the default, or ``expiresInSeconds`` if in bounds."""
        if requested is None:
            return self.default_seconds
        if not 1 <= requested <= self.max_seconds:
            raise InvalidArgument(EXPIRES_FIELD, f"must be between 1 and {self.max_seconds} seconds")
        return requested

    def mint(self, business_id: str, recording_id: str, key_id: str, seconds: int) -> ListenLink:
        """An absolute URL that plays this recording as key ``key_id``; ``base_url`` must be set."""
        assert self.base_url, "the public base URL is set when the HTTP listener is up"
        if not all(_ID.fullmatch(i) for i in (business_id, recording_id, key_id)):
            raise ValueError("listen links name callvault's own ids only")
        expires = math.ceil(self._clock() + seconds)  # at least the seconds asked for
        token = self._signer.sign(expires, (business_id, recording_id, key_id))
        url = f"{self.base_url}{audio_path(recording_id)}?{TOKEN_FIELD}={token}"
        return ListenLink(url, token, datetime.fromtimestamp(expires, UTC))

    def verify(self, token: str, recording_id: str) -> ListenGrant:
        """The grant a token carries, for the recording the request names. Anything that is
        not a link this service minted for that recording is ``link_invalid``; only an
        authentic one can be ``link_expired``. Nothing is read: no answer tells whether a
        recording exists."""
        try:
            signed = self._signer.open(token, 3)
        except BadToken:
            raise LinkInvalid() from None
        business_id, signed_recording, key_id = signed.fields
        if not all(_ID.fullmatch(i) for i in signed.fields):
            raise LinkInvalid()
        if signed_recording != recording_id:
            raise LinkInvalid()
        if self._clock() >= signed.expires:
            raise LinkExpired()
        return ListenGrant(business_id, signed_recording, key_id, datetime.fromtimestamp(signed.expires, UTC))
