"""Fault injection and request statistics, both driven through the admin endpoint.

Faults (JSON keys, merged on PUT, reset on DELETE):
  latency_ms      delay before every request is handled
  error_rate      fraction (0..1) of requests answered with `error_status` instead of executing
  error_status    500 (InternalError) or 503 (ServerBusy, the service's throttling answer)
  drop_rate       fraction of responses whose TCP connection is cut (RST) in the middle of the body
  outage_seconds  from now on, for that long, every request's connection is closed unanswered

Stats: {"total": N, "by_op": {"GetFile": n, ...}, "by_status": {"200": n, ...}} over all
non-admin requests since start (or the last DELETE /_admin/stats).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULTS = {
    "latency_ms": 0.0,
    "error_rate": 0.0,
    "error_status": 503,
    "drop_rate": 0.0,
    "outage_seconds": 0.0,
}


@dataclass
class Faults:
    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 503
    drop_rate: float = 0.0
    outage_seconds: float = 0.0
    outage_until: float = 0.0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def update(self, changes: Mapping[str, Any]) -> None:
        """Set some faults from JSON values (checked and converted here)."""
        unknown = set(changes) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        for k, v in changes.items():
            if k == "error_status":
                v = int(v)
                if v not in (500, 503):
                    raise ValueError("error_status must be 500 or 503")
            else:
                v = float(v)
                if v < 0 or (k.endswith("_rate") and v > 1):
                    raise ValueError(f"{k} out of range")
            setattr(self, k, v)
        if "outage_seconds" in changes:
            self.outage_until = time.monotonic() + self.outage_seconds if self.outage_seconds else 0

    def reset(self) -> None:
        self.update(dict(DEFAULTS))
        self.outage_until = 0.0

    def snapshot(self) -> dict[str, float]:
        d: dict[str, float] = {k: v for k, v in asdict(self).items() if k in DEFAULTS}
        d["outage_remaining"] = max(0.0, self.outage_until - time.monotonic())
        return d

    def in_outage(self) -> bool:
        return self.outage_until > time.monotonic()

    def should_error(self) -> bool:
        return self.error_rate > 0 and self.rng.random() < self.error_rate

    def should_drop(self) -> bool:
        return self.drop_rate > 0 and self.rng.random() < self.drop_rate

    @staticmethod
    def parse(text: str) -> dict[str, Any]:
        data = json.loads(text or "{}")
        if not isinstance(data, dict):
            raise ValueError("faults must be a JSON object")
        return data


@dataclass
class Stats:
    total: int = 0
    by_op: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)

    def count(self, op: str) -> None:
        self.total += 1
        self.by_op[op or "Unknown"] += 1

    def status(self, status: int) -> None:
        self.by_status[str(status)] += 1

    def reset(self) -> None:
        self.total = 0
        self.by_op.clear()
        self.by_status.clear()

    def snapshot(self) -> dict[str, object]:
        return {
            "total": self.total,
            "by_op": dict(self.by_op),
            "by_status": dict(self.by_status),
        }
