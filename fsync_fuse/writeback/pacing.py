"""When the write-back may use the share: bursts of local changes, drains, urgency, retries.

Both the operation worker and the upload scheduler hold back while local changes keep
arriving (`tar -x`, a build) and run at full width otherwise; draining (unmount, SIGTERM,
`user.fsync.control=drain`), an fsync that waits for the share (`--fsync remote`) and dirty
data filling half the cache override that. Failed calls are retried on the schedule below.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from cache import BlockCache

#: the mount counts as busy while local changes arrive less than this apart ...
QUIET_GAP = 0.3
#: ... and while it is busy the queue and the uploads wait, for at most this long, then run
#: with at most this many operations (and uploads) at a time until it is quiet again
BURST_HOLD = 30.0
BURST_PARALLEL = 1
#: backoff cap for refusals that may end (expired SAS, permissions, quota, a missing parent)
MAX_REFUSED_BACKOFF = 300.0


def transient_backoff(attempt: int, cap: float) -> float:
    """Delay before retrying a call that failed for a reason that ends soon (network, 5xx,
    throttling, another site's lease): 0.5 s doubling up to `cap`."""
    return min(cap, 0.5 * 2 ** min(attempt, 10))


def refused_backoff(attempt: int, floor: float = 0.0) -> float:
    """Delay before retrying a refusal that may end (credentials renewed, quota raised):
    5 s doubling up to five minutes, never below `floor`."""
    return max(floor, min(MAX_REFUSED_BACKOFF, 5.0 * 2 ** min(attempt, 10)))


class Pacing:
    """Shared by the worker, the uploader and the dirty set (which picks upload deadlines)."""

    def __init__(
        self,
        *,
        cache: BlockCache,
    ) -> None:
        self._cache = cache
        #: trio time of the latest local change (the kernel adapter reports every mutation)
        self.activity_at = -math.inf
        self._busy_since: float | None = None
        self._drains = 0
        self._urgent = 0  # fsync --fsync remote waiting: no holding back for bursts

    def local_change(self) -> None:
        """A mutating request arrived: background work holds back while they keep coming."""
        self.activity_at = trio.current_time()

    @property
    def draining(self) -> bool:
        return self._drains > 0

    @contextmanager
    def drain(self) -> Iterator[None]:
        """While inside: no quiet delay, no holding back."""
        self._drains += 1
        try:
            yield
        finally:
            self._drains -= 1

    @contextmanager
    def urgent(self) -> Iterator[None]:
        """While inside (someone waits for the share): no holding back for bursts."""
        self._urgent += 1
        try:
            yield
        finally:
            self._urgent -= 1

    def pressure(self) -> bool:
        """Dirty data fills half the cache: upload now, or writers would hit ENOSPC."""
        return self._cache.dirty_bytes() * 2 > self._cache.max_bytes

    @property
    def in_burst(self) -> bool:
        """Local changes are arriving (see yield_to_burst)."""
        return trio.current_time() - self.activity_at < QUIET_GAP

    def parallel(self, full: int) -> int:
        """How many operations or uploads may run at once now."""
        return BURST_PARALLEL if self.in_burst and not self.draining else full

    async def yield_to_burst(self) -> None:
        """While local changes keep coming, let them have the machine: the queue and the
        uploads wait until QUIET_GAP passes without a change, but for at most BURST_HOLD per
        burst (then they run alongside until the next quiet moment). Never when draining,
        for an fsync that waits for the share, or under dirty-data pressure. Uploads sent
        after the burst also find files complete (one call less)."""
        while not (self.draining or self._urgent or self.pressure()):
            now = trio.current_time()
            idle = now - self.activity_at
            if idle >= QUIET_GAP:
                self._busy_since = None
                return
            if self._busy_since is None:
                self._busy_since = now
            held = now - self._busy_since
            if held >= BURST_HOLD:
                return
            await trio.sleep(min(QUIET_GAP - idle, BURST_HOLD - held))
