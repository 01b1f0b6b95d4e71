"""A real source tree (thousands of files, an sdist fetched once with `pip download`) extracted
into the mount with tar, then compared file by file through a second mount on an empty cache."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import tarfile

import pytest

from scripts.bench.smallfiles import fetch_sdist
from tests.mount.helpers import REPO, file_sha

pytestmark = [pytest.mark.mount, pytest.mark.slow]

SDIST = "pygments==2.19.1"
DATA = REPO / "tests" / ".data-cache"


@pytest.fixture(scope="session")
def sdist_path():
    try:
        return fetch_sdist(SDIST, DATA)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"cannot download the {SDIST} sdist: {exc}")


def expected(tar_path):
    """path -> (kind, sha or target, mode, mtime seconds) from the tarball itself."""
    out = {}
    with tarfile.open(tar_path) as tf:
        for ti in tf.getmembers():
            name = ti.name.rstrip("/")
            if ti.isdir():
                out[name] = ("d", None, ti.mode & 0o7777, None)
            elif ti.issym():
                out[name] = ("l", ti.linkname, None, None)
            elif ti.isfile():
                digest = hashlib.sha256(tf.extractfile(ti).read()).hexdigest()
                out[name] = ("f", digest, ti.mode & 0o7777, int(ti.mtime))
    return out


def seen(root):
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(p), None, None)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", None, stat.S_IMODE(st.st_mode), None)
            else:
                out[rel] = ("f", file_sha(p), stat.S_IMODE(st.st_mode), int(st.st_mtime))
    return out


def test_extract_sdist_and_compare_after_remount(mounter, share_url, sdist_path):
    want = expected(sdist_path)
    assert sum(1 for v in want.values() if v[0] == "f") > 2000
    m = mounter(share_url, args=["--writeback-delay", "1"])
    subprocess.run(["tar", "xzf", str(sdist_path), "-C", str(m.mnt)], check=True)
    r = m.cli_unmount("--quiet", timeout=300)
    assert r.returncode == 0, r.stderr
    assert m.proc.wait(60) == 0

    m2 = mounter(share_url, name="fresh", cache="fresh-cache")
    got = seen(m2.mnt)
    # tar creates parent directories that have no entry of their own in some archives
    missing = {p for p in want if p not in got}
    assert not missing, sorted(missing)[:10]
    for path, entry in want.items():
        if entry[0] == "d":
            assert got[path][0] == "d", path
        else:
            assert got[path] == entry, path
    assert m2.stop() == 0
