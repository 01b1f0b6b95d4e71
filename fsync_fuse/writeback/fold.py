"""Folding stuck operations: what a run of queued operations that never reached the share
amounts to, once the user renamed or removed what was stuck (stuck.py, opworker.py `_fold`).
"""

from __future__ import annotations

from fsync_fuse import names
from fsync_fuse.outbox import CREATE_OPS, DELETE_OPS, FILE_CREATE_OPS


def fold(ops: list[dict]) -> list[dict] | None:
    """Rewrite a list of stuck operations (in order, none applied on the share) into an
    equivalent shorter one, pairing an operation that puts an entry somewhere (create,
    mkdir, symlink, rename) with a later one that renames or removes that entry:

    - create at P, rename P -> Q: create at Q (the victim Q replaced removed first);
    - create at P, delete: nothing (P's subtree must have been folded away first);
    - rename A -> P, rename P -> Q: rename A -> Q (nothing when Q is A);
    - rename A -> P, delete: delete at A.

    Operations between the two that concern the entry's subtree (paths under P) are
    rewritten to the new place and follow the folded operation; the others stay before it
    (they never depend on the subtree's operations, except attribute changes of a
    directory above, which commute). A pair is left as it is when another operation
    between them touches a path the fold would reorder (the old place A of a rename, or a
    delete's subtree).

    And a rename of a directory S -> T queued after stuck operations below S moves before
    them (`_hoist_once`), their paths rewritten below T: none of them reached the share,
    so the directory moves on the share without them and they follow it (a path too long,
    shortened by renaming a directory above). Returns None when nothing changed."""
    cur = _fold_files(ops)
    changed = cur is not None
    cur = cur if cur is not None else list(ops)
    for _ in range(4 * len(ops) + 16):  # each step shortens the list or moves a rename up
        nxt = _fold_once(cur)
        if nxt is None:
            nxt = _hoist_once(cur)
        if nxt is None:
            break
        cur, changed = nxt, True
    return cur if changed else None


def _fold_files(ops: list[dict]) -> list[dict] | None:
    """The common case in one pass: a file or symlink created and removed again, nothing
    but its own attribute changes between (a file has no subtree, and a rename of it or of
    a directory above would change the removal's path): none of it is needed."""
    made: dict[int, tuple[int, str]] = {}  # ino -> (index of its create, path)
    drop: set[int] = set()
    own: dict[int, list[int]] = {}  # ino -> indexes of its attribute changes since
    for k, op in enumerate(ops):
        ino = op.get("ino")
        kind = op["op"]
        if kind in FILE_CREATE_OPS and ino:
            made[ino] = (k, op["path"])
            own[ino] = []
        elif ino in made and kind == "setattr":
            own[ino].append(k)
        elif ino in made and kind == "unlink" and _same(op["path"], made[ino][1]):
            drop.update((made[ino][0], k, *own[ino]))
            del made[ino]
        else:
            for i in (ino, op.get("victim")):
                if i:
                    made.pop(i, None)  # renamed or replaced: the general rules decide
    if not drop:
        return None
    return [op for k, op in enumerate(ops) if k not in drop]


def _fold_once(ops: list[dict]) -> list[dict] | None:
    mentions: dict[int, list[int]] = {}  # ino -> indexes of the ops naming it, in order
    for k, op in enumerate(ops):
        for i in {op.get("ino"), op.get("victim")}:
            if i:
                mentions.setdefault(i, []).append(k)
    for i, a in enumerate(ops):
        ino = a.get("ino")
        if a["op"] not in (*CREATE_OPS, "rename") or not ino:
            continue
        placed = a["path"] if a["op"] in CREATE_OPS else a["dst"]
        j = None
        for k in mentions[ino]:
            if k <= i:
                continue
            b = ops[k]
            if b.get("ino") == ino and b["op"] == "setattr":
                continue
            if b.get("ino") == ino and b["op"] in ("rename", *DELETE_OPS):
                j = k
            break
        if j is None:
            continue
        b = ops[j]
        if not _same(b["src"] if b["op"] == "rename" else b["path"], placed):
            continue
        folded = _fold_pair(ops, i, j)
        if folded is not None:
            return folded
    return None


def _hoist_once(ops: list[dict]) -> list[dict] | None:
    """Move a rename S -> T before the operations below S that precede it (see `fold`)."""
    for j, r in enumerate(ops):
        if r["op"] != "rename":
            continue
        src, dst = r["src"], r["dst"]
        mine = {r.get("ino"), r.get("victim")} - {None}
        i, inside = j, False
        while i > 0:
            x = ops[i - 1]
            if {x.get("ino"), x.get("victim")} & mine:
                break
            paths = _paths(x)
            below = [p for p in paths if _below(p, src) not in (None, "")]
            if any(p not in below and (_related(p, src) or _related(p, dst)) for p in paths):
                break
            if any(_related(p, dst) for p in below):
                break
            inside = inside or bool(below)
            i -= 1
        if inside:
            return ops[:i] + [r] + [_rewrite(x, src, dst) for x in ops[i:j]] + ops[j + 1 :]
    return None


def _fold_pair(ops: list[dict], i: int, j: int) -> list[dict] | None:
    a, b = ops[i], ops[j]
    ino = a["ino"]
    created = a["op"] in CREATE_OPS
    placed = a["path"] if created else a["dst"]
    origin = None if created else a["src"]  # where the entry is on the share now
    dirs = sorted(set(a.get("dirs", ())) | set(b.get("dirs", ())))
    pre: list[dict] = []  # victims to remove first
    if not created and a.get("replace") and a.get("victim"):
        pre.append({"op": "unlink", "ino": a["victim"], "dirs": a["dirs"], "path": placed})
    main: list[dict]
    if b["op"] == "rename":
        target: str | None = b["dst"]
        if created:
            if b.get("replace") and b.get("victim"):
                pre.append({"op": "unlink", "ino": b["victim"], "dirs": b["dirs"], "path": target})
            main = [dict(a, path=target, dirs=dirs)]
        elif target == origin:  # renamed back (exactly: a change of case is a rename)
            if b.get("victim"):
                return None
            main = []
        else:
            main = [dict(a, dst=target, replace=b["replace"], victim=b.get("victim"), dirs=dirs)]
    else:
        target = origin
        main = [] if created else [{"op": b["op"], "ino": ino, "dirs": a["dirs"], "path": origin}]
    others: list[dict] = []  # between, unrelated to the entry: stay before the fold
    subtree: list[dict] = []  # between, on the entry or below it: rewritten, after the fold
    for op in ops[i + 1 : j]:
        paths = _paths(op)
        if op.get("ino") == ino:  # an attribute change of the entry itself
            if target is not None:
                subtree.append(_rewrite(op, placed, target))
            continue
        if any(_below(p, placed) is not None for p in paths):
            if target is None:
                return None  # its subtree's own pairs must fold first
            subtree.append(_rewrite(op, placed, target))
            rest = [p for p in paths if _below(p, placed) is None]
        else:
            if any(_related(p, placed) for p in paths) and op["op"] != "setattr":
                return None  # (only attribute changes of directories above commute)
            others.append(op)
            rest = paths
        if origin is not None and any(_related(p, origin) for p in rest):
            return None  # would run before the entry left (or after it came back to) A
    # a subtree operation that moves something in or out of the subtree runs later now:
    # nothing that stays before it may touch that other place
    moved = [p for op in subtree for p in _paths(op) if _below(p, target or "") is None]
    if any(_reorders(p, op) for p in moved for op in others):
        return None
    if b["op"] in DELETE_OPS:  # the subtree's removals first, then the entry's
        middle = [op for op in subtree if op.get("ino") != ino] + pre + main
    else:
        middle = pre + main + subtree
    return ops[:i] + others + middle + ops[j + 1 :]


def _paths(op: dict) -> list[str]:
    return [op[k] for k in ("path", "src", "dst") if op.get(k) is not None]


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def _below(path: str, base: str) -> str | None:
    """`path` relative to `base` ("" when equal) if it is `base` or below it, else None."""
    p, b = _parts(path), _parts(base)
    if [names.fold(x) for x in p[: len(b)]] != [names.fold(x) for x in b]:
        return None
    return "/".join(p[len(b) :])


def _same(a: str, b: str) -> bool:
    return _below(a, b) == ""


def _related(a: str, b: str) -> bool:
    return _below(a, b) is not None or _below(b, a) is not None


def _reorders(path: str, op: dict) -> bool:
    """Would moving an operation on `path` past `op` change the outcome? Not when `op` only
    changes the attributes of a directory above `path`."""
    for q in _paths(op):
        if op["op"] == "setattr" and _below(path, q) not in (None, ""):
            continue
        if _related(path, q):
            return True
    return False


def _rewrite(op: dict, old: str, new: str) -> dict:
    out = dict(op)
    for k in ("path", "src", "dst"):
        v = op.get(k)
        if v is None:
            continue
        rest = _below(v, old)
        if rest is not None:
            out[k] = f"{new}/{rest}" if rest and new else (new or rest)
    return out
