"""Which names the share can hold, and how it compares them.

Azure Files names are case-insensitive and case-preserving, at most 255 characters, and may not
contain `" \\ / : | < > * ?` or control characters. We check every name a local operation would
create, so an unrepresentable name fails at once with EINVAL instead of later in the write-back
queue, where nobody could be told.
"""

from __future__ import annotations

import errno
import hashlib
import logging

log = logging.getLogger(__name__)

FORBIDDEN = frozenset('"\\/:|<>*?') | frozenset(chr(c) for c in range(0x20)) | {"\x7f"}
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


def why_invalid(name: str) -> str | None:
    """The reason the share cannot hold `name`, or None when it can."""
    if name in ("", ".", ".."):
        return "reserved name"
    if len(name) > MAX_NAME:
        return f"longer than {MAX_NAME} characters"
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
    """Raise EINVAL, with a log line saying why, for a name the share cannot hold."""
    reason = why_invalid(name)
    if reason:
        log.warning("refusing name %r: %s", name, reason)
        raise NameError_(errno.EINVAL, f"name {name!r} {reason}")


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


def conflict_name(name: str, site: str, n: int = 0) -> str:
    """The name a version kept beside `name` gets: `report.txt` -> `report-site.txt`,
    `report-site-2.txt`; `.bashrc` -> `.bashrc-site`."""
    stem, ext = split_ext(name)
    return f"{stem}-{site}{f'-{n}' if n else ''}{ext}"


def looks_like_conflict_copy(new: str, old: str) -> bool:
    """Could `new` be a conflict copy of `old` made by some site (`conflict_name`)? A site
    moving another's version aside renames it so; a dirty file must not follow that rename
    (its newer version belongs under the old name)."""
    stem, ext = split_ext(old)
    if not (new.startswith(stem + "-") and new.endswith(ext)):
        return False
    middle = new[len(stem) + 1 : len(new) - len(ext)]
    return bool(middle) and "." not in middle  # site names never hold a dot
