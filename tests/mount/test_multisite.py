"""Several real mounts of one share (each its own cache and --site-name): changes made at one
site, or directly through the SDK, show at the others without remounting."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.mount.helpers import eventually, read, write

FAST = ["--poll-interval", "1", "--attr-timeout", "1", "--writeback-delay", "0.2"]


def two_sites(mounter, share_url, extra_b: list[str] | None = None):
    a = mounter(share_url, "a", "cache-a", [*FAST, "--site-name", "siteA"])
    b = mounter(share_url, "b", "cache-b", [*FAST, "--site-name", "siteB", *(extra_b or [])])
    return a, b


def test_changes_at_one_site_show_at_the_other(mounter, share_url, share):
    a, b = two_sites(mounter, share_url)
    A, B = a.mnt, b.mnt
    os.mkdir(A / "d")
    write(A / "d" / "f.txt", b"first version\n")
    write(A / "top.bin", b"x" * 10000)
    a.wait_drained()

    # creates (a file in a directory B never listed, a file B already listed the root for)
    eventually(lambda: read(B / "d" / "f.txt") == b"first version\n", what="create")
    assert sorted(os.listdir(B)) == ["d", "top.bin"]
    assert read(B / "top.bin") == b"x" * 10000  # B caches both now

    # modify in place (same size), append, truncate
    write(A / "d" / "f.txt", b"FIRST VERSION\n")
    a.wait_drained()
    eventually(lambda: read(B / "d" / "f.txt") == b"FIRST VERSION\n", what="rewrite")
    write(A / "d" / "f.txt", b"more\n", "ab")
    a.wait_drained()
    eventually(lambda: os.stat(B / "d" / "f.txt").st_size == 19, what="append (stat)")
    assert read(B / "d" / "f.txt") == b"FIRST VERSION\nmore\n"
    os.truncate(A / "top.bin", 100)
    a.wait_drained()
    eventually(lambda: os.stat(B / "top.bin").st_size == 100, what="truncate (stat)")
    assert read(B / "top.bin") == b"x" * 100

    # renames: a file within its directory, a directory, a file across directories
    os.rename(A / "d" / "f.txt", A / "d" / "g.txt")
    a.wait_drained()
    eventually(lambda: os.listdir(B / "d") == ["g.txt"], what="file rename")
    assert read(B / "d" / "g.txt") == b"FIRST VERSION\nmore\n"
    os.rename(A / "d", A / "e")
    a.wait_drained()
    eventually(lambda: sorted(os.listdir(B)) == ["e", "top.bin"], what="directory rename")
    assert read(B / "e" / "g.txt") == b"FIRST VERSION\nmore\n"
    os.rename(A / "top.bin", A / "e" / "top.bin")
    a.wait_drained()
    eventually(lambda: sorted(os.listdir(B / "e")) == ["g.txt", "top.bin"], what="move")
    assert os.listdir(B) == ["e"]

    # deletes: a file, then a directory
    os.unlink(A / "e" / "g.txt")
    a.wait_drained()
    eventually(lambda: not os.path.exists(B / "e" / "g.txt"), what="unlink")
    os.unlink(A / "e" / "top.bin")
    os.rmdir(A / "e")
    a.wait_drained()
    eventually(lambda: os.listdir(B) == [], what="rmdir")

    # the same straight through the SDK
    share.put("sdk/new.txt", b"from the sdk")
    eventually(lambda: read(B / "sdk" / "new.txt") == b"from the sdk", what="sdk create")
    eventually(lambda: read(A / "sdk" / "new.txt") == b"from the sdk", what="sdk create at A")
    share.put("sdk/new.txt", b"changed by the sdk, longer")
    eventually(lambda: read(B / "sdk" / "new.txt") == b"changed by the sdk, longer", what="sdk")
    share.client.get_file_client("sdk/new.txt").delete_file()
    eventually(lambda: os.listdir(B / "sdk") == [], what="sdk delete")
    assert b.pending()["files"] == 0 and b.pending()["ops"] == 0  # B never wrote anything
    st = json.loads(os.getxattr(B, "user.fsync.status"))
    assert st["poll"]["rounds"] > 0 and st["conflicts"] == 0
    assert a.stop() == 0 and b.stop() == 0


def test_a_missing_name_is_remembered_by_the_kernel_until_it_appears(mounter, share_url, share):
    """A lookup that finds no such name lets the kernel remember that while the directory's
    listing counts as fresh for a miss (--attr-timeout): looking again costs the daemon
    nothing (its handler logs each miss with --debug). A name created elsewhere meanwhile is
    pushed out of the kernel by the poll that finds it."""
    b = mounter(
        share_url, "b", "cache-b", ["--poll-interval", "1", "--attr-timeout", "60", "--debug"]
    )
    share.put("neg/present.txt", b"here")
    assert os.listdir(b.mnt / "neg") == ["present.txt"]
    for _ in range(20):
        assert not os.path.exists(b.mnt / "neg" / "absent.txt")
    share.put("neg/absent.txt", b"now here")
    eventually(lambda: os.path.exists(b.mnt / "neg" / "absent.txt"), what="the new name")
    assert read(b.mnt / "neg" / "absent.txt") == b"now here"
    assert b.stop() == 0
    log = b.log_path.read_text().splitlines()
    assert len([x for x in log if "absent.txt" in x and "no such name" in x]) == 1


def test_sync_now_forces_a_pass(mounter, share_url, share):
    # No polling and long attribute timeouts: only sync-now can bring the change in.
    b = mounter(share_url, "b", "cache-b", ["--poll-interval", "0", "--attr-timeout", "60"])
    share.put("dir/one.txt", b"1")
    assert os.listdir(b.mnt / "dir") == ["one.txt"]
    assert read(b.mnt / "dir" / "one.txt") == b"1"
    share.put("dir/two.txt", b"22")
    share.put("dir/one.txt", b"one, rewritten")
    b.sync_now()
    assert sorted(os.listdir(b.mnt / "dir")) == ["one.txt", "two.txt"]
    assert read(b.mnt / "dir" / "one.txt") == b"one, rewritten"
    assert read(b.mnt / "dir" / "two.txt") == b"22"
    assert b.stop() == 0


def test_close_to_open_and_open_readers_keep_their_version(mounter, share_url):
    # B does not poll: only open() revalidation can show it A's new version.
    a = mounter(share_url, "a", "cache-a", [*FAST, "--site-name", "siteA"])
    b = mounter(
        share_url,
        "b",
        "cache-b",
        ["--poll-interval", "0", "--attr-timeout", "1", "--site-name", "siteB"],
    )
    A, B = a.mnt, b.mnt
    old = bytes(range(256)) * 4096  # 1 MiB, one block
    write(A / "f.bin", old)
    a.wait_drained()
    eventually(lambda: read(B / "f.bin") == old, what="first version at B")
    assert os.getxattr(B / "f.bin", "user.fsync.state") == b"local"

    # a reader opened at B before A replaces the file
    with open(B / "f.bin", "rb") as reader:
        head = reader.read(1000)
        new = b"N" * (len(old) + 5000)
        write(A / "f.bin.tmp", new)
        os.rename(A / "f.bin.tmp", A / "f.bin")
        a.wait_drained()
        time.sleep(1.5)  # past --attr-timeout: what B knows is stale now
        rest = reader.read()
        assert head + rest == old  # the reader that was open finishes on its version

    time.sleep(1.2)
    assert read(B / "f.bin") == new  # the next open sees the new version at once
    assert os.stat(B / "f.bin").st_size == len(new)
    st = json.loads(os.getxattr(B, "user.fsync.status"))
    assert st["revalidate"]["changed"] >= 1  # found by the open, not by a poll (B does not poll)
    assert a.stop() == 0 and b.stop() == 0


def drain(m) -> None:
    os.setxattr(m.mnt, "user.fsync.control", b"drain")
    m.wait_drained(60)


@pytest.mark.parametrize("leases", [False, True], ids=["plain", "leases"])
def test_simultaneous_edits_keep_both_versions(mounter, share_url, share, leases):
    slow = ["--poll-interval", "1", "--attr-timeout", "1", "--writeback-delay", "60"]
    slow += [] if leases else ["--no-upload-leases"]
    a = mounter(share_url, "a", "cache-a", [*slow, "--site-name", "siteA"])
    b = mounter(share_url, "b", "cache-b", [*slow, "--site-name", "siteB"])
    A, B = a.mnt, b.mnt
    for name in ("f.txt", "g.txt", "h.txt"):
        share.put(f"d/{name}", b"base of " + name.encode())
    for m in (A, B):
        eventually(lambda m=m: sorted(os.listdir(m / "d")) == ["f.txt", "g.txt", "h.txt"])
        for name in ("f.txt", "g.txt", "h.txt"):
            assert read(m / "d" / name) == b"base of " + name.encode()

    # f: A writes first and uploads first; B's later write wins the name at B's upload
    write(A / "d" / "f.txt", b"f from A")
    time.sleep(0.05)
    write(B / "d" / "f.txt", b"f from B, newer")
    drain(a)
    drain(b)
    # g: A writes first but uploads last; B's newer version keeps the name
    write(A / "d" / "g.txt", b"g from A, older")
    time.sleep(0.05)
    write(B / "d" / "g.txt", b"g from B")
    drain(b)
    drain(a)
    # h: deleted at A while B changes it: B's version comes back
    os.unlink(A / "d" / "h.txt")
    drain(a)
    write(B / "d" / "h.txt", b"h kept by B")
    drain(b)

    want = {
        "f.txt": b"f from B, newer",
        "f-siteB.txt": b"f from A",
        "g.txt": b"g from B",
        "g-siteA.txt": b"g from A, older",
        "h.txt": b"h kept by B",
    }
    assert {p: share.get(p) for p, is_dir in share.walk("d").items() if not is_dir} == {
        f"d/{k}": v for k, v in want.items()
    }
    for m in (A, B):
        eventually(lambda m=m: sorted(os.listdir(m / "d")) == sorted(want), what=f"at {m}")
        for name, data in want.items():
            eventually(lambda m=m, n=name, d=data: read(m / "d" / n) == d, what=f"{m}/{name}")
    status = [json.loads(os.getxattr(m, "user.fsync.status")) for m in (A, B)]
    assert [st["conflicts"] for st in status] == [1, 2]
    if leases:  # every upload leased its file and let it go
        for st in status:
            assert st["leases"]["acquired"] >= 1
            assert st["leases"]["acquired"] == st["leases"]["released"]
        props = share.props("d/f.txt")
        assert props.lease.state == "available", props.lease
    assert a.stop() == 0 and b.stop() == 0


def test_polling_cost_is_bounded_when_nothing_changes(mounter, emulator, share_url, share):
    ndirs, nfiles = 60, 4
    for d in range(ndirs):
        share.client.create_directory(f"d{d:02}")
        for f in range(nfiles):
            share.client.get_file_client(f"d{d:02}/f{f}").upload_file(b"x")
    # Long attribute timeout: only the poller re-lists. Hot window = 10 intervals = 3 s.
    m = mounter(share_url, "m", "cache", ["--poll-interval", "0.3", "--attr-timeout", "60"])
    seen = sum(len(files) for _root, _dirs, files in os.walk(m.mnt))  # lists every directory
    assert seen == ndirs * nfiles
    time.sleep(3.5)  # every directory has gone cold

    def rounds() -> int:
        return json.loads(os.getxattr(m.mnt, "user.fsync.status"))["poll"]["rounds"]

    r0, s0 = rounds(), emulator.stats()
    time.sleep(3)
    r1, s1 = rounds(), emulator.stats()
    calls = s1["total"] - s0["total"]
    ops = {k: v - s0["by_op"].get(k, 0) for k, v in s1["by_op"].items() if v != s0["by_op"].get(k)}
    assert r1 - r0 >= 3
    per_round = calls / (r1 - r0)
    # the root plus one sweep slice (16 directories), not one call per directory; the calls
    # of a round under way at either reading are counted without its round (one more)
    assert calls <= (r1 - r0 + 1) * (1 + 16 + 1), (per_round, ops)
    assert calls < (r1 - r0 + 1) * ndirs / 2, (per_round, ops)
    assert set(ops) <= {"ListFilesAndDirectories", "ListDirectoriesAndFiles"}, ops

    # the sweep still reaches every directory: a change in a cold one shows up
    share.client.get_file_client("d42/new").upload_file(b"new")
    eventually(lambda: "new" in os.listdir(m.mnt / "d42"), timeout=20, what="sweep")
    print(f"polling cost with nothing changed: {per_round:.1f} calls per interval, {ndirs} dirs")
    assert m.stop() == 0


@pytest.mark.parametrize("leases", [False, True], ids=["plain", "leases"])
def test_three_sites_random_edits_lose_nothing(mounter, share_url, share, leases):
    import random

    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)
    slow = ["--poll-interval", "1", "--attr-timeout", "1", "--writeback-delay", "60"]
    slow += [] if leases else ["--no-upload-leases"]
    sites = {
        s: mounter(share_url, s, f"cache-{s}", [*slow, "--site-name", s]) for s in ("x", "y", "z")
    }
    nfiles = 24
    for i in range(nfiles):
        share.put(f"r/f{i}.txt", f"base {i}".encode())
    for m in sites.values():
        eventually(lambda m=m: len(os.listdir(m.mnt / "r")) == nfiles, what="base files")
    written: dict[int, list[bytes]] = {i: [] for i in range(nfiles)}  # in write order
    for _ in range(48):
        s, i = rnd.choice(sorted(sites)), rnd.randrange(nfiles)
        data = f"{s} wrote f{i} #{rnd.randrange(10**6)}".encode() * rnd.randint(1, 50)
        write(sites[s].mnt / "r" / f"f{i}.txt", data)
        # a site that writes the same file twice keeps only its last version
        written[i] = [d for d in written[i] if not d.startswith(s.encode() + b" ")] + [data]
        time.sleep(0.01)
    for s in rnd.sample(sorted(sites), 3):
        drain(sites[s])
    files = {p: share.get(p) for p, is_dir in share.walk("r").items() if not is_dir}
    for i in range(nfiles):
        mine = {
            p: d for p, d in files.items() if p.split("/")[1].split(".")[0].split("-")[0] == f"f{i}"
        }
        want = written[i] or [f"base {i}".encode()]
        assert sorted(mine.values()) == sorted(want), (seed, i, mine, want)
        assert mine[f"r/f{i}.txt"] == want[-1], (seed, i)  # the latest write keeps the name
    conflicts = sum(
        json.loads(os.getxattr(m.mnt, "user.fsync.status"))["conflicts"] for m in sites.values()
    )
    # every version after the first one uploaded of a file met a changed share: one each
    assert conflicts == sum(max(0, len(v) - 1) for v in written.values()), seed
    for m in sites.values():
        os.setxattr(m.mnt, "user.fsync.sync", b"1")
        assert sorted(os.listdir(m.mnt / "r")) == sorted(p.split("/")[1] for p in files), seed
    for m in sites.values():
        assert m.stop() == 0


def test_conflict_names():
    from fsync_fuse.conflicts import conflict_name, safe_site

    assert conflict_name("report.txt", "nyc") == "report-nyc.txt"
    assert conflict_name("report.txt", "nyc", 2) == "report-nyc-2.txt"
    assert conflict_name("archive.tar.gz", "nyc") == "archive.tar-nyc.gz"
    assert conflict_name(".bashrc", "nyc") == ".bashrc-nyc"
    assert conflict_name("Makefile", "nyc", 1) == "Makefile-nyc-1"
    assert safe_site("host.example.com") == "host_example_com"
    assert safe_site('a:b"c') == "a_b_c" and safe_site("...") == "site"
    # a dirty file does not follow a rename that moved a version aside (names.py)
    from fsync_fuse.names import looks_like_conflict_copy as aside

    assert aside("report-nyc.txt", "report.txt") and aside("report-nyc-2.txt", "report.txt")
    assert aside(".bashrc-nyc", ".bashrc") and aside("Makefile-nyc-1", "Makefile")
    assert not aside("summary.txt", "report.txt") and not aside("report.txt.bak", "report.txt")
    assert not aside("report-.txt", "report.txt") and not aside("report-v1.2.txt", "report.txt")


def test_leftover_upload_lease_is_broken_at_start(mounter, share_url, share):
    """A lease recorded by a run that crashed is broken when the mount starts again, so the
    file can be written (by us and by everyone else)."""
    import lmdb

    m = mounter(share_url, "m", "cache", ["--upload-leases", "--writeback-delay", "0.2"])
    write(m.mnt / "f.txt", b"one")
    m.wait_drained()
    assert m.stop() == 0
    # what a crash between acquiring and releasing leaves: a recorded lease, held on the share
    lease_id = "6f1c2a2e-0000-4000-8000-000000000001"
    share.client.get_file_client("f.txt").acquire_lease(lease_id=lease_id)
    env = lmdb.open(str(m.cache_dir / "index.lmdb"), max_dbs=64, subdir=True)
    with env.begin(write=True, db=env.open_db(b"leases")) as txn:
        txn.put((99).to_bytes(8, "big"), json.dumps({"path": "f.txt", "id": lease_id}).encode())
    env.close()
    assert share.props("f.txt").lease.state == "leased"

    m.start()
    eventually(lambda: share.props("f.txt").lease.state != "leased", what="lease broken")
    write(m.mnt / "f.txt", b"two, after the restart")
    m.wait_drained()
    assert share.get("f.txt") == b"two, after the restart"
    st = json.loads(os.getxattr(m.mnt, "user.fsync.status"))
    assert st["leases"]["broken"] == 1
    assert m.stop() == 0


def test_concurrent_uploads_with_leases_lose_nothing(mounter, share_url, share):
    """Three sites upload their edit of one file at the same moment: with leases, each one
    checks and writes alone, so every version survives (newest under the name)."""
    slow = ["--poll-interval", "1", "--attr-timeout", "1", "--writeback-delay", "60"]
    sites = [
        mounter(share_url, s, f"cache-{s}", [*slow, "--upload-leases", "--site-name", s])
        for s in ("x", "y", "z")
    ]
    share.put("c/f.bin", b"base")
    for m in sites:
        eventually(lambda m=m: read(m.mnt / "c" / "f.bin") == b"base", what="base")
    versions = []
    for m in sites:
        data = m.mnt.name.encode() * 300_000  # large enough for uploads to overlap
        write(m.mnt / "c" / "f.bin", data)
        versions.append(data)
        time.sleep(0.01)
    for m in sites:
        os.setxattr(m.mnt, "user.fsync.control", b"drain")
    for m in sites:
        m.wait_drained(60)
    files = {p: share.get(p) for p, is_dir in share.walk("c").items() if not is_dir}
    assert sorted(files.values()) == sorted(versions), sorted(files)
    assert files["c/f.bin"] == versions[-1]
    for m in sites:
        st = json.loads(os.getxattr(m.mnt, "user.fsync.status"))
        assert st["leases"]["acquired"] == st["leases"]["released"]
    assert share.props("c/f.bin").lease.state == "available"
    for m in sites:
        assert m.stop() == 0


def test_interrupted_upload_is_not_a_conflict(mounter, emulator, share_url, share):
    """An upload killed after it changed the share (new ETag, new last-write time) must not
    be taken for another site's change at the next start: no conflict copy, our data wins."""
    m = mounter(share_url, "m", "cache", ["--writeback-delay", "0.2", "--site-name", "me"])
    write(m.mnt / "report.txt", b"A" * (1 << 20))
    m.wait_drained()
    emulator.set_faults(latency_ms=400)
    try:
        new = b"B" * (9 << 20)
        puts0 = emulator.stats()["by_op"].get("PutRange", 0)
        write(m.mnt / "report.txt", new)  # closed: durable in the cache
        eventually(
            lambda: emulator.stats()["by_op"].get("PutRange", 0) > puts0,
            timeout=30,
            what="the upload started",
        )
        m.kill9()  # the share took the resize and maybe some ranges, not all
    finally:
        emulator.clear_faults()
    m.start()
    m.wait_drained()
    assert share.walk() == {"report.txt": False}
    assert share.get("report.txt") == new
    assert json.loads(os.getxattr(m.mnt, "user.fsync.status"))["conflicts"] == 0
    assert m.stop() == 0


def test_overwrite_with_shorter_content(mounter, share_url, share):
    """open(O_TRUNC) arrives as an open flag (libfuse's atomic_o_trunc), not as a setattr."""
    m = mounter(share_url, "m", "cache", ["--writeback-delay", "0.2"])
    write(m.mnt / "f.txt", b"a long first version\n")
    m.wait_drained()
    write(m.mnt / "f.txt", b"short")
    assert os.stat(m.mnt / "f.txt").st_size == 5
    assert read(m.mnt / "f.txt") == b"short"
    m.wait_drained()
    assert share.get("f.txt") == b"short"
    assert m.stop() == 0
