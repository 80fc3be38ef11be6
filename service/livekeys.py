"""The keyring a server process seals with, following the key file while the process runs.

Rotation happens on a live fleet (``master-keys add``, ``reseal``, ``retire``) without a
restart, so every process must pick up a changed key file: it is looked at every few
seconds (a stat; parsed only when it changed) and at once on SIGHUP. A new keyring is
taken whole, or not at all: a file that does not parse, a keyring that drops a key still
needed, or one whose keys do not open their canaries is refused with a warning, and the
process keeps serving with the keys it has. Keys from CALLVAULT_MASTER_KEYS never change
while the process runs.

One thing cannot wait for the next look: another process may have loaded the new file
first and sealed a value under a key this one does not hold yet. Such a value makes this
process read the file at once, and take the new keyring if it only adds keys and opens
the value.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from service.canary import WrongKey, check_canaries
from service.processes import ProcessRegistry
from service.rotation import still_needed
from service.sealing import Keyring, SealContext, UnknownKey, load_key_file
from service.storage.db import Database

log = logging.getLogger("callvault.keys")

# device, inode, size, mtime: the key file is replaced by rename, so any write changes it.
Signature = tuple[int, int, int, int]
_UNREADABLE: Signature = (-1, -1, -1, -1)


def _signature(path: Path) -> Signature:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _describe(keyring: Keyring) -> str:
    return f"keys {list(keyring.ids)}, primary {keyring.primary_id}"


class LiveKeyring:
    """Delegates to the current immutable ``Keyring`` and swaps it whole; ``repr`` shows ids only."""

    def __init__(
        self,
        keyring: Keyring,
        *,
        db: Database,
        registry: ProcessRegistry,
        path: Path | None,
        fixed_by: str = "CALLVAULT_MASTER_KEYS",
    ) -> None:
        """``path``: the key file to follow; None when the keys are fixed (``fixed_by`` says by what)."""
        self._current = keyring
        self._db = db
        self._registry = registry
        self._path = path
        self._fixed_by = fixed_by
        # What the watcher last looked at (None: look again), and what a failed open last read.
        self._seen: Signature | None = None
        self._read_for_open: Signature | None = None
        self._still_needed_warning = ""  # said once, not at every look
        self._wake = asyncio.Event()
        self._beats: set[asyncio.Task[None]] = set()
        registry.note_keyring(keyring.primary_id, keyring.ids)

    def __repr__(self) -> str:
        return f"LiveKeyring({_describe(self._current)}, file={self._path})"

    @property
    def current(self) -> Keyring:
        return self._current

    # -- the Keyring methods, on whatever keyring is current --------------------------------

    @property
    def primary_id(self) -> int:
        return self._current.primary_id

    @property
    def ids(self) -> tuple[int, ...]:
        return self._current.ids

    def seal(self, plaintext: str, ctx: SealContext) -> bytes:
        return self._current.seal(plaintext, ctx)

    def open(self, sealed: bytes, ctx: SealContext) -> str:
        current = self._current
        try:
            return current.open(sealed, ctx)
        except UnknownKey as missing:
            key_id = missing.key_id
            newer = self._newer_file_with(key_id, current)
            if newer is None:
                raise
        plaintext = newer.open(sealed, ctx)
        self._take(newer, f"a stored value is sealed with key {key_id}")
        self._beat_soon()
        return plaintext

    def key_id_of(self, sealed: bytes) -> int:
        return self._current.key_id_of(sealed)

    def derive(self, purpose: bytes, key_id: int) -> bytes:
        """``Keyring.derive`` on the current keyring; a key another process loaded first (a
        link it signed) makes this one read the key file now, as ``open`` does."""
        current = self._current
        try:
            return current.derive(purpose, key_id)
        except UnknownKey:
            newer = self._newer_file_with(key_id, current)
            if newer is None:
                raise
        derived = newer.derive(purpose, key_id)
        self._take(newer, f"a signed link names key {key_id}")
        self._beat_soon()
        return derived

    def needs_reseal(self, sealed: bytes) -> bool:
        return self._current.needs_reseal(sealed)

    def reseal(self, sealed: bytes, ctx: SealContext) -> bytes:
        return self.seal(self.open(sealed, ctx), ctx)

    # -- following the key file --------------------------------------------------------------

    async def start(self) -> None:
        """Check the keys against their canaries (writing missing ones); raises ``WrongKey``
        so a process with the wrong key refuses to start rather than fail per request."""
        written = await check_canaries(self._db, self._current)
        if written:
            log.info("wrote canaries for master keys %s", written)
        if self._path is None:
            log.info(
                "master keys come from %s: they are not reloaded; changing them needs a restart",
                self._fixed_by,
            )

    def request_reload(self) -> None:
        """SIGHUP: look at the key file now."""
        if self._path is None:
            log.warning("reload asked for, but master keys come from %s and need a restart", self._fixed_by)
            return
        self._wake.set()

    async def run(self, interval: float) -> None:
        """Look at the key file every ``interval`` seconds, and at once when asked, until cancelled."""
        if self._path is None:
            return
        while True:
            forced = False
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
                forced = True
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.reload(force=forced)
            except Exception:
                # A database blip: look again next time rather than stop watching.
                self._seen = None
                log.warning(
                    "could not check the key file; keeping %s", _describe(self._current), exc_info=True
                )

    async def reload(self, *, force: bool = False) -> bool:
        """Take the key file's keyring if it changed and passes every check; answers whether it did."""
        if self._path is None:
            return False
        path = self._path
        try:
            signature = _signature(path)
        except OSError as exc:
            if self._seen != _UNREADABLE:  # said once, not at every look
                log.warning(
                    "cannot read key file %s (%s); keeping %s", path, exc.strerror, _describe(self._current)
                )
            self._seen = _UNREADABLE
            return False
        if signature == self._seen and not force:
            return False
        self._seen = signature
        try:
            candidate = load_key_file(path)
        except (OSError, ValueError) as exc:
            # load_key_file's messages name the file and the entry, never key material.
            log.warning("refused key file: %s; keeping %s", exc, _describe(self._current))
            return False
        before = self._current
        if candidate.primary_id == before.primary_id and candidate.holds(before) and before.holds(candidate):
            return False
        dropped = set(before.ids) - set(candidate.ids)
        if dropped:
            reasons = await still_needed(self._db, self._registry, dropped, ignore_process=self._registry.id)
            if reasons:
                # Look again at every tick: the file may become right once a re-seal is done.
                self._seen = None
                warning = (
                    f"refused key file {path}: it drops keys {sorted(dropped)}, but {'; '.join(reasons)}"
                )
                if warning != self._still_needed_warning:
                    log.warning("%s; keeping %s", warning, _describe(before))
                self._still_needed_warning = warning
                return False
        try:
            await check_canaries(self._db, candidate)
        except WrongKey as exc:
            log.warning("refused key file %s: %s; keeping %s", path, exc, _describe(before))
            return False
        if self._current is not before:
            self._seen = None  # a failed open took a newer file meanwhile: compare with that next time
            return False
        self._take(candidate, f"key file {path} changed")
        await self._beat()
        return True

    def _newer_file_with(self, key_id: int, current: Keyring) -> Keyring | None:
        """The key file's keyring, when it holds ``key_id`` and every key we hold; read at most
        once per version of the file, so values under a retired key do not read it per call."""
        if self._path is None:
            return None
        try:
            signature = _signature(self._path)
        except OSError:
            return None
        if signature in (self._seen, self._read_for_open):
            return None
        self._read_for_open = signature
        try:
            candidate = load_key_file(self._path)
        except (OSError, ValueError):
            return None  # the watcher says why
        if key_id not in candidate.ids or not candidate.holds(current):
            return None
        return candidate

    def _take(self, keyring: Keyring, why: str) -> None:
        self._current = keyring
        self._still_needed_warning = ""
        self._registry.note_keyring(keyring.primary_id, keyring.ids)
        log.info("master keys reloaded (%s): %s", why, _describe(keyring))

    async def _beat(self) -> None:
        """Tell the fleet now, not at the next beat: a re-seal is waiting for it."""
        try:
            await self._registry.beat()
        except Exception:
            log.warning("could not report the new keyring; the next heartbeat will", exc_info=True)

    def _beat_soon(self) -> None:
        try:
            task = asyncio.get_running_loop().create_task(self._beat())
        except RuntimeError:
            return  # no loop here (a synchronous caller): the next heartbeat reports it
        self._beats.add(task)
        task.add_done_callback(self._beats.discard)
