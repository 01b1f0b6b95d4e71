"""fsync-fuse: a caching FUSE filesystem for Azure file shares."""

__version__ = "0.1.0"
