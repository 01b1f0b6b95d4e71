"""The share goes away: the mount stays usable, cached data reads, tiered data fails with EIO
in bounded time, and everything written meanwhile uploads once the share is back."""

from __future__ import annotations

import errno
import json
import os
import random
import threading
import time

import pytest

from tests.mount.helpers import Share, eventually

pytestmark = pytest.mark.mount

OUTAGE = 8.0


def read_in_thread(path, limit: float):
    """Read a file in a thread; returns the exception (or bytes) — failing if it hangs."""
    box: list = []

    def run():
        try:
            box.append(open(path, "rb").read())
        except OSError as exc:
            box.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit)
    assert not t.is_alive(), f"read of {path} still hanging after {limit}s"
    return box[0]


def test_outage(mounter, fresh_emulator):
    from azure.storage.fileshare import ShareServiceClient

    ShareServiceClient.from_connection_string(fresh_emulator.connection_string).create_share(
        "outage"
    )
    share = Share(fresh_emulator.connection_string, "outage")
    rnd = random.Random(6)
    cached, tiered = rnd.randbytes(2_500_000), rnd.randbytes(2_500_000)
    share.put("data/cached.bin", cached)
    share.put("data/tiered.bin", tiered)
    m = mounter(
        fresh_emulator.share_url("outage"),
        args=["--writeback-delay", "0.2", "--remote-retries", "1", "--io-timeout", "10"],
    )
    assert (m.mnt / "data/cached.bin").read_bytes() == cached
    assert os.path.getsize(m.mnt / "data/tiered.bin") == len(tiered)

    fresh_emulator.set_faults(outage_seconds=OUTAGE)
    t0 = time.monotonic()
    # writes land locally
    written = {f"new/f{i}": rnd.randbytes(rnd.randrange(1, 100_000)) for i in range(10)}
    (m.mnt / "new").mkdir()
    for p, data in written.items():
        (m.mnt / p).write_bytes(data)
    with open(m.mnt / "data/cached.bin", "r+b") as fh:
        fh.write(b"EDITED")
    os.rename(m.mnt / "new/f9", m.mnt / "new/f9-renamed")
    written["new/f9-renamed"] = written.pop("new/f9")
    # cached data and listings keep working
    assert (m.mnt / "data/cached.bin").read_bytes() == b"EDITED" + cached[6:]
    assert sorted(os.listdir(m.mnt / "data")) == ["cached.bin", "tiered.bin"]
    # tiered data: EIO, not a hang
    got = read_in_thread(m.mnt / "data/tiered.bin", limit=60)
    assert isinstance(got, OSError) and got.errno == errno.EIO, got
    if time.monotonic() - t0 < OUTAGE:
        st = m.pending()
        assert st["files"] or st["ops"]

    # the share comes back: everything goes up
    time.sleep(max(0.0, OUTAGE - (time.monotonic() - t0)))
    m.wait_drained(timeout=90)
    for p, data in written.items():
        assert share.get(p) == data, p
    assert share.get("data/cached.bin") == b"EDITED" + cached[6:]
    assert (m.mnt / "data/tiered.bin").read_bytes() == tiered
    assert m.stop() == 0


def test_uncached_read_fails_within_the_io_timeout(mounter, fresh_emulator):
    """The kernel retries a failed read at once: that retry must not wait --io-timeout again
    (a read failed after twice the option). The share answers nothing in time (every request
    waits 20 s); the retry is answered at once, and counted."""
    from azure.storage.fileshare import ShareServiceClient

    ShareServiceClient.from_connection_string(fresh_emulator.connection_string).create_share("slow")
    share = Share(fresh_emulator.connection_string, "slow")
    share.put("tiered.bin", b"t" * 3_000_000)
    m = mounter(
        fresh_emulator.share_url("slow"),
        args=["--remote-retries", "0", "--io-timeout", "3", "--poll-interval", "0"],
    )
    assert os.path.getsize(m.mnt / "tiered.bin") == 3_000_000
    fresh_emulator.set_faults(latency_ms=20_000)
    try:
        got = read_in_thread(m.mnt / "tiered.bin", limit=60)
        assert isinstance(got, OSError) and got.errno == errno.EIO, got
        status = json.loads(os.getxattr(m.mnt, "user.fsync.status"))
        assert status["read"]["failed_at_once"] >= 1
    finally:
        fresh_emulator.clear_faults()
    eventually(lambda: (m.mnt / "tiered.bin").read_bytes() == b"t" * 3_000_000, timeout=60)
    assert m.stop() == 0
