"""Share SAS tokens for the emulator's development account (tests only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from azure.storage.fileshare import ShareSasPermissions, generate_share_sas

from remote.credentials import DEV_ACCOUNT, DEV_KEY


def share_sas(share: str, **permissions: bool) -> str:
    """A SAS for `share` valid for an hour, e.g. share_sas(name, read=True, list=True)."""
    return generate_share_sas(
        DEV_ACCOUNT,
        share,
        DEV_KEY,
        permission=ShareSasPermissions(**permissions),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
