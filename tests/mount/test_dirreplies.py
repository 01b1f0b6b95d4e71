"""readdir answers kept per directory (fsync_fuse/dirreplies.py) never go stale: after any mix
of namespace changes, what the cache serves from any offset equals what a cache built from
scratch serves. Runs on the real namespace in a real LMDB environment."""

from __future__ import annotations

import os
import random

import lmdb
import pytest

from fsync_fuse.attrs import DIR, FILE
from fsync_fuse.dirreplies import DirReplies
from fsync_fuse.namespace import ROOT, FsError, Namespace
from remote.base import RemoteEntry


def attrs_of(rec) -> tuple:
    """What the kernel would be told about an entry (the fields KernelAttributes takes from it)."""
    return (rec.ino, rec.st_mode, rec.size, rec.mtime_ns, rec.ctime_ns, rec.uid, rec.gid)


def served(
    replies: DirReplies, ns: Namespace, dir_ino: int, start: int, limit: int | None = None
) -> list:
    out = []
    for off, name, attrs, ino in replies.replies(dir_ino, start, ns.children, attrs_of):
        out.append((off, name, attrs, ino))
        if limit is not None and len(out) >= limit:
            break  # the kernel's buffer is full: a request ends early
    return out


@pytest.fixture
def env(tmp_path):
    env = lmdb.open(str(tmp_path / "ns"), max_dbs=32, map_size=1 << 30)
    yield env
    env.close()


@pytest.mark.parametrize("seed", range(6))
def test_cached_replies_match_a_fresh_build_after_any_change(env, seed):
    rnd = random.Random(seed)
    cached = DirReplies(max_entries=rnd.choice([40, 400, 100_000]))
    cached.CHUNK = rnd.choice([3, 8, 512])  # small chunks exercise the chunk-by-chunk path
    dirs = [ROOT]
    files: list[int] = []
    ns = Namespace(env, uid=os.getuid(), gid=os.getgid(), on_dir_change=cached.changed)
    never = lambda ino: False  # noqa: E731
    for step in range(400):
        r = rnd.random()
        parent = rnd.choice(dirs)
        try:
            if r < 0.3:
                kind = DIR if rnd.random() < 0.2 else FILE
                rec = ns.create(parent, f"n{rnd.randrange(60)}", kind, 0o644, 0, 0)
                (dirs if kind == DIR else files).append(rec.ino)
            elif r < 0.45 and files:
                ino = rnd.choice(files)
                ns.wrote(ino, rnd.randrange(1, 1 << 20))
            elif r < 0.55 and files:
                ino = rnd.choice(files)
                ns.setattr(ino, mode=rnd.choice([0o600, 0o644]), queue=rnd.random() < 0.5)
            elif r < 0.65:
                kids = ns.children(parent, 0, 1000)
                if kids:
                    _, name, rec = rnd.choice(kids)
                    ns.remove(parent, name, is_dir=rec.is_dir, referenced=never)
            elif r < 0.8:
                kids = ns.children(parent, 0, 1000)
                if kids:
                    _, name, rec = rnd.choice(kids)
                    ns.rename(
                        parent,
                        name,
                        rnd.choice(dirs),
                        f"m{rnd.randrange(60)}",
                        noreplace=False,
                        referenced=never,
                    )
            elif r < 0.9:
                # a share listing: some entries changed elsewhere, some new, some gone
                kids = ns.children(parent, 0, 1000)
                entries = [
                    RemoteEntry(
                        name,
                        rec.is_dir,
                        size=rnd.randrange(5000) if not rec.is_dir else 0,
                        file_id=f"id{rec.ino}",
                        etag=f"e{step}",
                        last_write_ns=rnd.randrange(1, 1 << 60) // 100 * 100,
                        attributes="Directory" if rec.is_dir else "Archive",
                    )
                    for _, name, rec in kids
                    if rnd.random() < 0.8
                ]
                entries.append(RemoteEntry(f"s{step}", False, size=7, file_id=f"x{step}"))
                ns.merge_listing(parent, entries, {}, busy=never, referenced=never)
            else:
                ns.flush()
        except FsError:
            pass
        # every directory that still exists, from the start and from a random offset
        for d in list(dirs):
            if ns.get(d) is None or (ns.get(d).parent == 0 and d != ROOT):
                dirs.remove(d)
                continue
            fresh = DirReplies()
            want = served(fresh, ns, d, 0)
            partial = served(cached, ns, d, 0, rnd.choice([1, 2, 5]))
            assert partial == want[: len(partial)]
            assert served(cached, ns, d, 0) == want, f"seed {seed} step {step} dir {d}"
            if want:
                start = rnd.choice(want)[0]
                assert served(cached, ns, d, start) == served(fresh, ns, d, start)
    assert cached.stats["served"] > cached.stats["built"]  # the cache was used at all


def test_a_big_directory_is_kept_a_chunk_at_a_time(env):
    replies = DirReplies()
    replies.CHUNK = 16
    ns = Namespace(env, uid=os.getuid(), gid=os.getgid(), on_dir_change=replies.changed)
    for i in range(100):
        ns.create(ROOT, f"f{i:03d}", FILE, 0o644, 0, 0)
    got = served(replies, ns, ROOT, 0)
    assert [name for _, name, _, _ in got] == [f"f{i:03d}".encode() for i in range(100)]
    assert replies._count <= 16  # only the chunk being read stays
    # a reader that stops mid-chunk goes on from where the kernel says
    first = served(replies, ns, ROOT, 0, 20)
    rest = served(replies, ns, ROOT, first[-1][0])
    assert first + rest == got
