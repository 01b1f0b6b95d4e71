"""`fsync-fuse status [PATH...]`: what a mount holds and does, or what it holds of each path.

A mountpoint (or no argument: the mount the current directory is on) gives the mount-wide
view (`user.fsync.status`); any other path its own (`user.fsync.info`); `--dirty` lists what
has not reached the share yet, oldest first, `--next N` what the policies would tier next.
All of it is read from the running daemon through its control surface (control.py), which
answers from its counters and records: no walk of the namespace.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from fsync_fuse import control
from fsync_fuse.commands.common import (
    CommandError,
    ago,
    clock,
    count,
    duration,
    error,
    info,
    is_mount_root,
    mount_of,
    number,
    percent,
    rate,
    ratio,
    size,
    why,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "status",
        help="what a mount holds and does: cache, queue, hit rates, or one path's state",
        description="Show a mount's status (for a MOUNTPOINT, or without an argument the mount "
        "the current directory is on): share, cache use and policies, files by state, the "
        "upload queue, recalls, hit rates since mount and over the last 5 minutes, polling, "
        "stuck items. For any other PATH: its state, bytes cached, pin (and whether "
        "inherited), dirty bytes, last access, heat and conflict copies.",
        epilog="examples: fsync-fuse status /mnt/share; fsync-fuse status /mnt/share/docs/a.pdf; "
        "fsync-fuse status --dirty /mnt/share; fsync-fuse status --next 20 /mnt/share",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="a mountpoint, file or directory")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--dirty",
        action="store_true",
        help="list what has not reached the share yet, oldest change first",
    )
    g.add_argument(
        "--next",
        type=int,
        metavar="N",
        help="list the N files the policies would tier next, and why",
    )
    p.add_argument("--json", action="store_true", help="the daemon's JSON (control.py)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.dirty or args.next is not None:
            mnt = mount_of(args.paths[0] if args.paths else os.getcwd())
            if args.next is not None and not 0 < args.next <= 10000:
                raise CommandError(f"--next {args.next}: must be from 1 to 10000")
            name = control.XATTR_DIRTY if args.dirty else f"{control.XATTR_NEXT}.{args.next}"
            data = _read(mnt, name)
            _emit(args, data, _show_dirty if args.dirty else _show_next, mnt)
            return 0
        paths = args.paths or [mount_of(os.getcwd())]
        out: list[dict[str, Any]] = []
        lines: list[str] = []
        for path in paths:
            if is_mount_root(path):
                st = _read(path, control.XATTR_STATUS)
                out.append(st)
                lines += show_mount(st, os.path.abspath(path))
            else:
                mount_of(path)
                one = info(path)
                out.append(one)
                lines += show_path(one, path)
    except CommandError as exc:
        return error(str(exc))
    if args.json:
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
    else:
        print("\n".join(lines))
    return 0


def _read(path: str, name: str) -> dict[str, Any]:
    try:
        return control.read_json(path, name)
    except OSError as exc:
        raise CommandError(why(exc, path)) from None
    except ValueError:
        raise CommandError(f"{path}: the mount's answer is not JSON") from None


def _emit(args: argparse.Namespace, data: dict[str, Any], show: Any, mnt: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print("\n".join(show(data, mnt)))


# ---------------------------------------------------------------------- the mount
def show_mount(st: dict[str, Any], mnt: str) -> list[str]:
    """The mount-wide status for people, one aspect a line."""
    now = time.time()
    m = st.get("mount") or {}
    share = st.get("share") or {}
    c = st.get("cache") or {}
    f = st.get("counts") or {}
    up = st.get("uploads") or {}
    rc = st.get("recall") or {}
    fe = st.get("fetch") or {}
    hits = st.get("hits") or {}
    poll = st.get("poll") or {}
    lines = [
        f"{mnt}: {m.get('share') or '?'} (site {m.get('site') or '?'}), "
        f"mounted {ago(m.get('started'), now)}"
    ]
    state = "reachable" if share.get("reachable", True) else "NOT reachable"
    err = f" ({share['error']})" if share.get("error") else ""
    lines.append(f"  share:      {state} since {clock(share.get('since'))}{err}")
    floor = c.get("min_free_pct") or 0
    vol_total = c.get("volume_total") or 0
    free_now = percent(c.get("volume_free"), vol_total)
    lines.append(
        f"  cache:      {size(c.get('used'))} of {size(c.get('bound'))} "
        f"({percent(c.get('used'), c.get('bound'))}; data {size(c.get('data'))}, index "
        f"{size(c.get('index'))}); dirty {size(c.get('dirty'))}, pinned "
        f"{size(c.get('pinned'))}"
    )
    lines.append(
        f"  volume:     {size(c.get('volume_free'))} free ({free_now}); free-space floor {floor:g}%"
    )
    pol = st.get("policies") or {}
    if pol:
        lines.append("  policies:   " + ", ".join(f"{k}={v}" for k, v in sorted(pol.items())))
    local = f.get("local")
    split = (
        f" ({number(local)} local, {number(f.get('partial'))} partial)" if local is not None else ""
    )
    pinned = f", {number(f.get('pinned'))} pinned" if f.get("pinned") is not None else ""
    lines.append(
        f"  files:      {number(f.get('entries'))} entries known; {number(f.get('cached'))} "
        f"with cached data{split}, {number(f.get('tiered'))} without (tiered, and "
        f"directories){pinned}, {number(f.get('dirty'))} dirty"
    )
    queue = (
        f"  queue:      {count(st.get('files'), 'file')} ({size(st.get('bytes'))}) and "
        f"{count(st.get('ops'), 'operation')} not on the share yet"
    )
    if st.get("error"):
        queue += f"; last error: {st['error']}"
    lines.append(queue)
    if up.get("files") is not None:
        lines.append(
            f"  uploads:    {number(up.get('in_flight'))} in flight, {rate(up.get('rate'))} "
            f"(5 min); {number(up.get('files'))} files, {size(up.get('bytes'))} sent, "
            f"{number(up.get('failures'))} failed since mount"
        )
    if rc.get("files") is not None:
        lines.append(
            f"  recall:     {number(rc.get('files'))} files, {size(rc.get('bytes'))} recalled, "
            f"{number(rc.get('failures'))} failed, {number(rc.get('queued'))} queued, "
            f"{number(rc.get('running'))} running"
        )
    avg = (fe.get("seconds") or 0) / fe["count"] if fe.get("count") else None
    lines.append(
        f"  fetches:    {number(fe.get('count'))} from the share, {size(fe.get('bytes'))}, "
        f"{number(fe.get('failures'))} failed; {rate(fe.get('rate'))} (5 min)"
        + (f", {avg * 1000:.0f} ms average" if avg is not None else "")
    )
    since, last = hits.get("since_mount") or {}, hits.get("last_5m") or {}
    lines.append(
        f"  hit rate:   since mount {ratio(since.get('reads'))} of reads, "
        f"{ratio(since.get('bytes'))} of bytes; last {duration(last.get('seconds'))} "
        f"{ratio(last.get('reads'))} of reads, {ratio(last.get('bytes'))} of bytes"
    )
    ev = st.get("evictions") or {}
    if ev:
        lines.append(
            "  evictions:  "
            + ", ".join(f"{r} {size(v.get('bytes'))}" for r, v in sorted(ev.items()))
        )
    lines.append(f"  conflicts:  {number(st.get('conflicts'))}")
    last_poll = (
        f"last {ago(poll['last_at'], now)}, {number(poll.get('last_listed'))} listings in "
        f"{poll.get('last_seconds') or 0:.2f}s; "
        if poll.get("last_at")
        else ""
    )
    lines.append(
        f"  polling:    {last_poll}{number(poll.get('rounds'))} rounds, "
        f"{number(poll.get('listed'))} listings since mount"
    )
    calls = (st.get("remote") or {}).get("calls") or {}
    if calls:
        top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
        errs = sum(((st.get("remote") or {}).get("errors") or {}).values())
        lines.append(
            "  share calls: " + ", ".join(f"{op} {n:,}" for op, n in top) + f"; {errs:,} failed"
        )
    stuck = st.get("stuck") or {}
    if stuck.get("count"):
        lines.append(f"  stuck:      {stuck['count']} items the share refuses:")
        for item in stuck.get("items") or []:
            lines.append(f"    {item.get('op')} {item.get('path')}: {item.get('reason')}")
    return lines


# ---------------------------------------------------------------------- one path
def show_path(i: dict[str, Any], path: str) -> list[str]:
    pin = ""
    if i.get("pinned"):
        pin = ", pinned (inherited from a directory above)" if i.get("inherited") else ", pinned"
    if i.get("kind") == "dir":
        s = i.get("summary") or {}
        more = "+" if s.get("more") else ""
        return [
            f"{path}: directory{pin}; {s.get('files', 0)}{more} files directly in it: "
            f"{s.get('local', 0)} local, {s.get('partial', 0)} partial, "
            f"{s.get('tiered', 0)} tiered, {s.get('dirty', 0)} dirty, "
            f"{s.get('pinned', 0)} pinned; {size(s.get('cached'))} of {size(s.get('size'))} "
            f"cached ({percent(s.get('cached'), s.get('size'))}); {s.get('dirs', 0)} "
            "directories"
        ]
    if i.get("kind") != "file":
        return [f"{path}: not a regular file (nothing to cache)"]
    cached = min(int(i.get("cached") or 0), int(i.get("size") or 0))
    lines = [
        f"{path}: {i.get('state')}{pin}; {size(cached)} of {size(i.get('size'))} cached "
        f"({percent(cached, i.get('size')) if i.get('size') else '100%'})"
        + (f", {size(i.get('dirty'))} dirty" if i.get("dirty") else "")
    ]
    heat = i.get("heat")
    lines.append(
        f"  last access {ago(i.get('last_access'))}"
        + (f", heat {heat:.2f}" if heat is not None else "")
        + f"; modified {clock(i.get('mtime'))}"
    )
    conflicts = i.get("conflicts") or []
    if conflicts:
        lines.append("  conflict copies beside it: " + ", ".join(conflicts))
    return lines


# ---------------------------------------------------------------------- lists
def _show_dirty(d: dict[str, Any], mnt: str) -> list[str]:
    lines = [
        f"{mnt}: {count(d.get('count', 0), 'file')} ({size(d.get('bytes'))}) and "
        f"{count(d.get('ops', 0), 'operation')} not on the share yet"
        + (f", {d['dirs']} directory times" if d.get("dirs") else "")
    ]
    files = d.get("files") or []
    if files:
        lines.append("  files, oldest change first:")
        for e in files:
            stuck = f"  (stuck: {e['stuck']})" if e.get("stuck") else ""
            lines.append(
                f"    {clock(e.get('mtime'))}  {size(e.get('bytes')):>10}  {e.get('path')}{stuck}"
            )
        if d.get("count", 0) > len(files):
            lines.append(f"    ... and {d['count'] - len(files)} more (--json shows as many)")
    ops = d.get("operations") or []
    if ops:
        lines.append("  operations, in order:")
        lines += [f"    {o.get('op')} {o.get('path')}" for o in ops]
        if d.get("ops", 0) > len(ops):
            lines.append(f"    ... and {d['ops'] - len(ops)} more")
    return lines


def _show_next(d: dict[str, Any], mnt: str) -> list[str]:
    if d.get("error"):
        raise CommandError(f"{mnt}: {d['error']}")
    ta = d.get("tier_after")
    lines = [
        f"{mnt}: next to tier (date policy: "
        f"{'tier after ' + duration(ta) if ta else 'off'}; free-space floor "
        f"{d.get('min_free_pct', 0):g}%; otherwise the coldest first when room is needed)"
    ]
    files = d.get("files") or []
    if not files:
        lines.append("  nothing: no clean, unpinned content is cached")
    for e in files:
        lines.append(
            f"  {e.get('reason'):<5} {size(e.get('cached')):>10}  heat {e.get('heat') or 0:7.2f}"
            f"  last access {ago(e.get('last_access')):>12}  {e.get('path')}"
        )
    return lines
