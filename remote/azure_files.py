"""Writing files: create (empty or filled in one hop), ranges, resize, properties, delete.

Every mutation checks that this view is writable (not a snapshot) first. Set Properties of a
path that turns out to be a directory falls through to the directory's calls, because the
caller does not always know which it is.
"""

from __future__ import annotations

import base64
import dataclasses
import posixpath
import time
from collections.abc import Callable, Mapping
from typing import Literal, TypedDict
from urllib.parse import quote

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.fileshare import ContentSettings, ShareFileClient

from remote.azure_core import MAYBE_DIR, AzureCore, SdkKwargs, lease_kw, norm
from remote.azure_dirs import dir_headers
from remote.azure_parse import _header, entry_from_headers, format_smb_time
from remote.azure_short import ShortPath
from remote.azure_transport import MAX_RANGE
from remote.base import NotFound, RemoteEntry, RemoteError, is_read_only

#: longest wait for a share-side copy the service runs in the background (status "pending")
COPY_WAIT = 600.0


class CreateFileArgs(TypedDict):
    """Create File's SMB properties and metadata, as the SDK's create_file takes them."""

    file_attributes: str
    file_creation_time: str
    file_last_write_time: str
    file_permission: str
    metadata: dict[str, str] | None
    content_settings: ContentSettings | None


def _file_headers_or_none(
    headers_of: Callable[..., Mapping[str, str]], fc: ShareFileClient, kw: SdkKwargs
) -> Mapping[str, str] | None:
    """Get File Properties' headers, None when there is no such file (in a worker thread)."""
    try:
        return headers_of(fc.get_file_properties, **kw)
    except ResourceNotFoundError:
        return None


def _create_args(
    attributes: str | None,
    lw: str,
    metadata: dict[str, str] | None,
    content_md5: bytes | None = None,
    creation: str = "now",
) -> CreateFileArgs:
    """Create File's properties: ours, or the share's defaults (inherited permissions)."""
    return {
        "file_attributes": attributes or "none",
        "file_creation_time": creation,
        "file_last_write_time": lw,
        "file_permission": "inherit",
        "metadata": metadata,
        "content_settings": ContentSettings(content_md5=bytearray(content_md5))
        if content_md5
        else None,
    }


def _smb_or_now(ns: int | None) -> str:
    return format_smb_time(ns) if ns is not None else "now"


def _create_headers(args: CreateFileArgs) -> dict[str, str]:
    """The same properties as Create File's headers, for the short path (azure_short)."""
    headers = {
        "x-ms-file-attributes": args["file_attributes"],
        "x-ms-file-creation-time": args["file_creation_time"],
        "x-ms-file-last-write-time": args["file_last_write_time"],
        "x-ms-file-permission": args["file_permission"],
    }
    for k, v in (args["metadata"] or {}).items():
        headers[f"x-ms-meta-{k}"] = v
    cs = args["content_settings"]
    if cs is not None and cs.content_md5:
        headers["x-ms-content-md5"] = base64.b64encode(bytes(cs.content_md5)).decode()
    return headers


class AzureFileWrites(AzureCore):
    """The file mutations of AzureFilesRemote."""

    async def copy_from_snapshot(self, snapshot: str, src: str, dst: str) -> None:
        src, dst = norm(src), norm(dst)
        self._check_writable("copy", dst)
        base = self._file(src).url  # the SDK's quoting; a SAS in it authorizes the source
        source = f"{base}{'&' if '?' in base else '?'}sharesnapshot={quote(snapshot)}"

        def run(kw: SdkKwargs) -> None:
            fc = self._file(dst)
            r = fc.start_copy_from_url(
                source,
                permission_key="source",
                file_attributes="source",
                file_creation_time="source",
                file_last_write_time="source",
                ignore_read_only=True,
                **kw,
            )
            status = r.get("copy_status")
            deadline = time.monotonic() + COPY_WAIT
            while status == "pending" and time.monotonic() < deadline:
                time.sleep(0.2)
                status = fc.get_file_properties(**kw).copy.status
            if status != "success":
                raise RemoteError(f"copy of {src!r} from snapshot {snapshot}: {status}")

        await self._call("copy_file", dst, run)

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
        path = norm(path)
        self._check_writable("create_file", path)
        lw = _smb_or_now(last_write_ns)

        args = _create_args(attributes, lw, metadata, content_md5, _smb_or_now(creation_ns))

        def run(kw: SdkKwargs) -> Mapping[str, str]:
            return self._shared.headers.of(self._file(path).create_file, size, **args, **kw)

        headers = await self._call("create_file", path, run)
        entry = entry_from_headers(posixpath.basename(path), False, headers, with_metadata=False)
        # Create File's response does not echo the length or the metadata; we know both.
        return dataclasses.replace(entry, size=size, metadata=dict(metadata or {}))

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
        """The three calls natively under trio on the short path (azure_short), or in one
        worker thread through the SDK from the first call the short path could not serve. A
        rename the SDK resent because its answer was lost (or sent after the short path's
        answer was lost) finds its own work done: `dst` holding the file we created (its
        FileId) is success (Remote.rename_new)."""
        tmp, dst = norm(tmp), norm(dst)
        self._check_writable("create_filled", dst)
        if any(len(d) > MAX_RANGE for _, d in pieces) or (pieces and is_read_only(attributes)):
            # (a read-only file is filled first and made read-only after: Remote's way)
            return await super().create_filled(
                tmp,
                dst,
                size,
                pieces,
                metadata=metadata,
                last_write_ns=last_write_ns,
                attributes=attributes,
                made=made,
                content_md5=content_md5,
                creation_ns=creation_ns,
                replace=replace,
            )
        lw = _smb_or_now(last_write_ns)
        name = posixpath.basename(dst)

        args = _create_args(attributes, lw, metadata, content_md5, _smb_or_now(creation_ns))
        headers_of = self._shared.headers.of
        dot, sdot = self._share.allow_trailing_dot, self._share.allow_source_trailing_dot
        # How far the short path got: Create File's answer, the pieces on the share.
        created: Mapping[str, str] | None = None
        done = 0

        def note_created(headers: Mapping[str, str]) -> None:
            if made is not None:
                entry = entry_from_headers(
                    posixpath.basename(tmp), False, headers, with_metadata=False
                )
                made.append(dataclasses.replace(entry, size=size))

        if self._short is not None:
            props = _create_headers(args)

            async def short_way(short: ShortPath) -> Mapping[str, str] | None:
                nonlocal created, done
                url = self._file_url(tmp)
                created = await short.create(url, size, props, trailing_dot=dot)
                if created is None:
                    return None
                note_created(created)
                for off, data in pieces:
                    if not await short.put_range(url, off, data, trailing_dot=dot):
                        return None
                    done += 1
                return await short.rename(
                    url,
                    self._file_url(dst),
                    replace=replace,
                    trailing_dot=dot,
                    source_trailing_dot=sdot,
                )

            renamed = await self._natively("create_filled", short_way, shield=True)
            if renamed is not None:
                return entry_from_headers(name, False, renamed, with_metadata=False)

        def run(kw: SdkKwargs) -> Mapping[str, str]:
            """The SDK's way, from where the short path stopped (or from the start)."""
            made_now = created
            if made_now is None:
                made_now = headers_of(self._file(tmp).create_file, size, **args, **kw)
                note_created(made_now)  # (a list append is safe from this worker thread)
            file_id = _header(made_now, "x-ms-file-id")
            for off, data in pieces[done:]:
                self._file(tmp).upload_range(
                    data, off, len(data), file_last_write_mode="preserve", **kw
                )
            try:
                return headers_of(
                    self._file(tmp).rename_file,
                    dst,
                    overwrite=replace,
                    ignore_read_only=replace,  # replacing was decided here (see Remote.rename)
                    **kw,
                )
            except (ResourceNotFoundError, ResourceExistsError):
                if file_id is None:
                    raise
                there = _file_headers_or_none(headers_of, self._file(dst), kw)
                if there is None or _header(there, "x-ms-file-id") != file_id:
                    raise
                return there  # our own rename, resent after its answer was lost

        headers = await self._call("create_filled", dst, run)
        return entry_from_headers(name, False, headers, with_metadata=False)

    async def write(
        self,
        path: str,
        offset: int,
        data: bytes | memoryview,
        *,
        lease_id: str | None = None,
        keep_mtime: bool = False,
    ) -> str:
        path = norm(path)
        self._check_writable("write", path)
        if not len(data):
            return (await self.stat(path)).etag or ""
        etag = ""
        view = memoryview(data)
        # None is the SDK's default: the service moves the last-write time to now.
        mode: Literal["preserve"] | None = "preserve" if keep_mtime else None
        # the short path (no lease: it sends none) takes any buffer as it is
        short = self._short is not None and lease_id is None
        url = self._file_url(path) if short else ""
        dot = self._share.allow_trailing_dot
        for start in range(0, len(data), MAX_RANGE):
            at = offset + start
            if short:
                piece = view[start : start + MAX_RANGE]

                async def put(s: ShortPath, piece: memoryview = piece, at: int = at) -> str | None:
                    return await s.put_range(
                        url, at, piece, trailing_dot=dot, keep_mtime=keep_mtime
                    )

                got = await self._natively("upload_range", put, shield=True)
                if got is not None:
                    etag = got
                    continue
            # the transport sends bytes (requests takes other buffers for form data)
            if isinstance(data, bytes) and len(data) <= MAX_RANGE:
                chunk = data
            else:
                chunk = bytes(view[start : start + MAX_RANGE])

            def run(kw: SdkKwargs, chunk: bytes = chunk, at: int = at) -> str:
                return self._file(path).upload_range(
                    chunk, at, len(chunk), file_last_write_mode=mode, **lease_kw(kw, lease_id)
                )["etag"]

            etag = await self._call("upload_range", path, run)
        return etag

    async def clear_range(
        self, path: str, offset: int, length: int, *, lease_id: str | None = None
    ) -> str:
        path = norm(path)
        self._check_writable("clear_range", path)
        if length <= 0:
            return (await self.stat(path)).etag or ""
        end = offset + length
        lo = -(-offset // 512) * 512  # the service clears 512-aligned ranges only
        hi = end // 512 * 512
        if lo >= hi:
            return await self.write(path, offset, bytes(length), lease_id=lease_id)
        etag = ""
        if offset < lo:
            etag = await self.write(path, offset, bytes(lo - offset), lease_id=lease_id)

        def run(kw: SdkKwargs) -> str:
            return self._file(path).clear_range(lo, hi - lo, **lease_kw(kw, lease_id))["etag"]

        etag = await self._call("clear_range", path, run)
        if hi < end:
            etag = await self.write(path, hi, bytes(end - hi), lease_id=lease_id)
        return etag

    async def resize(self, path: str, size: int, *, lease_id: str | None = None) -> str:
        path = norm(path)
        self._check_writable("resize", path)

        def run(kw: SdkKwargs) -> str:
            # Set File Properties with every SMB property "preserve". The service still moves
            # the last-write time to now when the length changes: set mtime after resizing.
            return self._file(path).set_http_headers(
                ContentSettings(),
                file_attributes="preserve",
                file_creation_time="preserve",
                file_last_write_time="preserve",
                file_permission="preserve",
                size=size,
                **lease_kw(kw, lease_id),
            )["etag"]

        return await self._call("resize", path, run)

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
        path = norm(path)
        self._check_writable("set_properties", path)
        lw = format_smb_time(last_write_ns) if last_write_ns is not None else None
        created = format_smb_time(creation_ns) if creation_ns is not None else "preserve"
        props = lw is not None or attributes is not None or creation_ns is not None
        if not props and metadata is None:
            return (await self.stat(path)).etag or ""
        is_dir = is_dir or path == ""
        etag = ""
        if not is_dir:
            try:
                if props:
                    etag = await self._call(
                        "set_http_headers",
                        path,
                        self._sync_file_times(
                            path, lw or "preserve", lease_id, attributes, created
                        ),
                    )
                if metadata is not None:
                    etag = await self._call(
                        "set_file_metadata", path, self._sync_file_meta(path, metadata, lease_id)
                    )
                return etag
            except NotFound as exc:
                if exc.code not in MAYBE_DIR:
                    raise
            except RemoteError as exc:
                if exc.code != "ResourceTypeMismatch":
                    raise
        if props and self._short is not None and path:
            times = {"file_last_write_time": lw or "preserve", "file_creation_time": created}
            headers = dir_headers(None, attributes, times, create=False)
            answered = await self._natively(
                "set_directory_properties",
                lambda short: short.set_dir_properties(
                    self._dir_url(path), headers, trailing_dot=self._share.allow_trailing_dot
                ),
            )
            if answered is not None:  # (else the SDK sets them below)
                props = False
                etag = _header(answered, "etag") or ""
        if props:

            def run_times(kw: SdkKwargs) -> str:
                return self._dir(path).set_http_headers(
                    file_attributes=attributes or "preserve",
                    file_creation_time=created,
                    file_last_write_time=lw or "preserve",
                    file_permission="preserve",
                    **kw,
                )["etag"]

            etag = await self._call("set_directory_properties", path, run_times)
        if metadata is not None:

            def run_meta(kw: SdkKwargs) -> str:
                return self._dir(path).set_directory_metadata(metadata, **kw)["etag"]

            etag = await self._call("set_directory_metadata", path, run_meta)
        return etag

    def _sync_file_times(
        self,
        path: str,
        lw: str,
        lease_id: str | None,
        attributes: str | None = None,
        created: str = "preserve",
    ) -> Callable[[SdkKwargs], str]:
        def run(kw: SdkKwargs) -> str:
            # Set File Properties: SMB attributes and creation time (unless given) and the
            # permission are preserved; HTTP content headers (Content-Type/MD5…) are reset,
            # as the REST API always does.
            return self._file(path).set_http_headers(
                ContentSettings(),
                file_attributes=attributes or "preserve",
                file_creation_time=created,
                file_last_write_time=lw,
                file_permission="preserve",
                **lease_kw(kw, lease_id),
            )["etag"]

        return run

    async def set_content_md5(self, path: str, md5: bytes) -> str:
        path = norm(path)
        self._check_writable("set_content_md5", path)

        def run(kw: SdkKwargs) -> str:
            return self._file(path).set_http_headers(
                ContentSettings(content_md5=bytearray(md5)),
                file_attributes="preserve",
                file_creation_time="preserve",
                file_last_write_time="preserve",
                file_permission="preserve",
                **kw,
            )["etag"]

        return await self._call("set_content_md5", path, run)

    def _sync_file_meta(
        self, path: str, metadata: dict[str, str], lease_id: str | None
    ) -> Callable[[SdkKwargs], str]:
        def run(kw: SdkKwargs) -> str:
            return self._file(path).set_file_metadata(metadata, **lease_kw(kw, lease_id))["etag"]

        return run

    async def delete_file(self, path: str, *, lease_id: str | None = None) -> None:
        path = norm(path)
        self._check_writable("delete_file", path)
        try:
            await self._call(
                "delete_file",
                path,
                lambda kw: self._file(path).delete_file(**lease_kw(kw, lease_id)),
            )
        except NotFound as exc:
            # A retried delete whose first attempt succeeded (response lost) ends here.
            if not exc.retried or exc.code == "ParentNotFound":
                raise
