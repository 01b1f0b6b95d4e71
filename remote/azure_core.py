"""The plumbing every AzureFilesRemote operation runs on: clients, worker threads, errors.

`AzureCore` builds the share's SDK clients and runs each SDK call in a worker thread under the
shared CapacityLimiter (`_call`), translating what the SDK raises into remote.base's typed
errors. The operations themselves are the mixins in azure_read, azure_files, azure_dirs and
azure_share, put together in remote.azure.AzureFilesRemote.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeAlias, TypeVar
from urllib.parse import quote

import trio
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential, TokenCredential
from azure.storage.fileshare import ShareClient, ShareServiceClient

from remote.azure_errors import install_log_scrubber, translate
from remote.azure_short import ShortPath
from remote.azure_transport import AzureOptions, SharedTransport
from remote.base import PermissionDenied, Remote, RemoteError

# One logger for the whole implementation, as before it was split into modules.
log = logging.getLogger("remote.azure")

T = TypeVar("T")

#: What the SDK clients take as `credential`: None for a SAS in the URL,
#: {"account_name", "account_key"}, or a TokenCredential (with token_intent="backup").
Credential: TypeAlias = (
    str | dict[str, str] | AzureNamedKeyCredential | AzureSasCredential | TokenCredential | None
)
#: Keyword arguments handed to an SDK call (its per-call retry hook, timeouts, lease): the SDK's
#: options are heterogeneous, hence Any.
SdkKwargs: TypeAlias = dict[str, Any]
TokenIntent: TypeAlias = Literal["backup"] | None

#: Error codes of a file operation on a path that may be a directory.
MAYBE_DIR = {"ResourceNotFound", "ResourceTypeMismatch", None}
#: Operations whose worker thread a cancellation may abandon (no side effect on the share).
READ_ONLY_OPS = {
    "get_file_properties",
    "get_directory_properties",
    "check",
    "list_directory",
    "download",
    "get_share_properties",
    "get_share_stats",
    "list_snapshots",
}


def norm(path: str) -> str:
    return path.strip("/")


def lease_kw(kw: SdkKwargs, lease_id: str | None) -> SdkKwargs:
    return {**kw, "lease": lease_id} if lease_id else kw


class AzureCore(Remote):
    """A share's SDK clients and the call plumbing the operation mixins share.

    The constructor's arguments are AzureFilesRemote's (see there); a snapshot view passes the
    share's `_shared` transport, so both count and limit their calls together."""

    def __init__(
        self,
        account_url: str,
        share: str,
        credential: Credential = None,
        *,
        options: AzureOptions | None = None,
        token_intent: TokenIntent = None,
        snapshot: str | None = None,
        secrets: tuple[str, ...] = (),
        _shared: SharedTransport | None = None,
    ) -> None:
        install_log_scrubber()
        self._owner = _shared is None
        self._shared = _shared or SharedTransport(options or AzureOptions())
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
        self._share = ShareClient(
            account_url,
            share,
            snapshot=snapshot,
            credential=credential,
            token_intent=token_intent,
            **self._shared.client_kwargs(),
        )
        self._service: ShareServiceClient | None = None
        o = self.options
        #: Hot calls signed and sent without the SDK's pipeline, where it can (azure_short).
        self._short = (
            ShortPath.for_share(
                credential=credential,
                sas_in_url="?" in account_url,
                proxies=dict(self._shared.session.proxies),
                account_name=self._share.account_name,
                api_version=self._share.api_version,
                pool=self._shared.pool,
                count_request=self._shared.stats.count_request,
            )
            if o.short_path
            else None
        )
        #: Use the documented (slower, microsecond-precision) listing API instead of the raw one.
        self.use_public_listing = False
        #: Use download_file (body streamed outside the retry policy) instead of the raw GET.
        self.use_public_download = False
        # Building a client costs ~10% of a call's CPU (pipeline, generated client): keep the
        # recent ones. lru_cache is thread-safe; clients are called from worker threads.
        self._file = functools.lru_cache(maxsize=512)(self._share.get_file_client)
        # A file's URL as the SDK's file client spells it (quoting, SAS or snapshot query),
        # without building a client for it (~0.2 ms each): the short path's calls need only
        # the URL (azure_short). Taken apart from the URL of a client for the path "x".
        base, sep, query = self._share.get_file_client("x").url.partition("?")
        self._url_head, self._url_query = base[: -len("x")], sep + query
        self._dir = functools.lru_cache(maxsize=256)(self._share.get_directory_client)

    def _file_url(self, path: str) -> str:
        """What `self._file(path).url` is (SDK quoting: each part quoted, `~` kept)."""
        quoted = "/".join(quote(p, safe="~") for p in path.split("/"))
        return f"{self._url_head}{quoted}{self._url_query}"

    def _dir_url(self, path: str) -> str:
        """What `self._dir(path).url` is (SDK quoting: the path as one part, `/` too; the
        share's root without a trailing slash)."""
        if not path:
            return f"{self._url_head.rstrip('/')}{self._url_query}"
        return f"{self._url_head}{quote(path, safe='~')}{self._url_query}"

    @property
    def stats(self) -> dict[str, Any]:
        """Raw per-call counters: {"calls": {op: n}, "errors": {cls: n}, "http_requests",
        "retries"} — shared by a share and its snapshot views."""
        return self._shared.stats.snapshot()

    async def _call(self, op: str, path: str, fn: Callable[[SdkKwargs], T]) -> T:
        """Run fn(kw) in a worker thread; kw carries the per-call retry hook for the SDK."""
        if self._shared.closed:
            raise RemoteError(f"{op} {path!r}: remote is closed")
        stats = self._shared.stats
        stats.calls[op] += 1
        retries = 0

        def hook(**_: object) -> None:
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
                abandon_on_cancel=op in READ_ONLY_OPS,
            )
        except Exception as err:  # noqa: BLE001 - everything is translated below
            exc = translate(err, op, path, self._secrets)
            exc.retried = retries
            stats.errors[type(exc).__name__] += 1
            if retries:
                log.debug("%s %r failed after %d retries: %s", op, path, retries, exc)
        raise exc from None

    async def _natively(
        self, op: str, call: Callable[[ShortPath], Awaitable[T | None]], *, shield: bool = False
    ) -> T | None:
        """A call on the short path, in this task under the same limit on calls in flight as
        the SDK's worker threads; None: it could not serve it (the caller asks the SDK).
        `shield`: a mutation runs to its end even when the caller is cancelled, as one in a
        worker thread does, so that a cancelled caller knows the request is over (bounded by
        the connect and read timeouts)."""
        assert self._short is not None
        if self._shared.closed:
            raise RemoteError(f"{op}: remote is closed")
        with trio.CancelScope(shield=shield):
            async with self._shared.limiter:
                got = await call(self._short)
        if got is not None:
            self._shared.stats.calls[op] += 1
        return got

    def _check_writable(self, op: str, path: str) -> None:
        if self.read_only:
            exc = PermissionDenied(f"{op} {path!r}: snapshot {self.snapshot} is read-only")
            exc.code, exc.status = None, None
            raise exc
