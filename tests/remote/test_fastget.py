"""Ranged reads on the short path (remote/azure_fastget.py), against the emulator, which checks
SharedKey signatures and SAS the way the service does: the bytes are right, the short path
really served them (its counters), and whatever it cannot serve goes through the SDK with the
SDK's errors."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.fileshare import ShareSasPermissions, generate_share_sas

from remote.azure import AzureOptions
from remote.base import NotFound
from remote.credentials import DEV_ACCOUNT, DEV_KEY, open_remote
from tests.remote.conftest import FAST

DATA = os.urandom(200_000)


async def _put(remote, path: str, data: bytes = DATA) -> None:
    await remote.create_file(path, len(data))
    await remote.write(path, 0, data)


@pytest.mark.parametrize(
    "name",
    ["plain.bin", "with space.bin", "hash#percent%tilde~.bin", "é ü 日本.bin", "plus+amp&eq=.bin"],
)
async def test_reads_are_signed_here_for_any_name(remote, name):
    await remote.mkdir("d ir")
    await _put(remote, f"d ir/{name}")
    assert await remote.read(f"d ir/{name}", 0, len(DATA)) == DATA
    assert await remote.read(f"d ir/{name}", 12_345, 1000) == DATA[12_345:13_345]
    # a range running past the end gets what there is
    assert await remote.read(f"d ir/{name}", len(DATA) - 10, 100) == DATA[-10:]
    assert remote._fast.stats == {"fast": 3, "fallbacks": 0}


async def test_a_sas_url_reads_on_the_short_path(emulator, share_name, remote):
    await _put(remote, "s.bin")
    sas = generate_share_sas(
        DEV_ACCOUNT,
        share_name,
        DEV_KEY,
        permission=ShareSasPermissions(read=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    r = await open_remote(f"{emulator.share_url(share_name)}?{sas}", options=FAST, env={})
    try:
        assert await r.read("s.bin", 100, 5000) == DATA[100:5100]
        assert r._fast.stats == {"fast": 1, "fallbacks": 0}
    finally:
        await r.aclose()


async def test_snapshot_reads_sign_the_snapshot_query(remote):
    await _put(remote, "v.bin", b"old" * 10)
    snap = await remote.create_snapshot()
    await remote.write("v.bin", 0, b"new")
    view = remote.at_snapshot(snap.snapshot)
    assert await view.read("v.bin", 0, 6) == b"oldold"
    assert await remote.read("v.bin", 0, 6) == b"newold"
    assert view._fast.stats == {"fast": 1, "fallbacks": 0}


async def test_what_the_short_path_cannot_serve_gets_the_sdks_answer(remote):
    await _put(remote, "f.bin", b"x" * 100)
    with pytest.raises(NotFound):
        await remote.read("missing.bin", 0, 10)
    # at or past the end: the service answers InvalidRange, which reads as no bytes
    assert await remote.read("f.bin", 100, 10) == b""
    assert remote._fast.stats == {"fast": 0, "fallbacks": 2}


async def test_failed_answers_are_read_again_through_the_sdk(emulator, remote):
    await _put(remote, "cut.bin")
    emulator.set_faults(drop_ops={"GetFile": 1})  # the next GET's answer never arrives
    try:
        assert await remote.read("cut.bin", 1000, 10_000) == DATA[1000:11_000]
    finally:
        emulator.clear_faults()
    assert remote._fast.stats == {"fast": 0, "fallbacks": 1}
    assert await remote.read("cut.bin", 0, 10) == DATA[:10]
    assert remote._fast.stats == {"fast": 1, "fallbacks": 1}


async def test_it_can_be_turned_off(emulator, share_name, remote):
    await _put(remote, "o.bin")
    r = await open_remote(
        emulator.share_url(share_name), options=AzureOptions(fast_reads=False), env={}
    )
    try:
        assert await r.read("o.bin", 0, 10) == DATA[:10]
        assert r._fast is None
    finally:
        await r.aclose()
