"""Presigned upload URLs: a link that lets its holder PUT the audio of one recording,
once, before it expires, with no API key.

A token is ``base64url(payload) "." base64url(HMAC-SHA256(key, payload))`` where the payload
is ``v1.<key id>.<expires (unix s)>.<nonce>.<business id>.<recording id>``. The key is
derived from master key ``<key id>`` (``Keyring.derive``), so there is no new secret to keep,
and a link minted just before a rotation still verifies while its key is in the ring.

Once-only: the first PUT claims the nonce (a row keyed on it, so of two racing PUTs one
insert fails). An upload that fails before anything is stored (size or sha256 mismatch,
an empty body, the client going away mid-body) gives the claim back, so the link can be
tried again until it expires; one that got as far as storing keeps it, even if the answer
never reached the client (a crash mid-upload also keeps it: register the dataId again
for a new link).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from typing import Protocol, TypeVar

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from service.errors import DomainError, UploadUrlExpired, UploadUrlInvalid, UploadUrlUsed
from service.sealing import UnknownKey
from service.storage.db import Database
from service.storage.models import UploadUrlClaim

log = logging.getLogger("callvault.recordings")
T = TypeVar("T")

PURPOSE = b"callvault upload-url v1"
VERSION = "v1"
TOKEN_FIELD = "uploadToken"  # noqa: S105  (the query parameter: UploadRecordingAudioRequest.upload_token)
_ID = re.compile(r"[A-Za-z0-9-]{1,36}")  # the ids callvault makes (UUIDs)
_NONCE = re.compile(r"[A-Za-z0-9_-]{22}")
MAX_TOKEN = 400


class SigningKeys(Protocol):
    """What signing needs of a keyring (``Keyring`` or ``LiveKeyring``)."""

    @property
    def primary_id(self) -> int: ...

    def derive(self, purpose: bytes, key_id: int) -> bytes: ...


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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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
        self._keys = keys
        self._db = db
        self._ttl = ttl_seconds
        self._clock = clock
        self.base_url = base_url

    def __repr__(self) -> str:
        return f"UploadLinks(base_url={self.base_url!r}, ttl_seconds={self._ttl})"

    def _mac(self, key_id: int, payload: bytes) -> bytes:
        return hmac.new(self._keys.derive(PURPOSE, key_id), payload, sha256).digest()

    def mint(self, business_id: str, recording_id: str) -> UploadLink:
        """An absolute URL to PUT this recording's audio to; ``base_url`` must be set."""
        assert self.base_url, "the public base URL is set when the HTTP listener is up"
        if not (_ID.fullmatch(business_id) and _ID.fullmatch(recording_id)):
            raise ValueError("upload links name callvault's own ids only")
        key_id = self._keys.primary_id
        expires = int(self._clock()) + self._ttl
        nonce = _b64(secrets.token_bytes(16))
        payload = f"{VERSION}.{key_id}.{expires}.{nonce}.{business_id}.{recording_id}".encode()
        token = f"{_b64(payload)}.{_b64(self._mac(key_id, payload))}"
        url = f"{self.base_url}{audio_path(recording_id)}?{TOKEN_FIELD}={token}"
        return UploadLink(url, token, datetime.fromtimestamp(expires, UTC))

    def verify(self, token: str, recording_id: str) -> UploadGrant:
        """The grant a token carries, for the recording the request names. Anything that is
        not a token this service signed for that recording is ``upload_url_invalid``; only
        an authentic one can be ``upload_url_expired``."""
        if len(token) > MAX_TOKEN or token.count(".") != 1:
            raise UploadUrlInvalid()
        encoded, _, mac_text = token.partition(".")
        try:
            payload, mac = _unb64(encoded), _unb64(mac_text)
            fields = payload.decode("ascii").split(".")
        except (binascii.Error, ValueError):
            raise UploadUrlInvalid() from None
        if len(fields) != 6 or fields[0] != VERSION or not fields[1].isdigit() or not fields[2].isdigit():
            raise UploadUrlInvalid()
        _, key_text, expires_text, nonce, business_id, signed_recording = fields
        if not (_NONCE.fullmatch(nonce) and _ID.fullmatch(business_id) and _ID.fullmatch(signed_recording)):
            raise UploadUrlInvalid()
        try:
            expected = self._mac(int(key_text), payload)
        except UnknownKey:  # retired, or never ours
            raise UploadUrlInvalid() from None
        if not hmac.compare_digest(expected, mac):
            raise UploadUrlInvalid()
        if not hmac.compare_digest(signed_recording.encode(), recording_id.encode()):
            raise UploadUrlInvalid()
        expires = int(expires_text)
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
