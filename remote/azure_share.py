"""Leases on files, and the share as a whole: usage (for statfs) and snapshots.

Listing snapshots needs the account's service client, built on first use; deleting one builds a
client of that snapshot, so the live share can never be deleted by mistake.
"""

from __future__ import annotations

import trio
from azure.storage.fileshare import ShareClient, ShareLeaseClient, ShareServiceClient

from remote.azure_core import AzureCore, SdkKwargs, norm
from remote.base import RemoteError, ShareUsage, SnapshotInfo


class AzureShareOps(AzureCore):
    """Leases, usage and snapshots of AzureFilesRemote."""

    # ----------------------------------------------------------------- leases

    async def acquire_lease(self, path: str, lease_id: str) -> str:
        path = norm(path)
        self._check_writable("acquire_lease", path)

        def run(kw: SdkKwargs) -> str:
            lease = ShareLeaseClient(self._file(path), lease_id=lease_id)
            lease.acquire(**kw)
            return lease.id

        return await self._call("acquire_lease", path, run)

    async def release_lease(self, path: str, lease_id: str) -> None:
        path = norm(path)
        self._check_writable("release_lease", path)
        try:
            await self._call(
                "release_lease",
                path,
                lambda kw: ShareLeaseClient(self._file(path), lease_id=lease_id).release(**kw),
            )
        except RemoteError as exc:
            # resent after the first release worked (its answer was lost): no lease is left
            if not (exc.retried and exc.code == "LeaseNotPresentWithLeaseOperation"):
                raise

    async def break_lease(self, path: str) -> None:
        path = norm(path)
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
            self._service = ShareServiceClient(
                self.account_url,
                credential=self._credential,
                token_intent=self._token_intent,
                **self._shared.client_kwargs(),
            )
        return self._service

    async def list_snapshots(self) -> list[SnapshotInfo]:
        def run(kw: SdkKwargs) -> list[SnapshotInfo]:
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

        def run(kw: SdkKwargs) -> None:
            self._snapshot_share(snapshot).delete_share(**kw)

        await self._call("delete_snapshot", snapshot, run)

    def _snapshot_share(self, snapshot: str) -> ShareClient:
        return ShareClient(
            self.account_url,
            self.share_name,
            snapshot=snapshot,
            credential=self._credential,
            token_intent=self._token_intent,
            **self._shared.client_kwargs(),
        )
