"""The mount as a branch file server: Samba (scripts/smb.conf.example) serving a real mount,
driven through smbclient; what it did is checked on the share (SDK), at a second mount with
an empty cache, and through a second branch server on that mount."""

from __future__ import annotations

import os
import re

import pytest

from tests.mount import samba
from tests.mount.helpers import eventually

pytestmark = [
    pytest.mark.mount,
    pytest.mark.skipif(samba.missing() is not None, reason=str(samba.missing())),
]

FAST = ["--writeback-delay", "0.2"]


def _set_attributes(share, path: str, attributes: str) -> None:
    from azure.storage.fileshare import ContentSettings

    share.client.get_file_client(path).set_http_headers(
        ContentSettings(),
        file_attributes=attributes,
        file_creation_time="preserve",
        file_last_write_time="preserve",
        file_permission="preserve",
    )


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
    # sees them); ReadOnly is not mapped (dosattrib.py says why)
    attrs = str(share.props("Projects/Apollo/Report-Q3.txt").file_attributes)
    assert "Hidden" in attrs and "ReadOnly" not in attrs, attrs

    # another branch: a mount with an empty cache, its own Samba
    m2 = mounter(share_url, name="branch2", cache="cache2", args=[*FAST, "--poll-interval", "1"])
    assert (m2.mnt / "Projects/Apollo/Report-Q3.txt").read_bytes() == b"quarterly figures\n" * 100
    assert os.getxattr(m2.mnt / "Projects/Apollo/Report-Q3.txt", "user.DOSATTRIB") == (
        os.getxattr(m.mnt / "Projects/Apollo/Report-Q3.txt", "user.DOSATTRIB")
    )
    s2 = smbd(m2.mnt, "branch2")
    info = s2.client("allinfo Projects\\Apollo\\Report-Q3.txt")
    assert "attributes: RHA" in info, info
    s2.client("setmode Projects\\Apollo\\Report-Q3.txt -rh")
    m2.wait_drained(60)
    attrs = str(share.props("Projects/Apollo/Report-Q3.txt").file_attributes)
    assert "Hidden" not in attrs, attrs
    # a client of the share itself hides a file (`attrib +h`: the others stay): the branch's
    # Samba shows it hidden
    old = str(share.props("Projects/big.bin").file_attributes)
    _set_attributes(share, "Projects/big.bin", old.replace(" ", "") + "|Hidden")
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
