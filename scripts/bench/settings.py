"""What to run and how big: sizes, repetitions, contestants and workloads, with --quick presets."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

CONTESTANTS = ("local", "sdk", "fsync-fuse", "rclone", "emulator")
WORKLOADS = (
    "seq-read",
    "rand-read",
    "seq-write",
    "small-files",
    "headers",
    "metadata",
    "memory",
    "migrate",
    "churn",
)
DEFAULT_SDIST = "pygments==2.19.1"

_UNITS = {"": 1, "K": KiB, "M": MiB, "G": GiB, "T": 1 << 40}


def parse_size(text: str) -> int:
    """'512M', '1G', '64K', '4096' -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValueError(f"invalid size {text!r} (examples: 32M, 1G)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.4g} {unit}"
        n /= 1024
    return str(n)


@dataclass
class Settings:
    """Every knob of one run; written into the JSON output so a run can be reproduced."""

    file_size: int = GiB  # workloads 1-4
    cache_size: int = 0  # 0: 4 x file_size, at least 256 MiB (same for fsync-fuse and rclone)
    reps: int = 3
    rand_ios_4k: int = 4000  # random reads per run (capped by rand_runtime)
    rand_ios_64k: int = 1000
    rand_runtime: float = 10.0
    small_files: int = 0  # 0: every file of the sdist
    sdist: str = DEFAULT_SDIST
    header_dir: str = "/usr/include"  # the `headers` workload's tree
    entries: int = 100_000  # workload 6
    namespace_entries: int = 1_000_000  # workload 7
    sdk_concurrency: int = 8  # parallel ranged GET/PUT of the direct SDK transfer
    sdk_chunk: int = 4 * MiB
    writeback_delay: float = 1.0  # fsync-fuse --writeback-delay and rclone --vfs-write-back
    drain_timeout: float = 600.0
    contestants: list[str] = field(default_factory=lambda: list(CONTESTANTS))
    workloads: list[str] = field(default_factory=lambda: list(WORKLOADS))
    work_dir: Path | None = None  # None: a fresh directory under /tmp, removed afterwards
    keep: bool = False
    out_dir: Path = Path("bench-results")
    data_cache: Path = Path("tests/.data-cache")
    quick: bool = False
    profile: bool = False  # py-spy the fsync-fuse daemon (first repetition of each step)
    fsync_flags: list[str] = field(default_factory=list)  # extra flags for `fsync-fuse mount`
    rclone_flags: list[str] = field(default_factory=list)  # extra flags for `rclone mount`

    @property
    def effective_cache_size(self) -> int:
        return self.cache_size or max(4 * self.file_size, 256 * MiB)

    def as_json(self) -> dict:
        d = asdict(self)
        d["cache_size"] = self.effective_cache_size
        for k in ("work_dir", "out_dir", "data_cache"):
            d[k] = str(d[k]) if d[k] is not None else None
        return d


QUICK = {
    "file_size": 32 * MiB,
    "reps": 1,
    "rand_ios_4k": 200,
    "rand_ios_64k": 50,
    "rand_runtime": 1.0,
    "small_files": 300,
    "entries": 2000,
    "namespace_entries": 2000,
    "drain_timeout": 120.0,
}
