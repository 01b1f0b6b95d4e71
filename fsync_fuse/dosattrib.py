"""DOS attributes as Samba keeps them (`user.DOSATTRIB`) and as the share keeps them (its SMB
attributes), so a Windows client of a branch server, a Windows client of the share itself
and another branch see the same ReadOnly, Hidden, System and Archive bits.

Samba 4 stores an NDR blob (read off smbd 4.17 here: 00 00 0500 0500 0000 11000000 23000000
and 8 bytes of time): a NUL-terminated hex string (empty in 4.17), a u16 version and a u16
union level (equal), then for version 5: u32 valid flags, u32 attributes, u64 creation
time; version 4: u32 valid flags, u32 attributes, u64 itime, u64 creation time; version 3:
u32 attributes, then sizes and times. Little-endian, each field aligned to its size.

The share's attributes are the truth. The blob a branch writes is kept whole as a `user.*`
attribute (xattrs.py); its mapped bits go to the share with the entry's next metadata send
(`Inode.share_attributes`), and a listing that brings changed attributes from the share
rewrites the kept blob's bits to match (`follow`).

A creation time a client sets over SMB (Samba keeps it in the blob too) is sent as the
share's creation time with the entry's metadata (`Inode.share_creation`).

ReadOnly is Samba's to enforce for its SMB clients, as on any Samba server; the mount's
local processes are not refused (it is an attribute, not a permission). The share refuses
changing the content of a read-only file and deleting it: the write-back clears the
attribute for such a change and puts it back after (uploader.py, opworker.py), and a rename
over one replaces it, as the local rename did.
"""

from __future__ import annotations

import base64
import struct

from remote.base import attribute_names

#: the share's attribute names mapped both ways, and their DOS bits
MAPPED = {"readonly": 0x1, "hidden": 0x2, "system": 0x4, "archive": 0x20}
_NAMES = {"readonly": "ReadOnly", "hidden": "Hidden", "system": "System", "archive": "Archive"}
MASK = sum(MAPPED.values())
#: the metadata key of `user.DOSATTRIB` (xattrs.key_of; tests/unit check they agree)
KEY = "fsyncx_" + base64.b32encode(b"DOSATTRIB").decode().rstrip("=").lower()


def _align(pos: int, n: int) -> int:
    return (pos + n - 1) // n * n


def _attrib_offset(blob: bytes) -> int | None:
    """Where the u32 attributes of a version 3, 4 or 5 blob are (None: another shape). NDR
    aligns each field to its size from the blob's start: after the string, a pad to 2 for
    the u16s and to 4 for the u32s."""
    end = blob.find(b"\0")
    if end < 0:
        return None
    pos = _align(end + 1, 2)
    if len(blob) < pos + 4:
        return None
    version, level = struct.unpack_from("<HH", blob, pos)
    if version != level or version not in (3, 4, 5):
        return None
    at = _align(pos + 4, 4)
    if version in (4, 5):
        at += 4  # valid flags
    return at if len(blob) >= at + 4 else None


#: the valid-flags bit of a version 4/5 blob's creation time (XATTR_DOSINFO_CREATE_TIME)
_CREATE_TIME = 0x10
#: 100 ns intervals from 1601 (NTTIME) to 1970
_NT_EPOCH = 116444736000000000


def creation_of(blob: bytes) -> int | None:
    """The creation time (ns since 1970) a client set over SMB, which Samba keeps in a
    version 4 or 5 blob (after the attributes, and in 4 an itime), None when it has none."""
    at = _attrib_offset(blob)
    if at is None:
        return None
    version = struct.unpack_from("<H", blob, _align(blob.find(b"\0") + 1, 2))[0]
    flags = struct.unpack_from("<I", blob, at - 4)[0]
    pos = _align(at + 4, 8) + (8 if version == 4 else 0)
    if version not in (4, 5) or not flags & _CREATE_TIME or len(blob) < pos + 8:
        return None
    nt = struct.unpack_from("<Q", blob, pos)[0]
    return (nt - _NT_EPOCH) * 100 if nt > _NT_EPOCH else None


def attrib_of(blob: bytes) -> int | None:
    at = _attrib_offset(blob)
    return None if at is None else struct.unpack_from("<I", blob, at)[0]


def with_bits(blob: bytes, bits: int) -> bytes:
    """The blob with its mapped bits set to those of `bits` (others unchanged; a leading
    hex string, which only old versions filled and none reads, is left as it is)."""
    at = _attrib_offset(blob)
    if at is None:
        return blob
    old = struct.unpack_from("<I", blob, at)[0]
    out = bytearray(blob)
    struct.pack_into("<I", out, at, (old & ~MASK) | (bits & MASK))
    return bytes(out)


def bits_of(attributes: str | None) -> int:
    """The mapped DOS bits of the share's attribute string ('Hidden | Archive')."""
    parts = {p.lower() for p in attribute_names(attributes)}
    return sum(bit for name, bit in MAPPED.items() if name in parts)


def apply(attributes: str | None, bits: int) -> str | None:
    """The share's attribute string with its mapped names set from `bits` (None: unchanged,
    or unknown). Other names (Directory, the POSIX marker...) stay."""
    if attributes is None:
        return None
    parts = [p for p in attribute_names(attributes) if p.lower() not in MAPPED]
    parts += [_NAMES[n] for n, bit in MAPPED.items() if bits & bit]
    return "|".join(parts) if parts else "None"


def same(a: str | None, b: str | None) -> bool:
    """Two attribute strings name the same attributes (the share spaces them 'A | B')."""
    return {p.lower() for p in attribute_names(a)} == {p.lower() for p in attribute_names(b)}


def synthesized(bits: int) -> bytes:
    """A version 5 blob saying only the attributes (no creation time): what a branch's Samba
    reads for an entry whose attributes another client of the share set."""
    return b"\0\0" + struct.pack("<HH", 5, 5) + bytes(2) + struct.pack("<II", 0x1, bits) + bytes(8)


def stored(extra: dict[str, str]) -> bytes | None:
    """The `user.DOSATTRIB` blob kept in an entry's metadata, if any."""
    for k, v in extra.items():
        if k.lower() == KEY and v.startswith("b"):
            try:
                return base64.b64decode(v[1:], validate=True)
            except ValueError:
                return None
    return None


def follow(extra: dict[str, str], attributes: str | None) -> dict[str, str]:
    """`extra` with a kept blob's mapped bits rewritten to the share's `attributes` (another
    client of the share changed them)."""
    blob = stored(extra)
    if blob is None or attributes is None:
        return extra
    bits = attrib_of(blob)
    if bits is None or bits & MASK == bits_of(attributes):
        return extra
    new = with_bits(blob, bits_of(attributes))
    out = {k: v for k, v in extra.items() if k.lower() != KEY}
    out[KEY] = "b" + base64.b64encode(new).decode()
    return out
