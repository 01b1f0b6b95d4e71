"""The mount as a branch file server: Samba (scripts/smb.conf.example) serving a real mount,
driven through smbclient; what it did is checked on the share (SDK), at a second mount with
an empty cache, and through a second branch server on that mount."""

from __future__ import annotations

import errno
import os
import re
import time

import pytest

from tests.mount import samba
from tests.mount.helpers import eventually

pytestmark = [
    pytest.mark.mount,
    pytest.mark.skipif(samba.missing() is not None, reason=str(samba.missing())),
]

FAST = ["--writeback-delay", "0.2"]
# NTSTATUS codes (MS-ERREF 2.3.1)
SHARING_VIOLATION = 0xC0000043
FILE_LOCK_CONFLICT = 0xC0000054
LOCK_NOT_GRANTED = 0xC0000055


def _disk_total(path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


@pytest.fixture
def smbd(tmp_path):
    servers: list[samba.Smbd] = []

    def start(path, name: str = "smb") -> samba.Smbd:
        s = samba.Smbd(tmp_path / name, path)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def test_a_branch_server_and_another_branch(mounter, share, share_url, smbd, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    (local / "report.txt").write_bytes(b"quarterly figures\n" * 100)
    (local / "scratch.tmp").write_bytes(b"to be deleted")
    big = os.urandom(3 * 1024 * 1024 + 17)
    (local / "big.bin").write_bytes(big)

    m = mounter(share_url, args=FAST)
    s1 = smbd(m.mnt, "branch1")
    s1.client(
        "mkdir Projects",
        "mkdir Projects\\Apollo",
        f"lcd {local}",
        "put report.txt Projects\\Apollo\\report.txt",
        "put big.bin Projects\\big.bin",
        "put scratch.tmp Projects\\scratch.tmp",
        "rename Projects\\Apollo\\report.txt Projects\\Apollo\\Report-Q3.txt",
        "del Projects\\scratch.tmp",
        "setmode Projects\\Apollo\\Report-Q3.txt +rh",
        # creation times set over SMB (smbclient reads them as local time)
        "utimes Projects\\Apollo\\Report-Q3.txt 2021:03:04-05:06:07 -1 -1 -1",
        "utimes Projects\\Apollo 2020:01:02-03:04:05 -1 -1 -1",
    )
    listing = s1.client("ls Projects\\Apollo\\*", "allinfo Projects\\Apollo\\Report-Q3.txt")
    assert "Report-Q3.txt" in listing and "attributes: RHA" in listing, listing
    # names compare ignoring case, as on the share
    out = s1.client(f"lcd {tmp_path}", "get projects\\APOLLO\\report-q3.TXT fetched.txt")
    assert (tmp_path / "fetched.txt").read_bytes() == b"quarterly figures\n" * 100, out
    # the size Samba reports is the mount's: the share's quota, not the cache's disk
    got = re.search(r"(\d+) blocks of size (\d+)\. (\d+) blocks available", listing)
    assert got is not None, listing
    st = os.statvfs(m.mnt)
    total = int(got[1]) * int(got[2])
    assert abs(total - st.f_blocks * st.f_frsize) <= 0.01 * total, (got[0], st)
    assert total != _disk_total(tmp_path)
    m.wait_drained(60)

    # the share has it all (another client of the share sees the tree)
    assert share.get("Projects/Apollo/Report-Q3.txt") == b"quarterly figures\n" * 100
    assert share.get("Projects/big.bin") == big
    assert not share.exists("Projects/scratch.tmp")
    assert not share.exists("Projects/Apollo/report.txt")
    # the DOS attributes reach the share's own SMB attributes (a Windows client of the share
    # sees them)
    assert {"ReadOnly", "Hidden"} <= share.attributes("Projects/Apollo/Report-Q3.txt")
    # and the creation times a client set reach the share's
    born = share.props("Projects/Apollo/Report-Q3.txt").creation_time
    assert born.timestamp() == time.mktime((2021, 3, 4, 5, 6, 7, 0, 0, -1)), born
    born = share.dir_props("Projects/Apollo").creation_time
    assert born.timestamp() == time.mktime((2020, 1, 2, 3, 4, 5, 0, 0, -1)), born
    # Samba refuses its clients to change a read-only file; a local process is not refused
    # (dosattrib.py): the write-back clears the attribute for the change, then puts it back
    out = s1.client(f"lcd {local}", "put scratch.tmp Projects\\Apollo\\Report-Q3.txt", refused=True)
    assert "NT_STATUS_ACCESS_DENIED" in out, out
    with open(m.mnt / "Projects/Apollo/Report-Q3.txt", "ab") as f:
        f.write(b"appended here\n")
    m.wait_drained(60)
    report = b"quarterly figures\n" * 100 + b"appended here\n"
    assert share.get("Projects/Apollo/Report-Q3.txt") == report
    assert {"ReadOnly", "Hidden"} <= share.attributes("Projects/Apollo/Report-Q3.txt")

    # another branch: a mount with an empty cache, its own Samba
    m2 = mounter(share_url, name="branch2", cache="cache2", args=[*FAST, "--poll-interval", "1"])
    assert (m2.mnt / "Projects/Apollo/Report-Q3.txt").read_bytes() == report
    assert os.getxattr(m2.mnt / "Projects/Apollo/Report-Q3.txt", "user.DOSATTRIB") == (
        os.getxattr(m.mnt / "Projects/Apollo/Report-Q3.txt", "user.DOSATTRIB")
    )
    s2 = smbd(m2.mnt, "branch2")
    info = s2.client("allinfo Projects\\Apollo\\Report-Q3.txt")
    assert "attributes: RHA" in info, info
    s2.client("setmode Projects\\Apollo\\Report-Q3.txt -rh")
    m2.wait_drained(60)
    assert not {"ReadOnly", "Hidden"} & share.attributes("Projects/Apollo/Report-Q3.txt")
    # a client of the share itself hides a file (`attrib +h`: the others stay): the branch's
    # Samba shows it hidden
    share.set_attributes("Projects/big.bin", share.attributes("Projects/big.bin") | {"Hidden"})
    eventually(
        lambda: "attributes: HA" in s2.client("allinfo Projects\\big.bin"),
        timeout=30,
        what="the share's Hidden at the branch",
    )
    out = s2.client(f"lcd {tmp_path}", "get Projects\\big.bin big-from-branch2.bin")
    assert (tmp_path / "big-from-branch2.bin").read_bytes() == big, out
    s2.stop()  # (smbd keeps the mount busy: it goes first)
    s1.stop()
    assert m2.stop() == 0
    assert m.stop() == 0


def test_a_file_locked_by_one_client_of_a_branch_server(mounter, share, share_url, smbd):
    """Two SMB clients of a branch server and a process of the server itself: a byte-range
    lock one client holds refuses the other's lock and writes in that range (Samba keeps it
    as a POSIX lock on the mount, which the server's own processes meet too), a released
    lock is granted, and a file opened without sharing refuses a second open."""
    import fcntl

    from smbprotocol.exceptions import SMBResponseException

    m = mounter(share_url, args=FAST)
    s = smbd(m.mnt)
    a, b = samba.Client(s.port), samba.Client(s.port)
    fa = a.open("ledger.xlsx")
    fa.write(b"0123456789" * 10, 0)
    a.lock(fa, 0, 10)
    fb = b.open("ledger.xlsx")
    with pytest.raises(SMBResponseException) as ei:
        b.lock(fb, 0, 10)
    assert ei.value.status == LOCK_NOT_GRANTED
    with pytest.raises(SMBResponseException) as ei:
        fb.write(b"X", 5)
    assert ei.value.status == FILE_LOCK_CONFLICT
    b.lock(fb, 20, 10)  # another range: granted
    fb.write(b"B", 25)
    fd = os.open(m.mnt / "ledger.xlsx", os.O_RDWR)
    try:
        with pytest.raises(OSError) as oe:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
        assert oe.value.errno in (errno.EAGAIN, errno.EACCES)
        a.lock(fa, 0, 10, unlock=True)
        b.lock(fb, 0, 10)  # released: granted now
        b.lock(fb, 0, 10, unlock=True)
        b.lock(fb, 20, 10, unlock=True)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)  # and to the server's processes
    finally:
        os.close(fd)
    # a document opened without sharing (as Office does): a second open is refused
    fx = a.open("report.docx", share_modes=0)
    with pytest.raises(SMBResponseException) as ei:
        b.open("report.docx")
    assert ei.value.status == SHARING_VIOLATION
    for f in (fa, fb, fx):
        f.close()
    a.close()
    b.close()
    m.wait_drained(60)
    want = bytearray(b"0123456789" * 10)
    want[25] = ord("B")
    assert share.get("ledger.xlsx") == bytes(want)
    s.stop()  # (smbd keeps the mount busy: it goes first)
    assert m.stop() == 0
