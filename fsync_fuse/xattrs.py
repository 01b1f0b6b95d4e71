"""Extended attributes: `user.*` names kept in the share's metadata of the entry.

The share has no extended attributes, only metadata: names that are C# identifiers (compared
ignoring case) with ASCII values, at most 8 KiB per entry all together (remote/naming.py).
So `user.NAME` = VALUE is stored as the key `fsyncx_` + NAME in lower-case base32 (any byte
string, told apart ignoring case) and the value `b` + VALUE in base64 (any bytes, the empty
value too). They travel with the rest of the entry's metadata (attrs.py `Inode.extra`): in
the create of a new entry, in a file's upload (like chmod of a file), as a queued attribute
change of a directory or symlink; and an entry holding any is marked like one with POSIX
attributes, so another mount's listing reads its metadata and shows them.

Refused before anything is kept: a value that could never fit (`E2BIG`), or one that would
take the entry's metadata past the share's limit (`ENOSPC`). The room left for attributes is
8 KiB less the entry's other metadata (POSIX attributes, other tools' keys) and the encoding
(a value of n bytes takes about 4n/3 + 1, a name of n bytes 8n/5 + 7).

Other namespaces: `security.*` and `trusted.*` read as absent and are refused when set
(`ENOTSUP`): the share has nowhere to keep them that every site would honour, and keeping
them only here would make them differ between sites. `system.*` (ACLs) likewise. Names
under `user.fsync.` are this mount's control surface (control.py), never stored or listed.
"""

from __future__ import annotations

import base64
import binascii
import errno
import logging
import os

from fsync_fuse import dosattrib
from fsync_fuse.attrs import FILE, XATTR_PREFIX, Inode
from fsync_fuse.namespace import Namespace
from fsync_fuse.writeback.dirty import DirtySet
from fsync_fuse.writeback.shareops import share_meta
from remote import naming
from remote.base import Remote

log = logging.getLogger(__name__)

PREFIX = XATTR_PREFIX
USER = "user."
#: the control surface (control.py): read by name, never stored or listed
CONTROL = "user.fsync."
#: where Samba keeps DOS attributes (dosattrib.py maps them to the share's SMB attributes)
DOSATTRIB = "user.DOSATTRIB"
#: the kernel's limits on a name (XATTR_NAME_MAX) and a value (XATTR_SIZE_MAX)
NAME_MAX = 255
SIZE_MAX = 65536


class XattrError(OSError):
    """A request the share cannot hold; its errno is the answer."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(code, why)


def key_of(name: str) -> str:
    """The metadata key holding `user.NAME`."""
    raw = os.fsencode(name[len(USER) :])
    return PREFIX + base64.b32encode(raw).decode().rstrip("=").lower()


def name_of(key: str) -> str | None:
    """The attribute name a metadata key holds (None: not one of ours)."""
    if not key.lower().startswith(PREFIX):
        return None
    enc = key[len(PREFIX) :].upper()
    try:
        raw = base64.b32decode(enc + "=" * (-len(enc) % 8))
    except (binascii.Error, ValueError):
        return None
    return USER + os.fsdecode(raw)


def encode_value(value: bytes) -> str:
    return "b" + base64.b64encode(value).decode()


def decode_value(text: str) -> bytes | None:
    if not text.startswith("b"):
        return None
    try:
        return base64.b64decode(text[1:], validate=True)
    except (binascii.Error, ValueError):
        return None


def names(extra: dict[str, str]) -> list[str]:
    """The `user.*` attributes held in an entry's metadata, sorted."""
    out = []
    for key, text in extra.items():
        name = name_of(key)
        if name is not None and decode_value(text) is not None:
            out.append(name)
    return sorted(out)


def value(extra: dict[str, str], name: str) -> bytes | None:
    want = key_of(name).lower()
    for key, text in extra.items():
        if key.lower() == want:
            return decode_value(text)
    return None


def storable(name: str) -> None:
    """Raise XattrError unless `name` is one this mount stores (a `user.*` name)."""
    if not name.startswith(USER) or name.startswith(CONTROL):
        why = "only user.* attributes can be kept on the share"
        raise XattrError(errno.ENOTSUP, f"{name}: {why}")
    if len(os.fsencode(name)) > NAME_MAX or name == USER:
        raise XattrError(errno.ERANGE, f"{name}: not a valid attribute name")


def with_value(extra: dict[str, str], name: str, data: bytes | None) -> dict[str, str]:
    """`extra` with `name` set to `data` (None: removed); the key's spelling is ours."""
    want = key_of(name)
    out = {k: v for k, v in extra.items() if k.lower() != want.lower()}
    if data is not None:
        out[want] = encode_value(data)
    return out


def check_room(name: str, data: bytes, meta_after: dict[str, str], others: int) -> None:
    """Raise XattrError when the entry's metadata with this attribute (`meta_after`, all of
    it) exceeds the share's limit: E2BIG when this one attribute could never fit beside the
    entry's other metadata (`others`: its size without any attribute), ENOSPC otherwise."""
    if len(data) > SIZE_MAX:
        raise XattrError(errno.E2BIG, f"{name}: values are limited to {SIZE_MAX} bytes")
    alone = len(key_of(name)) + len(encode_value(data))
    if others + alone > naming.MAX_METADATA:
        raise XattrError(
            errno.E2BIG,
            f"{name}: {len(data)} bytes cannot fit in the share's {naming.MAX_METADATA} bytes "
            "of metadata per entry",
        )
    if naming.metadata_size(meta_after) > naming.MAX_METADATA:
        raise XattrError(
            errno.ENOSPC,
            f"{name}: the entry's attributes would exceed the share's "
            f"{naming.MAX_METADATA} bytes of metadata per entry",
        )


class Xattrs:
    """getxattr, listxattr, setxattr and removexattr of `user.*` names (module doc)."""

    def __init__(self, *, ns: Namespace, remote: Remote, dirty: DirtySet) -> None:
        self.ns, self.remote, self.dirty = ns, remote, dirty

    async def get(self, ino: int, name: str) -> bytes | None:
        """The value, or None when the entry has no such attribute."""
        if not name.startswith(USER) or name.startswith(CONTROL):
            return None
        rec = await self._known(ino)
        got = value(rec.extra, name)
        if got is None and name == DOSATTRIB:
            bits = dosattrib.bits_of(rec.attrs)
            if bits & ~dosattrib.MAPPED["archive"]:  # set by a client of the share itself
                return dosattrib.synthesized(bits)  # (Samba shows them too)
        return got

    async def list(self, ino: int) -> list[str]:
        return names((await self._known(ino)).extra)

    async def set(self, ino: int, name: str, data: bytes | None) -> None:
        """Set `name` to `data` (None: remove it; ENODATA when it is not there)."""
        storable(name)
        rec = await self._known(ino)
        if data is None and value(rec.extra, name) is None:
            raise XattrError(errno.ENODATA, f"{name}: no such attribute")
        extra = with_value(rec.extra, name, data)
        if data is not None:
            after = rec.clone()
            after.extra = extra
            meta = after.metadata(self.ns.owner)  # (marked: its POSIX attributes too)
            ours = {k: v for k, v in extra.items() if name_of(k) is not None}
            check_room(name, data, meta, naming.metadata_size(meta) - naming.metadata_size(ours))
        # like chmod: a file's upload carries it, anything else is queued
        is_file = rec.kind == FILE
        self.ns.setattr(ino, extra=extra, queue=not is_file)
        if is_file:
            self.dirty.mark_dirty(ino, meta=True)

    async def _known(self, ino: int) -> Inode:
        """The entry, its metadata as the share holds it: read once from the share when
        this mount only knows the entry from a listing (other tools' keys, attributes set
        at another site before this mount saw the entry marked)."""
        rec = self.ns.must(ino)
        if rec.extra_known:
            return rec
        path = self.ns.settled_path(ino)
        if path is None:
            return rec  # renamed here, not on the share yet: its upload reads them first
        await share_meta(self.ns, self.remote, ino, path)  # reads them, when on the share
        return self.ns.get(ino) or rec
