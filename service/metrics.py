"""Prometheus metrics: what operators graph and alert on. One module owns every metric."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

CALLS = Counter(
    "callvault_calls_total", "Calls by method, transport and status", ["method", "transport", "status"]
)
CALL_SECONDS = Histogram(
    "callvault_call_duration_seconds",
    "Call latency by method and transport",
    ["method", "transport"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECORDINGS_STORED = Counter(
    "callvault_recordings_stored_total", "Recordings stored, per provider", ["provider_id"]
)
RECORDING_BYTES = Counter(
    "callvault_recording_bytes_total", "Recording bytes stored, per provider", ["provider_id"]
)
RECORDING_FAILURES = Counter(
    "callvault_recording_failures_total", "Recording downloads that failed, per provider", ["provider_id"]
)
PULL_LAG = Gauge(
    "callvault_pull_lag_seconds", "Now minus the provider's cursor after its last pull", ["provider_id"]
)
PULLS = Counter("callvault_pulls_total", "Pulls by provider and end state", ["provider_id", "state"])
BLOB_ERRORS = Counter("callvault_blob_errors_total", "Blob store operations that failed", ["operation"])
DATABASE_UP = Gauge(
    "callvault_database_up", "1 while the database answers the health probe", multiprocess_mode="min"
)
DATABASE_ERRORS = Counter("callvault_database_errors_total", "Health probes the database failed")
RETENTION_PURGED = Counter("callvault_retention_purged_total", "Recordings deleted by retention")
RETENTION_HELD = Counter(
    "callvault_retention_held_total", "Recordings past their retention kept for a legal hold, at each run"
)
RATE_LIMITED = Counter(
    "callvault_rate_limited_total", "Calls refused by the per-key rate limit", ["transport"]
)


def exposition() -> tuple[bytes, str]:
    """This process's metrics, or every worker's when they share a metrics folder."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
