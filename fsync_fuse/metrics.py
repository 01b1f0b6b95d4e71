"""Prometheus metrics of a mount (`--metrics ADDR:PORT`), every series under `fsync_fuse_`.

The series are read from the parts' own counters at scrape time (a custom collector over
control_figures.Figures.snapshot): nothing is counted twice and nothing runs between scrapes.
They are rendered by prometheus-client (its own registry, `generate_latest`) and served by a
small HTTP/1.1 handler on trio (`serve`); prometheus-client's threaded server is never used,
so the daemon stays one trio thread. README.md ("Metrics") documents each series.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from fsync_fuse.control_figures import Figures, Snapshot

log = logging.getLogger(__name__)

P = "fsync_fuse_"
#: the largest request head the handler reads
MAX_REQUEST = 16384
#: a client that sends no complete request within this long is dropped
REQUEST_TIMEOUT = 10.0


def _value(value: float | None) -> float:
    """NaN for a figure this mount cannot give: every documented series is always there."""
    return math.nan if value is None else float(value)


def _gauge(name: str, doc: str, value: float | None) -> Iterator[Metric]:
    yield GaugeMetricFamily(P + name, doc, value=_value(value))


def _counter(name: str, doc: str, value: float | None) -> Iterator[Metric]:
    yield CounterMetricFamily(P + name, doc, value=_value(value))


def families(s: Snapshot) -> Iterator[Metric]:
    """Every series of one snapshot (NaN: a part this mount lacks would know)."""
    yield from _gauge(
        "cache_used_bytes",
        "Bytes of the cache directory in use: data and index.",
        s.cache_data + (s.cache_index or 0),
    )
    yield from _gauge("cache_data_bytes", "Bytes of cached file data on disk.", s.cache_data)
    yield from _gauge("cache_index_bytes", "Bytes of the LMDB index.", s.cache_index)
    yield from _gauge("cache_bound_bytes", "The cache bound (--cache-size).", s.cache_bound)
    yield from _gauge("cache_dirty_bytes", "Cached bytes not on the share yet.", s.cache_dirty)
    yield from _gauge("cache_pinned_bytes", "Cached bytes of pinned files.", s.cache_pinned)
    yield from _gauge(
        "volume_free_bytes", "Free bytes on the cache directory's volume.", s.volume_free
    )
    yield from _gauge(
        "cache_min_free_ratio",
        "Free-space floor of the volume (--min-free-space / 100).",
        s.min_free_pct / 100,
    )
    yield from _gauge(
        "namespace_entries",
        "Files and directories the mount knows (namespace records).",
        s.entries,
    )
    yield from _gauge("cached_files", "Files with cached data.", s.cached_files)
    files = GaugeMetricFamily(P + "files", "Files by tiering state.", labels=["state"])
    for state, n in (
        ("local", s.local_files),
        ("partial", s.partial_files),
        ("pinned", s.pinned_files),
        ("dirty", s.dirty_files),
    ):
        files.add_metric([state], _value(n))
    yield files
    yield from _counter("cache_hits", "Reads served entirely from the cache.", s.hit_reads)
    yield from _counter("cache_misses", "Reads that had to fetch from the share.", s.miss_reads)
    yield from _counter(
        "cache_hit_bytes", "Bytes of the reads served entirely from the cache.", s.hit_bytes
    )
    yield from _counter(
        "recall_bytes",
        "Bytes fetched from the share (on demand, read-ahead, recalls).",
        s.fetched_bytes,
    )
    yield from _counter("recall_fetches", "Ranged fetches from the share.", s.fetches)
    yield from _counter("recall_failures", "Fetches from the share that failed.", s.fetch_failures)
    if s.fetch_buckets:
        yield HistogramMetricFamily(
            P + "recall_seconds",
            "Duration of fetches from the share.",
            buckets=[(floatToGoString(le), float(n)) for le, n in s.fetch_buckets],
            sum_value=s.fetch_seconds,
        )
    yield from _counter(
        "recall_files",
        "Whole files recalled (recall command, pins, initial download).",
        s.recall_files,
    )
    yield from _gauge("recall_queue", "Files waiting for a background recall.", s.recall_queued)
    ev_bytes = CounterMetricFamily(
        P + "evictions_bytes", "Bytes evicted from the cache, by reason.", labels=["reason"]
    )
    ev_blocks = CounterMetricFamily(
        P + "evictions_blocks", "Blocks evicted from the cache, by reason.", labels=["reason"]
    )
    for reason, (blocks, nbytes) in sorted(s.evictions.items()):
        ev_bytes.add_metric([reason], nbytes)
        ev_blocks.add_metric([reason], blocks)
    yield ev_bytes
    yield ev_blocks
    yield from _gauge("dirty_files", "Files not on the share yet.", s.dirty_files)
    yield from _gauge("dirty_bytes", "Bytes of those files not on the share yet.", s.dirty_bytes)
    yield from _gauge("queue_operations", "Namespace operations queued for the share.", s.queue_ops)
    yield from _gauge("stuck_items", "Items the share refuses, set aside.", s.stuck)
    yield from _counter("upload_bytes", "Bytes uploaded to the share.", s.upload_bytes)
    yield from _counter("upload_files", "File uploads that completed.", s.upload_files)
    yield from _counter("upload_failures", "File uploads that failed.", s.upload_failures)
    yield from _gauge("uploads_in_flight", "File uploads running now.", s.uploads_in_flight)
    yield from _counter(
        "conflicts", "Conflicts with other sites (a version kept beside).", s.conflicts
    )
    yield from _counter("poll_rounds", "Change-detection rounds.", s.poll_rounds)
    yield from _counter(
        "poll_listings", "Directories re-listed by change detection.", s.poll_listed
    )
    yield from _gauge(
        "poll_last_duration_seconds",
        "Duration of the last change-detection round.",
        s.poll_last_seconds,
    )
    calls = CounterMetricFamily(
        P + "remote_calls", "Calls to the share, by operation.", labels=["operation"]
    )
    for op, n in sorted(s.remote_calls.items()):
        calls.add_metric([op], n)
    yield calls
    errors = CounterMetricFamily(
        P + "remote_errors", "Calls to the share that failed, by error.", labels=["error"]
    )
    for cls, n in sorted(s.remote_errors.items()):
        errors.add_metric([cls], n)
    yield errors
    yield from _gauge(
        "share_reachable",
        "1 when the last calls to the share were answered.",
        1.0 if s.share_reachable else 0.0,
    )
    yield from _gauge(
        "share_changed_timestamp_seconds",
        "Unix time share_reachable last changed (or the mount started).",
        s.share_since,
    )


class _Collector(Collector):
    def __init__(self, figures: Figures) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        yield from families(self.figures.snapshot())


class Metrics:
    """The mount's metrics: `render()` is the Prometheus text, `serve` answers scrapes."""

    def __init__(self, *, figures: Figures) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(figures))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Answer `GET /metrics` on host:port until cancelled; started() with the listeners
        (port 0: the system picks one, logged)."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        for lst in listeners:
            addr = lst.socket.getsockname()
            log.info("metrics at http://%s:%d/metrics", addr[0], addr[1])
        task_status.started(listeners)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        """One request per connection (Connection: close): enough for a scraper."""
        try:
            head = b""
            with trio.move_on_after(REQUEST_TIMEOUT):
                while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    head += chunk
            if b"\r\n\r\n" not in head:
                return
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            method, target = (parts + ["", ""])[:2]
            path = target.split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                await stream.send_all(_response(405, b"method not allowed\n"))
            elif path not in ("/metrics", "/"):
                await stream.send_all(_response(404, b"not found: try /metrics\n"))
            else:
                try:
                    body = self.render()
                except Exception:  # a figure that fails must not stop the server
                    log.exception("rendering the metrics failed")
                    await stream.send_all(_response(500, b"rendering failed\n"))
                    return
                await stream.send_all(
                    _response(200, body, CONTENT_TYPE_LATEST, head_only=method == "HEAD")
                )
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away
        finally:
            await stream.aclose()


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}


def _response(
    status: int, body: bytes, ctype: str = "text/plain; charset=utf-8", head_only: bool = False
) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head if head_only else head + body
