"""What a share and its snapshot views share: HTTP session, SDK transport, limiter, counters.

One requests.Session whose connection pool is at least as large as the CapacityLimiter, so
parallel range I/O never waits for a socket. Retries are the storage SDK's ExponentialRetry with
a small configurable budget (AzureOptions), so a dead endpoint fails in bounded time.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
import trio
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.transport import HttpRequest, HttpResponse, RequestsTransport
from azure.storage.fileshare._shared.policies import ExponentialRetry
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3.util.retry import Retry

from remote.base import RemoteError
from remote.http11 import Pool

MAX_RANGE = 4 * 1024 * 1024  # Put Range limit


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
    trust_env: bool = True  # honour HTTP(S)_PROXY / NO_PROXY, REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE
    short_path: bool = True  # hot calls without the SDK's pipeline (azure_short)


class CallStats:
    """Raw counters: SDK calls by operation, HTTP attempts, retries, errors by class."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.http_requests = 0
        self.retries = 0

    def on_request(self, _request: PipelineRequest[HttpRequest]) -> None:  # in worker threads
        self.count_request()

    def count_request(self) -> None:
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


class ResponseHeaders:
    """Collects the headers of the responses the current worker thread receives.

    Registered as the clients' raw_response_hook. (A per-call hook is not enough: the SDK forgets
    it when a first attempt raised, e.g. a connection cut, and a retry then succeeded.)"""

    def __init__(self) -> None:
        self._tls = threading.local()

    def hook(self, response: PipelineResponse[HttpRequest, HttpResponse]) -> None:
        box: list[Mapping[str, str]] | None = getattr(self._tls, "box", None)
        if box is not None:
            box.append(response.http_response.headers)

    def of(self, method: Callable[..., object], *args: Any, **kw: Any) -> Mapping[str, str]:
        """Call an SDK method in this thread; return its final response's headers."""
        box: list[Mapping[str, str]] = []
        self._tls.box = box
        try:
            method(*args, **kw)
        finally:
            self._tls.box = None
        if not box:  # pragma: no cover - every SDK call we make has a response
            raise RemoteError(f"{getattr(method, '__name__', method)}: no response headers")
        return box[-1]


class SharedTransport:
    """What a share and its snapshot views have in common: session, transport, limiter, stats."""

    def __init__(self, options: AzureOptions) -> None:
        self.options = options
        self.session = requests.Session()
        # Environment settings (proxies, NO_PROXY) are resolved once per endpoint
        # (`use_proxies_for`), not per request: requests would also look for ~/.netrc
        # on every call.
        self.session.trust_env = False
        #: The certificates to trust instead of the bundled ones (a TLS-inspecting proxy's):
        #: what requests itself would take from the environment, resolved once, and used by
        #: the SDK's transport and the short path alike.
        self.ca_bundle: str | None = None
        if options.trust_env:
            env = os.environ
            self.ca_bundle = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or None
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
            connection_verify=self.ca_bundle or True,
        )
        #: the short path's connections (azure_short), shared by the share and its views
        self.pool = Pool(
            connect_timeout=options.connect_timeout,
            read_timeout=options.read_timeout,
            cafile=self.ca_bundle or DEFAULT_CA_BUNDLE_PATH,
            max_idle=pool,
        )
        self.limiter = trio.CapacityLimiter(options.max_concurrency)
        self.stats = CallStats()
        self.headers = ResponseHeaders()
        self.closed = False

    def use_proxies_for(self, url: str) -> None:
        """HTTP(S)_PROXY / NO_PROXY as they apply to this endpoint (when trust_env)."""
        if self.options.trust_env:
            self.session.proxies.update(requests.utils.get_environ_proxies(url))

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of every SDK client we build (SDK options are heterogeneous)."""
        o = self.options
        return {
            "transport": self.transport,
            # ExponentialRetry's stubs say int; the policy computes with floats (sub-second
            # backoffs and jitter are what keep a dead endpoint's failure bounded).
            "retry_policy": ExponentialRetry(
                initial_backoff=o.retry_backoff,  # type: ignore[arg-type]
                increment_base=o.retry_backoff_base,  # type: ignore[arg-type]
                retry_total=o.retry_total,
                random_jitter_range=o.retry_jitter,  # type: ignore[arg-type]
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
            self.pool.close()
