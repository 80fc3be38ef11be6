"""Presigned upload URLs: a link that lets its holder PUT the audio of one recording,
once, before it expires, with no API key.

A token (``signedtokens``: signed with a key derived from a master key, so a link minted
just before a rotation still verifies while its key is in the ring) carries
``<nonce>.<business id>.<recording id>``.

Once-only: the first PUT claims the nonce (a row keyed on it, so of two racing PUTs one
insert fails). An upload that fails before anything is stored (size or sha256 mismatch,
an empty body, the client going away mid-body) gives the claim back, so the link can be
tried again until it expires; one that got as far as storing keeps it, even if the answer
never reached the client (a crash mid-upload also keeps it: register the dataId again
for a new link).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from service.errors import DomainError, UploadUrlExpired, UploadUrlInvalid, UploadUrlUsed
from service.recordings.signedtokens import BadToken, SigningKeys, TokenSigner, random_text
from service.storage.db import Database
from service.storage.models import UploadUrlClaim

log = logging.getLogger("callvault.recordings")
T = TypeVar("T")

PURPOSE = b"callvault upload-url v1"
TOKEN_FIELD = "uploadToken"  # noqa: S105  (the query parameter: UploadRecordingAudioRequest.upload_token)
_ID = re.compile(r"[A-Za-z0-9-]{1,36}")  # the ids callvault makes (UUIDs)
_NONCE = re.compile(r"[A-Za-z0-9_-]{22}")


@dataclass(frozen=True, slots=True)
class UploadGrant:
    """What a verified token admits."""

    business_id: str
    recording_id: str
    nonce: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class UploadLink:
    url: str
    token: str
    expires_at: datetime


def audio_path(recording_id: str) -> str:
    """Where a recording's audio is (GET) and is uploaded to (PUT)."""
    return f"/api/v1/recordings/{recording_id}/audio"


class UploadLinks:
    def __init__(
        self,
        keys: SigningKeys,
        db: Database,
        *,
        ttl_seconds: int,
        base_url: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._signer = TokenSigner(keys, PURPOSE)
        self._db = db
        self._ttl = ttl_seconds
        self._clock = clock
        self.base_url = base_url

    def __repr__(self) -> str:
        return f"UploadLinks(base_url={self.base_url!r}, ttl_seconds={self._ttl})"

    def mint(self, business_id: str, recording_id: str) -> UploadLink:
        """An absolute URL to PUT this recording's audio to; ``base_url`` must be set."""
        assert self.base_url, "the public base URL is set when the HTTP listener is up"
        if not (_ID.fullmatch(business_id) and _ID.fullmatch(recording_id)):
            raise ValueError("upload links name callvault's own ids only")
        expires = int(self._clock()) + self._ttl
        token = self._signer.sign(expires, (random_text(secrets.token_bytes(16)), business_id, recording_id))
        url = f"{self.base_url}{audio_path(recording_id)}?{TOKEN_FIELD}={token}"
        return UploadLink(url, token, datetime.fromtimestamp(expires, UTC))

    def verify(self, token: str, recording_id: str) -> UploadGrant:
        """The grant a token carries, for the recording the request names. Anything that is
        not a token this service signed for that recording is ``upload_url_invalid``; only
        an authentic one can be ``upload_url_expired``."""
        try:
            signed = self._signer.open(token, 3)
        except BadToken:
            raise UploadUrlInvalid() from None
        nonce, business_id, signed_recording = signed.fields
        if not (_NONCE.fullmatch(nonce) and _ID.fullmatch(business_id) and _ID.fullmatch(signed_recording)):
            raise UploadUrlInvalid()
        if signed_recording != recording_id:
            raise UploadUrlInvalid()
        expires = signed.expires
        if self._clock() >= expires:
            raise UploadUrlExpired()
        return UploadGrant(business_id, signed_recording, nonce, datetime.fromtimestamp(expires, UTC))

    async def claim(self, grant: UploadGrant) -> None:
        """Take the grant's nonce for this upload, or ``upload_url_used``: a conditional insert,
        so two PUTs racing with one URL cannot both go on. Claims of expired URLs are dropped."""
        async with self._db.session() as session:
            session.add(
                UploadUrlClaim(
                    nonce=grant.nonce, recording_id=grant.recording_id, expires_at=grant.expires_at
                )
            )
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                raise UploadUrlUsed() from None
            await session.exec(
                delete(UploadUrlClaim).where(col(UploadUrlClaim.expires_at) < datetime.now(UTC))
            )
            await session.commit()

    async def upload_once(
        self,
        grant: UploadGrant,
        chunks: AsyncIterable[bytes],
        store: Callable[[AsyncIterable[bytes]], Awaitable[T]],
    ) -> T:
        """Run ``store`` on the body under the grant's claim. A refusal (a domain error) or a
        body that broke off gives the claim back: ``store`` commits only after the whole body
        is in and verified, so nothing was stored. Any other failure keeps it spent."""
        await self.claim(grant)
        ended = False

        async def watched() -> AsyncIterator[bytes]:
            nonlocal ended
            async for chunk in chunks:
                yield chunk
            ended = True

        try:
            return await store(watched())
        except BaseException as exc:
            if isinstance(exc, DomainError) or not ended:
                try:
                    await self.give_back(grant)
                except Exception:
                    log.warning("could not give back an upload URL claim; it stays used", exc_info=True)
            raise

    async def give_back(self, grant: UploadGrant) -> None:
        """Undo ``claim`` for an upload that stored nothing: the link may be tried again."""
        async with self._db.session() as session:
            await session.exec(delete(UploadUrlClaim).where(col(UploadUrlClaim.nonce) == grant.nonce))
            await session.commit()
