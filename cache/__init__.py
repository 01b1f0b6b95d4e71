"""The LMDB-indexed local block cache. Knows nothing of FUSE or Azure; see API.md."""

from .blockcache import BlockCache
from .errors import CacheFull, CacheMismatch, CacheTooSmall, PinTooLarge
from .footprint import human_size, minimum_size
from .heat import ACCESS_GAP, HALF_LIFE
from .results import (
    REASONS,
    Bound,
    CacheStats,
    EvictionCount,
    Fetch,
    FileInfo,
    FileSlice,
    FileState,
    TierCandidate,
    Token,
    as_bytes,
)

__all__ = [
    "ACCESS_GAP",
    "HALF_LIFE",
    "REASONS",
    "BlockCache",
    "Bound",
    "CacheFull",
    "CacheMismatch",
    "CacheStats",
    "CacheTooSmall",
    "EvictionCount",
    "Fetch",
    "FileInfo",
    "FileSlice",
    "FileState",
    "PinTooLarge",
    "TierCandidate",
    "Token",
    "as_bytes",
    "human_size",
    "minimum_size",
]
