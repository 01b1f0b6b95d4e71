"""AzureFilesRemote: the Remote interface on azure-storage-file-share's sync clients.

Every SDK call runs in a worker thread (`trio.to_thread.run_sync`) under one CapacityLimiter, over
one requests.Session whose connection pool is at least as large as the limiter, so parallel range
I/O never waits for a socket. Retries (5xx, 503 ServerBusy, dropped connections, timeouts) are the
storage SDK's ExponentialRetry, with a small configurable budget so a dead endpoint fails in
bounded time; what is left after the retries is mapped to the typed errors of remote.base.

The implementation is split by what it touches: azure_transport (session, retries, counters),
azure_core (clients, worker-thread calls), azure_read, azure_files, azure_dirs and azure_share
(the operations). This module puts them together and is what other code imports.
"""

from __future__ import annotations

from remote.azure_dirs import AzureDirectories
from remote.azure_files import AzureFileWrites
from remote.azure_read import AzureReads
from remote.azure_share import AzureShareOps
from remote.azure_transport import MAX_RANGE, AzureOptions

__all__ = ["MAX_RANGE", "AzureFilesRemote", "AzureOptions"]


class AzureFilesRemote(AzureReads, AzureFileWrites, AzureDirectories, AzureShareOps):
    """One Azure file share (or a read-only snapshot of it) behind the Remote interface.

    `account_url` is "https://ACCOUNT.file.core.windows.net" or the emulator's path-style
    "http://127.0.0.1:PORT/devstoreaccount1", optionally with a SAS query; `credential` is what
    the SDK takes (None for a SAS in the URL, {"account_name", "account_key"}, or a TokenCredential,
    which needs token_intent="backup"). Most code should use `remote.credentials.open_remote`.
    """

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
