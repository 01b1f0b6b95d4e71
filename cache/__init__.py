"""The LMDB-indexed local block cache. Knows nothing of FUSE or Azure; see API.md."""

from .blockcache import BlockCache
from .errors import CacheFull, CacheMismatch
from .results import CacheStats, Fetch, FileState, Token

__all__ = ["BlockCache", "CacheFull", "CacheMismatch", "CacheStats", "Fetch", "FileState", "Token"]
