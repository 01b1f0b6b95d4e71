"""POSIX attributes ↔ what the share can hold, and the inode record kept for each entry.

The share has no mode, owner or symlinks, so we keep them in file metadata under our own keys
(another mount of the share reads them back): `fsyncmode` (octal permission bits), `fsyncuid`,
`fsyncgid`, and `fsynctype=symlink` on a small file whose content is the link target. The mtime
lives in the SMB last-write time. Metadata keys we do not own are kept and written back
unchanged, so we never strip what another tool stored.
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, field

KEY_MODE = "fsyncmode"
KEY_UID = "fsyncuid"
KEY_GID = "fsyncgid"
KEY_TYPE = "fsynctype"
TYPE_SYMLINK = "symlink"
OUR_KEYS = frozenset({KEY_MODE, KEY_UID, KEY_GID, KEY_TYPE})

FILE, DIR, LINK = "f", "d", "l"
_S_IFMT = {FILE: stat.S_IFREG, DIR: stat.S_IFDIR, LINK: stat.S_IFLNK}


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
        )

    @property
    def is_dir(self) -> bool:
        return self.kind == DIR

    @property
    def st_mode(self) -> int:
        return _S_IFMT[self.kind] | (self.mode & 0o7777)

    def metadata(self) -> dict[str, str]:
        """The share metadata that represents this entry's POSIX attributes."""
        meta = dict(self.extra)
        meta[KEY_MODE] = format(self.mode & 0o7777, "o")
        meta[KEY_UID] = str(self.uid)
        meta[KEY_GID] = str(self.gid)
        if self.kind == LINK:
            meta[KEY_TYPE] = TYPE_SYMLINK
        else:
            meta.pop(KEY_TYPE, None)
        return meta

    def apply_metadata(self, meta: dict[str, str] | None) -> None:
        """Take mode/owner/type from share metadata; absent keys keep our defaults."""
        if meta is None:
            return
        lowered = {k.lower(): v for k, v in meta.items()}
        try:
            if KEY_MODE in lowered:
                self.mode = int(lowered[KEY_MODE], 8) & 0o7777
            if KEY_UID in lowered:
                self.uid = int(lowered[KEY_UID])
            if KEY_GID in lowered:
                self.gid = int(lowered[KEY_GID])
        except ValueError:
            pass  # another tool wrote something odd: keep the defaults
        if self.kind != DIR and lowered.get(KEY_TYPE) == TYPE_SYMLINK:
            self.kind = LINK
        self.extra = {k: v for k, v in meta.items() if k.lower() not in OUR_KEYS}
        self.meta_known = True

    # --- persistence: a JSON object with short keys, defaults left out
    _FIELDS = (
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
    )

    def encode(self) -> bytes:
        out = {}
        for short, attr, default in self._FIELDS:
            value = getattr(self, attr)
            if default is None and attr in ("parent", "name", "kind") or value != default:
                out[short] = value
        return json.dumps(out, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, ino: int, raw: bytes) -> Inode:
        data = json.loads(raw)
        kwargs = {attr: data[short] for short, attr, _ in cls._FIELDS if short in data}
        return cls(ino=ino, **kwargs)
