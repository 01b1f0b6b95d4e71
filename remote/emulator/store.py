"""Persistent state: SQLite metadata (shares, snapshots, directory trees) and content blobs.

Every share and every share snapshot is a *tree* (a row in `shares`) whose entries live in
`nodes`, keyed by (tree_id, node_id) and indexed by (tree_id, parent_id, name_key) for lookups and
ordered listings. The root directory is node 0 of each tree.

File content lives in `blobs/`: one sparse file per blob, plus the blob's written ranges in
SQLite. Blobs are reference counted: a snapshot copies the metadata rows and shares the blobs;
the first write to a shared blob copies it (copy-on-write), so snapshots stay frozen.

All calls are synchronous and short (they run on the trio thread); reading, writing and copying
blob files are the functions of blobs.py, which callers run in a worker thread when they are big.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from . import ranges as rg

SCHEMA = """
CREATE TABLE IF NOT EXISTS props (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shares (
    tree_id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    snapshot TEXT NOT NULL DEFAULT '',
    quota INTEGER NOT NULL,
    metadata TEXT NOT NULL DEFAULT '[]',
    etag TEXT NOT NULL,
    mtime INTEGER NOT NULL,
    created INTEGER NOT NULL,
    next_node INTEGER NOT NULL DEFAULT 1,
    access_tier TEXT NOT NULL DEFAULT 'TransactionOptimized',
    tier_changed INTEGER NOT NULL,
    lease_id TEXT,
    lease_state TEXT NOT NULL DEFAULT 'available',
    lease_duration TEXT,
    lease_until REAL,
    acl TEXT NOT NULL DEFAULT '[]',
    UNIQUE (name, snapshot)
);
CREATE TABLE IF NOT EXISTS nodes (
    tree_id INTEGER NOT NULL,
    node_id INTEGER NOT NULL,
    parent_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    is_dir INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    blob_id INTEGER,
    attrs TEXT NOT NULL,
    ctime INTEGER NOT NULL,
    wtime INTEGER NOT NULL,
    chtime INTEGER NOT NULL,
    atime INTEGER NOT NULL,
    mtime INTEGER NOT NULL,
    etag TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '[]',
    headers TEXT NOT NULL DEFAULT '{}',
    perm_key TEXT NOT NULL,
    lease_id TEXT,
    lease_state TEXT NOT NULL DEFAULT 'available',
    lease_duration TEXT,
    copy TEXT,
    PRIMARY KEY (tree_id, node_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS nodes_by_name ON nodes (tree_id, parent_id, name_key);
CREATE TABLE IF NOT EXISTS blobs (
    blob_id INTEGER PRIMARY KEY AUTOINCREMENT,
    refs INTEGER NOT NULL,
    ranges TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS permissions (perm_key TEXT PRIMARY KEY, sddl TEXT NOT NULL);
"""

NODE_COLUMNS = (
    "tree_id, node_id, parent_id, name, name_key, is_dir, size, blob_id, attrs, ctime, wtime, "
    "chtime, atime, mtime, etag, metadata, headers, perm_key, lease_id, lease_state, "
    "lease_duration, copy"
)


class Store:
    """The emulator's database and blob directory under one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.blob_dir = self.data_dir / "blobs"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(
            str(self.data_dir / "emulator.sqlite3"), isolation_level=None, check_same_thread=False
        )
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA cache_size=-65536")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ transactions
    def begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    def rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    # ------------------------------------------------------------------ key/value props
    def get_prop(self, k: str) -> str | None:
        row = self.db.execute("SELECT v FROM props WHERE k=?", (k,)).fetchone()
        return row[0] if row else None

    def set_prop(self, k: str, v: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO props (k, v) VALUES (?, ?)", (k, v))

    # ------------------------------------------------------------------ shares
    def get_share(self, name: str, snapshot: str = "") -> sqlite3.Row | None:
        return self.db.execute(
            "SELECT * FROM shares WHERE name=? AND snapshot=?", (name, snapshot)
        ).fetchone()

    def share_snapshots(self, name: str) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT * FROM shares WHERE name=? AND snapshot!='' ORDER BY snapshot", (name,)
        ).fetchall()

    def list_shares(
        self, prefix: str, marker: str, limit: int, snapshots: bool
    ) -> list[sqlite3.Row]:
        sql = "SELECT * FROM shares WHERE name >= ? AND substr(name, 1, ?) = ?"
        if not snapshots:
            sql += " AND snapshot = ''"
        # snapshots first (ascending), then the live share, as the service lists them
        sql += " ORDER BY name, snapshot = '', snapshot LIMIT ?"
        start = max(prefix, marker)
        return self.db.execute(sql, (start, len(prefix), prefix, limit)).fetchall()

    def insert_share(self, **cols: object) -> int:
        names = ", ".join(cols)
        marks = ", ".join("?" for _ in cols)
        cur = self.db.execute(
            f"INSERT INTO shares ({names}) VALUES ({marks})", tuple(cols.values())
        )
        return int(cur.lastrowid or 0)

    def update_share(self, tree_id: int, **cols: object) -> None:
        sets = ", ".join(f"{k}=?" for k in cols)
        self.db.execute(f"UPDATE shares SET {sets} WHERE tree_id=?", (*cols.values(), tree_id))

    def alloc_node_id(self, tree_id: int) -> int:
        row = self.db.execute(
            "UPDATE shares SET next_node = next_node + 1 WHERE tree_id=? RETURNING next_node",
            (tree_id,),
        ).fetchone()
        return 2 * (int(row[0]) - 1) + 1

    def delete_tree(self, tree_id: int) -> list[int]:
        """Remove a share or snapshot with all entries; returns blobs that lost their last ref."""
        blobs = [
            r[0]
            for r in self.db.execute(
                "SELECT blob_id FROM nodes WHERE tree_id=? AND blob_id IS NOT NULL", (tree_id,)
            )
        ]
        self.db.execute("DELETE FROM nodes WHERE tree_id=?", (tree_id,))
        self.db.execute("DELETE FROM shares WHERE tree_id=?", (tree_id,))
        return self.decref_many(blobs)

    def snapshot_tree(self, tree_id: int, snapshot: str) -> int:
        """Freeze the tree: copy share and node rows, share the blobs."""
        src = self.db.execute("SELECT * FROM shares WHERE tree_id=?", (tree_id,)).fetchone()
        cols = {k: src[k] for k in src.keys() if k != "tree_id"}
        cols.update(
            snapshot=snapshot,
            lease_id=None,
            lease_state="available",
            lease_duration=None,
            lease_until=None,
        )
        new_id = self.insert_share(**cols)
        self.db.execute(
            f"INSERT INTO nodes ({NODE_COLUMNS}) SELECT ?, node_id, parent_id, name, name_key, "
            "is_dir, size, blob_id, attrs, ctime, wtime, chtime, atime, mtime, etag, metadata, "
            "headers, perm_key, NULL, 'available', NULL, copy FROM nodes WHERE tree_id=?",
            (new_id, tree_id),
        )
        counts = self.db.execute(
            "SELECT count(*), blob_id FROM nodes WHERE tree_id=? AND blob_id IS NOT NULL "
            "GROUP BY blob_id",
            (new_id,),
        ).fetchall()
        self.db.executemany(
            "UPDATE blobs SET refs = refs + ? WHERE blob_id=?", [tuple(r) for r in counts]
        )
        return new_id

    def share_usage(self, tree_id: int) -> int:
        row = self.db.execute(
            "SELECT coalesce(sum(size), 0) FROM nodes WHERE tree_id=? AND is_dir=0", (tree_id,)
        ).fetchone()
        return int(row[0])

    # ------------------------------------------------------------------ nodes
    def node(self, tree_id: int, node_id: int) -> sqlite3.Row | None:
        return self.db.execute(
            "SELECT * FROM nodes WHERE tree_id=? AND node_id=?", (tree_id, node_id)
        ).fetchone()

    def child(self, tree_id: int, parent_id: int, key: str) -> sqlite3.Row | None:
        return self.db.execute(
            "SELECT * FROM nodes WHERE tree_id=? AND parent_id=? AND name_key=?",
            (tree_id, parent_id, key),
        ).fetchone()

    def child_id(self, tree_id: int, parent_id: int, key: str) -> tuple[int, int] | None:
        row = self.db.execute(
            "SELECT node_id, is_dir FROM nodes WHERE tree_id=? AND parent_id=? AND name_key=?",
            (tree_id, parent_id, key),
        ).fetchone()
        return (row[0], row[1]) if row else None

    def insert_node(self, **cols: object) -> None:
        names = ", ".join(cols)
        marks = ", ".join("?" for _ in cols)
        self.db.execute(f"INSERT INTO nodes ({names}) VALUES ({marks})", tuple(cols.values()))

    def update_node(self, tree_id: int, node_id: int, **cols: object) -> None:
        sets = ", ".join(f"{k}=?" for k in cols)
        self.db.execute(
            f"UPDATE nodes SET {sets} WHERE tree_id=? AND node_id=?",
            (*cols.values(), tree_id, node_id),
        )

    def delete_node(self, tree_id: int, node_id: int) -> None:
        self.db.execute("DELETE FROM nodes WHERE tree_id=? AND node_id=?", (tree_id, node_id))

    def has_children(self, tree_id: int, node_id: int) -> bool:
        return (
            self.db.execute(
                "SELECT 1 FROM nodes WHERE tree_id=? AND parent_id=? LIMIT 1", (tree_id, node_id)
            ).fetchone()
            is not None
        )

    def list_children(
        self, tree_id: int, parent_id: int, prefix_key: str, start_key: str, limit: int
    ) -> list[sqlite3.Row]:
        sql = (
            "SELECT node_id, name, name_key, is_dir, size, attrs, ctime, wtime, chtime, atime, "
            "mtime, etag, perm_key FROM nodes WHERE tree_id=? AND parent_id=? AND name_key >= ?"
        )
        args: list[object] = [tree_id, parent_id, max(prefix_key, start_key)]
        if prefix_key:
            sql += " AND substr(name_key, 1, ?) = ?"
            args += [len(prefix_key), prefix_key]
        sql += " ORDER BY name_key LIMIT ?"
        args.append(limit)
        return self.db.execute(sql, args).fetchall()

    def is_ancestor(self, tree_id: int, ancestor: int, node_id: int) -> bool:
        """True when `ancestor` is node_id itself or one of its parents."""
        cur = node_id
        while cur >= 0:
            if cur == ancestor:
                return True
            row = self.db.execute(
                "SELECT parent_id FROM nodes WHERE tree_id=? AND node_id=?", (tree_id, cur)
            ).fetchone()
            if row is None:
                return False
            cur = row[0]
        return False

    # ------------------------------------------------------------------ permissions
    def put_permission(self, key: str, sddl: str) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO permissions (perm_key, sddl) VALUES (?, ?)", (key, sddl)
        )

    def get_permission(self, key: str) -> str | None:
        row = self.db.execute("SELECT sddl FROM permissions WHERE perm_key=?", (key,)).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------------ blobs
    def blob_path(self, blob_id: int) -> str:
        return str(self.blob_dir / f"{blob_id & 0xFF:02x}" / str(blob_id))

    def new_blob(self, size: int, ranges: rg.Ranges | None = None) -> int:
        cur = self.db.execute(
            "INSERT INTO blobs (refs, ranges) VALUES (1, ?)", (json.dumps(ranges or []),)
        )
        blob_id = int(cur.lastrowid or 0)
        path = self.blob_path(blob_id)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        return blob_id

    def blob_refs(self, blob_id: int) -> int:
        row = self.db.execute("SELECT refs FROM blobs WHERE blob_id=?", (blob_id,)).fetchone()
        return int(row[0]) if row else 0

    def blob_ranges(self, blob_id: int | None) -> rg.Ranges:
        if blob_id is None:
            return []
        row = self.db.execute("SELECT ranges FROM blobs WHERE blob_id=?", (blob_id,)).fetchone()
        return [tuple(x) for x in json.loads(row[0])] if row else []

    def set_blob_ranges(self, blob_id: int, ranges: rg.Ranges) -> None:
        self.db.execute(
            "UPDATE blobs SET ranges=? WHERE blob_id=?",
            (json.dumps([list(r) for r in ranges]), blob_id),
        )

    def incref(self, blob_id: int) -> None:
        self.db.execute("UPDATE blobs SET refs = refs + 1 WHERE blob_id=?", (blob_id,))

    def decref_many(self, blob_ids: Iterable[int]) -> list[int]:
        """Drop one reference per id; delete blobs without references; return the deleted."""
        dead: list[int] = []
        for b in blob_ids:
            row = self.db.execute(
                "UPDATE blobs SET refs = refs - 1 WHERE blob_id=? RETURNING refs", (b,)
            ).fetchone()
            if row is not None and row[0] <= 0:
                self.db.execute("DELETE FROM blobs WHERE blob_id=?", (b,))
                dead.append(b)
        return dead

    def unlink_blobs(self, blob_ids: Iterable[int]) -> None:
        for b in blob_ids:
            try:
                os.unlink(self.blob_path(b))
            except FileNotFoundError:
                pass
