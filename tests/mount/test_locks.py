"""flock and POSIX byte-range locks on the mount behave as on a local filesystem between the
processes of this machine (the kernel keeps them: the mount implements no lock requests, so
FUSE handles both locally). Samba relies on them. They do not reach other sites (README)."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.mount

_TRY = textwrap.dedent(
    """
    import fcntl, sys
    path, kind = sys.argv[1], sys.argv[2]
    with open(path, "r+b") as fh:
        try:
            if kind == "flock":
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                start, length = int(sys.argv[3]), int(sys.argv[4])
                fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)
        except BlockingIOError:
            print("busy")
        else:
            print("got")
    """
)


def _try(path, kind: str, *args: int) -> str:
    r = subprocess.run(
        [sys.executable, "-c", _TRY, str(path), kind, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_flock_and_byte_range_locks_between_processes(mounter, share_url):
    m = mounter(share_url)
    p = m.mnt / "locked.db"
    p.write_bytes(bytes(4096))
    with open(p, "r+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        assert _try(p, "flock") == "busy"
        fcntl.flock(fh, fcntl.LOCK_UN)
        assert _try(p, "flock") == "got"
    with open(p, "r+b") as fh:
        # bytes 100-199 locked here: an overlapping range is refused, a disjoint one is not
        fcntl.lockf(fh, fcntl.LOCK_EX, 100, 100)
        assert _try(p, "range", 150, 10) == "busy"
        assert _try(p, "range", 0, 100) == "got"
        assert _try(p, "range", 200, 50) == "got"
        fcntl.lockf(fh, fcntl.LOCK_UN, 100, 100)
        assert _try(p, "range", 150, 10) == "got"
    # a lock is not content: the file is as it was
    assert p.read_bytes() == bytes(4096)
    assert m.stop() == 0
