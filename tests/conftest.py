"""Fixtures shared by every test: the emulator as a separate process, and fresh shares on it."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.emulator_proc import Emulator

# The SDK and urllib must talk to 127.0.0.1 directly, never through a proxy.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    """One emulator for the whole session; tests that change faults must clear them."""
    with Emulator(data_dir=tmp_path_factory.mktemp("emulator") / "data") as emu:
        yield emu


@pytest.fixture
def fresh_emulator(tmp_path):
    """An emulator of this test's own, for restarts and fault injection."""
    with Emulator(data_dir=tmp_path / "emulator-data") as emu:
        yield emu


@pytest.fixture
def share_name(emulator):
    """A new, empty share on the session emulator; deleted (with snapshots) afterwards."""
    from azure.storage.fileshare import ShareServiceClient

    name = "t" + uuid.uuid4().hex[:20]
    svc = ShareServiceClient.from_connection_string(emulator.connection_string)
    svc.create_share(name)
    yield name
    try:
        svc.get_share_client(name).delete_share(delete_snapshots=True)
    except Exception:
        pass
