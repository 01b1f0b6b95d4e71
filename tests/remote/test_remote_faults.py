"""Fault injection (latency, 500/503, dropped connections, outages) and restart persistence.

These tests get an emulator of their own, since faults apply to every request it serves."""

from __future__ import annotations

import os
import uuid

import pytest
import trio
from azure.storage.fileshare import ShareServiceClient

from remote.azure import AzureOptions
from remote.base import Throttled, Transient
from remote.credentials import open_remote
from tests.emulator_proc import Emulator

# Enough retries that 30% injected failures essentially never exhaust them (0.3**9 ~ 2e-5).
PATIENT = AzureOptions(
    retry_total=8,
    retry_backoff=0.02,
    retry_backoff_base=0.1,
    retry_jitter=0.01,
    connect_timeout=2.0,
    read_timeout=10.0,
)
# Two quick retries: about 0.3 s of backoff in total.
IMPATIENT = AzureOptions(
    retry_total=2,
    retry_backoff=0.1,
    retry_backoff_base=0.2,
    retry_jitter=0.01,
    connect_timeout=2.0,
    read_timeout=5.0,
)


@pytest.fixture(scope="module")
def fault_emulator(tmp_path_factory):
    with Emulator(data_dir=tmp_path_factory.mktemp("fault-emulator") / "data") as emu:
        yield emu


@pytest.fixture
def fault_share(fault_emulator):
    name = "f" + uuid.uuid4().hex[:20]
    svc = ShareServiceClient.from_connection_string(fault_emulator.connection_string)
    svc.create_share(name)
    try:
        yield name
    finally:
        fault_emulator.clear_faults()
        svc.get_share_client(name).delete_share(delete_snapshots=True)


async def _workload(r, tag: str) -> None:
    """A bit of everything: namespace ops, writes and reads, listing."""
    data = os.urandom(300_000)
    await r.mkdir(f"{tag}")
    await r.create_file(f"{tag}/f", len(data), metadata={"k": tag})
    await r.write(f"{tag}/f", 0, data)
    assert await r.read(f"{tag}/f", 1000, 200_000) == data[1000:201_000]
    assert (await r.stat(f"{tag}/f")).metadata == {"k": tag}
    await r.rename(f"{tag}/f", f"{tag}/g")
    assert [e.name for e in await r.list_dir(tag)] == ["g"]
    await r.delete_file(f"{tag}/g")
    await r.rmdir(tag)


@pytest.mark.parametrize("status", [503, 500])
async def test_error_rate_is_retried_transparently(fault_emulator, fault_share, status):
    r = await open_remote(fault_emulator.share_url(fault_share), options=PATIENT, env={})
    try:
        fault_emulator.set_faults(error_rate=0.3, error_status=status)
        for i in range(6):
            await _workload(r, f"e{i}")
        assert r.stats["retries"] > 0  # the faults really happened
    finally:
        fault_emulator.clear_faults()
        await r.aclose()


async def test_dropped_connections_are_retried(fault_emulator, fault_share):
    r = await open_remote(fault_emulator.share_url(fault_share), options=PATIENT, env={})
    try:
        fault_emulator.set_faults(drop_rate=0.3)
        for i in range(6):
            await _workload(r, f"d{i}")
        assert r.stats["retries"] > 0
    finally:
        fault_emulator.clear_faults()
        await r.aclose()


async def test_latency(fault_emulator, fault_share):
    r = await open_remote(fault_emulator.share_url(fault_share), options=PATIENT, env={})
    try:
        fault_emulator.set_faults(latency_ms=150)
        await _workload(r, "lat")
        assert r.stats["retries"] == 0
    finally:
        fault_emulator.clear_faults()
        await r.aclose()


async def test_short_outage_is_ridden_out(fault_emulator, fault_share):
    opts = AzureOptions(
        retry_total=8, retry_backoff=0.4, retry_backoff_base=0.1, retry_jitter=0.05
    )  # ~4 s of backoff > the 1 s outage
    r = await open_remote(fault_emulator.share_url(fault_share), options=opts, env={})
    try:
        await r.create_file("o", 5)
        fault_emulator.set_faults(outage_seconds=1.0)
        await r.write("o", 0, b"after")
        assert await r.read("o", 0, 5) == b"after"
        assert r.stats["retries"] > 0
    finally:
        fault_emulator.clear_faults()
        await r.aclose()


async def test_long_outage_raises_transient_in_bounded_time(fault_emulator, fault_share):
    r = await open_remote(fault_emulator.share_url(fault_share), options=IMPATIENT, env={})
    try:
        await r.create_file("o", 5)
        fault_emulator.set_faults(outage_seconds=60)
        with trio.fail_after(20):  # the bound: retries give up well before this
            with pytest.raises(Transient) as info:
                await r.read("o", 0, 5)
            with pytest.raises(Transient):
                await r.write("o", 0, b"x")
        assert info.value.transient
        assert "after retries" in str(info.value)
        assert info.value.retried == IMPATIENT.retry_total  # one retry layer, not nested ones
    finally:
        fault_emulator.clear_faults()
        await r.aclose()


@pytest.mark.parametrize("status,cls", [(503, Throttled), (500, Transient)])
async def test_persistent_errors_surface_typed(fault_emulator, fault_share, status, cls):
    r = await open_remote(fault_emulator.share_url(fault_share), options=IMPATIENT, env={})
    try:
        fault_emulator.set_faults(error_rate=1.0, error_status=status)
        with trio.fail_after(20):
            with pytest.raises(cls) as info:
                await r.stat("")
        assert info.value.status == status
        if status == 500:
            assert not isinstance(info.value, Throttled)
        assert r.stats["retries"] >= IMPATIENT.retry_total
    finally:
        fault_emulator.clear_faults()
        await r.aclose()


async def test_restart_persistence(fresh_emulator):
    svc = ShareServiceClient.from_connection_string(fresh_emulator.connection_string)
    svc.create_share("persist")
    url = fresh_emulator.share_url("persist")
    data = os.urandom(1_500_000)
    r = await open_remote(url, options=PATIENT, env={})
    try:
        await r.mkdir("d", metadata={"mode": "0750"})
        made = await r.create_file("d/f", len(data), metadata={"mode": "0600"}, last_write_ns=1)
        await r.write("d/f", 0, data)
        await r.set_properties("d/f", last_write_ns=1_700_000_000_000_000_100)
        snap = await r.create_snapshot()
        await r.write("d/f", 0, b"CHANGED")
        before = await r.stat("d/f")
    finally:
        await r.aclose()

    fresh_emulator.restart()

    r = await open_remote(url, options=PATIENT, env={})
    try:
        after = await r.stat("d/f")
        assert after.file_id == made.file_id
        assert after.etag == before.etag
        assert after.metadata == {"mode": "0600"}
        assert after.last_write_ns == before.last_write_ns
        assert after.size == len(data)
        assert await r.read("d/f", 0, len(data)) == b"CHANGED" + data[7:]
        assert (await r.stat("d")).metadata == {"mode": "0750"}
        assert [s.snapshot for s in await r.list_snapshots()] == [snap.snapshot]
        assert await r.at_snapshot(snap.snapshot).read("d/f", 0, 7) == data[:7]
    finally:
        await r.aclose()


async def test_silent_endpoint_fails_in_bounded_time():
    """An endpoint that accepts connections and never answers: read timeouts, then Transient."""
    import socket

    opts = AzureOptions(
        connect_timeout=0.5,
        read_timeout=0.5,
        retry_total=1,
        retry_backoff=0.05,
        retry_backoff_base=0.1,
        retry_jitter=0.01,
    )
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes handshakes; nobody ever reads or answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/devstoreaccount1/share"
        with trio.fail_after(20):
            with pytest.raises(Transient) as info:
                await open_remote(url, options=opts, env={})
    assert str(info.value).startswith("cannot reach http://127.0.0.1:")
    assert "timed out" in str(info.value)


async def test_cancelled_read_returns_promptly(fault_emulator, fault_share):
    """Reads run in abandonable threads: cancelling one does not wait for the slow server."""
    r = await open_remote(fault_emulator.share_url(fault_share), options=PATIENT, env={})
    try:
        await r.create_file("slow", 10)
        fault_emulator.set_faults(latency_ms=5000)
        with trio.fail_after(3):  # far below the 5 s the server takes to answer
            with trio.move_on_after(0.2) as scope:
                await r.read("slow", 0, 10)
        assert scope.cancelled_caught
    finally:
        fault_emulator.clear_faults()
        await r.aclose()
