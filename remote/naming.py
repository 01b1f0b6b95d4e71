"""The share's limits on names and paths, counted the way the service counts them.

Azure Files documents a component limit of 255 characters, a path limit of 2,048 characters
and a depth of at most 250 components. The service is Windows-based: its "characters" are
UTF-16 code units (a character outside the Basic Multilingual Plane counts twice), and
whether the leading separator counts is not documented, so the path is counted with one
separator before every component ("a/b" counts 4). That is the stricter reading of both: a
path the mount accepts is one the share accepts, and the bundled emulator counts the same.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_COMPONENT = 255
MAX_PATH = 2048
MAX_DEPTH = 250


def units(text: str) -> int:
    """Length in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def path_units(parts: Iterable[str]) -> int:
    """Length of the share path made of `parts`, one separator counted before each."""
    return sum(units(p) + 1 for p in parts)


#: Azure Files: the metadata of a file or directory (every name and value together) may hold
#: at most 8 KiB; Set Metadata past it fails with MetadataTooLarge. Counted as the service
#: does, the characters of the names and values (metadata is ASCII: one byte each).
MAX_METADATA = 8 * 1024


def metadata_size(meta: dict[str, str]) -> int:
    """What `meta` counts against MAX_METADATA."""
    return sum(len(k) + len(v) for k, v in meta.items())
