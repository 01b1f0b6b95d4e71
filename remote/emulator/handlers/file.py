"""File operations: create, get (ranged, streamed), properties, metadata, delete, put range,
rename. Ranges listing, leases and copies live in file_ranges, file_lease and file_copy."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncGenerator

from .. import ranges as rg
from ..blobs import clear_range, read_range, resize_blob
from ..context import Ctx
from ..errors import StorageError
from ..formats import name_key, new_etag, now_ns, smb_time
from ..messages import Response
from . import common
from .common import (
    add_etag,
    add_lease,
    add_metadata,
    add_smb,
    bool_header,
    existing,
    metadata_from,
    read_share,
    response,
    walk,
    writable,
)
from .directory import rename_node
from .file_content import (
    MAX_RANGE,
    STREAM_CHUNK,
    add_content_headers,
    add_copy,
    blob_path,
    content_headers,
    content_length_header,
    file_lock,
    md5_of,
    parse_range,
    private_blob,
    write_data,
)

# ----------------------------------------------------------------------------- create


async def create(ctx: Ctx) -> Response:
    store = ctx.store
    share = writable(ctx)
    tree = share["tree_id"]
    size = content_length_header(ctx, required=True)
    ftype = ctx.req.headers.get("x-ms-type", "")
    if ftype.lower() != "file":
        raise StorageError(
            "InvalidHeaderValue", details={"HeaderName": "x-ms-type", "HeaderValue": ftype}
        )
    parent_id, row = walk(ctx, tree, ctx.parts)
    if row is not None and row["is_dir"]:
        raise StorageError("ResourceTypeMismatch")
    common.check_write_lease(ctx, row)
    now = now_ns()
    times = common.smb_times(ctx, now, None, create=True)
    attrs = common.smb_attrs(ctx, False, None, create=True)
    meta = metadata_from(ctx)
    headers = content_headers(ctx, True, None)
    name = ctx.parts[-1]
    dead: list[int] = []
    if row is None:
        store.begin()
        try:
            perm = common.smb_perm_key(ctx, False, None, create=True)
            node_id = store.alloc_node_id(tree)
            store.insert_node(
                tree_id=tree,
                node_id=node_id,
                parent_id=parent_id,
                name=name,
                name_key=name_key(name),
                is_dir=0,
                size=size,
                attrs=attrs,
                atime=now,
                mtime=now,
                etag=new_etag(now),
                metadata=meta,
                headers=headers,
                perm_key=perm,
                **times,
            )
            store.commit()
        except BaseException:
            store.rollback()
            raise
    else:
        node_id = row["node_id"]
        async with file_lock(ctx, tree, node_id):
            row = common.current_node(ctx, tree, node_id)
            common.refuse_read_only(row)
            perm = common.smb_perm_key(ctx, False, None, create=True)
            store.update_node(
                tree,
                node_id,
                name=name,
                size=size,
                blob_id=None,
                attrs=attrs,
                atime=now,
                mtime=now,
                etag=new_etag(now),
                metadata=meta,
                headers=headers,
                perm_key=perm,
                copy=None,
                **times,
            )
            if row["blob_id"] is not None:
                dead = store.decref_many([row["blob_id"]])
    store.unlink_blobs(dead)
    row = common.written_node(ctx, tree, node_id)
    resp = response(201)
    add_etag(resp, row)
    resp.add("x-ms-request-server-encrypted", "true")
    add_smb(resp, row)
    return resp


# ----------------------------------------------------------------------------- read


def _file_headers(resp: Response, row: sqlite3.Row) -> None:
    add_etag(resp, row)
    add_metadata(resp, row["metadata"])
    resp.add("x-ms-type", "File")
    resp.add("x-ms-server-encrypted", "true")
    add_smb(resp, row)
    add_lease(resp, row)
    add_copy(resp, row)


async def get_properties(ctx: Ctx) -> Response:
    share = read_share(ctx)
    row = existing(ctx, share["tree_id"], ctx.parts, want_dir=False)
    common.check_read_lease(ctx, row)
    resp = Response(status=200)
    add_content_headers(resp, row["headers"])
    _file_headers(resp, row)
    resp.length = row["size"]

    async def nothing() -> AsyncGenerator[bytes, None]:
        return
        yield b""  # pragma: no cover

    resp.stream = nothing
    return resp


async def get(ctx: Ctx) -> Response:
    share = read_share(ctx)
    row = existing(ctx, share["tree_id"], ctx.parts, want_dir=False)
    common.check_read_lease(ctx, row)
    size = row["size"]
    rng = parse_range(ctx, required=False)
    want_md5 = bool_header(ctx, "x-ms-range-get-content-md5")
    if rng is None:
        if want_md5:
            raise StorageError(
                "InvalidHeaderValue", details={"HeaderName": "x-ms-range-get-content-md5"}
            )
        start, end, status = 0, size, 200
    else:
        start, last = rng
        if start >= size:
            raise StorageError("InvalidRange", headers=[("Content-Range", f"bytes */{size}")])
        end = size if last is None else min(last + 1, size)
        status = 206
        if want_md5 and end - start > MAX_RANGE:
            raise StorageError(
                "OutOfRangeInput", details={"HeaderName": "x-ms-range-get-content-md5"}
            )
    resp = Response(status=status)
    add_content_headers(resp, row["headers"], md5_whole=rng is None)
    if rng is not None:
        resp.add("Content-Range", f"bytes {start}-{end - 1}/{size}")
    resp.add("Accept-Ranges", "bytes")
    _file_headers(resp, row)
    if rng is not None and size > 0:
        hd = json.loads(row["headers"])
        if hd.get("content_md5"):
            resp.add("x-ms-content-md5", hd["content_md5"])
    length = end - start
    path = blob_path(ctx, row)
    if length <= STREAM_CHUNK or want_md5:
        data = read_range(path, start, length)
        if want_md5:
            resp.add("Content-MD5", await md5_of(data))
        resp.body = data
        return resp

    # the server sends it with sendfile(2), from the blob file straight to the socket
    resp.sendfile = (path, start)
    resp.length = length
    return resp


# ----------------------------------------------------------------------------- write


async def put_range(ctx: Ctx) -> Response:
    store = ctx.store
    share = writable(ctx)
    tree = share["tree_id"]
    h = ctx.req.headers
    start, last = parse_range(ctx, required=True)
    mode = (h.get("x-ms-write") or "").lower()
    if mode not in ("update", "clear"):
        if not mode:
            raise StorageError("MissingRequiredHeader", details={"HeaderName": "x-ms-write"})
        raise StorageError(
            "InvalidHeaderValue", details={"HeaderName": "x-ms-write", "HeaderValue": mode}
        )
    if last is None:
        raise StorageError("InvalidHeaderValue", details={"HeaderName": "x-ms-range"})
    end = last + 1
    n = ctx.req.content_length
    if mode == "update":
        if "content-length" not in h:
            raise StorageError("MissingContentLengthHeader")
        if n > MAX_RANGE or end - start > MAX_RANGE:
            raise StorageError("RequestBodyTooLarge")
        if n != end - start:
            raise StorageError("InvalidHeaderValue", details={"HeaderName": "Content-Length"})
    elif n != 0:
        raise StorageError("InvalidHeaderValue", details={"HeaderName": "Content-Length"})
    preserve_wtime = (h.get("x-ms-file-last-write-time") or "now").lower() == "preserve"
    row = existing(ctx, tree, ctx.parts, want_dir=False)
    if end > row["size"]:
        raise StorageError("InvalidRange")
    common.check_write_lease(ctx, row)
    md5 = None
    body: bytes | bytearray = b""
    given_md5 = h.get("content-md5")
    if mode == "update":
        body = await ctx.req.read_body(MAX_RANGE)
        if len(body) != n:
            raise StorageError("InvalidInput")
        if given_md5:
            md5 = await md5_of(body)
            if given_md5 != md5:
                raise StorageError("Md5Mismatch")
    async with ctx.app.gate(tree).writing(), file_lock(ctx, tree, row["node_id"]):
        row = common.current_node(ctx, tree, row["node_id"])
        common.refuse_read_only(row)
        if end > row["size"]:
            raise StorageError("InvalidRange")
        if mode == "update":
            blob = await private_blob(ctx, tree, row)
            md5 = await write_data(store.blob_path(blob), start, body, md5, ctx.app.full_md5)
            store.set_blob_ranges(blob, rg.add(store.blob_ranges(blob), start, end))
        elif row["blob_id"] is not None:
            blob = await private_blob(ctx, tree, row)
            clear_range(store.blob_path(blob), start, end - start)
            store.set_blob_ranges(blob, rg.subtract(store.blob_ranges(blob), start, end))
        now = now_ns()
        cols: dict[str, object] = {"etag": new_etag(now), "mtime": now, "chtime": now}
        if not preserve_wtime:
            cols["wtime"] = now
        store.update_node(tree, row["node_id"], **cols)
        row = common.written_node(ctx, tree, row["node_id"])
    resp = response(201)
    add_etag(resp, row)
    resp.add("Content-MD5", md5)
    resp.add("x-ms-request-server-encrypted", "true")
    resp.add("x-ms-file-last-write-time", smb_time(row["wtime"]))
    return resp


async def set_properties(ctx: Ctx) -> Response:
    store = ctx.store
    share = writable(ctx)
    tree = share["tree_id"]
    row = existing(ctx, tree, ctx.parts, want_dir=False)
    common.check_write_lease(ctx, row)
    new_size = content_length_header(ctx, required=False)
    now = now_ns()
    times = common.smb_times(ctx, now, row, create=False)
    attrs = common.smb_attrs(ctx, False, row, create=False)
    async with file_lock(ctx, tree, row["node_id"]):
        row = common.current_node(ctx, tree, row["node_id"])
        perm = common.smb_perm_key(ctx, False, row, create=False)
        headers = content_headers(ctx, False, row["headers"])
        cols: dict[str, object] = dict(attrs=attrs, perm_key=perm, headers=headers, **times)
        if new_size is not None and new_size != row["size"]:
            if "ReadOnly" in attrs:  # (clearing the attribute in the same call may resize)
                common.refuse_read_only(row)
            if row["blob_id"] is not None:
                blob = await private_blob(ctx, tree, row)
                resize_blob(store.blob_path(blob), new_size)
                store.set_blob_ranges(blob, rg.truncate(store.blob_ranges(blob), new_size))
            cols["size"] = new_size
            lw = (ctx.req.headers.get("x-ms-file-last-write-time") or "preserve").lower()
            if lw in ("preserve", "now"):
                cols["wtime"] = now
        now = now_ns()
        cols.update(etag=new_etag(now), mtime=now)
        store.update_node(tree, row["node_id"], **cols)
        row = common.written_node(ctx, tree, row["node_id"])
    resp = response(200)
    add_etag(resp, row)
    resp.add("x-ms-request-server-encrypted", "true")
    add_smb(resp, row)
    return resp


async def set_metadata(ctx: Ctx) -> Response:
    return common.set_node_metadata(ctx, want_dir=False)


async def delete(ctx: Ctx) -> Response:
    store = ctx.store
    share = writable(ctx)
    tree = share["tree_id"]
    row = existing(ctx, tree, ctx.parts, want_dir=False)
    common.check_write_lease(ctx, row)
    async with file_lock(ctx, tree, row["node_id"]):
        row = common.current_node(ctx, tree, row["node_id"])
        common.refuse_read_only(row)
        store.delete_node(tree, row["node_id"])
        dead = store.decref_many([row["blob_id"]]) if row["blob_id"] is not None else []
    store.unlink_blobs(dead)
    return response(202)


async def rename(ctx: Ctx) -> Response:
    return await rename_node(ctx, want_dir=False)
