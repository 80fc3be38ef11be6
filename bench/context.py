"""What a run shares: its sizes (full or quick), a scratch folder, the seeded data sets
(made once, on first use) and the report being filled in."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from bench.report import Report
from bench.seed import RecordingSet, Tenant, seed_providers, seed_recordings


@dataclass(frozen=True, slots=True)
class Plan:
    quick: bool
    providers: int
    rows: tuple[int, int]  # the small and the large recordings set
    load_seconds: float  # each h2load/wrk run of figures 1, 2 and 6
    warmup_seconds: float
    page_seconds: float  # each recordings-list page (figure 3)
    audio_mib: int  # the download figure's recording
    big_mib: int  # the peak-RSS recording
    ingest_recordings: int
    ingest_kib: int
    samples: int  # real gRPC client calls checked after a load

    @classmethod
    def full(cls) -> Plan:
        return cls(
            quick=False,
            providers=1000,
            rows=(1000, 1_000_000),
            load_seconds=10,
            warmup_seconds=2,
            page_seconds=5,
            audio_mib=256,
            big_mib=1024,
            ingest_recordings=300,
            ingest_kib=64,
            samples=20,
        )

    @classmethod
    def smoke(cls) -> Plan:
        return cls(
            quick=True,
            providers=100,
            rows=(1000, 20_000),
            load_seconds=2,
            warmup_seconds=1,
            page_seconds=1,
            audio_mib=16,
            big_mib=64,
            ingest_recordings=30,
            ingest_kib=64,
            samples=5,
        )


class CpuMeter:
    """How busy the machine was with processes other than the bench and its children
    (other people's tests, say): busy CPU from /proc/stat minus our own CPU time."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._busy0 = self._busy()
        self._own0 = self._own()

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def foreign_cores(self) -> float:
        wall = time.monotonic() - self.started
        other = (self._busy() - self._busy0) - (self._own() - self._own0)
        return max(other, 0.0) / wall if wall else 0.0


class Bench:
    def __init__(self, plan: Plan, root: Path) -> None:
        self.plan = plan
        self.root = root
        self.report = Report()

    def dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def say(self, text: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)

    @cached_property
    def providers(self) -> tuple[Path, Tenant, list[str]]:
        """A data dir whose one business has plan.providers providers."""
        data = self.dir("providers")
        self.say(f"seeding {self.plan.providers:,} providers (ProviderStore)")
        tenant, ids = seed_providers(data, self.plan.providers)
        return data, tenant, ids

    @cached_property
    def recordings(self) -> tuple[Path, list[RecordingSet]]:
        """A data dir with two businesses holding plan.rows recordings each."""
        data = self.dir("recordings")
        small, large = self.plan.rows
        self.say(f"seeding {small:,} + {large:,} recordings (SQLAlchemy core insert, executemany)")
        started = time.monotonic()
        sets = seed_recordings(data, [small, large])
        self.say(f"seeded in {time.monotonic() - started:.0f}s")
        return data, sets
