"""The metadata trees of workloads 6 and 7: one layout, written to local disk or straight into
the emulator's store (while it is stopped), so 100,000 or 1,000,000 entries take seconds.

Layout: top directories t0000.. each holding `fanout` directories d000.., each holding `fanout`
empty-content files of deterministic sizes (sparse on the share), until `entries` entries exist.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FANOUT = 100


@dataclass(frozen=True)
class Entry:
    rel: str  # relative to the tree root
    is_dir: bool
    size: int


def file_size(index: int) -> int:
    return (index * 7919) % 65536


def layout(entries: int, fanout: int = FANOUT) -> Iterator[Entry]:
    """Entries in creation order (every parent before its children)."""
    n = 0
    top = 0
    while n < entries:
        tname = f"t{top:04d}"
        yield Entry(tname, True, 0)
        n += 1
        for d in range(fanout):
            if n >= entries:
                return
            dname = f"{tname}/d{d:03d}"
            yield Entry(dname, True, 0)
            n += 1
            for f in range(fanout):
                if n >= entries:
                    return
                yield Entry(f"{dname}/f{f:03d}.dat", False, file_size(n))
                n += 1
        top += 1


def summary(entries: int, fanout: int = FANOUT) -> dict[str, int]:
    """What a correct listing of the tree (below its root) must find."""
    dirs = files = total = 0
    for e in layout(entries, fanout):
        if e.is_dir:
            dirs += 1
        else:
            files += 1
            total += e.size
    return {"entries": dirs + files, "dirs": dirs, "files": files, "bytes": total}


def write_local(root: Path, entries: int, fanout: int = FANOUT) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for e in layout(entries, fanout):
        p = root / e.rel
        if e.is_dir:
            p.mkdir(exist_ok=True)
        else:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.ftruncate(fd, e.size)
            finally:
                os.close(fd)


TEMPLATE_DIR = "_bulk_template"
TEMPLATE_FILE = "f"


def write_emulator_store(
    data_dir: Path, share: str, prefix: str, entries: int, fanout: int = FANOUT
) -> int:
    """Insert the tree under `prefix` of `share` directly into a *stopped* emulator's store.

    Every row is a copy of a template the API itself wrote while the emulator ran (directory
    TEMPLATE_DIR and the empty file TEMPLATE_DIR/TEMPLATE_FILE, created by the caller), with
    id, parent, name, size and ETag changed: whatever columns the store has, the rows are what
    Create Directory / Create File write. The template is removed. Returns the entries added.
    """
    from remote.emulator.formats import name_key, new_etag, now_ns
    from remote.emulator.store import Store

    store = Store(data_dir)
    try:
        share_row = store.get_share(share)
        if share_row is None:
            raise LookupError(f"share {share!r} not found in {data_dir}")
        tree = share_row["tree_id"]
        tdir = store.child(tree, 0, name_key(TEMPLATE_DIR))
        tfile = tdir and store.child(tree, tdir["node_id"], name_key(TEMPLATE_FILE))
        if tdir is None or tfile is None:
            raise LookupError(f"template {TEMPLATE_DIR}/{TEMPLATE_FILE} not found in {share}")
        cols = list(tdir.keys())
        dir_t, file_t = dict(tdir), dict(tfile)
        sql = f"INSERT INTO nodes ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"

        def row(parent: int, name: str, is_dir: bool, size: int) -> tuple[int, tuple]:
            r = dict(dir_t if is_dir else file_t)
            node_id = store.alloc_node_id(tree)
            r.update(node_id=node_id, parent_id=parent, name=name, name_key=name_key(name))
            r["etag"] = new_etag(now_ns())
            if not is_dir:
                r["size"] = size
            return node_id, tuple(r[c] for c in cols)

        store.begin()
        try:
            store.delete_node(tree, tfile["node_id"])
            store.delete_node(tree, tdir["node_id"])
            dir_ids: dict[str, int] = {"": 0}
            pending: list[tuple] = []
            base = ""
            for part in [p for p in prefix.strip("/").split("/") if p]:
                found = store.child_id(tree, dir_ids[base], name_key(part))
                path = f"{base}/{part}" if base else part
                if found is None:
                    node_id, values = row(dir_ids[base], part, True, 0)
                    pending.append(values)
                    dir_ids[path] = node_id
                else:
                    dir_ids[path] = found[0]
                base = path
            count = 0
            for e in layout(entries, fanout):
                parent_rel, _, name = e.rel.rpartition("/")
                parent_key = f"{base}/{parent_rel}" if parent_rel and base else parent_rel or base
                node_id, values = row(dir_ids[parent_key], name, e.is_dir, e.size)
                if e.is_dir:
                    dir_ids[f"{base}/{e.rel}" if base else e.rel] = node_id
                pending.append(values)
                count += 1
                if len(pending) >= 20000:
                    store.db.executemany(sql, pending)
                    pending.clear()
            store.db.executemany(sql, pending)
            store.commit()
        except BaseException:
            store.rollback()
            raise
        return count
    finally:
        store.close()
