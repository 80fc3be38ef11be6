"""The audit log as the servicers use it: record an event, list a business's events
newest first (checking the chains is service/audit/chain.py's).

Fail closed: an audio read whose event cannot be written is refused (``AuditUnavailable``,
503) before a byte is sent; a change records its event in its own transaction, so a
change that cannot be recorded does not happen either.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select

from service.audit.chain import record_in
from service.audit.events import Action, Actor, ByteSpan, Target, TargetKind, recording_target
from service.errors import AuditUnavailable, InvalidArgument
from service.recordings.signedtokens import BadToken, SigningKeys, TokenSigner
from service.storage.db import Database
from service.storage.models import AuditEvent

log = logging.getLogger("callvault.audit")

CURSOR_PURPOSE = b"callvault audit-cursor v1"
DEFAULT_PAGE, MAX_PAGE = 50, 200
MAX_TOKEN = 300


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What a listing asks for; every field narrows it."""

    recording_id: str = ""
    key_id: str = ""
    action: str = ""
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive

    def digest(self, business_id: str) -> str:
        """Binds a page token to its listing: a token from another query is refused."""
        text = "\x1f".join(
            [
                business_id,
                self.recording_id,
                self.key_id,
                self.action,
                self.since.isoformat() if self.since else "",
                self.until.isoformat() if self.until else "",
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class AuditPage:
    events: list[AuditEvent]
    next_token: str  # "" on the last page


class AuditLog:
    def __init__(self, db: Database, keys: SigningKeys) -> None:
        self._db = db
        # Page tokens are signed tokens whose number is the sequence a page continues below.
        self._cursors = TokenSigner(keys, CURSOR_PURPOSE)

    def __repr__(self) -> str:
        return "AuditLog()"

    async def record(
        self,
        business_id: str,
        actor: Actor,
        action: Action,
        target: Target,
        *,
        span: ByteSpan | None = None,
    ) -> None:
        """One event in its own transaction, for an action that has none (a read, a sync
        request). Raises ``AuditUnavailable`` when it cannot be written: the caller refuses."""
        try:
            async with self._db.session() as session:
                await record_in(session, business_id, actor, action, target, span=span)
                await session.commit()
        except SQLAlchemyError:  # the commit itself
            log.exception("audit event could not be committed", extra={"business_id": business_id})
            raise AuditUnavailable() from None

    async def audio_read(self, business_id: str, actor: Actor, recording_id: str, span: ByteSpan) -> None:
        """Every read of audio, whichever way it came (REST, gRPC, a signed listen link:
        its actor is ``Actor.link`` with the minting key's id and name)."""
        await self.record(business_id, actor, Action.AUDIO_READ, recording_target(recording_id), span=span)

    # Listing

    def _token(self, business_id: str, wanted: AuditFilter, seq: int) -> str:
        return self._cursors.sign(seq, [wanted.digest(business_id)])

    def _before(self, business_id: str, wanted: AuditFilter, token: str) -> int | None:
        """The sequence number a page token continues below; anything this service did
        not sign for this very listing (a key no longer in the ring included) is refused
        naming pageToken."""
        if not token:
            return None
        refused = InvalidArgument("pageToken", "is not a page token of this listing")
        if len(token) > MAX_TOKEN:
            raise refused
        try:
            signed = self._cursors.open(token, 1)
        except BadToken:
            raise refused from None
        if signed.fields != (wanted.digest(business_id),):
            raise refused
        return signed.expires

    async def page(
        self, business_id: str, wanted: AuditFilter, *, page_size: int | None, page_token: str
    ) -> AuditPage:
        """The business's events matching ``wanted``, newest first (by their place in the
        chain), ``page_size`` at a time; only ever the business's own chain."""
        if page_size is not None and not 1 <= page_size <= MAX_PAGE:
            raise InvalidArgument("pageSize", f"must be between 1 and {MAX_PAGE}")
        size = page_size or DEFAULT_PAGE
        before = self._before(business_id, wanted, page_token)
        query = select(AuditEvent).where(col(AuditEvent.chain) == business_id)
        if before is not None:
            query = query.where(col(AuditEvent.seq) < before)
        if wanted.recording_id:
            query = query.where(
                col(AuditEvent.target_kind) == TargetKind.RECORDING.value,
                col(AuditEvent.target_id) == wanted.recording_id,
            )
        if wanted.key_id:
            query = query.where(col(AuditEvent.key_id) == wanted.key_id)
        if wanted.action:
            query = query.where(col(AuditEvent.action) == wanted.action)
        if wanted.since is not None:
            query = query.where(col(AuditEvent.at) >= wanted.since)
        if wanted.until is not None:
            query = query.where(col(AuditEvent.at) < wanted.until)
        async with self._db.session() as session:
            rows = list(
                (await session.exec(query.order_by(col(AuditEvent.seq).desc()).limit(size + 1))).all()
            )
        if len(rows) <= size:
            return AuditPage(rows, "")
        rows = rows[:size]
        return AuditPage(rows, self._token(business_id, wanted, rows[-1].seq))
