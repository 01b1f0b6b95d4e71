"""Reading the share: stat, the reachability check, listings and ranged reads.

Listings and reads go the short path (azure_short.py) when they can; else they use the SDK's
generated operations directly (one request, the raw body parsed by azure_parse), and fall back
to the documented API when the SDK's internals change. Their bodies are streamed after the
SDK's retry policy has returned, so a cut body is retried here, on the same budget.
"""

from __future__ import annotations

import datetime
import functools
import posixpath
import time
from collections.abc import Callable, Iterable, Mapping

import trio
from azure.core.exceptions import AzureError, HttpResponseError
from azure.storage.fileshare import ShareDirectoryClient, ShareFileClient

from remote.azure_core import MAYBE_DIR, AzureCore, SdkKwargs, log, norm
from remote.azure_parse import entry_from_headers, parse_listing, parse_smb_time
from remote.base import NotFound, RemoteEntry, RemoteError

#: what a listing asks for beside names, ids and sizes (not PermissionKey: nothing reads it,
#: and leaving it out makes each entry a tenth cheaper to parse)
_LIST_INCLUDE = ["Timestamps", "ETag", "Attributes"]

Page = tuple[list[RemoteEntry], str | None]
#: a listing page up to this size (~50 entries) is parsed in the caller's task
_PARSE_INLINE = 32 * 1024


def _listing_ns(dt: datetime.datetime | str | None) -> int | None:
    """A time of the documented listing API in nanoseconds (it keeps microseconds)."""
    if not dt:
        return None
    if isinstance(dt, str):  # some SDK versions leave listing times as strings
        return parse_smb_time(dt)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


class AzureReads(AzureCore):
    """stat, check, list_dir and read of AzureFilesRemote."""

    async def stat(self, path: str, *, is_dir: bool | None = None) -> RemoteEntry:
        path = norm(path)
        name = posixpath.basename(path)
        if path and is_dir:
            # a directory as far as the caller knows: ask for that first
            try:
                headers = await self._call(
                    "get_directory_properties", path, self._sync_dir_props(path)
                )
                return entry_from_headers(name, True, headers)
            except NotFound:
                pass
        if path:
            try:
                headers = await self._call("get_file_properties", path, self._sync_file_props(path))
                return entry_from_headers(name, False, headers)
            except NotFound as exc:
                if is_dir or exc.code not in MAYBE_DIR:
                    raise
            except RemoteError as exc:
                if exc.code != "ResourceTypeMismatch":
                    raise
        headers = await self._call("get_directory_properties", path, self._sync_dir_props(path))
        return entry_from_headers(name, True, headers)

    def _sync_file_props(self, path: str) -> Callable[[SdkKwargs], Mapping[str, str]]:
        def run(kw: SdkKwargs) -> Mapping[str, str]:
            return self._shared.headers.of(self._file(path).get_file_properties, **kw)

        return run

    def _sync_dir_props(self, path: str) -> Callable[[SdkKwargs], Mapping[str, str]]:
        def run(kw: SdkKwargs) -> Mapping[str, str]:
            return self._shared.headers.of(self._dir(path).get_directory_properties, **kw)

        return run

    async def check(self) -> RemoteEntry:
        """One request (root directory properties): the share exists and we may read it.

        Uses at most one retry and short timeouts, so a wrong endpoint is reported quickly."""
        retries = min(1, self.options.retry_total)
        timeouts = {
            "connection_timeout": min(5.0, self.options.connect_timeout),
            "read_timeout": min(10.0, self.options.read_timeout),
        }

        def run(kw: SdkKwargs) -> Mapping[str, str]:
            return self._shared.headers.of(
                self._dir("").get_directory_properties,
                retry_total=retries,
                **timeouts,
                **kw,
            )

        return entry_from_headers("", True, await self._call("check", "", run))

    async def list_dir(self, path: str) -> list[RemoteEntry]:
        path = norm(path)
        entries: list[RemoteEntry] = []
        marker: str | None = None
        while True:
            page = await self._short_list_page(path, marker)
            if page is None:
                page = await self._call(
                    "list_directory", path, functools.partial(self._sync_list_page, path, marker)
                )
            entries.extend(page[0])
            marker = page[1]
            if not marker:
                return entries

    async def _short_list_page(self, path: str, marker: str | None) -> Page | None:
        """A page on the short path (None: the SDK's way). A big page is parsed in a worker
        thread, as the SDK's is: ~15 us per entry would hold up every other request."""
        if self._short is None:
            return None
        url = self._dir_url(path)
        dot = self._share.allow_trailing_dot
        include = ",".join(_LIST_INCLUDE)
        body = await self._natively(
            "list_directory",
            lambda short: short.list_page(url, marker, include, trailing_dot=dot),
        )
        if body is None:
            return None
        if len(body) < _PARSE_INLINE:
            return parse_listing(body)
        return await trio.to_thread.run_sync(parse_listing, body)

    def _sync_list_page(self, path: str, marker: str | None, kw: SdkKwargs) -> Page:
        dc = self._dir(path)
        if not self.use_public_listing:
            try:
                op = dc._client.directory.list_files_and_directories_segment  # noqa: SLF001
                body = self._body_retries(
                    kw,
                    lambda: op(
                        marker=marker,
                        include=_LIST_INCLUDE,
                        include_extended_info=True,
                        allow_trailing_dot=dc.allow_trailing_dot,
                        file_request_intent=dc.file_request_intent,
                        stream=True,
                        cls=lambda _resp, data, _headers: data,
                        **kw,
                    ),
                )
            except (AttributeError, TypeError) as exc:  # SDK internals changed (no request sent)
                log.warning("raw listing unavailable (%s); using the documented API", exc)
                self.use_public_listing = True
            else:
                return parse_listing(body)
        return self._sync_list_page_public(dc, marker, kw)

    @staticmethod
    def _sync_list_page_public(dc: ShareDirectoryClient, marker: str | None, kw: SdkKwargs) -> Page:
        """The documented API; times lose their last digit (microseconds)."""
        pager = dc.list_directories_and_files(
            include=_LIST_INCLUDE, include_extended_info=True, **kw
        ).by_page(continuation_token=marker)
        page = list(next(pager))
        out = []
        for item in page:
            is_dir = bool(item.get("is_directory"))
            out.append(
                RemoteEntry(
                    name=item["name"],
                    is_dir=is_dir,
                    size=0 if is_dir else int(item.get("size") or 0),
                    file_id=item.get("file_id"),
                    etag=item.get("etag"),
                    last_write_ns=_listing_ns(item.get("last_write_time")),
                    change_ns=_listing_ns(item.get("change_time")),
                    creation_ns=_listing_ns(item.get("creation_time")),
                    attributes=str(item.get("file_attributes"))
                    if item.get("file_attributes") is not None
                    else None,
                )
            )
        # by_page() is typed as a plain Iterator; it returns a PageIterator, which has the token.
        return out, pager.continuation_token or None  # type: ignore[attr-defined]

    async def read(self, path: str, offset: int, length: int) -> bytes:
        path = norm(path)
        if length <= 0:
            return b""

        if self._short is not None:
            data = await self._natively(
                "download",
                lambda short: short.get(
                    self._file_url(path),
                    offset,
                    length,
                    trailing_dot=bool(self._share.allow_trailing_dot),
                ),
            )
            if data is not None:
                return data

        def run(kw: SdkKwargs) -> bytes:
            fc = self._file(path)
            if not self.use_public_download:
                try:
                    op = fc._client.file.download  # noqa: SLF001
                    # One ranged GET and nothing else.
                    return self._body_retries(
                        kw,
                        lambda: op(
                            range=f"bytes={offset}-{offset + length - 1}",
                            allow_trailing_dot=fc.allow_trailing_dot,
                            file_request_intent=fc.file_request_intent,
                            stream=True,
                            cls=lambda _resp, data, _headers: data,
                            **kw,
                        ),
                    )
                except (AttributeError, TypeError) as exc:  # SDK internals changed
                    log.warning("raw download unavailable (%s); using download_file", exc)
                    self.use_public_download = True
            return self._sync_read_public(fc, offset, length, kw)

        try:
            return await self._call("download", path, run)
        except RemoteError as exc:
            if exc.code == "InvalidRange":  # offset at or past the end of the file
                return b""
            raise

    def _body_retries(self, kw: SdkKwargs, start: Callable[[], Iterable[bytes]]) -> bytes:
        """Streamed bodies are read after the SDK's retry policy has returned, so a connection
        cut mid-body is not retried there: retry it here, on the same budget. `start` sends the
        request (its own failures were already retried by the SDK and propagate)."""
        o = self.options
        for attempt in range(o.retry_total + 1):
            chunks = start()
            try:
                return b"".join(chunks)
            except AzureError:
                if attempt == o.retry_total:
                    raise
                kw["retry_hook"]()
                time.sleep(self._backoff(attempt + 1))
        raise AssertionError("unreachable")

    def _sync_read_public(
        self, fc: ShareFileClient, offset: int, length: int, kw: SdkKwargs
    ) -> bytes:
        """The documented API: download_file sends one ranged GET (it splits only above 32 MiB)
        and reads its body before returning, reporting a cut body as "stream interrupted"."""
        o = self.options
        for attempt in range(o.retry_total + 1):
            try:
                return fc.download_file(offset, length, **kw).readall()
            except HttpResponseError as exc:
                if "interrupted" not in str(exc) or attempt == o.retry_total:
                    raise
                kw["retry_hook"]()
                time.sleep(self._backoff(attempt + 1))
        raise AssertionError("unreachable")

    def _backoff(self, n: int) -> float:
        o = self.options
        return o.retry_backoff + o.retry_backoff_base**n
