"""The Remote interface: everything the filesystem needs from one file share.

Paths are share-relative, '/'-separated, without a leading slash; the root directory is "".
Names on the share are case-insensitive and case-preserving. Times are integer nanoseconds
since the epoch (UTC). All methods are async (trio). Errors are the `RemoteError` subclasses
below, so the filesystem maps them to errno without knowing about HTTP or the SDK.
"""

from __future__ import annotations

import errno
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

# ----------------------------------------------------------------------------- errors


class RemoteError(Exception):
    """Base of every error the remote raises. `errno` is what the filesystem should answer."""

    errno: int = errno.EIO
    #: True when retrying the same call later may succeed (network, 5xx, throttling).
    transient: bool = False
    #: The service's error code (e.g. "ResourceNotFound") and HTTP status, when it answered.
    code: str | None = None
    status: int | None = None
    #: How many times the SDK retried the call before giving up with this error.
    retried: int = 0


class NotFound(RemoteError):
    errno = errno.ENOENT


class AlreadyExists(RemoteError):
    errno = errno.EEXIST


class NotEmpty(RemoteError):
    errno = errno.ENOTEMPTY


class PermissionDenied(RemoteError):
    """The credentials are valid but not allowed to do this (SAS permissions, read-only)."""

    errno = errno.EACCES


class ReadOnlyOnShare(PermissionDenied):
    """The file has the SMB ReadOnly attribute on the share, which refuses changing its
    content or deleting it (clear the attribute first, as AzCopy's --force-if-read-only
    does: `without_read_only`)."""


class AuthFailed(RemoteError):
    """The credentials were refused (wrong key, expired SAS, bad token)."""

    errno = errno.EACCES


class InvalidName(RemoteError):
    """The share cannot represent this name (forbidden characters, too long)."""

    errno = errno.EINVAL


class LeaseConflict(RemoteError):
    """The file is leased by someone else, or our lease id is missing or wrong."""

    errno = errno.EBUSY


class PreconditionFailed(RemoteError):
    """A conditional request failed: the file changed since the version we based it on."""

    errno = errno.ESTALE


class QuotaExceeded(RemoteError):
    errno = errno.ENOSPC


class Transient(RemoteError):
    """The share could not be reached or answered 5xx after the SDK's retries."""

    transient = True


class Throttled(Transient):
    """The share answered 503 ServerBusy (or 429) after the SDK's retries."""


# ----------------------------------------------------------------------------- data


def attribute_names(attributes: str | None) -> list[str]:
    """The names in an SMB attribute string as the share writes it ('ReadOnly | Archive';
    'None' names none), in order: the one parser of these strings."""
    parts = (p.strip() for p in (attributes or "").split("|"))
    return [p for p in parts if p and p.lower() != "none"]


def is_read_only(attributes: str | None) -> bool:
    """Does an SMB attribute string hold ReadOnly?"""
    return any(p.lower() == "readonly" for p in attribute_names(attributes))


def without_read_only(attributes: str | None) -> str:
    """The attribute string with ReadOnly taken out ('None' when nothing is left)."""
    return "|".join(p for p in attribute_names(attributes) if p.lower() != "readonly") or "None"


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    """One file or directory as the share reports it.

    A listing fills name, is_dir, size, file_id, etag, times and attributes (with
    include=Timestamps,ETag,Attributes and the extended info header); `metadata` is only
    filled by `stat` (listings do not return it) and is None when unknown.
    """

    name: str
    is_dir: bool
    size: int = 0
    file_id: str | None = None
    etag: str | None = None
    last_write_ns: int | None = None  # SMB last-write time: our mtime
    change_ns: int | None = None  # SMB change time: our ctime
    creation_ns: int | None = None
    attributes: str | None = None  # e.g. "Archive" / "Directory" / "ReadOnly|Archive"
    metadata: dict[str, str] | None = None
    #: Content-MD5 as set when the file was made (base64; `stat` only): the service stores
    #: it, it does not compute it (migrate --verify compares it with the source)
    content_md5: str | None = None


@dataclass(frozen=True, slots=True)
class ShareUsage:
    """For statfs: the quota and what is used, in bytes."""

    quota_bytes: int
    used_bytes: int


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    snapshot: str  # the id the service chose, e.g. "2026-11-25T14:00:00.0000000Z"
    metadata: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- interface


class Remote(ABC):
    """One share (or one read-only snapshot of it)."""

    #: True for a snapshot view: every mutating method raises PermissionDenied.
    read_only: bool = False

    # --- reading
    @abstractmethod
    async def stat(self, path: str, *, is_dir: bool | None = None) -> RemoteEntry:
        """Properties of one file or directory, metadata included. NotFound if absent.
        `is_dir`: what the caller believes it is (saves a call on a directory)."""

    @abstractmethod
    async def list_dir(self, path: str) -> list[RemoteEntry]:
        """Every entry of a directory (all pages), without metadata. NotFound/NotADirectory."""

    @abstractmethod
    async def read(self, path: str, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of a file; shorter only when the file ends first."""

    # --- files
    @abstractmethod
    async def create_file(
        self,
        path: str,
        size: int = 0,
        *,
        metadata: dict[str, str] | None = None,
        last_write_ns: int | None = None,
        attributes: str | None = None,
        content_md5: bytes | None = None,
        creation_ns: int | None = None,
    ) -> RemoteEntry:
        """Create (or replace) a file of `size` zero bytes. Returns its new properties.
        `attributes`: SMB attributes such as "Archive|NoScrubData" (default: none).
        `content_md5`: the MD5 of the content it will be given, kept as its Content-MD5.
        `creation_ns`: its SMB creation time (default: now)."""

    async def create_filled(
        self,
        tmp: str,
        dst: str,
        size: int,
        pieces: list[tuple[int, bytes]],
        *,
        metadata: dict[str, str] | None = None,
        last_write_ns: int | None = None,
        attributes: str | None = None,
        made: list[RemoteEntry] | None = None,
        content_md5: bytes | None = None,
        creation_ns: int | None = None,
        replace: bool = False,
    ) -> RemoteEntry:
        """Create `tmp` (`size` bytes, the given properties), write `pieces` (offset, data)
        keeping its last-write time, and rename it to `dst` without replacing anything
        (AlreadyExists when `dst` exists; `tmp` is then left, filled), or replacing a file
        there when `replace`. Returns the renamed file's properties. Implementations may do
        it in one round of work.

        `made`: the temporary file's properties (its FileId) are appended as soon as it is
        created, so a caller whose call failed after that (an answer lost on the way back)
        can still recognise the file as its own when it finds it under `dst` later. The
        rename itself recognises its own earlier success (`rename_new`)."""
        # a read-only file refuses Put Range: it becomes read-only once filled
        late = attributes if pieces and is_read_only(attributes) else None
        entry = await self.create_file(
            tmp,
            size,
            metadata=metadata,
            last_write_ns=last_write_ns,
            attributes=without_read_only(attributes) if late else attributes,
            content_md5=content_md5,
            creation_ns=creation_ns,
        )
        if made is not None:
            made.append(entry)
        for off, data in pieces:
            await self.write(tmp, off, data, keep_mtime=True)
        if late:
            await self.set_properties(tmp, attributes=late, is_dir=False)
        return await self.rename_new(tmp, dst, entry.file_id, replace=replace)

    async def rename_new(
        self, tmp: str, dst: str, file_id: str | None, *, replace: bool = False
    ) -> RemoteEntry:
        """Rename our new file `tmp`, whose FileId is `file_id`, to `dst` without replacing
        anything (or replacing a file there: `replace`). A rename whose answer was lost is
        resent (by the SDK, or by a caller retrying); the resent one finds its source gone
        (NotFound) or `dst` taken (AlreadyExists) by its own earlier success: when `dst` is
        the file with our FileId that is success, not another site's file. Otherwise the
        error is raised."""
        try:
            entry = await self.rename(tmp, dst, replace=replace)
            return entry if entry is not None else await self.stat(dst)
        except (NotFound, AlreadyExists):
            if file_id is None:
                raise
            try:
                there = await self.stat(dst)
            except NotFound:
                there = None
            if there is None or there.is_dir or there.file_id != file_id:
                raise
            return there

    @abstractmethod
    async def write(
        self,
        path: str,
        offset: int,
        data: bytes | memoryview,
        *,
        lease_id: str | None = None,
        keep_mtime: bool = False,
    ) -> str:
        """Write bytes at offset (Put Range; split into <= 4 MiB calls). Returns the new ETag.
        `keep_mtime`: the SMB last-write time stays as it is (else the service sets it to now).

        The file must already be at least offset+len(data) long (see `resize`)."""

    @abstractmethod
    async def clear_range(
        self, path: str, offset: int, length: int, *, lease_id: str | None = None
    ) -> str:
        """Turn a range back into zeros (and free its storage). Returns the new ETag."""

    @abstractmethod
    async def resize(self, path: str, size: int, *, lease_id: str | None = None) -> str:
        """Set the file's length; growing fills with zeros. Returns the new ETag."""

    @abstractmethod
    async def set_properties(
        self,
        path: str,
        *,
        last_write_ns: int | None = None,
        metadata: dict[str, str] | None = None,
        lease_id: str | None = None,
        attributes: str | None = None,
        is_dir: bool | None = None,
        creation_ns: int | None = None,
    ) -> str:
        """Set the SMB last-write time, the SMB attributes, the SMB creation time and/or
        replace the metadata.
        Returns the new ETag. Works on files and directories (`is_dir`, when the caller
        knows, saves a call on a directory)."""

    @abstractmethod
    async def set_content_md5(self, path: str, md5: bytes) -> str:
        """Set a file's Content-MD5 (the MD5 of all its content, for checks such as
        `migrate --verify`), keeping its SMB properties and times. Returns the new ETag."""

    @abstractmethod
    async def delete_file(self, path: str, *, lease_id: str | None = None) -> None: ...

    async def copy_from_snapshot(self, snapshot: str, src: str, dst: str) -> None:
        """Copy file `src` as it is in `snapshot` to `dst` on the share side (replacing `dst`),
        with its content, metadata, SMB attributes and times; returns when the copy is done.
        Sending it again after a lost answer does the same again (it is idempotent)."""
        raise RemoteError(f"copy of {src!r} from snapshot {snapshot}: not supported here")

    # --- directories
    @abstractmethod
    async def mkdir(
        self,
        path: str,
        *,
        metadata: dict[str, str] | None = None,
        attributes: str | None = None,
        last_write_ns: int | None = None,
        creation_ns: int | None = None,
    ) -> RemoteEntry:
        """Create a directory (with this SMB last-write and creation time; None: now);
        AlreadyExists if present, NotFound if the parent is missing."""

    @abstractmethod
    async def rmdir(self, path: str) -> None:
        """Remove an empty directory; NotEmpty otherwise."""

    # --- both
    @abstractmethod
    async def rename(self, src: str, dst: str, *, replace: bool = False) -> RemoteEntry | None:
        """Rename a file or a whole directory. With replace=False an existing dst is
        AlreadyExists; with replace=True an existing file at dst is replaced, even one with
        the ReadOnly attribute (the caller decided to replace it). Returns the
        entry's new properties (ETag, FileId...; no metadata), None when not reported."""

    # --- leases (files only; Azure Files leases are infinite)
    @abstractmethod
    async def acquire_lease(self, path: str, lease_id: str) -> str:
        """Take an infinite lease with the id we chose (so it can be recorded first)."""

    @abstractmethod
    async def release_lease(self, path: str, lease_id: str) -> None: ...

    @abstractmethod
    async def break_lease(self, path: str) -> None: ...

    # --- the share
    @abstractmethod
    async def usage(self) -> ShareUsage:
        """Quota and used bytes, for statfs."""

    @abstractmethod
    async def create_snapshot(self, metadata: dict[str, str] | None = None) -> SnapshotInfo: ...

    @abstractmethod
    async def list_snapshots(self) -> list[SnapshotInfo]: ...

    @abstractmethod
    async def delete_snapshot(self, snapshot: str) -> None: ...

    @abstractmethod
    def at_snapshot(self, snapshot: str) -> Remote:
        """A read-only view of the share as it was at `snapshot`."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close connections. Safe to call twice."""
