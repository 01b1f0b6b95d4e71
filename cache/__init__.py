"""The LMDB-indexed local block cache. Knows nothing of FUSE or Azure; see API.md."""

from .blockcache import BlockCache
from .errors import CacheFull, CacheMismatch, CacheTooSmall
from .footprint import human_size, minimum_size
from .results import Bound, CacheStats, Fetch, FileState, Token

__all__ = [
    "BlockCache",
    "Bound",
    "CacheFull",
    "CacheMismatch",
    "CacheStats",
    "CacheTooSmall",
    "Fetch",
    "FileState",
    "Token",
    "human_size",
    "minimum_size",
]
