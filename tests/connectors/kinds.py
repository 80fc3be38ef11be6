"""One profile per connector kind: how to start its fake, build its connector, seed calls and
recordings, and which paths to fault. The provider test modules take their ``make`` from here;
test_contract.py runs the checks every connector must pass over all of them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

from service.connectors.antbuddy import AntBuddyConnector
from service.connectors.base import Connector
from service.connectors.dtac import DtacConnector
from service.connectors.http import NetworkPolicy
from service.connectors.kazoo import KazooConnector
from service.connectors.promptcall import PromptCallConnector
from service.connectors.threecx import ThreeCXConnector
from tests.connectors.support import POLICY, collect
from tests.fakes.antbuddy import FakeAntBuddy
from tests.fakes.dtac import FakeDtac
from tests.fakes.httpserver import Blob, FakeServer
from tests.fakes.kazoo import FakeKazoo
from tests.fakes.promptcall import FakePromptCall
from tests.fakes.threecx import FakeThreeCX

F = TypeVar("F", bound=FakeServer)
C = TypeVar("C", bound=Connector)

WRONG_PASSWORD = "wrong-Pa55word-xyz"


class Paths(NamedTuple):
    check: str  # a request check() makes: where a slow answer is staged
    listing: str  # where list_calls asks for its pages
    recording: str  # the prefix of the request that carries the audio


class Kind(ABC, Generic[F, C]):
    """How the tests drive one provider: its fake, its connector, where to fault it."""

    name: ClassVar[str]  # the test id
    content_type: ClassVar[str]  # what its recordings stream as
    dummy_config: ClassVar[Mapping[str, object]]  # credentials for a connector that reaches no fake
    bad_credentials: ClassVar[tuple[Mapping[str, object], ...]]  # overrides check() must refuse
    missing_refs: ClassVar[tuple[str, ...]]  # refs of no recording; "{base}" stands for the fake's URL

    @abstractmethod
    def new_fake(self) -> F:
        """A fake server, not started yet."""

    @abstractmethod
    def build(self, config: Mapping[str, object], policy: NetworkPolicy) -> C: ...

    @abstractmethod
    def make(self, fake: F, *, policy: NetworkPolicy = POLICY, **over: Any) -> C:
        """A connector to ``fake`` with its good credentials, ``over`` replacing settings.
        (Any, not object: a kind may take more arguments, such as the connector class.)"""

    def connect(self, fake: F) -> C:
        """The connector the ``conn`` fixture holds."""
        return self.make(fake)

    @abstractmethod
    def paths(self, fake: F) -> Paths: ...

    @abstractmethod
    def leaks(self, fake: F) -> list[str]:
        """Text no error message may show: the secrets, and what would betray a URL or a body."""

    @abstractmethod
    def add_call(self, fake: F, at: datetime) -> None: ...

    @abstractmethod
    async def add_recording(self, fake: F, conn: C, at: datetime, size: int) -> tuple[str, Blob]:
        """A recorded call: the ref to open it by, and the audio the fake serves for it."""


class ThreeCXKind(Kind[FakeThreeCX, ThreeCXConnector]):
    name = "threecx"
    content_type = "audio/x-wav"
    dummy_config: ClassVar[Mapping[str, object]] = {"username": "u", "password": "p"}
    bad_credentials: ClassVar[tuple[Mapping[str, object], ...]] = (
        {"password": WRONG_PASSWORD},
        {"headless": True, "password": WRONG_PASSWORD},
    )
    missing_refs = ("999", "1) or (1", "-1", "\u0661")

    def new_fake(self) -> FakeThreeCX:
        return FakeThreeCX()

    def build(self, config: Mapping[str, object], policy: NetworkPolicy) -> ThreeCXConnector:
        return ThreeCXConnector(config, policy)

    def make(self, fake: FakeThreeCX, *, policy: NetworkPolicy = POLICY, **over: Any) -> ThreeCXConnector:
        """As an XAPI client, or with ``headless=True`` as a web-client user."""
        headless = bool(over.pop("headless", False))
        user, secret = (fake.username, fake.password) if headless else (fake.client_id, fake.client_secret)
        config = {"baseUrl": fake.base_url, "username": user, "password": secret, "headless": headless}
        return ThreeCXConnector({**config, **over}, policy)

    def paths(self, fake: FakeThreeCX) -> Paths:
        return Paths(
            "/xapi/v1/Recordings", "/xapi/v1/Recordings", "/xapi/v1/Recordings/Pbx.DownloadRecording"
        )

    def leaks(self, fake: FakeThreeCX) -> list[str]:
        return [fake.client_secret, fake.password]

    def add_call(self, fake: FakeThreeCX, at: datetime) -> None:
        fake.add_call(at)

    async def add_recording(
        self, fake: FakeThreeCX, conn: ThreeCXConnector, at: datetime, size: int
    ) -> tuple[str, Blob]:
        call = fake.add_call(at, size=size)
        return str(call.id), call.audio


class SmallPages(DtacConnector):
    page_size = 7


class DtacKind(Kind[FakeDtac, DtacConnector]):
    name = "dtac"
    content_type = "audio/wav"
    dummy_config: ClassVar[Mapping[str, object]] = {"username": "u", "password": "p"}
    bad_credentials: ClassVar[tuple[Mapping[str, object], ...]] = ({"password": WRONG_PASSWORD},)
    missing_refs = (
        "/orktrack/rest/recordings/1/audio",
        "ftp://host/x",
        "not a url",
        "{base}/orktrack/rest/recordings/424242/audio",
    )
    LIST = "/orktrack/rest/recordings"

    def new_fake(self) -> FakeDtac:
        return FakeDtac()

    def build(self, config: Mapping[str, object], policy: NetworkPolicy) -> DtacConnector:
        return DtacConnector(config, policy)

    def make(
        self,
        fake: FakeDtac,
        cls: type[DtacConnector] = DtacConnector,
        *,
        policy: NetworkPolicy = POLICY,
        **over: Any,
    ) -> DtacConnector:
        config = {"baseUrl": fake.base_url, "username": fake.username, "password": fake.password}
        return cls({**config, **over}, policy)

    def connect(self, fake: FakeDtac) -> DtacConnector:
        return self.make(fake, SmallPages)

    def paths(self, fake: FakeDtac) -> Paths:
        return Paths("/orktrack/rest/user/login", self.LIST, f"{self.LIST}/")

    def leaks(self, fake: FakeDtac) -> list[str]:
        return [fake.password]

    def add_call(self, fake: FakeDtac, at: datetime) -> None:
        fake.add_call(at)

    async def add_recording(
        self, fake: FakeDtac, conn: DtacConnector, at: datetime, size: int
    ) -> tuple[str, Blob]:
        """Its ref is the audio URL the listing hands out, so the call is listed first."""
        call = fake.add_call(at, size=size)
        records = await collect(conn, at, at + timedelta(hours=1))
        [ref] = [r.recording_ref for r in records if r.external_id == str(call.id)]
        assert ref is not None and call.audio is not None
        return ref, call.audio


class PromptCallKind(Kind[FakePromptCall, PromptCallConnector]):
    name = "promptcall"
    content_type = "application/octet-stream"
    dummy_config: ClassVar[Mapping[str, object]] = {"apiKey": "k", "apiSecret": "s"}
    bad_credentials: ClassVar[tuple[Mapping[str, object], ...]] = ({"apiSecret": WRONG_PASSWORD},)
    missing_refs = ("1714521600.999", "../../etc/passwd", "a b", "")
    CDR = "/pbxws.php/cdrapi"
    REC = "/pbxws.php/recapi"

    def new_fake(self) -> FakePromptCall:
        return FakePromptCall()

    def build(self, config: Mapping[str, object], policy: NetworkPolicy) -> PromptCallConnector:
        return PromptCallConnector(config, policy)

    def make(
        self,
        fake: FakePromptCall,
        cls: type[PromptCallConnector] = PromptCallConnector,
        *,
        policy: NetworkPolicy = POLICY,
        **over: Any,
    ) -> PromptCallConnector:
        config = {"baseUrl": fake.base_url, "apiKey": fake.api_key, "apiSecret": fake.api_secret}
        return cls({**config, **over}, policy)

    def paths(self, fake: FakePromptCall) -> Paths:
        return Paths(self.CDR, self.CDR, self.REC)

    def leaks(self, fake: FakePromptCall) -> list[str]:
        return [fake.api_key, fake.api_secret]

    def add_call(self, fake: FakePromptCall, at: datetime) -> None:
        fake.add_call(at)

    async def add_recording(
        self, fake: FakePromptCall, conn: PromptCallConnector, at: datetime, size: int
    ) -> tuple[str, Blob]:
        cdr = fake.add_call(at, size=size)
        assert cdr.audio is not None
        return cdr.uniqueid, cdr.audio


class KazooKind(Kind[FakeKazoo, KazooConnector]):
    name = "kazoo"
    content_type = "audio/mpeg"
    dummy_config: ClassVar[Mapping[str, object]] = {"accountId": "a1", "apiKey": "k"}
    bad_credentials: ClassVar[tuple[Mapping[str, object], ...]] = ({"apiKey": "not-the-key"},)
    missing_refs = ("202401-0000000000000000000000000000dead", "../../api_auth", "a b")

    def new_fake(self) -> FakeKazoo:
        return FakeKazoo(max_page_size=3)

    def build(self, config: Mapping[str, object], policy: NetworkPolicy) -> KazooConnector:
        return KazooConnector(config, policy)

    def make(self, fake: FakeKazoo, *, policy: NetworkPolicy = POLICY, **over: Any) -> KazooConnector:
        config = {
            "baseUrl": fake.base_url,
            "websocketUrl": "wss://ws.example.com",
            "accountId": fake.account_id,
            "apiKey": fake.api_key,
        }
        return KazooConnector({**config, **over}, policy)

    def paths(self, fake: FakeKazoo) -> Paths:
        recordings = f"/v2/accounts/{fake.account_id}/recordings"
        return Paths("/v2/api_auth", recordings, f"{recordings}/")

    def leaks(self, fake: FakeKazoo) -> list[str]:
        return [fake.api_key, *fake.issued, "?", "{"]

    def add_call(self, fake: FakeKazoo, at: datetime) -> None:
        fake.add_recording(at)

    async def add_recording(
        self, fake: FakeKazoo, conn: KazooConnector, at: datetime, size: int
    ) -> tuple[str, Blob]:
        rec = fake.add_recording(at, audio_size=size)
        return rec.id, rec.audio


class AntBuddyKind(Kind[FakeAntBuddy, AntBuddyConnector]):
    name = "antbuddy"
    content_type = "audio/mpeg"
    dummy_config: ClassVar[Mapping[str, object]] = {"appId": "a", "appSecret": "s"}
    bad_credentials: ClassVar[tuple[Mapping[str, object], ...]] = (
        {"appSecret": "wrong-secret"},
        {"appId": "someone-else"},
    )
    missing_refs = ("call_recording_missing.mp3",)
    HISTORIES = "/oapi/v1/call/histories"

    def new_fake(self) -> FakeAntBuddy:
        return FakeAntBuddy()

    def build(self, config: Mapping[str, object], policy: NetworkPolicy) -> AntBuddyConnector:
        return AntBuddyConnector(config, policy)

    def make(self, fake: FakeAntBuddy, *, policy: NetworkPolicy = POLICY, **over: Any) -> AntBuddyConnector:
        config = {"baseUrl": fake.base_url, "appId": fake.app_id, "appSecret": fake.app_secret}
        return AntBuddyConnector({**config, **over}, policy)

    def paths(self, fake: FakeAntBuddy) -> Paths:
        return Paths(self.HISTORIES, self.HISTORIES, "/media/")

    def leaks(self, fake: FakeAntBuddy) -> list[str]:
        hashes = [request.query.get("hash", "-") for request in fake.requests]
        return [fake.app_secret, *hashes, "?", "appId"]

    def add_call(self, fake: FakeAntBuddy, at: datetime) -> None:
        fake.add_call(at)

    async def add_recording(
        self, fake: FakeAntBuddy, conn: AntBuddyConnector, at: datetime, size: int
    ) -> tuple[str, Blob]:
        row = fake.add_call(at, audio_size=size)
        return row["recording"], fake.media[row["recording"]]


THREECX = ThreeCXKind()
DTAC = DtacKind()
PROMPTCALL = PromptCallKind()
KAZOO = KazooKind()
ANTBUDDY = AntBuddyKind()
KINDS: list[Kind[Any, Any]] = [THREECX, DTAC, PROMPTCALL, KAZOO, ANTBUDDY]
