"""Directories (create, delete) and rename, which tries the path as a file, then as a directory.

A call retried after its first attempt succeeded (the response was lost) sees its own effect:
these operations recognise it (`RemoteError.retried`) and report success: a resent mkdir finds
the directory there, a resent delete finds nothing to delete, a resent rename finds its source
gone (and the destination there) or, without replace, the destination taken while the source
is gone.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Mapping

from remote.azure_core import MAYBE_DIR, AzureCore, SdkKwargs, norm
from remote.azure_parse import entry_from_headers, format_smb_time
from remote.azure_short import ShortPath
from remote.base import NotFound, RemoteEntry, RemoteError


def dir_headers(
    metadata: Mapping[str, str] | None,
    attributes: str | None,
    times: Mapping[str, str],
    *,
    create: bool,
) -> dict[str, str]:
    """Create Directory's or Set Directory Properties' headers as the SDK sends them: at
    creation only what is given (the service's defaults: inherited permission, now, no
    attributes); when set again, "preserve" for what is not given."""
    if create:
        given = {
            "x-ms-file-attributes": attributes,
            "x-ms-file-creation-time": times.get("file_creation_time"),
            "x-ms-file-last-write-time": times.get("file_last_write_time"),
        }
        headers = {k: v for k, v in given.items() if v}
    else:
        headers = {
            "x-ms-file-permission": "preserve",
            "x-ms-file-attributes": attributes or "preserve",
            "x-ms-file-creation-time": times.get("file_creation_time", "preserve"),
            "x-ms-file-last-write-time": times.get("file_last_write_time", "preserve"),
        }
    for k, v in (metadata or {}).items():
        headers[f"x-ms-meta-{k}"] = v
    return headers


class AzureDirectories(AzureCore):
    """mkdir, rmdir and rename of AzureFilesRemote."""

    async def mkdir(
        self,
        path: str,
        *,
        metadata: dict[str, str] | None = None,
        attributes: str | None = None,
        last_write_ns: int | None = None,
        creation_ns: int | None = None,
    ) -> RemoteEntry:
        path = norm(path)
        self._check_writable("mkdir", path)
        extra = {"file_attributes": attributes} if attributes else {}
        if last_write_ns is not None:
            extra["file_last_write_time"] = format_smb_time(last_write_ns)
        if creation_ns is not None:
            extra["file_creation_time"] = format_smb_time(creation_ns)

        def run(kw: SdkKwargs) -> Mapping[str, str]:
            return self._shared.headers.of(
                self._dir(path).create_directory, metadata=metadata, **extra, **kw
            )

        unsure = False  # the short path's request may have made it before its answer was lost
        headers: Mapping[str, str] | None = None
        if self._short is not None and path:
            props = dir_headers(metadata, attributes, extra, create=True)

            async def short_way(short: ShortPath) -> Mapping[str, str] | None:
                nonlocal unsure
                answer = await short.create_dir(
                    self._dir_url(path), props, trailing_dot=self._share.allow_trailing_dot
                )
                unsure = answer is None
                return answer.headers if answer is not None and answer.status == 201 else None

            headers = await self._natively("create_directory", short_way, shield=True)
        try:
            if headers is None:
                headers = await self._call("create_directory", path, run)
        except RemoteError as exc:
            if (exc.retried or unsure) and exc.code == "ResourceAlreadyExists":
                entry = await self.stat(path)  # our own first attempt created it
                if entry.is_dir:
                    return entry
            raise
        entry = entry_from_headers(posixpath.basename(path), True, headers, with_metadata=False)
        return dataclasses.replace(entry, metadata=dict(metadata or {}))

    async def rmdir(self, path: str) -> None:
        path = norm(path)
        self._check_writable("rmdir", path)
        try:
            await self._call(
                "delete_directory", path, lambda kw: self._dir(path).delete_directory(**kw)
            )
        except NotFound as exc:
            if not exc.retried or exc.code == "ParentNotFound":
                raise

    async def rename(self, src: str, dst: str, *, replace: bool = False) -> RemoteEntry | None:
        src, dst = norm(src), norm(dst)
        self._check_writable("rename", src)
        name = posixpath.basename(dst)
        try:
            headers = await self._call(
                "rename_file",
                src,
                lambda kw: self._shared.headers.of(
                    self._file(src).rename_file,
                    dst,
                    overwrite=replace,
                    ignore_read_only=replace,
                    **kw,
                ),
            )
            return entry_from_headers(name, False, headers, with_metadata=False)
        except NotFound as exc:
            if exc.code not in MAYBE_DIR:
                raise
            file_exc: RemoteError = exc
        except RemoteError as exc:
            if exc.code == "ResourceAlreadyExists" and exc.retried and not replace:
                # A resent rename whose first attempt worked (its answer was lost) may be
                # told the destination exists: the source gone and the destination there
                # is our own rename done.
                done = await self._renamed_already(src, dst)
                if done is not None:
                    return done
            if exc.code != "ResourceTypeMismatch":
                raise
            file_exc = exc
        try:
            headers = await self._call(
                "rename_directory",
                src,
                lambda kw: self._shared.headers.of(
                    self._dir(src).rename_directory, dst, overwrite=replace, **kw
                ),
            )
            return entry_from_headers(name, True, headers, with_metadata=False)
        except NotFound as exc:
            if file_exc.retried or exc.retried:
                # The rename may have succeeded before its response was lost.
                try:
                    return await self.stat(dst)
                except NotFound:
                    pass
            if not isinstance(file_exc, NotFound):
                raise file_exc from None  # src is a file: the type mismatch was the real error
            raise
        except RemoteError as exc:
            if exc.code == "ResourceAlreadyExists" and exc.retried and not replace:
                done = await self._renamed_already(src, dst)
                if done is not None:
                    return done
            raise

    async def _renamed_already(self, src: str, dst: str) -> RemoteEntry | None:
        """`dst` exists and `src` does not: what a rename that already happened leaves."""
        try:
            await self.stat(src)
            return None
        except NotFound:
            pass
        try:
            return await self.stat(dst)
        except NotFound:
            return None
