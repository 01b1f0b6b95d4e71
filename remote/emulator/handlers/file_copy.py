"""Copy File and Put Range From URL: sources in this account, copied synchronously."""

from __future__ import annotations

import json
import sqlite3
import uuid
from urllib.parse import parse_qsl, urlsplit

from .. import ranges as rg
from ..blobs import read_range, write_range
from ..context import Ctx
from ..errors import StorageError
from ..formats import http_date, name_key, new_etag, now_ns, smb_time
from ..messages import Response
from ..routing import strip_trailing_dots
from . import common
from .common import (
    add_etag,
    existing,
    metadata_from,
    response,
    walk,
    writable,
)
from .file_content import (
    MAX_RANGE,
    RANGE_RE,
    blob_path,
    file_lock,
    parse_range,
    private_blob,
)


async def put_range_from_url(ctx: Ctx) -> Response:
    store = ctx.store
    share = writable(ctx)
    tree = share["tree_id"]
    h = ctx.req.headers
    start, last = parse_range(ctx, required=True)
    if last is None:
        raise StorageError("InvalidHeaderValue", details={"HeaderName": "x-ms-range"})
    src_range = h.get("x-ms-source-range", "")
    m = RANGE_RE.match(src_range.strip())
    if not m or not m.group(2):
        raise StorageError("InvalidHeaderValue", details={"HeaderName": "x-ms-source-range"})
    s_start, s_end = int(m.group(1)), int(m.group(2)) + 1
    end = last + 1
    if end - start != s_end - s_start or end - start > MAX_RANGE:
        raise StorageError("InvalidRange")
    src_row = _copy_source(ctx, h["x-ms-copy-source"])
    row = existing(ctx, tree, ctx.parts, want_dir=False)
    if end > row["size"] or s_end > src_row["size"]:
        raise StorageError("InvalidRange")
    common.check_write_lease(ctx, row)
    common.refuse_read_only(row)
    data = read_range(blob_path(ctx, src_row), s_start, s_end - s_start)
    async with file_lock(ctx, tree, row["node_id"]):
        row = common.current_node(ctx, tree, row["node_id"])
        blob = await private_blob(ctx, tree, row)
        write_range(store.blob_path(blob), start, data)
        store.set_blob_ranges(blob, rg.add(store.blob_ranges(blob), start, end))
        now = now_ns()
        store.update_node(
            tree, row["node_id"], etag=new_etag(now), mtime=now, chtime=now, wtime=now
        )
        row = common.written_node(ctx, tree, row["node_id"])
    resp = response(201)
    add_etag(resp, row)
    resp.add("x-ms-request-server-encrypted", "true")
    resp.add("x-ms-file-last-write-time", smb_time(row["wtime"]))
    return resp


# ----------------------------------------------------------------------------- copy


def _copy_source(ctx: Ctx, url: str) -> sqlite3.Row:
    """The source file of a copy: a URL in this account (any share, optional snapshot)."""
    store = ctx.store
    parts_url = urlsplit(url)
    from urllib.parse import unquote

    segs = [s for s in unquote(parts_url.path, errors="surrogatepass").split("/")]
    segs = segs[1:] if segs and segs[0] == "" else segs
    if len(segs) < 3 or segs[0] != ctx.app.account:
        raise StorageError("CannotVerifyCopySource")
    share_name = segs[1]
    parts = strip_trailing_dots(
        [s for s in segs[2:] if s], ctx.req.headers.get("x-ms-source-allow-trailing-dot")
    )
    snap = dict(parse_qsl(parts_url.query)).get("sharesnapshot", "")
    share = store.get_share(share_name, snap)
    if share is None or not parts:
        raise StorageError("CannotVerifyCopySource")
    try:
        _, row = walk(ctx, share["tree_id"], parts)
    except StorageError:
        row = None
    if row is None or row["is_dir"]:
        raise StorageError("CannotVerifyCopySource")
    return row


def _copy_time(ctx: Ctx, name: str, src_value: int, now: int) -> int:
    v = ctx.req.headers.get(name)
    if v is None or v.lower() == "now":
        return now
    if v.lower() == "source":
        return src_value
    from ..formats import parse_smb_time

    return parse_smb_time(v, name)


async def copy(ctx: Ctx) -> Response:
    store = ctx.store
    share = writable(ctx)
    tree = share["tree_id"]
    h = ctx.req.headers
    src_url = h["x-ms-copy-source"]
    src = _copy_source(ctx, src_url)
    parent_id, row = walk(ctx, tree, ctx.parts)
    if row is not None and row["is_dir"]:
        raise StorageError("ResourceTypeMismatch")
    common.check_write_lease(ctx, row)
    common.refuse_read_only(row, ignore=common.bool_header(ctx, "x-ms-file-copy-ignore-readonly"))
    now = now_ns()
    attrs_h = h.get("x-ms-file-attributes")
    if attrs_h is None or attrs_h.lower() == "source":
        attrs = src["attrs"]
    else:
        attrs = common.smb_attrs(ctx, False, None, create=True)
    mode = (h.get("x-ms-file-permission-copy-mode") or "source").lower()
    perm = (
        src["perm_key"] if mode == "source" else common.smb_perm_key(ctx, False, None, create=True)
    )
    times = {
        "ctime": _copy_time(ctx, "x-ms-file-creation-time", src["ctime"], now),
        "wtime": _copy_time(ctx, "x-ms-file-last-write-time", src["wtime"], now),
        "chtime": _copy_time(ctx, "x-ms-file-change-time", src["chtime"], now),
    }
    meta = metadata_from(ctx) if ctx.req.metadata() else src["metadata"]
    copy_id = str(uuid.uuid4())
    copy_props = json.dumps(
        {
            "id": copy_id,
            "source": src_url,
            "status": "success",
            "progress": f"{src['size']}/{src['size']}",
            "completion": http_date(now),
        }
    )
    name = ctx.parts[-1]
    dead: list[int] = []
    store.begin()
    try:
        if src["blob_id"] is not None:
            store.incref(src["blob_id"])
        cols = dict(
            name=name,
            name_key=name_key(name),
            size=src["size"],
            blob_id=src["blob_id"],
            attrs=attrs,
            atime=now,
            mtime=now,
            etag=new_etag(now),
            metadata=meta,
            headers=src["headers"],
            perm_key=perm,
            copy=copy_props,
            **times,
        )
        if row is None:
            node_id = store.alloc_node_id(tree)
            store.insert_node(tree_id=tree, node_id=node_id, parent_id=parent_id, is_dir=0, **cols)
        else:
            node_id = row["node_id"]
            store.update_node(tree, node_id, **cols)
            if row["blob_id"] is not None:
                dead = store.decref_many([row["blob_id"]])
        store.commit()
    except BaseException:
        store.rollback()
        raise
    store.unlink_blobs(dead)
    row = common.written_node(ctx, tree, node_id)
    resp = response(202)
    add_etag(resp, row)
    resp.add("x-ms-copy-id", copy_id)
    resp.add("x-ms-copy-status", "success")
    return resp


async def abort_copy(ctx: Ctx) -> Response:
    share = writable(ctx)
    existing(ctx, share["tree_id"], ctx.parts, want_dir=False)
    raise StorageError(
        "NoPendingCopyOperation", "There is currently no pending copy operation.", status=409
    )
