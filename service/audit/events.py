"""What an audit event says, and its canonical encoding.

The domain records events; it never sees a transport. A transport (or the CLI, or the
server's own jobs) builds an ``Actor``: the key that acted (its id and name, never the
key), how the call came in and its request id, and hands it down with the call.
"""

from __future__ import annotations

import enum
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from service.storage.models import as_utc

# The chain of events no business owns: master keys, account keys (service/audit/chain.py).
SYSTEM_CHAIN = "system"
# Bumped if the canonical encoding ever changes; it is the first item hashed.
ENCODING = "v1"


class Transport(enum.StrEnum):
    GRPC = "grpc"
    REST = "rest"
    LINK = "link"  # a signed listen link, recorded under the key that minted it
    CLI = "cli"
    SYSTEM = "system"  # the server's own jobs (retention purges)


class Action(enum.StrEnum):
    AUDIO_READ = "recording.audio.read"
    AUDIO_LINK_CREATE = "recording.audio_link.create"
    RECORDING_DELETE = "recording.delete"
    PROVIDER_CREATE = "provider.create"
    PROVIDER_UPDATE = "provider.update"
    PROVIDER_DELETE = "provider.delete"
    PROVIDER_SYNC = "provider.sync"
    KEY_CREATE = "api_key.create"
    KEY_REVOKE = "api_key.revoke"
    MASTER_KEY_ADD = "master_key.add"
    MASTER_KEY_RESEAL = "master_key.reseal"
    MASTER_KEY_RETIRE = "master_key.retire"
    RETENTION_SET = "retention.set"
    HOLD_PLACE = "recording.hold.place"
    HOLD_RELEASE = "recording.hold.release"


class TargetKind(enum.StrEnum):
    RECORDING = "recording"
    PROVIDER = "provider"
    API_KEY = "api_key"
    MASTER_KEY = "master_key"
    BUSINESS = "business"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted and through what; built by the transport, carried into the domain."""

    transport: Transport
    request_id: str
    key_id: str | None = None
    key_name: str = ""

    @classmethod
    def cli(cls) -> Actor:
        """An operator's command: no API key; a fresh id ties its events together."""
        return cls(transport=Transport.CLI, request_id=uuid.uuid4().hex)

    @classmethod
    def link(cls, key_id: str, key_name: str, request_id: str) -> Actor:
        """A signed listen link's read: recorded under the key that minted the link."""
        return cls(transport=Transport.LINK, request_id=request_id, key_id=key_id, key_name=key_name)

    @classmethod
    def system(cls) -> Actor:
        """The server's own work (retention), one id per run."""
        return cls(transport=Transport.SYSTEM, request_id=uuid.uuid4().hex)


@dataclass(frozen=True, slots=True)
class Target:
    kind: TargetKind
    id: str


def provider_target(provider_id: str) -> Target:
    return Target(TargetKind.PROVIDER, provider_id)


def recording_target(recording_id: str) -> Target:
    return Target(TargetKind.RECORDING, recording_id)


@dataclass(frozen=True, slots=True)
class ByteSpan:
    """The bytes a read served: [start, end) of the audio."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Fields:
    """Everything an event's hash covers, in one place."""

    chain: str
    seq: int
    at: datetime
    business_id: str | None
    key_id: str | None
    key_name: str
    action: str
    target_kind: str
    target_id: str
    range_start: int | None
    range_end: int | None
    transport: str
    request_id: str
    prev_hash: str

    def canonical(self) -> bytes:
        """A fixed-order JSON array: no field can be moved into another's place, and a
        time is written with its microseconds in UTC, as both databases store it."""
        return json.dumps(
            [
                ENCODING,
                self.chain,
                self.seq,
                as_utc(self.at).isoformat(timespec="microseconds"),
                self.business_id,
                self.key_id,
                self.key_name,
                self.action,
                self.target_kind,
                self.target_id,
                self.range_start,
                self.range_end,
                self.transport,
                self.request_id,
                self.prev_hash,
            ],
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()

    def digest(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()
