"""The figures, by name, in the order a full run measures them."""

from __future__ import annotations

from collections.abc import Callable

from bench import audio, calllog, ingest, providers, recordings, scaling
from bench.context import Bench

Figure = Callable[[Bench], None]

FIGURES: dict[str, tuple[str, Figure]] = {
    "providers": ("1-2: gRPC GetProvider/ListProviders beside Health/Check; REST beside gRPC", providers.run),
    "list": ("3: recordings list pages at the small and the large set", recordings.run),
    "audio": ("4: downloads beside file->socket; peak RSS and MiB/s of large transfers", audio.run),
    "ingest": ("5: recordings/s pulled from a fake Kazoo", ingest.run),
    "workers": ("6: 2 worker processes beside 1", providers.run_workers),
    "log": ("7: the per-call log line: in process, and GetProvider at INFO beside WARNING", calllog.run),
    "scaling": (
        "S: GetProvider q/s and list p99 at 1k/100k/1M recordings, 10/1k/100k providers",
        scaling.run,
    ),
}

# Other names --only accepts.
ALIASES = {
    "1": "providers",
    "2": "providers",
    "grpc": "providers",
    "rest": "providers",
    "3": "list",
    "recordings": "list",
    "4": "audio",
    "download": "audio",
    "rss": "audio",
    "5": "ingest",
    "6": "workers",
    "7": "log",
    "S": "scaling",
    "scale": "scaling",
}


def resolve(name: str) -> str:
    key = ALIASES.get(name, name)
    if key not in FIGURES:
        raise ValueError(f"unknown figure {name!r}: choose from {', '.join([*FIGURES, *ALIASES])}")
    return key
