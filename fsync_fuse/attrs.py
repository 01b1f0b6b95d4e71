"""POSIX attributes ↔ what the share can hold, and the inode record kept for each entry.

The share has no mode, owner or symlinks, so we keep them in file metadata under our own keys
(another mount of the share reads them back): `fsyncmode` (octal permission bits), `fsyncuid`,
`fsyncgid`, and `fsynctype=symlink` on a small file whose content is the link target. Fifos,
sockets and device nodes are empty files marked `fsynctype=fifo|socket|chardev|blockdev`
(devices with `fsyncrdev`, the device number): every mount shows them with their type, and
the kernel itself serves what they are opened for. The mtime lives in the SMB last-write time. Metadata keys we do not own are kept and written back
unchanged, so we never strip what another tool stored.

Listings do not return metadata, and a `stat` per entry made the first listing of a big tree
cost one call per entry. So POSIX attributes are stored only when they differ from what a
mount assumes without them (mode 0644 for files, 0755 for directories, owned by the mounting
user), and an entry that carries them is marked with the SMB attribute `NoScrubData` (inert:
it only tells ReFS volumes not to scrub), which listings do return. A listing `stat`s only
marked entries; every other entry has the default attributes. Files owned by the mounting
user therefore appear owned by whoever mounts the share elsewhere, as with an SMB mount.

Access times: reads never change them (like `noatime`); one set explicitly (utimensat,
`touch -a`, `cp -p`) is kept here and in the metadata (`fsyncatime`) without marking the
entry (tar sets one on every file it extracts: marking them all would make other mounts
`stat` every entry of such a tree), so another mount shows it once it reads the entry's
metadata (a marked entry's listing; else it shows the mtime, as it does for an access time
never set).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from typing import ClassVar

from fsync_fuse import dosattrib, records
from remote.base import attribute_names

KEY_MODE = "fsyncmode"
KEY_UID = "fsyncuid"
KEY_GID = "fsyncgid"
KEY_TYPE = "fsynctype"
KEY_ATIME = "fsyncatime"
KEY_RDEV = "fsyncrdev"
TYPE_SYMLINK = "symlink"
OUR_KEYS = frozenset({KEY_MODE, KEY_UID, KEY_GID, KEY_TYPE, KEY_ATIME, KEY_RDEV})
#: keys of extended attributes (xattrs.py): kept in `extra`; an entry with any is marked, so
#: other mounts read its metadata
XATTR_PREFIX = "fsyncx_"
#: SMB attribute marking an entry whose metadata holds POSIX attributes (see above)
MARKER = "NoScrubData"

FILE, DIR, LINK = "f", "d", "l"
FIFO, SOCK, CHR, BLK = "p", "s", "c", "b"
#: kinds stored as an empty file marked with their type (and device number)
SPECIAL = frozenset({FIFO, SOCK, CHR, BLK})
_S_IFMT = {
    FILE: stat.S_IFREG,
    DIR: stat.S_IFDIR,
    LINK: stat.S_IFLNK,
    FIFO: stat.S_IFIFO,
    SOCK: stat.S_IFSOCK,
    CHR: stat.S_IFCHR,
    BLK: stat.S_IFBLK,
}
DEFAULT_MODE = {
    FILE: 0o644,
    DIR: 0o755,
    LINK: 0o777,
    FIFO: 0o644,
    SOCK: 0o755,
    CHR: 0o644,
    BLK: 0o644,
}
#: fsynctype values
_TYPE_OF = {LINK: TYPE_SYMLINK, FIFO: "fifo", SOCK: "socket", CHR: "chardev", BLK: "blockdev"}
_KIND_OF = {v: k for k, v in _TYPE_OF.items()}


def kind_of_mode(mode: int) -> str | None:
    """The kind of entry a mknod/create mode asks for (None: not one the mount can hold)."""
    for kind, fmt in _S_IFMT.items():
        if stat.S_IFMT(mode) == fmt:
            return kind
    return None


def has_marker(attributes: str | None) -> bool | None:
    """Whether share attributes carry the POSIX marker; None when they are unknown."""
    if attributes is None:
        return None
    return any(p.lower() == MARKER.lower() for p in attribute_names(attributes))


def with_marker(attributes: str | None, on: bool, is_dir: bool) -> str:
    """SMB attributes to send: `attributes` (as the share reported them) with the marker
    set or cleared; other attributes (ReadOnly, Hidden, Archive...) are kept."""
    parts = [p for p in attribute_names(attributes) if p.lower() != MARKER.lower()]
    if not parts:
        parts = ["Directory"] if is_dir else ["Archive"]
    if on:
        parts.append(MARKER)
    return "|".join(parts)


@dataclass(slots=True)
class Inode:
    """One entry of the namespace, persisted in the `inodes` LMDB database.

    `remote_size` is the file's size on the share as far as we know (None: not on the share
    yet, its create is still queued). `file_id` and `etag` identify the share's version this
    entry is based on (multi-site conflict detection needs both). `listed_ns` is when a
    directory's share listing was last merged (0: never). `meta_known` is False for entries
    seen in a listing whose metadata (mode, owner, symlink flag) was not read yet.
    """

    ino: int
    parent: int  # 0: unlinked, kept only while the kernel or an open handle refers to it
    name: str
    kind: str
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    mode: int = 0o644  # permission bits only; the type comes from `kind`
    uid: int = 0
    gid: int = 0
    file_id: str | None = None
    etag: str | None = None
    remote_size: int | None = None
    target: str | None = None
    listed_ns: int = 0
    meta_known: bool = True
    extra: dict[str, str] = field(default_factory=dict)
    cver: int = 0  # bumped when the share's content changed under us (kernel cache no longer valid)
    extra_known: bool = True
    attrs: str | None = None
    base_lw: int | None = None  # the share's last-write time of the version `etag` names
    #: an access time set explicitly (utimensat, `touch -a`); 0: none, the mtime stands in
    atime_ns: int = 0
    rdev: int = 0  # device number of a device node

    def clone(self) -> Inode:
        """A copy to hand out (copy.copy is slow on slotted dataclasses); `extra` is shared,
        it is only ever replaced, never changed in place."""
        return Inode(
            self.ino,
            self.parent,
            self.name,
            self.kind,
            self.size,
            self.mtime_ns,
            self.ctime_ns,
            self.mode,
            self.uid,
            self.gid,
            self.file_id,
            self.etag,
            self.remote_size,
            self.target,
            self.listed_ns,
            self.meta_known,
            self.extra,
            self.cver,
            self.extra_known,
            self.attrs,
            self.base_lw,
            self.atime_ns,
            self.rdev,
        )

    @property
    def is_dir(self) -> bool:
        return self.kind == DIR

    @property
    def st_mode(self) -> int:
        return _S_IFMT[self.kind] | (self.mode & 0o7777)

    def posix_default(self, owner: tuple[int, int]) -> bool:
        """True when a mount owned by `owner` (uid, gid) would show exactly these attributes
        with no metadata at all: nothing to store, no marker (an entry with extended
        attributes is marked too)."""
        return (
            self.kind in (FILE, DIR)
            and self.mode & 0o7777 == DEFAULT_MODE[self.kind]
            and (self.uid, self.gid) == owner
            and not any(k.lower().startswith(XATTR_PREFIX) for k in self.extra)
        )

    def metadata(self, owner: tuple[int, int]) -> dict[str, str]:
        """The share metadata for this entry: other tools' keys, plus our POSIX keys unless
        the attributes are the defaults a mount assumes (`posix_default`)."""
        meta = dict(self.extra)
        if not self.posix_default(owner):
            meta[KEY_MODE] = format(self.mode & 0o7777, "o")
            meta[KEY_UID] = str(self.uid)
            meta[KEY_GID] = str(self.gid)
            if self.kind in _TYPE_OF:
                meta[KEY_TYPE] = _TYPE_OF[self.kind]
            if self.kind in (CHR, BLK):
                meta[KEY_RDEV] = str(self.rdev)
        if self.atime_ns:
            meta[KEY_ATIME] = str(self.atime_ns)
        return meta

    def share_attributes(self, owner: tuple[int, int]) -> str | None:
        """The SMB attributes to send with this entry's metadata, None when the share's
        already have the marker right (or, unknown, when no marker is needed) and the DOS
        attributes a branch's Samba kept (`user.DOSATTRIB`)."""
        want = not self.posix_default(owner)
        blob = dosattrib.stored(self.extra)
        dos = dosattrib.attrib_of(blob) if blob is not None else None
        if dos is not None:
            # a branch's Samba set DOS attributes (dosattrib.py): the share gets them too
            base = self.attrs if self.attrs is not None else with_marker(None, False, self.is_dir)
            target = with_marker(dosattrib.apply(base, dos), want, self.is_dir)
            return None if dosattrib.same(target, self.attrs) else target
        have = has_marker(self.attrs)
        if have is None and not want or have == want:
            return None
        return with_marker(self.attrs, want, self.kind == DIR)

    def share_creation(self) -> int | None:
        """The SMB creation time to send with this entry's metadata: the one a branch's
        Samba kept (`user.DOSATTRIB`), None (leave the share's) when there is none."""
        blob = dosattrib.stored(self.extra)
        return dosattrib.creation_of(blob) if blob is not None else None

    def apply_metadata(self, meta: dict[str, str] | None, owner: tuple[int, int]) -> None:
        """Take mode/owner/type from share metadata; absent keys mean the defaults."""
        if meta is None:
            return
        lowered = {k.lower(): v for k, v in meta.items()}
        self.apply_defaults(owner)
        try:
            if KEY_MODE in lowered:
                self.mode = int(lowered[KEY_MODE], 8) & 0o7777
            if KEY_UID in lowered:
                self.uid = int(lowered[KEY_UID])
            if KEY_GID in lowered:
                self.gid = int(lowered[KEY_GID])
            self.atime_ns = int(lowered.get(KEY_ATIME, 0))
            self.rdev = int(lowered.get(KEY_RDEV, 0))
        except ValueError:
            pass  # another tool wrote something odd: keep the defaults
        if self.kind != DIR and lowered.get(KEY_TYPE) in _KIND_OF:
            self.kind = _KIND_OF[lowered[KEY_TYPE]]
        self.extra = {k: v for k, v in meta.items() if k.lower() not in OUR_KEYS}
        self.meta_known = True
        self.extra_known = True

    def apply_defaults(self, owner: tuple[int, int]) -> None:
        """An entry without POSIX metadata: default mode, owned by the mounting user."""
        if self.kind not in (FILE, DIR):
            self.kind = FILE
        self.mode = DEFAULT_MODE[self.kind]
        self.uid, self.gid = owner
        self.meta_known = True

    # --- persistence: a JSON object with short keys, defaults left out
    _FIELDS: ClassVar[tuple[tuple[str, str, object], ...]] = (
        ("p", "parent", None),
        ("n", "name", None),
        ("k", "kind", None),
        ("s", "size", 0),
        ("m", "mtime_ns", 0),
        ("c", "ctime_ns", 0),
        ("o", "mode", 0o644),
        ("u", "uid", 0),
        ("g", "gid", 0),
        ("id", "file_id", None),
        ("e", "etag", None),
        ("rs", "remote_size", None),
        ("t", "target", None),
        ("L", "listed_ns", 0),
        ("mk", "meta_known", True),
        ("x", "extra", {}),
        ("cv", "cver", 0),
        ("xk", "extra_known", True),
        ("a", "attrs", None),
        ("bl", "base_lw", None),
        ("at", "atime_ns", 0),
        ("rd", "rdev", 0),
    )

    def encode(self) -> bytes:
        out = {}
        for short, attr, default in self._FIELDS:
            value = getattr(self, attr)
            if default is None and attr in ("parent", "name", "kind") or value != default:
                out[short] = value
        return records.dumps(out)

    @classmethod
    def decode(cls, ino: int, raw: bytes) -> Inode:
        data = records.loads(raw)
        kwargs = {attr: data[short] for short, attr, _ in cls._FIELDS if short in data}
        return cls(ino=ino, **kwargs)
