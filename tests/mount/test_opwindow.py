"""Which queued operations the worker may apply side by side (fsync_fuse/opwindow.py)."""

from __future__ import annotations

import lmdb

from fsync_fuse.opwindow import OpWindow, depends, footprint
from fsync_fuse.outbox import Outbox


def queue(tmp_path, ops: list[dict]) -> Outbox:
    env = lmdb.open(str(tmp_path / "env"), max_dbs=8, map_size=1 << 24)
    outbox = Outbox(env)
    with env.begin(write=True) as txn:
        appended = [(outbox.append(txn, op), op) for op in ops]
    outbox.added(appended)
    return outbox


def create(ino: int, path: str) -> dict:
    return {"op": "create", "ino": ino, "dirs": [1], "path": path}


def test_independence_by_path_and_inode():
    def dep(a: dict, b: dict) -> bool:
        return depends(footprint(a), footprint(b))

    assert not dep(create(2, "a/x"), create(3, "a/y"))
    assert not dep(create(2, "a/x"), create(3, "b/x"))
    assert dep(create(3, "a/x"), {"op": "mkdir", "ino": 2, "path": "a"})  # parent first
    assert dep(create(3, "A/X"), create(2, "a/x"))  # the share ignores case
    rename = {"op": "rename", "ino": 5, "src": "a", "dst": "c", "victim": None}
    assert dep(create(3, "c/z"), rename)  # under the destination
    assert dep(create(3, "a/z"), rename)  # under the source
    assert dep({"op": "setattr", "ino": 5, "path": "q"}, rename)  # same inode
    over = {"op": "rename", "ino": 6, "src": "m", "dst": "n", "victim": 9}
    assert dep({"op": "unlink", "ino": 9, "path": "elsewhere"}, over)  # the replaced file
    assert dep(create(3, "anything"), {"op": "setattr", "ino": 1, "path": ""})  # the root


def test_window_starts_independent_ops_and_keeps_order(tmp_path):
    ops = [
        {"op": "mkdir", "ino": 2, "dirs": [1], "path": "a"},
        create(3, "a/x"),  # waits for the mkdir
        create(4, "b"),  # independent
        create(5, "a/y"),  # waits for the mkdir
        {"op": "rename", "ino": 4, "dirs": [1], "src": "b", "dst": "c", "victim": None},
        create(6, "d"),
    ]
    outbox = queue(tmp_path, ops)
    w = OpWindow(outbox, parallel=8)
    first = w.ready()
    assert [op["path"] if "path" in op else op["src"] for _, op in first] == ["a", "b", "d"]
    for seq, _ in first:
        w.running.add(seq)
    assert w.ready() == []  # everything else waits for something running
    seqs = {op.get("path", op.get("src")): seq for seq, op in first}
    w.done(seqs["a"])
    assert [op["path"] for _, op in w.ready()] == ["a/x", "a/y"]
    w.done(seqs["b"])
    assert [op["op"] for _, op in w.ready()] == ["create", "create", "rename"]


def test_window_respects_the_parallel_limit(tmp_path):
    outbox = queue(tmp_path, [create(10 + i, f"f{i}") for i in range(20)])
    w = OpWindow(outbox, parallel=3)
    got = w.ready()
    assert len(got) == 3
    for seq, _ in got:
        w.running.add(seq)
    assert w.ready() == []
    w.done(got[0][0])
    assert len(w.ready()) == 1
