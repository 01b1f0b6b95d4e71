"""The namespace: every entry of the share this mount knows, and the local changes queued for it.

`Namespace` is assembled from one module per cause of change (tables.py has the tables and
their rules): local.py for the kernel's requests, merge.py for listings from the share,
orphans.py for entries that lost their name while still in use.
"""

from __future__ import annotations

from fsync_fuse.namespace.local import LocalChanges
from fsync_fuse.namespace.merge import ListingMerge, MergeResult
from fsync_fuse.namespace.tables import (
    HIDDEN_PREFIX,
    NEW_PREFIX,
    ROOT,
    FsError,
    Gone,
    is_hidden,
)

__all__ = [
    "HIDDEN_PREFIX",
    "NEW_PREFIX",
    "ROOT",
    "FsError",
    "Gone",
    "MergeResult",
    "Namespace",
    "is_hidden",
]


class Namespace(LocalChanges, ListingMerge):
    """The tables (tables.py) with every operation on them."""
