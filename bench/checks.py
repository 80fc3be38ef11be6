"""Proof that a load's answers were successes, not just HTTP 200s: the server's own count
of calls by gRPC status over the load, and real gRPC client calls checked afterwards."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from bench.load import LoadResult
from bench.servers import CallKey, ServerProcess


@dataclass
class Verdict:
    valid: bool
    text: str


def server_counted(
    server: ServerProcess, before: Counter[CallKey], method: str, transport: str, result: LoadResult
) -> Verdict:
    """Calls of `method` the server answered since `before` (warm-up included): all OK, and
    at least as many as the tool counted."""
    after = server.calls()
    ok = bad = 0
    others: Counter[str] = Counter()
    for (m, t, status), count in (after - before).items():
        if m != method or t != transport:
            continue
        if status in ("OK", "200"):
            ok += count
        else:
            bad += count
            others[status] += count
    valid = bad == 0 and result.bad == 0 and ok >= result.ok
    detail = ", ".join(f"{s} {n}" for s, n in others.items())
    text = f"server counted {ok:,} OK{' and ' + detail if detail else ''} (warm-up included), tool {result.ok:,} good / {result.bad} bad"
    return Verdict(valid, text)


def tool_counted(result: LoadResult) -> Verdict:
    return Verdict(result.bad == 0 and result.ok > 0, f"tool {result.ok:,} good / {result.bad} bad")


def sample_calls(target: str, n: int, check: Callable[[grpc.Channel], bool]) -> Verdict:
    """`n` real gRPC calls with grpcio, each checked for status OK and the right payload."""
    good = 0
    failures: list[str] = []
    with grpc.insecure_channel(target) as channel:
        for _ in range(n):
            try:
                if check(channel):
                    good += 1
                else:
                    failures.append("wrong payload")
            except grpc.RpcError as exc:
                failures.append(str(exc.code()))
    text = f"{good}/{n} grpcio calls OK with the right payload"
    if failures:
        text += f" (failures: {', '.join(sorted(set(failures)))})"
    return Verdict(good == n, text)


def combine(*verdicts: Verdict) -> Verdict:
    return Verdict(all(v.valid for v in verdicts), "; ".join(v.text for v in verdicts))
