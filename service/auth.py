"""API keys, who a caller is, and what it may touch.

Keys are `crk_` plus 43 url-safe characters (256 random bits) and are stored only as
their sha256. An account key acts for any business of its account and must name one
(`x-business-id`); a business key is bound to one business and ignores that header.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import math
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeAlias

from sqlalchemy import ColumnElement, bindparam
from sqlalchemy import select as core_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.errors import BusinessNotFound, BusinessRequired, MissingScope, Unauthenticated
from service.storage.db import Database, insert_for
from service.storage.models import ApiKey, ApiKeyAgent, Business, KeyRevocation

KEY_PREFIX = "crk_"


class Scope(enum.StrEnum):
    MANAGE_PROVIDER_CONFIG = "manage_provider_config"
    VIEW_RECORDING_ALL = "view_recording_all"
    VIEW_RECORDING_SELF = "view_recording_self"
    MANAGE_RECORDING_REVIEW = "manage_recording_review"
    MANAGE_CALL_RECORDING = "manage_call_recording"
    MANAGE_RECORDING_COLLECTION = "manage_recording_collection"
    VIEW_AUDIT_LOG = "view_audit_log"
    # Separate from manage_call_recording, which deletes: a hold that the deleting key could
    # lift would guard only against accidents (README "Legal hold").
    MANAGE_LEGAL_HOLD = "manage_legal_hold"
    MANAGE_ALL = "manage_all"


_KNOWN_SCOPES = frozenset(s.value for s in Scope)

# What a call needs: a scope, or a tuple of scopes any one of which will do.
Requirement: TypeAlias = Scope | tuple[Scope, ...]


def parse_scopes(values: Iterable[str]) -> frozenset[Scope]:
    """Scopes from user input; an unknown one is an error naming it."""
    parsed = set()
    for value in values:
        try:
            parsed.add(Scope(value.strip()))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise ValueError(f"unknown scope {value!r}; known scopes: {known}") from None
    return frozenset(parsed)


@dataclass(frozen=True, slots=True)
class NewKey:
    plaintext: str
    key_hash: str
    prefix: str


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate_key() -> NewKey:
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    return NewKey(plaintext=plaintext, key_hash=hash_key(plaintext), prefix=plaintext[:12])


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    account_id: str
    # The business a business key is bound to; None for an account key.
    bound_business_id: str | None
    scopes: frozenset[Scope]
    # The agents the key is bound to (`keys create --agent`): what view_recording_self sees.
    agent_keys: frozenset[str] = field(default_factory=frozenset)
    # The key's name (never the key): what the audit log shows beside its id.
    key_name: str = ""

    @property
    def level(self) -> str:
        return "account" if self.bound_business_id is None else "business"

    def has(self, scope: Scope) -> bool:
        return Scope.MANAGE_ALL in self.scopes or scope in self.scopes

    def visible_agents(self) -> frozenset[str] | None:
        """Whose recordings this key may read: None for all of them (view_recording_all),
        else its bound agents' only (view_recording_self; none when it has no agents)."""
        return None if self.has(Scope.VIEW_RECORDING_ALL) else self.agent_keys

    def require(self, *needs: Requirement) -> None:
        """Every requirement named (a call that reaches two kinds of data needs both); a
        tuple is met by any one of its scopes. The refusal names the first one unmet."""
        for need in needs:
            alternatives = need if isinstance(need, tuple) else (need,)
            if not any(self.has(s) for s in alternatives):
                raise MissingScope(" or ".join(s.value for s in alternatives))


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("missing Authorization: Bearer crk_... header")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(KEY_PREFIX) or len(token) > 200:
        raise Unauthenticated("Authorization must be Bearer crk_...")
    return token


# Revocations made in this process: every cache here compares this on each lookup, so a
# key revoked in-process is refused at once, whichever Database object revoked it.
_local_revocations = 0


def note_revoked() -> None:
    """Called after a revocation commits in this process."""
    global _local_revocations
    _local_revocations += 1


async def bump_revocations(session: AsyncSession, dialect: str) -> None:
    """In the revoking transaction: move the counter every process polls (see KeyCache)."""
    await session.exec(
        insert_for(dialect, KeyRevocation)
        .values(id=1, counter=1)
        .on_conflict_do_update(index_elements=["id"], set_={"counter": KeyRevocation.counter + 1})
    )


class KeyCache:
    """Principals by key hash, so an authenticated call costs no database read.

    The bound on revocation: a revocation in this process empties the cache at once; one
    elsewhere (the CLI, another process or replica) bumps the `keyrevocation` counter in
    its transaction, which each process reads at most once a second before serving from
    the cache, so a revoked key is refused everywhere within ``check_seconds``. Misses
    are not cached (a new key works at once; guessed keys cannot fill the cache), and the
    cache holds at most ``max_entries`` principals (oldest dropped first)."""

    def __init__(
        self,
        *,
        check_seconds: float = 1.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.check_seconds = check_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, Principal] = {}
        self._counter: int | None = None
        self._checked_at = -math.inf
        self._local = _local_revocations
        # Moves whenever the cache is emptied: a lookup that began before may not fill it.
        self.generation = 0

    def clear(self) -> None:
        self._entries.clear()
        self.generation += 1

    async def fresh(self, session: AsyncSession) -> None:
        """Empty the cache if a revocation became visible; reads the counter at most
        once per ``check_seconds``."""
        if self._local != _local_revocations:
            self._local = _local_revocations
            self.clear()
        now = self._clock()
        if now - self._checked_at < self.check_seconds:
            return
        counter = (
            await session.exec(select(KeyRevocation.counter).where(col(KeyRevocation.id) == 1))
        ).first()
        counter = counter or 0
        if counter != self._counter:
            self._counter = counter
            self.clear()
        self._checked_at = now

    def due(self) -> bool:
        return self._local != _local_revocations or self._clock() - self._checked_at >= self.check_seconds

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_hash: str) -> Principal | None:
        """The cached principal; never one revoked in this process, even while a read of
        the counter that began before the revocation is still under way."""
        if self._local != _local_revocations:
            self._local = _local_revocations
            self.clear()
        return self._entries.get(key_hash)

    def put(self, key_hash: str, principal: Principal, generation: int) -> None:
        if generation != self.generation:
            return
        if len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key_hash] = principal


# An account key's business, a short read on every call that names one (Database.reads).
_B = Business.__table__.c  # type: ignore[attr-defined]
_ACCOUNT_BUSINESS = core_select(_B.id).where(
    _B.id == bindparam("business_id"), _B.account_id == bindparam("account_id")
)


class Authenticator:
    def __init__(self, db: Database, cache: KeyCache | None = None) -> None:
        self._db = db
        self.cache = cache if cache is not None else KeyCache()
        self._freshening: asyncio.Future[None] | None = None

    async def _fresh(self) -> None:
        """``KeyCache.fresh`` in a session of its own. Calls that find the cache due while
        a read of the counter is under way wait for that read instead of each making one:
        under load, every call in flight would otherwise read it when the second is up."""
        pending = self._freshening
        if pending is None or pending.done():
            pending = self._freshening = asyncio.ensure_future(self._read_counter())
        await asyncio.shield(pending)

    async def _read_counter(self) -> None:
        async with self._db.session() as session:
            await self.cache.fresh(session)

    async def principal(self, authorization: str | None) -> Principal:
        key_hash = hash_key(bearer_token(authorization))
        return await self._principal(key_hash, lambda: col(ApiKey.key_hash) == key_hash)

    async def principal_by_id(self, key_id: str) -> Principal:
        """The live key with this id (the key that minted a listen link): the same cache, so
        the same bound on revocation, as a key sent in full."""
        return await self._principal(f"id:{key_id}", lambda: col(ApiKey.id) == key_id)

    async def _principal(self, key_hash: str, match: Callable[[], ColumnElement[bool]]) -> Principal:
        """The key ``match()`` finds, cached under ``key_hash`` (its hash, or ``id:`` and its
        id); the clause is built only on a miss (a cache hit builds no SQL)."""
        cache = self.cache
        if cache.due():
            await self._fresh()
        cached = cache.get(key_hash)
        if cached is not None:
            return cached
        async with self._db.session() as session:
            generation = cache.generation
            key = (await session.exec(select(ApiKey).where(match()))).first()
            if key is None or key.revoked_at is not None:
                raise Unauthenticated("invalid or revoked API key")
            scopes = frozenset(Scope(s) for s in key.scopes.split() if s in _KNOWN_SCOPES)
            agents = await session.exec(
                select(ApiKeyAgent.agent_key).where(col(ApiKeyAgent.key_id) == key.id)
            )
            agent_keys = frozenset(agents.all())
        principal = Principal(
            key_id=key.id,
            account_id=key.account_id,
            bound_business_id=key.business_id,
            scopes=scopes,
            agent_keys=agent_keys,
            key_name=key.name,
        )
        cache.put(key_hash, principal, generation)
        return principal

    async def business_for(self, principal: Principal, requested: str | None) -> str:
        """The business this call acts for. Another account's business is not found."""
        if principal.bound_business_id is not None:
            return principal.bound_business_id
        requested = (requested or "").strip()
        if not requested:
            raise BusinessRequired()
        found = await self._db.reads.first(
            _ACCOUNT_BUSINESS, business_id=requested, account_id=principal.account_id
        )
        if found is None:
            raise BusinessNotFound()
        return str(found[0])

    async def businesses(self, principal: Principal) -> list[Business]:
        async with self._db.session() as session:
            query = select(Business).order_by(col(Business.name))
            if principal.bound_business_id is not None:
                query = query.where(col(Business.id) == principal.bound_business_id)
            else:
                query = query.where(col(Business.account_id) == principal.account_id)
            return list((await session.exec(query)).all())
