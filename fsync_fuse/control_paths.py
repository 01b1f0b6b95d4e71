"""Per-path answers of the control surface: a file's state and `user.fsync.info`, what is not
on the share yet (`user.fsync.dirty`) and what would tier next (`user.fsync.next`).

Each answer costs what the path needs, never a walk of the namespace: a file's record, its
cache record, its pin chain and a prefix scan of its directory's names for conflict copies;
a directory's summary counts at most DIR_SCAN entries directly in it. Lists are cut to fit
one attribute value (control.MAX_VALUE).
"""

from __future__ import annotations

import json
from typing import Any

from fsync_fuse import control, names
from fsync_fuse.attrs import FILE, Inode
from fsync_fuse.control_figures import Parts
from fsync_fuse.writeback.stuck import op_path

#: a directory's summary counts at most this many of its entries
DIR_SCAN = 5000
#: conflict copies looked at per file (a prefix scan of its directory's names)
CONFLICT_SCAN = 2000
#: what the lists of one answer may take (the rest of MAX_VALUE is for the other keys)
BUDGET = control.MAX_VALUE - 2048


class PathAnswers:
    def __init__(self, parts: Parts) -> None:
        self.p = parts

    # ------------------------------------------------------------------ one file
    def file_state(self, rec: Inode) -> tuple[str, bool, bool]:
        """(tiered/partial/local/dirty, every byte local, pinned in the cache). A file the
        cache holds nothing of is answered without giving it a cache record (a status of a
        big directory must not create thousands)."""
        p = self.p
        dirty = p.dirty.is_dirty(rec.ino)
        if not dirty and p.cache.cached_bytes(rec.ino) == 0:
            pinned = p.cache.state(rec.ino, rec.size).pinned  # creates nothing
            return ("local" if rec.size == 0 else "tiered"), rec.size == 0, pinned
        p.dirty.sync_remote_valid(rec)
        st = p.cache.state(rec.ino, rec.size)
        if dirty or st.dirty:
            word = "dirty"
        elif st.full:
            word = "local"
        elif st.partial:
            word = "partial"
        else:
            word = "tiered"
        return word, st.full, st.pinned

    def state(self, rec: Inode) -> str:
        """`user.fsync.state` of a file."""
        word, _local, pinned = self.file_state(rec)
        return word + (",pinned" if pinned else "")

    def pin_state(self, rec: Inode, cache_pinned: bool) -> tuple[bool, bool]:
        """(pinned, inherited). A file is pinned when the cache holds it so (a pin that did
        not fit is logged and not in force); a directory when the pins say so."""
        covered, inherited = (
            self.p.pins.state(rec.ino) if self.p.pins is not None else (False, False)
        )
        if rec.is_dir:
            return covered, inherited
        return cache_pinned, cache_pinned and inherited

    def info(self, rec: Inode) -> control.Info:
        p = self.p
        path = p.ns.path(rec.ino)
        out = control.Info(
            path="/" + path if path is not None else f"(inode {rec.ino}, removed)",
            kind="dir" if rec.is_dir else "file" if rec.kind == FILE else "other",
            mtime=rec.mtime_ns / 1e9,
        )
        if rec.is_dir:
            out.pinned, out.inherited = self.pin_state(rec, False)
            out.summary = self.dir_summary(rec.ino)
            return out
        if rec.kind != FILE:
            return out
        word, local, cache_pinned = self.file_state(rec)
        out.size, out.state, out.local = rec.size, word, local
        # the cache counts allocations (whole pages): at most the file's size is cached
        out.cached = min(p.cache.cached_bytes(rec.ino), rec.size)
        out.dirty = min(p.cache.dirty_bytes(rec.ino), rec.size)
        out.pinned, out.inherited = self.pin_state(rec, cache_pinned)
        if p.tiering is not None:
            fi = p.tiering.file_info(rec.ino)
            if fi is not None:
                out.last_access, out.heat = fi.last_access, round(fi.heat, 4)
        out.conflicts = self.conflict_copies(rec)
        return out

    def dir_summary(self, ino: int) -> dict[str, int]:
        """Entries directly in a directory, by state (at most DIR_SCAN counted: `more` 1)."""
        p = self.p
        s = dict.fromkeys(
            ("entries", "files", "dirs", "local", "partial", "tiered", "dirty", "pinned"), 0
        )
        s.update(size=0, cached=0, more=0)
        for child in p.ns.iter_children(ino):
            if s["entries"] >= DIR_SCAN:
                s["more"] = 1
                return s
            s["entries"] += 1
            if child.is_dir:
                s["dirs"] += 1
                continue
            if child.kind != FILE:
                continue
            word, _local, cache_pinned = self.file_state(child)
            s["files"] += 1
            s[word] += 1
            s["size"] += child.size
            s["cached"] += min(p.cache.cached_bytes(child.ino), child.size)
            s["pinned"] += self.pin_state(child, cache_pinned)[0]
        return s

    def conflict_copies(self, rec: Inode) -> list[str]:
        """Names beside `rec` that a conflict copy of it would have (names.conflict_name),
        found by a prefix scan of its directory's folded names (namespace/tables.py's
        `dentries`: parent + folded name -> ino, entry id, exact name)."""
        ns = self.p.ns
        if rec.parent == 0:
            return []
        stem, _ext = names.split_ext(rec.name)
        parent = rec.parent.to_bytes(8, "big")
        # conflict_name shortens the stem only for names near NAME_MAX
        short = len(rec.name.encode()) > names.MAX_NAME // 2
        prefix = parent + names.fold(stem[:1] if short else stem + "-").encode()
        found: list[str] = []
        ns.settle()
        with ns.env.begin(db=ns.db_dentries) as txn:
            cur = txn.cursor()
            if not cur.set_range(prefix):
                return found
            for n, (key, val) in enumerate(cur):
                if not key.startswith(prefix) or n >= CONFLICT_SCAN:
                    break
                name = bytes(val[16:]).decode(errors="replace")
                if name != rec.name and names.looks_like_conflict_copy(name, rec.name):
                    found.append(name)
        return sorted(found)[:50]

    # ------------------------------------------------------------------ the root's lists
    def dirty_json(self) -> bytes:
        """`user.fsync.dirty`: files not on the share yet, oldest change first, then the
        queued operations in order."""
        p = self.p
        pend = p.writeback.status()
        rows: list[tuple[int, int, Inode]] = []
        for ino in list(p.dirty.files):
            if ino in p.dirty.dirs:
                continue
            rec = p.ns.get(ino)
            if rec is not None:
                rows.append((rec.mtime_ns, ino, rec))
        rows.sort()
        files: list[dict[str, Any]] = []
        used = 0
        for mtime_ns, ino, rec in rows:
            item = p.writeback.stuck.files.get(ino)
            path = p.ns.path(ino)
            entry = {
                "path": "/" + path if path is not None else f"(inode {ino}, removed)",
                "bytes": p.cache.dirty_bytes(ino),
                "size": rec.size,
                "mtime": mtime_ns / 1e9,
                "stuck": item.reason if item is not None else None,
            }
            used += len(json.dumps(entry)) + 2
            if used > BUDGET * 2 // 3:
                break
            files.append(entry)
        ops: list[dict[str, Any]] = []
        for _seq, op in p.ns.outbox.peek(0, 1000):
            entry = {"op": op.get("op"), "path": "/" + op_path(op)}
            used += len(json.dumps(entry)) + 2
            if used > BUDGET:
                break
            ops.append(entry)
        return control.json_bytes(
            {
                "count": len(rows),
                "bytes": pend.bytes,
                "dirs": pend.dirs,
                "ops": pend.ops,
                "shown": len(files),
                "files": files,
                "operations": ops,
            }
        )

    def next_json(self, n: int) -> bytes:
        """`user.fsync.next`: the n files eviction would take next, in order, and why."""
        p = self.p
        out: dict[str, Any] = {
            "tier_after": None,
            "min_free_pct": float(p.cache.min_free_pct),
            "count": 0,
            "files": [],
        }
        if p.tiering is None:
            out["error"] = "this mount's cache cannot say what it would tier next"
            return control.json_bytes(out)
        out["tier_after"] = p.tiering.tier_after
        used = 0
        for c in p.tiering.next_to_tier(n):
            path = p.ns.path(c.key)
            entry = {
                "path": "/" + path if path is not None else f"(inode {c.key}, removed)",
                "reason": c.reason,
                "heat": round(c.heat, 4),
                "last_access": c.last_access,
                "cached": c.cached_bytes,
            }
            used += len(json.dumps(entry)) + 2
            if used > BUDGET:
                break
            out["files"].append(entry)
        out["count"] = len(out["files"])
        return control.json_bytes(out)
