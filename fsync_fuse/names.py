"""Which names and paths the share can hold, and how it compares names.

Azure Files names are case-insensitive and case-preserving, at most 255 characters, and may not
contain `" \\ / : | < > * ?` or control characters; a path is at most 2,048 characters and 250
levels deep (remote/naming.py says how the service counts). We check every name and path a
local operation would create, so what the share cannot hold fails at once (`ENAMETOOLONG`,
`EINVAL`) instead of later in the write-back queue, where nobody could be told. A name is
limited to 255 *bytes* of UTF-8, as POSIX filesystems do (NAME_MAX): stricter than the share's
255 characters, never looser.
"""

from __future__ import annotations

import errno
import hashlib
import logging

from remote import naming

log = logging.getLogger(__name__)

FORBIDDEN = frozenset('"\\/:|<>*?') | frozenset(chr(c) for c in range(0x20)) | {"\x7f"}
#: NAME_MAX: bytes of UTF-8 in one name
MAX_NAME = 255
RESERVED = frozenset(
    [f"LPT{i}" for i in range(1, 10)]
    + [f"COM{i}" for i in range(1, 10)]
    + ["PRN", "AUX", "NUL", "CON", "CLOCK$"]
)
# LMDB keys are at most 511 bytes; 8 bytes go to the parent inode number.
_MAX_KEY_NAME = 400


class NameError_(OSError):
    """A name the share cannot hold (errno EINVAL)."""


def decode(name: bytes) -> str:
    """A kernel name as text; names that are not UTF-8 cannot exist on the share."""
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        raise NameError_(errno.EINVAL, "name is not valid UTF-8") from None


def too_long(name: str) -> bool:
    """Longer than NAME_MAX bytes (ENAMETOOLONG)."""
    return len(name.encode("utf-8", "surrogateescape")) > MAX_NAME


def why_invalid(name: str) -> str | None:
    """The reason the share cannot hold `name`, or None when it can."""
    if name in ("", ".", ".."):
        return "reserved name"
    if too_long(name):
        return f"longer than {MAX_NAME} bytes"
    bad = sorted({c for c in name if c in FORBIDDEN})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        return f"contains characters Azure Files forbids ({shown})"
    if name.endswith("."):
        return "ends with a dot, which Azure Files strips"
    if name.upper() in RESERVED:
        return "is a device name Azure Files reserves"
    return None


def check(name: str) -> None:
    """Raise ENAMETOOLONG or EINVAL, with a log line saying why, for a name the share cannot
    hold."""
    reason = why_invalid(name)
    if reason:
        log.warning("refusing name %r: %s", name, reason)
        err = errno.ENAMETOOLONG if too_long(name) else errno.EINVAL
        raise NameError_(err, f"name {name!r} {reason}")


def path_refusal(
    parts: list[str], *, tmp: str | None = None, below: tuple[int, int] = (0, 0)
) -> str | None:
    """Why the share cannot hold an entry at the path made of `parts` (None: it can). A file
    is created on the share under its temporary name `tmp` first (namespace/tables.py), which
    must fit too; `below` is what the deepest entries below a moved directory add (path
    units, levels)."""
    if len(parts) + below[1] > naming.MAX_DEPTH:
        return f"it would be more than {naming.MAX_DEPTH} levels deep on the share"
    units = naming.path_units(parts[:-1]) + entry_units(parts[-1], tmp) + below[0]
    if units > naming.MAX_PATH:
        what = "a path below it" if below[0] else "its path"
        return f"{what} would be {units} characters on the share (at most {naming.MAX_PATH})"
    return None


def entry_units(name: str, tmp: str | None = None) -> int:
    """What one entry adds to a path: its name, or its temporary name when that is longer."""
    return 1 + max(naming.units(name), len(tmp) if tmp else 0)


def fold(name: str) -> str:
    """The form two names share when the share considers them equal."""
    return name.casefold()


def dentry_key(parent: int, name: str) -> bytes:
    """LMDB key of a directory entry: parent inode + folded name (hashed when too long)."""
    folded = fold(name).encode("utf-8")
    if len(folded) > _MAX_KEY_NAME:
        folded = b"\xff#" + hashlib.sha256(folded).digest()
    return parent.to_bytes(8, "big") + folded


def split_ext(name: str) -> tuple[str, str]:
    """`report.txt` -> ("report", ".txt"); `.bashrc` and `notes` have no extension."""
    stem, dot, ext = name.rpartition(".")
    if not stem or not dot:
        return name, ""
    return stem, dot + ext


def conflict_name(name: str, site: str, n: int = 0, room: int | None = None) -> str:
    """The name a version kept beside `name` gets: `report.txt` -> `report-site.txt`,
    `report-site-2.txt`; `.bashrc` -> `.bashrc-site`. The stem is shortened when the name
    would not fit in `room` (the share's path units left in its directory) or in NAME_MAX."""
    stem, ext = split_ext(name)
    tail = f"-{site}{f'-{n}' if n else ''}{ext}"
    while stem[1:] and (
        too_long(stem + tail) or (room is not None and naming.units(stem + tail) > room)
    ):
        stem = stem[:-1]
    return stem + tail


def looks_like_conflict_copy(new: str, old: str) -> bool:
    """Could `new` be a conflict copy of `old` made by some site (`conflict_name`)? A site
    moving another's version aside renames it so; a dirty file must not follow that rename
    (its newer version belongs under the old name)."""
    stem, ext = split_ext(old)
    if not new.endswith(ext):
        return False
    body = new[: len(new) - len(ext)]
    for k in range(len(stem), 0, -1):
        if body.startswith(stem[:k] + "-"):
            middle = body[k + 1 :]
            # site names never hold a dot; a shorter stem only when the whole one would not
            # have fit in a name (conflict_name shortens it then)
            if (
                middle
                and "." not in middle
                and (k == len(stem) or too_long(f"{stem}-{middle}{ext}"))
            ):
                return True
    return False
