"""AzureFilesRemote: the Remote interface on azure-storage-file-share's sync clients.

Every SDK call runs in a worker thread (`trio.to_thread.run_sync`) under one CapacityLimiter, over
one requests.Session whose connection pool is at least as large as the limiter, so parallel range
I/O never waits for a socket. Retries (5xx, 503 ServerBusy, dropped connections, timeouts) are the
storage SDK's ExponentialRetry, with a small configurable budget so a dead endpoint fails in
bounded time; what is left after the retries is mapped to the typed errors of remote.base.
"""

from __future__ import annotations

import functools
import logging
import posixpath
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
import trio
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.fileshare import (
    ContentSettings,
    ShareClient,
    ShareDirectoryClient,
    ShareFileClient,
    ShareLeaseClient,
    ShareServiceClient,
)
from azure.storage.fileshare._shared.policies import ExponentialRetry
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from remote.azure_errors import install_log_scrubber, translate
from remote.azure_parse import entry_from_headers, format_smb_time, parse_listing, parse_smb_time
from remote.base import (
    NotFound,
    PermissionDenied,
    Remote,
    RemoteEntry,
    RemoteError,
    ShareUsage,
    SnapshotInfo,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_RANGE = 4 * 1024 * 1024  # Put Range limit
_LIST_INCLUDE = ["Timestamps", "ETag", "Attributes", "PermissionKey"]
_MAYBE_DIR = {"ResourceNotFound", "ResourceTypeMismatch", None}
_READ_ONLY_OPS = {
    "get_file_properties",
    "get_directory_properties",
    "check",
    "list_directory",
    "download",
    "get_share_properties",
    "get_share_stats",
    "list_snapshots",
}


@dataclass(frozen=True, slots=True)
class AzureOptions:
    """Connection, timeout and retry settings.

    With the defaults a call gives up after ~19 s of backoff (2.0 + 3.2 + 5.2 + 8.7 s) on top of
    its five attempts: ~20 s when connections are refused, ~45 s when they time out (black-holed
    endpoint), ~95 s when the server accepts and never answers."""

    max_concurrency: int = 16  # parallel SDK calls (threads) per remote
    connect_timeout: float = 5.0  # seconds to open a TCP/TLS connection
    read_timeout: float = 15.0  # seconds without a byte from the server
    retry_total: int = 4  # retries after the first attempt
    retry_backoff: float = 0.3  # backoff before retry n = retry_backoff + base**n seconds
    retry_backoff_base: float = 1.7
    retry_jitter: float = 0.2  # +/- seconds of random jitter
    # Socket read size when streaming bodies: a ranged GET of up to one Put Range arrives as one
    # buffer, filled by the socket in place (smaller reads cost a join, i.e. a copy under the GIL).
    block_size: int = MAX_RANGE
    trust_env: bool = True  # honour HTTP(S)_PROXY / NO_PROXY


class _Stats:
    """Raw counters: SDK calls by operation, HTTP attempts, retries, errors by class."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.http_requests = 0
        self.retries = 0

    def on_request(self, _request: Any) -> None:  # runs in worker threads
        with self._lock:
            self.http_requests += 1

    def on_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": dict(self.calls),
                "errors": dict(self.errors),
                "http_requests": self.http_requests,
                "retries": self.retries,
            }


class _Shared:
    """What a share and its snapshot views have in common: session, transport, limiter, stats."""

    def __init__(self, options: AzureOptions) -> None:
        self.options = options
        self.session = requests.Session()
        # Environment settings (proxies, NO_PROXY) are resolved once per endpoint
        # (`use_proxies_for`), not per request: requests would also look for ~/.netrc
        # on every call.
        self.session.trust_env = False
        pool = max(options.max_concurrency + 4, 16)
        adapter = HTTPAdapter(
            pool_connections=4,
            pool_maxsize=pool,
            max_retries=Retry(total=False, redirect=False, raise_on_status=False),
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.transport = RequestsTransport(
            session=self.session,
            session_owner=False,
            connection_timeout=options.connect_timeout,
            read_timeout=options.read_timeout,
            connection_data_block_size=options.block_size,
            use_env_settings=False,
        )
        self.limiter = trio.CapacityLimiter(options.max_concurrency)
        self.stats = _Stats()
        self.headers = _Headers()
        self.closed = False

    def use_proxies_for(self, url: str) -> None:
        """HTTP(S)_PROXY / NO_PROXY as they apply to this endpoint (when trust_env)."""
        if self.options.trust_env:
            self.session.proxies.update(requests.utils.get_environ_proxies(url))

    def client_kwargs(self) -> dict[str, Any]:
        o = self.options
        return {
            "transport": self.transport,
            "retry_policy": ExponentialRetry(
                initial_backoff=o.retry_backoff,
                increment_base=o.retry_backoff_base,
                retry_total=o.retry_total,
                random_jitter_range=o.retry_jitter,
                retry_connect=o.retry_total,
                retry_read=o.retry_total,
                retry_status=o.retry_total,
            ),
            "connection_timeout": o.connect_timeout,
            "read_timeout": o.read_timeout,
            "raw_request_hook": self.stats.on_request,
            "raw_response_hook": self.headers.hook,
            "max_single_get_size": 32 * 1024 * 1024,
            "max_range_size": MAX_RANGE,
        }

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.session.close()


class _Headers:
    """Collects the headers of the responses the current worker thread receives.

    Registered as the clients' raw_response_hook. (A per-call hook is not enough: the SDK forgets
    it when a first attempt raised, e.g. a connection cut, and a retry then succeeded.)"""

    def __init__(self) -> None:
        self._tls = threading.local()

    def hook(self, response: Any) -> None:
        box = getattr(self._tls, "box", None)
        if box is not None:
            box.append(response.http_response.headers)

    def of(self, method: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Call an SDK method in this thread; return its final response's headers."""
        self._tls.box = box = []
        try:
            method(*args, **kw)
        finally:
            self._tls.box = None
        if not box:  # pragma: no cover - every SDK call we make has a response
            raise RemoteError(f"{getattr(method, '__name__', method)}: no response headers")
        return box[-1]


def _norm(path: str) -> str:
    return path.strip("/")


def _lease_kw(kw: dict[str, Any], lease_id: str | None) -> dict[str, Any]:
    return {**kw, "lease": lease_id} if lease_id else kw


def _create_args(attributes: str | None, lw: str, metadata: dict[str, str] | None) -> dict:
    """Create File's properties: ours, or the share's defaults (inherited permissions)."""
    return {
        "file_attributes": attributes or "none",
        "file_creation_time": "now",
        "file_last_write_time": lw,
        "file_permission": "inherit",
        "metadata": metadata,
    }


class AzureFilesRemote(Remote):
    """One Azure file share (or a read-only snapshot of it) behind the Remote interface.

    `account_url` is "https://ACCOUNT.file.core.windows.net" or the emulator's path-style
    "http://127.0.0.1:PORT/devstoreaccount1", optionally with a SAS query; `credential` is what
    the SDK takes (None for a SAS in the URL, {"account_name", "account_key"}, or a TokenCredential,
    which needs token_intent="backup"). Most code should use `remote.credentials.open_remote`.
    """

    def __init__(
        self,
        account_url: str,
        share: str,
        credential: Any = None,
        *,
        options: AzureOptions | None = None,
        token_intent: str | None = None,
        snapshot: str | None = None,
        secrets: tuple[str, ...] = (),
        _shared: _Shared | None = None,
    ) -> None:
        install_log_scrubber()
        self._owner = _shared is None
        self._shared = _shared or _Shared(options or AzureOptions())
        if self._owner:
            self._shared.use_proxies_for(account_url)
        self.options = self._shared.options
        self.account_url = account_url
        self.share_name = share
        self.snapshot = snapshot
        self.read_only = snapshot is not None
        self._credential = credential
        self._token_intent = token_intent
        self._secrets = secrets
        extra = {"token_intent": token_intent} if token_intent else {}
        self._share = ShareClient(
            account_url,
            share,
            snapshot=snapshot,
            credential=credential,
            **extra,
            **self._shared.client_kwargs(),
        )
        self._service: ShareServiceClient | None = None
        #: Use the documented (slower, microsecond-precision) listing API instead of the raw one.
        self.use_public_listing = False
        #: Use download_file (body streamed outside the retry policy) instead of the raw GET.
        self.use_public_download = False
        # Building a client costs ~10% of a call's CPU (pipeline, generated client): keep the
        # recent ones. lru_cache is thread-safe; clients are called from worker threads.
        self._file = functools.lru_cache(maxsize=512)(self._share.get_file_client)
        self._dir = functools.lru_cache(maxsize=256)(self._share.get_directory_client)

    # ----------------------------------------------------------------- plumbing

    @property
    def stats(self) -> dict[str, Any]:
        """Raw per-call counters: {"calls": {op: n}, "errors": {cls: n}, "http_requests",
        "retries"} — shared by a share and its snapshot views."""
        return self._shared.stats.snapshot()

    async def _call(self, op: str, path: str, fn: Callable[[dict[str, Any]], T]) -> T:
        """Run fn(kw) in a worker thread; kw carries the per-call retry hook for the SDK."""
        if self._shared.closed:
            raise RemoteError(f"{op} {path!r}: remote is closed")
        stats = self._shared.stats
        stats.calls[op] += 1
        retries = 0

        def hook(**_: Any) -> None:
            nonlocal retries
            retries += 1
            stats.on_retry()

        try:
            return await trio.to_thread.run_sync(
                fn,
                {"retry_hook": hook},
                limiter=self._shared.limiter,
                # A cancelled read need not wait for its HTTP exchange; a mutation must, so
                # that when we return the caller knows the request is over.
                abandon_on_cancel=op in _READ_ONLY_OPS,
            )
        except Exception as err:  # noqa: BLE001 - everything is translated below
            exc = translate(err, op, path, self._secrets)
            exc.retried = retries  # type: ignore[attr-defined]
            stats.errors[type(exc).__name__] += 1
            if retries:
                log.debug("%s %r failed after %d retries: %s", op, path, retries, exc)
        raise exc from None

    def _check_writable(self, op: str, path: str) -> None:
        if self.read_only:
            exc = PermissionDenied(f"{op} {path!r}: snapshot {self.snapshot} is read-only")
            exc.code, exc.status = None, None  # type: ignore[attr-defined]
            raise exc

    @staticmethod
    def _code(exc: BaseException) -> str | None:
        return getattr(exc, "code", None)

    # ----------------------------------------------------------------- reading

    async def stat(self, path: str, *, is_dir: bool | None = None) -> RemoteEntry:
        path = _norm(path)
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
                if is_dir or self._code(exc) not in _MAYBE_DIR:
                    raise
            except RemoteError as exc:
                if self._code(exc) != "ResourceTypeMismatch":
                    raise
        headers = await self._call("get_directory_properties", path, self._sync_dir_props(path))
        return entry_from_headers(name, True, headers)

    def _sync_file_props(self, path: str) -> Callable[[dict[str, Any]], Any]:
        def run(kw: dict[str, Any]) -> Any:
            return self._shared.headers.of(self._file(path).get_file_properties, **kw)

        return run

    def _sync_dir_props(self, path: str) -> Callable[[dict[str, Any]], Any]:
        def run(kw: dict[str, Any]) -> Any:
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

        def run(kw: dict[str, Any]) -> Any:
            return self._shared.headers.of(
                self._dir("").get_directory_properties,
                retry_total=retries,
                **timeouts,
                **kw,
            )

        return entry_from_headers("", True, await self._call("check", "", run))

    async def list_dir(self, path: str) -> list[RemoteEntry]:
        path = _norm(path)
        entries: list[RemoteEntry] = []
        marker: str | None = None
        while True:
            page, marker = await self._call(
                "list_directory", path, functools.partial(self._sync_list_page, path, marker)
            )
            entries.extend(page)
            if not marker:
                return entries

    def _sync_list_page(
        self, path: str, marker: str | None, kw: dict[str, Any]
    ) -> tuple[list[RemoteEntry], str | None]:
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
    def _sync_list_page_public(
        dc: ShareDirectoryClient, marker: str | None, kw: dict[str, Any]
    ) -> tuple[list[RemoteEntry], str | None]:
        """The documented API; times lose their last digit (microseconds)."""
        pager = dc.list_directories_and_files(
            include=_LIST_INCLUDE, include_extended_info=True, **kw
        ).by_page(continuation_token=marker)
        page = list(next(pager))
        out = []
        for item in page:
            is_dir = bool(item.get("is_directory"))

            def ns(dt: Any) -> int | None:
                if not dt:
                    return None
                if isinstance(dt, str):  # some SDK versions leave listing times as strings
                    return parse_smb_time(dt)
                return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000

            out.append(
                RemoteEntry(
                    name=item["name"],
                    is_dir=is_dir,
                    size=0 if is_dir else int(item.get("size") or 0),
                    file_id=item.get("file_id"),
                    etag=item.get("etag"),
                    last_write_ns=ns(item.get("last_write_time")),
                    change_ns=ns(item.get("change_time")),
                    creation_ns=ns(item.get("creation_time")),
                    attributes=str(item.get("file_attributes"))
                    if item.get("file_attributes") is not None
                    else None,
                )
            )
        return out, pager.continuation_token or None

    async def read(self, path: str, offset: int, length: int) -> bytes:
        path = _norm(path)
        if length <= 0:
            return b""

        def run(kw: dict[str, Any]) -> bytes:
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
            if self._code(exc) == "InvalidRange":  # offset at or past the end of the file
                return b""
            raise

    def _body_retries(self, kw: dict[str, Any], start: Callable[[], Iterable[bytes]]) -> bytes:
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
        self, fc: ShareFileClient, offset: int, length: int, kw: dict[str, Any]
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

    # ----------------------------------------------------------------- files

    async def create_file(
        self,
        path: str,
        size: int = 0,
        *,
        metadata: dict[str, str] | None = None,
        last_write_ns: int | None = None,
        attributes: str | None = None,
    ) -> RemoteEntry:
        path = _norm(path)
        self._check_writable("create_file", path)
        lw = format_smb_time(last_write_ns) if last_write_ns is not None else "now"

        args = _create_args(attributes, lw, metadata)

        def run(kw: dict[str, Any]) -> Any:
            return self._shared.headers.of(self._file(path).create_file, size, **args, **kw)

        headers = await self._call("create_file", path, run)
        entry = entry_from_headers(posixpath.basename(path), False, headers, with_metadata=False)
        # Create File's response does not echo the length or the metadata; we know both.
        return _replace(entry, size=size, metadata=dict(metadata or {}))

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
    ) -> RemoteEntry:
        """The three calls in one worker thread: a new small file costs one hop from the trio
        thread instead of three (the hop and its scheduling are ~a quarter of a call's CPU)."""
        tmp, dst = _norm(tmp), _norm(dst)
        self._check_writable("create_filled", dst)
        if any(len(d) > MAX_RANGE for _, d in pieces):
            return await super().create_filled(
                tmp,
                dst,
                size,
                pieces,
                metadata=metadata,
                last_write_ns=last_write_ns,
                attributes=attributes,
            )
        lw = format_smb_time(last_write_ns) if last_write_ns is not None else "now"
        name = posixpath.basename(dst)

        args = _create_args(attributes, lw, metadata)

        def run(kw: dict[str, Any]) -> Any:
            fc = self._file(tmp)
            fc.create_file(size, **args, **kw)
            for off, data in pieces:
                fc.upload_range(data, off, len(data), file_last_write_mode="preserve", **kw)
            return self._shared.headers.of(
                fc.rename_file, dst, overwrite=False, ignore_read_only=False, **kw
            )

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
        path = _norm(path)
        self._check_writable("write", path)
        if not len(data):
            return (await self.stat(path)).etag or ""
        etag = ""
        view = memoryview(data)
        extra = {"file_last_write_mode": "preserve"} if keep_mtime else {}
        for start in range(0, len(data), MAX_RANGE):
            # the transport sends bytes (requests takes other buffers for form data)
            if isinstance(data, bytes) and len(data) <= MAX_RANGE:
                chunk = data
            else:
                chunk = bytes(view[start : start + MAX_RANGE])
            at = offset + start

            def run(kw: dict[str, Any], chunk: bytes = chunk, at: int = at) -> str:
                r = self._file(path).upload_range(
                    chunk, at, len(chunk), **extra, **_lease_kw(kw, lease_id)
                )
                return r["etag"]

            etag = await self._call("upload_range", path, run)
        return etag

    async def clear_range(
        self, path: str, offset: int, length: int, *, lease_id: str | None = None
    ) -> str:
        path = _norm(path)
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

        def run(kw: dict[str, Any]) -> str:
            return self._file(path).clear_range(lo, hi - lo, **_lease_kw(kw, lease_id))["etag"]

        etag = await self._call("clear_range", path, run)
        if hi < end:
            etag = await self.write(path, hi, bytes(end - hi), lease_id=lease_id)
        return etag

    async def resize(self, path: str, size: int, *, lease_id: str | None = None) -> str:
        path = _norm(path)
        self._check_writable("resize", path)

        def run(kw: dict[str, Any]) -> str:
            # Set File Properties with every SMB property "preserve". The service still moves
            # the last-write time to now when the length changes: set mtime after resizing.
            return self._file(path).set_http_headers(
                ContentSettings(),
                file_attributes="preserve",
                file_creation_time="preserve",
                file_last_write_time="preserve",
                file_permission="preserve",
                size=size,
                **_lease_kw(kw, lease_id),
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
    ) -> str:
        path = _norm(path)
        self._check_writable("set_properties", path)
        if last_write_ns is None and metadata is None and attributes is None:
            return (await self.stat(path)).etag or ""
        lw = format_smb_time(last_write_ns) if last_write_ns is not None else None
        is_dir = is_dir or path == ""
        etag = ""
        if not is_dir:
            try:
                if lw is not None or attributes is not None:
                    etag = await self._call(
                        "set_http_headers",
                        path,
                        self._sync_file_times(path, lw or "preserve", lease_id, attributes),
                    )
                if metadata is not None:
                    etag = await self._call(
                        "set_file_metadata", path, self._sync_file_meta(path, metadata, lease_id)
                    )
                return etag
            except NotFound as exc:
                if self._code(exc) not in _MAYBE_DIR:
                    raise
            except RemoteError as exc:
                if self._code(exc) != "ResourceTypeMismatch":
                    raise
        if lw is not None or attributes is not None:

            def run_times(kw: dict[str, Any]) -> str:
                return self._dir(path).set_http_headers(
                    file_attributes=attributes or "preserve",
                    file_creation_time="preserve",
                    file_last_write_time=lw or "preserve",
                    file_permission="preserve",
                    **kw,
                )["etag"]

            etag = await self._call("set_directory_properties", path, run_times)
        if metadata is not None:

            def run_meta(kw: dict[str, Any]) -> str:
                return self._dir(path).set_directory_metadata(metadata, **kw)["etag"]

            etag = await self._call("set_directory_metadata", path, run_meta)
        return etag

    def _sync_file_times(
        self, path: str, lw: str, lease_id: str | None, attributes: str | None = None
    ) -> Callable[[dict[str, Any]], str]:
        def run(kw: dict[str, Any]) -> str:
            # Set File Properties: SMB attributes (unless given), creation time and permission
            # are preserved; HTTP content headers (Content-Type/MD5…) are reset, as the REST
            # API always does.
            return self._file(path).set_http_headers(
                ContentSettings(),
                file_attributes=attributes or "preserve",
                file_creation_time="preserve",
                file_last_write_time=lw,
                file_permission="preserve",
                **_lease_kw(kw, lease_id),
            )["etag"]

        return run

    def _sync_file_meta(
        self, path: str, metadata: dict[str, str], lease_id: str | None
    ) -> Callable[[dict[str, Any]], str]:
        def run(kw: dict[str, Any]) -> str:
            return self._file(path).set_file_metadata(metadata, **_lease_kw(kw, lease_id))["etag"]

        return run

    async def delete_file(self, path: str, *, lease_id: str | None = None) -> None:
        path = _norm(path)
        self._check_writable("delete_file", path)
        try:
            await self._call(
                "delete_file",
                path,
                lambda kw: self._file(path).delete_file(**_lease_kw(kw, lease_id)),
            )
        except NotFound as exc:
            # A retried delete whose first attempt succeeded (response lost) ends here.
            if not getattr(exc, "retried", 0) or self._code(exc) == "ParentNotFound":
                raise

    # ----------------------------------------------------------------- directories

    async def mkdir(
        self,
        path: str,
        *,
        metadata: dict[str, str] | None = None,
        attributes: str | None = None,
    ) -> RemoteEntry:
        path = _norm(path)
        self._check_writable("mkdir", path)
        extra = {"file_attributes": attributes} if attributes else {}

        def run(kw: dict[str, Any]) -> Any:
            return self._shared.headers.of(
                self._dir(path).create_directory, metadata=metadata, **extra, **kw
            )

        try:
            headers = await self._call("create_directory", path, run)
        except RemoteError as exc:
            if getattr(exc, "retried", 0) and self._code(exc) == "ResourceAlreadyExists":
                entry = await self.stat(path)  # our own first attempt created it
                if entry.is_dir:
                    return entry
            raise
        entry = entry_from_headers(posixpath.basename(path), True, headers, with_metadata=False)
        return _replace(entry, metadata=dict(metadata or {}))

    async def rmdir(self, path: str) -> None:
        path = _norm(path)
        self._check_writable("rmdir", path)
        try:
            await self._call(
                "delete_directory", path, lambda kw: self._dir(path).delete_directory(**kw)
            )
        except NotFound as exc:
            if not getattr(exc, "retried", 0) or self._code(exc) == "ParentNotFound":
                raise

    # ----------------------------------------------------------------- both

    async def rename(self, src: str, dst: str, *, replace: bool = False) -> RemoteEntry | None:
        src, dst = _norm(src), _norm(dst)
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
            if self._code(exc) not in _MAYBE_DIR:
                raise
            file_exc: RemoteError = exc
        except RemoteError as exc:
            if self._code(exc) != "ResourceTypeMismatch":
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
        except NotFound:
            if getattr(file_exc, "retried", 0):
                # The file rename may have succeeded before its response was lost.
                try:
                    return await self.stat(dst)
                except NotFound:
                    pass
            if not isinstance(file_exc, NotFound):
                raise file_exc from None  # src is a file: the type mismatch was the real error
            raise

    # ----------------------------------------------------------------- leases

    async def acquire_lease(self, path: str, lease_id: str) -> str:
        path = _norm(path)
        self._check_writable("acquire_lease", path)

        def run(kw: dict[str, Any]) -> str:
            lease = ShareLeaseClient(self._file(path), lease_id=lease_id)
            lease.acquire(**kw)
            return lease.id

        return await self._call("acquire_lease", path, run)

    async def release_lease(self, path: str, lease_id: str) -> None:
        path = _norm(path)
        self._check_writable("release_lease", path)
        await self._call(
            "release_lease",
            path,
            lambda kw: ShareLeaseClient(self._file(path), lease_id=lease_id).release(**kw),
        )

    async def break_lease(self, path: str) -> None:
        path = _norm(path)
        self._check_writable("break_lease", path)
        await self._call(
            "break_lease", path, lambda kw: ShareLeaseClient(self._file(path)).break_lease(**kw)
        )

    # ----------------------------------------------------------------- the share

    async def usage(self) -> ShareUsage:
        results: dict[str, int] = {}

        async def quota() -> None:
            props = await self._call(
                "get_share_properties", "", lambda kw: self._share.get_share_properties(**kw)
            )
            results["quota"] = int(props.quota or 0) * 1024**3

        async def used() -> None:
            results["used"] = int(
                await self._call(
                    "get_share_stats", "", lambda kw: self._share.get_share_stats(**kw)
                )
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(quota)
            nursery.start_soon(used)
        return ShareUsage(quota_bytes=results["quota"], used_bytes=results["used"])

    async def create_snapshot(self, metadata: dict[str, str] | None = None) -> SnapshotInfo:
        self._check_writable("create_snapshot", "")
        r = await self._call(
            "create_snapshot", "", lambda kw: self._share.create_snapshot(metadata=metadata, **kw)
        )
        return SnapshotInfo(snapshot=r["snapshot"], metadata=dict(metadata or {}))

    def _service_client(self) -> ShareServiceClient:
        if self._service is None:
            extra = {"token_intent": self._token_intent} if self._token_intent else {}
            self._service = ShareServiceClient(
                self.account_url,
                credential=self._credential,
                **extra,
                **self._shared.client_kwargs(),
            )
        return self._service

    async def list_snapshots(self) -> list[SnapshotInfo]:
        def run(kw: dict[str, Any]) -> list[SnapshotInfo]:
            shares = self._service_client().list_shares(
                name_starts_with=self.share_name,
                include_snapshots=True,
                include_metadata=True,
                **kw,
            )
            return [
                SnapshotInfo(snapshot=s.snapshot, metadata=dict(s.metadata or {}))
                for s in shares
                if s.name == self.share_name and s.snapshot
            ]

        return await self._call("list_snapshots", "", run)

    async def delete_snapshot(self, snapshot: str) -> None:
        if not snapshot:
            raise ValueError("delete_snapshot needs a snapshot id (refusing to delete the share)")
        self._check_writable("delete_snapshot", snapshot)

        def run(kw: dict[str, Any]) -> None:
            self._snapshot_share(snapshot).delete_share(**kw)

        await self._call("delete_snapshot", snapshot, run)

    def _snapshot_share(self, snapshot: str) -> ShareClient:
        extra = {"token_intent": self._token_intent} if self._token_intent else {}
        return ShareClient(
            self.account_url,
            self.share_name,
            snapshot=snapshot,
            credential=self._credential,
            **extra,
            **self._shared.client_kwargs(),
        )

    def at_snapshot(self, snapshot: str) -> AzureFilesRemote:
        return AzureFilesRemote(
            self.account_url,
            self.share_name,
            self._credential,
            token_intent=self._token_intent,
            snapshot=snapshot,
            secrets=self._secrets,
            _shared=self._shared,
        )

    async def aclose(self) -> None:
        if self._owner:
            self._shared.close()

    def __repr__(self) -> str:
        snap = f" @{self.snapshot}" if self.snapshot else ""
        base = self.account_url.split("?", 1)[0]
        return f"<AzureFilesRemote {base}/{self.share_name}{snap}>"


def _replace(entry: RemoteEntry, **changes: Any) -> RemoteEntry:
    import dataclasses

    return dataclasses.replace(entry, **changes)
