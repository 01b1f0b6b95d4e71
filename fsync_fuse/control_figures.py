"""The mount's figures: one snapshot of every part's counters, for status and for metrics.

Nothing is counted twice: a snapshot reads the parts' own counters when asked (a status read,
a metrics scrape). What the parts cannot say by themselves is kept here: rates and hit ratios
over the last 5 minutes come from a ring of snapshots taken every SAMPLE_EVERY seconds (a
status read compares now with the oldest one inside the window), and since when the share is
reachable or not (the first snapshot that saw the change). Everything here is O(1) or
O(dirty files) at most: no walk of the namespace or of the cache's records.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from cache import BlockCache
from cache.system import disk_space
from fsync_fuse.config import MountConfig
from fsync_fuse.control_api import (
    CallCounting,
    FileCensus,
    PinsLike,
    RecallerLike,
    SettingsLike,
    TieringCache,
    UploadCounters,
)
from fsync_fuse.dirreplies import DirReplies
from fsync_fuse.listing import Lister
from fsync_fuse.namespace import Namespace
from fsync_fuse.poller import Poller
from fsync_fuse.reader import Reader
from fsync_fuse.revalidate import Revalidator
from fsync_fuse.writeback.dirty import DirtySet
from fsync_fuse.writeback.queue import WriteBack
from remote.base import Remote

log = logging.getLogger(__name__)

#: seconds between two snapshots of the ring
SAMPLE_EVERY = 10.0
#: the window of "last 5 minutes" figures
WINDOW = 300.0


@dataclass
class Parts:
    """What the figures are read from (ControlServer's constructor arguments)."""

    ns: Namespace
    cache: BlockCache
    dirty: DirtySet
    writeback: WriteBack
    reader: Reader
    replies: DirReplies
    poller: Poller
    revalidator: Revalidator
    cfg: MountConfig | None = None
    lister: Lister | None = None
    remote: Remote | None = None
    pins: PinsLike | None = None
    recaller: RecallerLike | None = None
    settings: SettingsLike | None = None
    tiering: TieringCache | None = None
    census: FileCensus | None = None
    uploads: UploadCounters | None = None
    #: the control surface's own counters (recall requests in parallel)
    requests: dict[str, int] = field(default_factory=dict)


@dataclass
class Snapshot:
    """Every figure at one moment; None: the part that would know is not there."""

    at: float  # time.monotonic()
    wall: float  # time.time()
    share_reachable: bool
    share_since: float
    share_error: str | None
    cache_bound: int
    cache_data: int
    cache_index: int | None
    cache_reserved: int
    cache_dirty: int
    cache_pinned: int  # bytes pinned files hold
    pin_bytes: int | None  # what pins reserve (a pinned file not yet recalled too)
    volume_free: int
    volume_total: int
    min_free_pct: float
    tier_after: float | None
    entries: int
    cached_files: int
    local_files: int | None
    partial_files: int | None
    pinned_files: int | None
    dirty_files: int
    dirty_bytes: int
    queue_ops: int
    stuck: int
    hit_reads: int
    miss_reads: int
    hit_bytes: int
    fetched_bytes: int
    fetches: int
    fetch_failures: int
    fetch_seconds: float
    fetch_buckets: Sequence[tuple[float, int]]
    evictions: Mapping[str, tuple[int, int]]  # reason -> (blocks, bytes)
    evicted_bytes: int
    recall_files: int | None
    recall_bytes: int | None
    recall_failures: int | None
    recall_queued: int | None
    recall_running: int | None
    recall_max_parallel: int | None
    upload_files: int | None
    upload_bytes: int | None
    upload_failures: int | None
    uploads_in_flight: int | None
    conflicts: int
    poll_rounds: int
    poll_listed: int
    poll_last_at: float | None
    poll_last_seconds: float | None
    poll_last_listed: int | None
    remote_calls: Mapping[str, int]
    remote_errors: Mapping[str, int]


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole > 0 else None


def _delta(new: int | None, old: int | None) -> int | None:
    return None if new is None or old is None else max(0, new - old)


class Figures:
    def __init__(self, parts: Parts) -> None:
        self.p = parts
        self.started = time.time()
        self._reach: tuple[bool, float] = (True, self.started)
        self._ring: deque[Snapshot] = deque(maxlen=int(WINDOW / SAMPLE_EVERY) + 2)
        self._ring.append(self.snapshot())

    # ------------------------------------------------------------------ sampling
    async def run(self) -> None:
        """Keep the ring of the last 5 minutes (started by ControlServer.run)."""
        while True:
            await trio.sleep(SAMPLE_EVERY)
            try:
                self._ring.append(self.snapshot())
            except Exception:  # a figure that fails must not stop the mount
                log.exception("taking a snapshot of the figures failed")

    def _reachable(self, error: str | None) -> tuple[bool, float]:
        """Whether the last calls to the share got answers, and since when that holds
        (`error`: the write-back's latest failure, None after a success)."""
        down = self.p.lister.share_down if self.p.lister is not None else False
        down = down or bool(error and error.startswith("share unreachable"))
        up = not down
        if up != self._reach[0]:
            self._reach = (up, time.time())
        return up, self._reach[1]

    # ------------------------------------------------------------------ one snapshot
    def snapshot(self) -> Snapshot:
        p = self.p
        cs = p.cache.stats()
        pend = p.writeback.status()
        up, since = self._reachable(pend.error)
        try:
            vol = disk_space(p.cache.directory)
            vfree, vtotal = vol.free, vol.total
        except OSError:
            vfree = vtotal = 0
        with p.ns.env.begin() as txn:
            entries = int(txn.stat(p.ns.db_inodes)["entries"])
        counts: Mapping[str, int] = p.census.file_counts() if p.census is not None else {}
        rs = p.recaller.stats if p.recaller is not None else None
        us = p.uploads.stats if p.uploads is not None else None
        ps: Mapping[str, float] = p.poller.stats
        calls: Mapping[str, Any] = p.remote.stats if isinstance(p.remote, CallCounting) else {}
        last_at = ps.get("last_at")
        last_s = ps.get("last_seconds")
        last_n = ps.get("last_listed")
        return Snapshot(
            at=time.monotonic(),
            wall=time.time(),
            share_reachable=up,
            share_since=since,
            share_error=pend.error,
            cache_bound=cs.max_bytes,
            cache_data=cs.used,
            cache_index=cs.index_bytes or None,
            cache_reserved=cs.reserved,
            cache_dirty=cs.dirty,
            cache_pinned=cs.pinned,
            pin_bytes=p.tiering.pinned_bytes() if p.tiering is not None else None,
            volume_free=vfree,
            volume_total=vtotal,
            min_free_pct=float(p.cache.min_free_pct),
            tier_after=p.tiering.tier_after if p.tiering is not None else None,
            entries=entries,
            cached_files=counts.get("cached", cs.files_cached or cs.files),
            local_files=counts.get("local"),
            partial_files=counts.get("partial"),
            pinned_files=counts.get("pinned"),
            dirty_files=pend.files,
            dirty_bytes=pend.bytes,
            queue_ops=pend.ops,
            stuck=int(p.writeback.stuck.items(limit=0)[0]),
            hit_reads=cs.hits,
            miss_reads=cs.misses,
            hit_bytes=cs.hit_bytes,
            fetched_bytes=cs.fetched,
            fetches=cs.fetches,
            fetch_failures=cs.fetch_failures,
            fetch_seconds=cs.fetch_seconds,
            fetch_buckets=cs.fetch_buckets,
            evictions={r: (c.blocks, c.bytes) for r, c in cs.evicted_by.items()},
            evicted_bytes=cs.evicted_bytes,
            recall_files=rs.get("recalled_files") if rs is not None else None,
            recall_bytes=rs.get("recalled_bytes") if rs is not None else None,
            recall_failures=rs.get("failures") if rs is not None else None,
            recall_queued=rs.get("queued") if rs is not None else None,
            recall_running=p.recaller.running if p.recaller is not None else None,
            recall_max_parallel=rs.get("max_parallel") if rs is not None else None,
            upload_files=us.get("files") if us is not None else None,
            upload_bytes=us.get("bytes") if us is not None else None,
            upload_failures=us.get("failures") if us is not None else None,
            uploads_in_flight=p.uploads.in_flight if p.uploads is not None else None,
            conflicts=p.writeback.conflicts.count,
            poll_rounds=int(ps.get("rounds", 0)),
            poll_listed=int(ps.get("listed", 0)),
            poll_last_at=float(last_at) if last_at is not None else None,
            poll_last_seconds=float(last_s) if last_s is not None else None,
            poll_last_listed=int(last_n) if last_n is not None else None,
            remote_calls=dict(calls.get("calls") or {}),
            remote_errors=dict(calls.get("errors") or {}),
        )

    def _window_start(self, now: Snapshot) -> Snapshot:
        """The oldest snapshot of the ring within WINDOW of `now` (the mount's first one
        while it is younger than that)."""
        for s in self._ring:
            if now.at - s.at <= WINDOW + SAMPLE_EVERY / 2:
                return s
        return self._ring[-1]

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """The operator's sections of `user.fsync.status` (control.py documents them)."""
        p, s = self.p, self.snapshot()
        old = self._window_start(s)
        span = max(s.at - old.at, 1e-9)
        first = self._ring[0]
        cfg = p.cfg
        out: dict[str, Any] = {
            "mount": {
                "share": cfg.share_url if cfg else None,
                "site": cfg.site_name if cfg else None,
                "mountpoint": cfg.mountpoint if cfg else None,
                "cache_dir": str(p.cache.directory),
                "started": self.started,
            },
            "share": {
                "reachable": s.share_reachable,
                "since": s.share_since,
                "error": s.share_error,
            },
            "cache": {
                "used": s.cache_data + (s.cache_index or 0),
                "bound": s.cache_bound,
                "data": s.cache_data,
                "index": s.cache_index,
                "reserved": s.cache_reserved,
                "dirty": s.cache_dirty,
                "pinned": s.cache_pinned,
                "pin_reserved": s.pin_bytes,
                "volume_free": s.volume_free,
                "volume_total": s.volume_total,
                "min_free_pct": s.min_free_pct,
                "tier_after": s.tier_after,
            },
            "counts": {
                "entries": s.entries,
                "cached": s.cached_files,
                "local": s.local_files,
                "partial": s.partial_files,
                "tiered": max(0, s.entries - s.cached_files),
                "pinned": s.pinned_files,
                "dirty": s.dirty_files,
            },
            "uploads": {
                "in_flight": s.uploads_in_flight,
                "files": s.upload_files,
                "bytes": s.upload_bytes,
                "failures": s.upload_failures,
                "rate": self._rate(s.upload_bytes, old.upload_bytes, span),
            },
            "recall": {
                "files": s.recall_files,
                "bytes": s.recall_bytes,
                "failures": s.recall_failures,
                "queued": s.recall_queued,
                "running": s.recall_running,
                "max_parallel": s.recall_max_parallel,
                "requests": p.requests.get("recall", 0),
                "max_parallel_requests": p.requests.get("max_parallel", 0),
            },
            "fetch": {
                "count": s.fetches,
                "bytes": s.fetched_bytes,
                "failures": s.fetch_failures,
                "seconds": s.fetch_seconds,
                "rate": self._rate(s.fetched_bytes, old.fetched_bytes, span),
            },
            "hits": {
                "since_mount": self._hits(s, first, s.at - first.at),
                "last_5m": self._hits(s, old, span),
            },
            "evictions": {r: {"blocks": c, "bytes": b} for r, (c, b) in s.evictions.items()},
            "remote": {"calls": dict(s.remote_calls), "errors": dict(s.remote_errors)},
            "policies": dict(p.settings.values()) if p.settings is not None else {},
            "poll": {
                **p.poller.stats,
                "last_at": s.poll_last_at,
                "last_seconds": s.poll_last_seconds,
                "last_listed": s.poll_last_listed,
            },
        }
        return out

    @staticmethod
    def _rate(new: int | None, old: int | None, span: float) -> float | None:
        d = _delta(new, old)
        return None if d is None or span <= 0 else round(d / span, 1)

    @staticmethod
    def _hits(s: Snapshot, old: Snapshot, span: float) -> dict[str, Any]:
        hr = s.hit_reads - old.hit_reads
        mr = s.miss_reads - old.miss_reads
        hb = s.hit_bytes - old.hit_bytes
        fb = s.fetched_bytes - old.fetched_bytes
        return {
            "reads": _ratio(hr, hr + mr),
            "bytes": _ratio(hb, hb + fb),
            "hit_reads": hr,
            "miss_reads": mr,
            "hit_bytes": hb,
            "fetched_bytes": fb,
            "seconds": round(max(0.0, span), 1),
        }
