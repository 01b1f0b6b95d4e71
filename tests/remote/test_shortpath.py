"""Ranged reads on the short path (remote/azure_short.py), against the emulator, which checks
SharedKey signatures and SAS the way the service does: the bytes are right, the short path
really served them (its counters), and whatever it cannot serve goes through the SDK with the
SDK's errors."""

from __future__ import annotations

import functools
import os

import pytest

from remote.azure import AzureOptions
from remote.base import AlreadyExists, LeaseConflict, NotFound
from remote.credentials import open_remote
from remote.emulator.handlers.service import encode_marker
from tests.remote.conftest import FAST
from tests.sas import share_sas

DATA = os.urandom(200_000)


async def _put(remote, path: str, data: bytes = DATA) -> None:
    await remote.create_file(path, len(data))
    await remote.write(path, 0, data)
    remote._short.stats.update(fast=0, fallbacks=0)  # (what the tests count comes after)


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
    assert remote._short.stats == {"fast": 3, "fallbacks": 0}  # the three reads


async def test_a_sas_url_reads_on_the_short_path(emulator, share_name, remote):
    await _put(remote, "s.bin")
    sas = share_sas(share_name, read=True, list=True)
    r = await open_remote(f"{emulator.share_url(share_name)}?{sas}", options=FAST, env={})
    try:
        assert await r.read("s.bin", 100, 5000) == DATA[100:5100]
        assert r._short.stats == {"fast": 1, "fallbacks": 0}
    finally:
        await r.aclose()


async def test_snapshot_reads_sign_the_snapshot_query(remote):
    await _put(remote, "v.bin", b"old" * 10)
    snap = await remote.create_snapshot()
    await remote.write("v.bin", 0, b"new")
    view = remote.at_snapshot(snap.snapshot)
    assert await view.read("v.bin", 0, 6) == b"oldold"
    assert await remote.read("v.bin", 0, 6) == b"newold"
    assert view._short.stats == {"fast": 1, "fallbacks": 0}


async def test_what_the_short_path_cannot_serve_gets_the_sdks_answer(remote):
    await _put(remote, "f.bin", b"x" * 100)
    with pytest.raises(NotFound):
        await remote.read("missing.bin", 0, 10)
    # at or past the end: the service answers InvalidRange, which reads as no bytes
    assert await remote.read("f.bin", 100, 10) == b""
    assert remote._short.stats == {"fast": 0, "fallbacks": 2}


async def test_failed_answers_are_read_again_through_the_sdk(emulator, remote):
    await _put(remote, "cut.bin")
    emulator.set_faults(drop_ops={"GetFile": 1})  # the next GET's answer never arrives
    try:
        assert await remote.read("cut.bin", 1000, 10_000) == DATA[1000:11_000]
    finally:
        emulator.clear_faults()
    assert remote._short.stats == {"fast": 0, "fallbacks": 1}
    assert await remote.read("cut.bin", 0, 10) == DATA[:10]
    assert remote._short.stats == {"fast": 1, "fallbacks": 1}


async def test_it_can_be_turned_off(emulator, share_name, remote):
    await _put(remote, "o.bin")
    r = await open_remote(
        emulator.share_url(share_name), options=AzureOptions(short_path=False), env={}
    )
    try:
        assert await r.read("o.bin", 0, 10) == DATA[:10]
        assert r._short is None
    finally:
        await r.aclose()


def _sent(monkeypatch, r) -> list[tuple[str, str, dict[str, str]]]:
    """Every request `r` sends from now on, on either path: (method, URL, x-ms-* headers but
    the date and the SDK's request id)."""
    seen: list[tuple[str, str, dict[str, str]]] = []
    skip = {"x-ms-date", "x-ms-client-request-id", "x-ms-meta"}  # (the SDK's x-ms-meta: a dict)

    def note(method: str, url: str, headers) -> None:
        xms = {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-ms-")}
        seen.append((method, url, {k: v for k, v in xms.items() if k not in skip}))

    session = r._shared.session
    real_send = session.send
    monkeypatch.setattr(
        session,
        "send",
        lambda req, **kw: note(req.method, req.url, req.headers) or real_send(req, **kw),
    )
    if r._short is not None:
        pool = r._short._pool
        real_request = pool.request

        async def request(method, url, headers, body=b""):
            note(method, url, headers)
            return await real_request(method, url, headers, body)

        monkeypatch.setattr(pool, "request", request)
    return seen


@pytest.mark.parametrize("name", ["plain.txt", "with space é.txt", "plus+amp&.txt"])
async def test_a_new_file_goes_the_short_way_as_the_sdk_would_send_it(
    emulator, share_name, remote, monkeypatch, name
):
    """create_filled's three calls (Create File, Put Range, Rename File) on the short path
    send what the SDK sends, request by request, and leave the same file on the share."""
    sdk = await open_remote(
        emulator.share_url(share_name), options=AzureOptions(short_path=False), env={}
    )
    try:
        files = {}
        requests = {}
        for who, r in (("short", remote), ("sdk", sdk)):
            await r.mkdir(who)
            seen = _sent(monkeypatch, r)
            entry = await r.create_filled(
                f"{who}/.fsync-new-1",
                f"{who}/{name}",
                len(DATA),
                [(0, DATA[:70_000]), (70_000, DATA[70_000:])],
                metadata={"fsync_mode": "100640", "fsync_uid": "1000"},
                last_write_ns=1_765_000_000_123_456_700,
                attributes="Hidden",
            )
            got = await r.stat(f"{who}/{name}")
            assert got.file_id == entry.file_id
            files[who] = (got.size, got.attributes, got.last_write_ns, got.metadata)
            assert await r.read(f"{who}/{name}", 0, len(DATA)) == DATA
            requests[who] = [
                (
                    m,
                    u.replace(f"/{who}/", "/X/"),
                    {k: v.replace(f"/{who}/", "/X/") for k, v in h.items()},
                )
                for m, u, h in seen[:4]
            ]
        assert files["short"] == files["sdk"]
        assert requests["short"] == requests["sdk"]
        assert [m for m, _, _ in requests["short"]] == ["PUT"] * 4
        # the mkdir, 4 calls and the read
        assert remote._short.stats == {"fast": 6, "fallbacks": 0}
    finally:
        await sdk.aclose()


@pytest.mark.parametrize("name", ["plain", "with space é", "plus+amp&"])
async def test_new_directories_go_the_short_way_as_the_sdk_would_send_them(
    emulator, share_name, remote, monkeypatch, name
):
    """Create Directory and Set Directory Properties on the short path send what the SDK
    sends, request by request, and leave the same directory on the share."""
    sdk = await open_remote(
        emulator.share_url(share_name), options=AzureOptions(short_path=False), env={}
    )
    try:
        dirs, requests = {}, {}
        for who, r in (("short", remote), ("sdk", sdk)):
            await r.mkdir(who)
            seen = _sent(monkeypatch, r)
            made = await r.mkdir(
                f"{who}/{name}",
                metadata={"fsync_mode": "40750", "fsync_uid": "1000"},
                attributes="Hidden",
                creation_ns=1_700_000_000_000_000_100,
            )
            await r.mkdir(f"{who}/{name}/plain")
            await r.set_properties(
                f"{who}/{name}", last_write_ns=1_765_000_000_123_456_700, is_dir=True
            )
            got = await r.stat(f"{who}/{name}")
            assert got.file_id == made.file_id
            dirs[who] = (got.attributes, got.last_write_ns, got.creation_ns, got.metadata)
            requests[who] = [(m, u.replace(f"/{who}%2F", "/X%2F"), h) for m, u, h in seen[:3]]
        assert dirs["short"] == dirs["sdk"]
        assert dirs["short"][1] == 1_765_000_000_123_456_700
        assert requests["short"] == requests["sdk"]
        assert remote._short.stats == {"fast": 4, "fallbacks": 0}  # 3 mkdirs, 1 properties
        # an existing name is the SDK's answer (ResourceAlreadyExists), never success
        with pytest.raises(AlreadyExists):
            await remote.mkdir(f"short/{name}")
        assert remote._short.stats == {"fast": 4, "fallbacks": 1}
    finally:
        await sdk.aclose()


@pytest.mark.parametrize("keep_mtime", [False, True])
async def test_writes_go_the_short_way_as_the_sdk_would_send_them(
    emulator, share_name, remote, monkeypatch, keep_mtime
):
    """`write` (Put Range, <= 4 MiB a request) on the short path sends what the SDK sends,
    request by request, answers the file's new ETag and leaves the same bytes and time."""
    sdk = await open_remote(
        emulator.share_url(share_name), options=AzureOptions(short_path=False), env={}
    )
    then = 1_765_000_000_123_456_700
    big = os.urandom(4 * 1024 * 1024 + 100_000)  # two requests
    try:
        requests, files = {}, {}
        for who, r in (("short", remote), ("sdk", sdk)):
            await r.create_file(f"{who}.bin", len(big), last_write_ns=then)
            before = dict(remote._short.stats)
            seen = _sent(monkeypatch, r)
            etag = await r.write(f"{who}.bin", 0, memoryview(big), keep_mtime=keep_mtime)
            if r is remote:
                assert remote._short.stats["fast"] == before["fast"] + 2
            got = await r.stat(f"{who}.bin")
            assert got.etag == etag
            assert (got.last_write_ns == then) is keep_mtime
            assert await r.read(f"{who}.bin", 0, len(big)) == big
            requests[who] = [(m, u.replace(f"/{who}.bin", "/X"), h) for m, u, h in seen[:2]]
            files[who] = got.size
        assert requests["short"] == requests["sdk"]
        assert files["short"] == files["sdk"] == len(big)
    finally:
        await sdk.aclose()


async def test_a_write_under_a_lease_goes_through_the_sdk(remote):
    """The short path sends no lease: a write with one is the SDK's, and a write without one
    to a file leased elsewhere gets the SDK's typed error, not a silent success."""
    await _put(remote, "leased.bin")
    lease = "5a1b2c3d-0000-4000-8000-000000000001"
    await remote.acquire_lease("leased.bin", lease)
    before = dict(remote._short.stats)
    await remote.write("leased.bin", 0, b"mine", lease_id=lease)
    assert remote._short.stats == before
    with pytest.raises(LeaseConflict):
        await remote.write("leased.bin", 0, b"theirs")
    assert remote._short.stats["fallbacks"] == before["fallbacks"] + 1
    await remote.release_lease("leased.bin", lease)
    assert await remote.read("leased.bin", 0, 6) == b"mine" + DATA[4:6]


def _list_requests(seen) -> list[tuple[str, str, dict[str, str]]]:
    return [(m, u, h) for m, u, h in seen if "comp=list" in u]


@pytest.mark.parametrize("path", ["", "d ir", "日本/子 é"])
async def test_listings_go_the_short_way_as_the_sdk_would_send_them(
    emulator, share_name, remote, monkeypatch, path
):
    """List Directories and Files on the short path sends what the SDK sends and reads the
    same entries; a page past a marker too (one the service makes: +, / and = in it)."""
    sdk = await open_remote(
        emulator.share_url(share_name), options=AzureOptions(short_path=False), env={}
    )
    try:
        if path:
            await remote.mkdir(path.split("/")[0])
            if "/" in path:
                await remote.mkdir(path)
        names = ["a&b 'q' ;=.txt", "b é+%.bin", "plain", "日本.txt"]
        for name in names:
            await _put(remote, f"{path}/{name}".lstrip("/"), b"x" * 10)
        await remote.mkdir(f"{path}/sub".lstrip("/"))
        marker = encode_marker("b é+%.bin")
        listed, requests = {}, {}
        for who, r in (("short", remote), ("sdk", sdk)):
            before = dict(remote._short.stats)
            seen = _sent(monkeypatch, r)
            whole = await r.list_dir(path)
            rest = await r._short_list_page(path, marker) if r is remote else None
            if rest is None:
                rest = await r._call(
                    "list_directory", path, functools.partial(r._sync_list_page, path, marker)
                )
            listed[who] = (sorted(whole, key=lambda e: e.name), rest)
            requests[who] = _list_requests(seen)
            if r is remote:
                assert remote._short.stats == {**before, "fast": before["fast"] + 2}
        assert listed["short"] == listed["sdk"]
        assert sorted(e.name for e in listed["short"][0]) == sorted([*names, "sub"])
        # (the page starts at the marker's name)
        assert [e.name for e in listed["short"][1][0]] == ["b é+%.bin", "plain", "sub", "日本.txt"]
        assert requests["short"] == requests["sdk"] and len(requests["short"]) == 2
    finally:
        await sdk.aclose()


async def test_a_listing_the_short_path_cannot_serve_gets_the_sdks_answer(remote):
    with pytest.raises(NotFound):
        await remote.list_dir("no such directory")
    assert remote._short.stats == {"fast": 0, "fallbacks": 1}


async def test_a_directory_made_before_its_answer_was_lost_is_ours(emulator, remote):
    emulator.set_faults(drop_ops={"CreateDirectory": 1})  # made, but the answer never comes
    try:
        made = await remote.mkdir("lost answer")
    finally:
        emulator.clear_faults()
    assert made.is_dir and (await remote.stat("lost answer")).file_id == made.file_id
    assert remote._short.stats == {"fast": 0, "fallbacks": 1}


@pytest.mark.parametrize("sas", [False, True])
async def test_file_urls_are_spelled_as_the_sdk_spells_them(emulator, share_name, remote, sas):
    r = remote
    if sas:
        token = share_sas(share_name, read=True)
        r = await open_remote(f"{emulator.share_url(share_name)}?{token}", options=FAST, env={})
    try:
        for path in ["a", "d ir/f~x.txt", "100%/#hash?&=+", "日本/子 é.txt", "x/.fsync-new-1-2"]:
            assert r._file_url(path) == r._file(path).url, path
            assert r._dir_url(path) == r._dir(path).url, path
        assert r._dir_url("") == r._dir("").url  # the share's root
    finally:
        if sas:
            await r.aclose()


async def test_a_new_read_only_file_is_filled_before_it_becomes_read_only(remote):
    """The share refuses Put Range on a read-only file: create_filled creates it writable,
    fills it, then sets the attributes asked for (one call more), then names it."""
    entry = await remote.create_filled(
        ".fsync-new-ro",
        "ro.txt",
        len(DATA),
        [(0, DATA)],
        last_write_ns=1_765_000_000_123_456_700,
        attributes="ReadOnly|Archive",
    )
    got = await remote.stat("ro.txt")
    assert got.file_id == entry.file_id and got.last_write_ns == 1_765_000_000_123_456_700
    assert "ReadOnly" in (got.attributes or "")
    assert await remote.read("ro.txt", 0, len(DATA)) == DATA
