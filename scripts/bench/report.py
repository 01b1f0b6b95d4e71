"""Figures of one run: every repetition, medians and spread, ratios, targets; markdown + JSON.

A row is one measured quantity (e.g. cold sequential read). Its kind says how a repetition
becomes a value: `rate` (MB/s = bytes / seconds), `ops` (operations per second), `time`
(seconds) or `mem` (MiB). Ratios are always *speed* multiples of fsync-fuse over a reference
(> 1: fsync-fuse is faster): value ratio for rates, reference time / fsync-fuse time for times.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

FS = "fsync-fuse"
REFS = ("local", "sdk", "rclone")
COLUMNS = ("local", "sdk", FS, "rclone")


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    kind: str  # rate | ops | time | mem | cpu | count


ROWS = [
    Row("seq-read/cold", "1 cold sequential read", "rate"),
    Row("seq-read/warm-dropped", "2 warm sequential read, page cache dropped", "rate"),
    Row("seq-read/warm-pagecache", "2 warm sequential read, page cache kept", "rate"),
    Row("rand-read/4k-cold", "3 random 4 KiB reads, cold", "ops"),
    Row("rand-read/4k-warm", "3 random 4 KiB reads, warm", "ops"),
    Row("rand-read/64k-cold", "3 random 64 KiB reads, cold", "ops"),
    Row("rand-read/64k-warm", "3 random 64 KiB reads, warm", "ops"),
    Row("seq-write/close", "4 sequential write: cp until close returns", "rate"),
    Row("seq-write/drain", "4 sequential write: close until on the share (local: sync)", "time"),
    Row("seq-write/upload", "4 sequential write: upload (drain minus write-back delay)", "rate"),
    Row("small-files/extract", "5 small files: tar -x", "time"),
    Row("small-files/drain", "5 small files: until all on the share (local: sync)", "time"),
    Row(
        "small-files/on-share", "5 small files: from tar -x's start until all on the share", "time"
    ),
    Row("small-files/read-warm", "5 small files: read all, page cache dropped", "time"),
    Row("small-files/read-cold", "5 small files: read all, local cache empty", "time"),
    Row("headers/extract", "16 header tree: tar -x (owners, modes, times)", "time"),
    Row("headers/drain", "16 header tree: until all on the share (local: sync)", "time"),
    Row("headers/on-share", "16 header tree: from tar -x's start until all on the share", "time"),
    Row("headers/read-warm", "16 header tree: read all, page cache dropped", "time"),
    Row("headers/read-cold", "16 header tree: read all, local cache empty", "time"),
    Row("small-files/cpu", "5 small files: daemon CPU per file, tar -x until on the share", "cpu"),
    Row("headers/cpu", "16 header tree: daemon CPU per file, tar -x until on the share", "cpu"),
    Row("small-files/emulator-cpu", "5 small files: emulator CPU per file, same span", "cpu"),
    Row("headers/emulator-cpu", "16 header tree: emulator CPU per file, same span", "cpu"),
    Row("churn/sqlite-rollback", "16 SQLite, one row per transaction, rollback journal", "time"),
    Row("churn/sqlite-wal", "16 SQLite, one row per transaction, WAL", "time"),
    Row("churn/saves", "16 atomic saves of 20 files (write, fsync, rename over)", "time"),
    Row("churn/saves-queued", "16 ... share operations queued right after them", "count"),
    Row("churn/saves-drain", "16 ... until the last versions are on the share", "time"),
    Row("metadata/cold", "6 find + stat, cold (first listing)", "time"),
    Row("metadata/warm", "6 find + stat, warm", "time"),
    Row("migrate/small", "17 migrate a tree of small files into the share", "time"),
    Row("migrate/large", "17 migrate one large file into the share", "rate"),
    Row("memory/list", "7 find + stat over the large namespace", "time"),
    Row("memory/rss", "7 daemon RSS after listing it", "mem"),
    Row("memory/anon", "7 ... of which the daemon's own memory (RssAnon)", "mem"),
    Row("memory/file", "7 ... of which mapped files: the LMDB index, page cache (RssFile)", "mem"),
]
ROW_BY_KEY = {r.key: r for r in ROWS}

EMULATOR_ROWS = [
    Row("emulator/get-1", "GET by the SDK into memory, 1 stream", "rate"),
    Row("emulator/get-n", "GET by the SDK into memory, parallel", "rate"),
    Row("emulator/put-n", "PUT by the SDK from memory, parallel", "rate"),
    Row("emulator/get-curl", "GET by curl (no Python client), parallel", "rate"),
    Row("emulator/put-curl", "PUT by curl (no Python client), parallel", "rate"),
    Row("emulator/props", "Get File Properties, sequential", "ops"),
    Row("emulator/create-small", "create 4 KiB files (create + Put Range), parallel", "ops"),
    Row("emulator/list", "list directories with timestamps, 1 stream (entries/s)", "ops"),
]
ROW_BY_KEY.update({r.key: r for r in EMULATOR_ROWS})


@dataclass(frozen=True)
class Target:
    row: str
    ref: str  # a contestant, or "" for an absolute bound
    speed: float = 0.0  # fsync-fuse speed >= speed x reference
    max_mib: float = 0.0  # absolute: value < max_mib (MiB; ms for a cpu row; a count)
    text: str = ""


TARGETS = [
    Target("seq-read/warm-dropped", "local", 0.8, text=">= 0.8x local"),
    Target("seq-read/warm-dropped", "rclone", 1.5, text=">= 1.5x rclone"),
    Target("seq-read/warm-pagecache", "local", 0.8, text=">= 0.8x local"),
    Target("seq-read/warm-pagecache", "rclone", 1.5, text=">= 1.5x rclone"),
    Target("seq-read/cold", "sdk", 0.9, text=">= 0.9x SDK"),
    Target("seq-read/cold", "rclone", 1.5, text=">= 1.5x rclone"),
    Target("seq-write/close", "local", 0.7, text=">= 0.7x local"),
    Target("seq-write/upload", "sdk", 0.9, text=">= 0.9x SDK upload"),
    Target("small-files/extract", "local", 1 / 3, text="time <= 3x local"),
    # issue 16: small files at the speed of the share, both trees
    *[
        Target(f"{tree}/{step}", "rclone", 1.5, text=">= 1.5x rclone")
        for tree in ("small-files", "headers")
        for step in ("extract", "drain", "on-share", "read-cold")
    ],
    Target("headers/extract", "local", 1 / 10, text="time <= 10x local"),
    *[Target(f"{t}/cpu", "", max_mib=0.5, text="<= 0.5 ms") for t in ("small-files", "headers")],
    Target("churn/sqlite-rollback", "local", 1 / 5, text="time <= 5x local"),
    Target("churn/sqlite-wal", "local", 1 / 5, text="time <= 5x local"),
    Target("churn/saves-queued", "", max_mib=21, text="<= 20 (one per file)"),
    Target("metadata/warm", "local", 1 / 3, text="time <= 3x local"),
    Target("memory/rss", "", max_mib=200, text="< 200 MB"),
    Target("memory/list", "rclone", 1.5, text=">= 1.5x rclone"),  # issue 16: cold find, 1M
    Target("migrate/small", "rclone", 1.5, text=">= 1.5x rclone copy"),
    Target("migrate/large", "sdk", 0.9, text=">= 0.9x SDK upload"),
]

UNITS = {"rate": "MB/s", "ops": "/s", "time": "s", "mem": "MiB", "cpu": "ms/file", "count": ""}


@dataclass
class Cell:
    """All repetitions of one row for one contestant."""

    samples: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    verified: bool | None = None
    notes: list[str] = field(default_factory=list)

    def values(self, kind: str) -> list[float]:
        return [value_of(kind, s) for s in self.samples]


def value_of(kind: str, s: dict) -> float:
    if kind == "rate":
        return s["bytes"] / max(s["seconds"], 1e-9) / 1e6
    if kind == "ops":
        return s["ops"] / max(s["seconds"], 1e-9)
    if kind == "mem":
        return s["bytes"] / (1 << 20)
    if kind == "cpu":
        return s["cpu"] / max(s["ops"], 1) * 1000
    if kind == "count":
        return float(s["count"])
    return s["seconds"]


def stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    med = statistics.median(values)
    return {
        "median": med,
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "spread_pct": (max(values) - min(values)) / 2 / med * 100 if med else 0.0,
    }


def speed_ratio(kind: str, ours: float, ref: float) -> float | None:
    if kind == "cpu":
        return ref / ours if ours and ref else None  # less CPU per file is faster
    if kind in ("mem", "count") or not ours or not ref:
        return None
    return ours / ref if kind in ("rate", "ops") else ref / ours


class Results:
    def __init__(self) -> None:
        self.cells: dict[str, dict[str, Cell]] = {}

    def cell(self, row: str, contestant: str) -> Cell:
        if row not in ROW_BY_KEY:
            raise KeyError(row)
        return self.cells.setdefault(row, {}).setdefault(contestant, Cell())

    def add(self, row: str, contestant: str, seconds: float, **extra: object) -> float:
        sample = {"seconds": seconds, **extra}
        self.cell(row, contestant).samples.append(sample)
        return value_of(ROW_BY_KEY[row].kind, sample)

    def error(self, row: str, contestant: str, msg: str) -> None:
        self.cell(row, contestant).errors.append(msg)

    def verify(self, row: str, contestant: str, ok: bool, note: str = "") -> None:
        c = self.cell(row, contestant)
        c.verified = ok if c.verified is None else (c.verified and ok)
        if note:
            c.notes.append(note)

    def median(self, row: str, contestant: str) -> float | None:
        c = self.cells.get(row, {}).get(contestant)
        s = stats(c.values(ROW_BY_KEY[row].kind)) if c else None
        return s["median"] if s else None

    # ------------------------------------------------------------------ derived
    def ratios(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for key, row in ROW_BY_KEY.items():
            ours = self.median(key, FS)
            if ours is None:
                continue
            for ref in REFS:
                r = self.median(key, ref)
                ratio = speed_ratio(row.kind, ours, r) if r is not None else None
                if ratio is not None:
                    out.setdefault(key, {})[ref] = ratio
        return out

    def targets(self) -> list[dict]:
        ratios = self.ratios()
        out = []
        for t in TARGETS:
            ours = self.median(t.row, FS)
            if t.ref:
                ratio = ratios.get(t.row, {}).get(t.ref)
                status = "n/a" if ratio is None else ("PASS" if ratio >= t.speed else "MISS")
                out.append(
                    {"row": t.row, "target": t.text, "ref": t.ref, "ratio": ratio, "status": status}
                )
            else:
                status = "n/a" if ours is None else ("PASS" if ours < t.max_mib else "MISS")
                out.append(
                    {"row": t.row, "target": t.text, "ref": "", "value": ours, "status": status}
                )
        return out

    def as_json(self) -> dict:
        cells = {}
        for key, per in self.cells.items():
            kind = ROW_BY_KEY[key].kind
            cells[key] = {
                name: {
                    "unit": UNITS[kind],
                    "values": c.values(kind),
                    "stats": stats(c.values(kind)),
                    "samples": c.samples,
                    "errors": c.errors,
                    "verified": c.verified,
                    "notes": c.notes,
                }
                for name, c in per.items()
            }
        return {"rows": cells, "ratios": self.ratios(), "targets": self.targets()}


# ---------------------------------------------------------------------- markdown


def _fmt(v: float, kind: str) -> str:
    if kind == "time":
        return f"{v:.3g} s" if v < 100 else f"{v:.0f} s"
    if kind == "mem":
        return f"{v:.0f} MiB"
    if kind == "cpu":
        return f"{v:.2f} ms"
    if kind == "count":
        return f"{v:.0f}"
    unit = UNITS[kind]
    return f"{v:.3g} {unit}" if v < 1000 else f"{v:.0f} {unit}"


def _cell_text(c: Cell | None, kind: str) -> str:
    if c is None:
        return ""
    s = stats(c.values(kind))
    if s is None:
        return "error" if c.errors else ""
    text = _fmt(s["median"], kind)
    if s["n"] > 1:
        text += f" ±{s['spread_pct']:.0f}%"
    if c.verified is False:
        text += " **(data wrong)**"
    if c.errors:
        text += f" ({len(c.errors)} failed)"
    return text


def markdown(results: Results, meta: dict) -> str:
    ratios = results.ratios()
    targets: dict[str, list[dict]] = {}
    for t in results.targets():
        targets.setdefault(t["row"], []).append(t)
    lines = [
        "| Workload | local | SDK | fsync-fuse | rclone | fsync-fuse vs local | vs SDK "
        "| vs rclone | Target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in ROWS:
        per = results.cells.get(row.key)
        if not per:
            continue
        cells = [_cell_text(per.get(c), row.kind) for c in COLUMNS]
        rs = [
            f"{ratios[row.key][ref]:.2f}x" if ref in ratios.get(row.key, {}) else "" for ref in REFS
        ]
        tgt = "; ".join(f"{t['target']}: **{t['status']}**" for t in targets.get(row.key, []))
        lines.append(f"| {row.title} | " + " | ".join(cells + rs) + f" | {tgt} |")
    emu = [r for r in EMULATOR_ROWS if results.cells.get(r.key, {}).get("emulator")]
    if emu:
        lines += [
            "",
            "Emulator alone (SDK, no local disk):",
            "",
            "| Operation | median |",
            "|---|---:|",
        ]
        for r in emu:
            lines.append(f"| {r.title} | {_cell_text(results.cells[r.key]['emulator'], r.kind)} |")
    s = meta.get("settings", {})
    m = meta.get("machine", {})
    v = meta.get("versions", {})
    lines += [
        "",
        f"Ratios are speed multiples of fsync-fuse (> 1 = fsync-fuse faster; for times, "
        f"reference time / fsync-fuse time); ± is half the range of {s.get('reps')} "
        "repetition(s) around the median.",
        _sizes_line(s, meta),
        f"Machine: {m.get('cores')} cores, {m.get('memory_bytes', 0) / (1 << 30):.1f} GiB, "
        f"load {', '.join(f'{x:.1f}' for x in m.get('loadavg_start', ()))} at start; "
        f"fsync-fuse {v.get('fsync-fuse')} ({v.get('git')}), {v.get('rclone')}, {v.get('fio')}.",
    ]
    profiles = meta.get("profiles") or {}
    if profiles:
        lines += [
            "",
            "Profiles of the fsync-fuse daemon (py-spy, first repetition; "
            "% of samples, self / inclusive):",
            "",
        ]
        for label, p in profiles.items():
            hot = ", ".join(f"{f} {pc}%" for f, pc in p.get("self", [])[:4])
            ours = [(f, pc) for f, pc in p.get("inclusive", []) if _project_frame(f)][:4]
            lines.append(
                f"- `{label}` ({p.get('samples')} samples): self: {hot}; "
                f"inclusive: {', '.join(f'{f} {pc}%' for f, pc in ours)}"
            )
    flags = meta.get("flags", {})
    for name, f in flags.items():
        lines.append(f"{name} flags: `{' '.join(f)}`")
    return "\n".join(lines) + "\n"


_ENTRY_FRAMES = ("fsync_fuse/__main__.py", "fsync_fuse/cli.py", "fsync_fuse/commands/",
                 "fsync_fuse/background.py")  # fmt: skip


def _sizes_line(s: dict, meta: dict) -> str:
    done = set(s.get("workloads", ()))
    parts = [f"cache {s.get('cache_size', 0) // (1 << 20)} MiB"]
    if done & {"seq-read", "rand-read", "seq-write"}:
        parts.insert(0, f"file {s.get('file_size', 0) // (1 << 20)} MiB")
    for key in ("small-files", "headers"):
        if key in done and key in meta.get("trees", {}):
            parts.append(meta["trees"][key]["what"])
    if "metadata" in done:
        parts.append(f"{s.get('entries')} entries (metadata)")
    if "churn" in done:
        parts.append(f"{100 if s.get('quick') else 2000} transactions and saves (churn)")
    if "memory" in done:
        parts.append(f"{s.get('namespace_entries')} entries (memory)")
    return "Sizes: " + ", ".join(parts) + "."


def _project_frame(frame: str) -> bool:
    """Our own code, less the entry frames every sample of the main thread goes through."""
    if any(e in frame for e in _ENTRY_FRAMES):
        return False
    return any(f"{m}/" in frame for m in ("fsync_fuse", "cache", "remote"))


def write(out_dir: Path, stem: str, results: Results, meta: dict) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"{stem}.md"
    js = out_dir / f"{stem}.json"
    md.write_text(markdown(results, meta))
    js.write_text(json.dumps({**meta, **results.as_json()}, indent=2, default=str))
    return md, js
