"""Fixtures for the Azure Files remote: an AzureFilesRemote on a fresh share of the emulator."""

from __future__ import annotations

import pytest
from azure.storage.fileshare import ShareClient

from remote.azure import AzureOptions
from remote.credentials import open_remote

# Small retry budget and short backoffs: fault tests stay fast, dead endpoints fail quickly.
FAST = AzureOptions(
    retry_total=4,
    retry_backoff=0.05,
    retry_backoff_base=0.2,
    retry_jitter=0.01,
    connect_timeout=2.0,
    read_timeout=10.0,
)


@pytest.fixture
async def remote(emulator, share_name):
    r = await open_remote(emulator.share_url(share_name), options=FAST, env={})
    try:
        yield r
    finally:
        await r.aclose()


@pytest.fixture
def sdk_share(emulator, share_name) -> ShareClient:
    """The plain SDK on the same share, to check what the remote did independently."""
    return ShareClient.from_connection_string(emulator.connection_string, share_name)
