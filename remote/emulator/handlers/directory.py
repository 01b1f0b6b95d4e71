"""Directory operations: create, delete, properties, metadata, list (paged), rename.

Rename is shared with files (`rename_node`): both move a node to a new parent/name in one
SQLite update, so renaming a directory with 100k descendants costs the same as renaming a file.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from ..context import Ctx
from ..errors import StorageError
from ..formats import file_id, http_date, name_key, new_etag, now_ns, smb_time, valid_component
from ..messages import Response
from ..routing import strip_trailing_dots
from ..xmlbody import el, esc, name_el
from . import common
from .common import (
    add_etag,
    add_metadata,
    add_smb,
    bool_header,
    existing,
    int_param,
    metadata_from,
    read_share,
    response,
    walk,
    writable,
    xml_response,
)
from .service import decode_marker, encode_marker, service_endpoint

MAX_RESULTS = 5000


async def create(ctx: Ctx) -> Response:
    store = ctx.store
    share = writable(ctx)
    tree = share["tree_id"]
    if not ctx.parts:
        raise StorageError("ResourceAlreadyExists")
    parent_id, row = walk(ctx, tree, ctx.parts)
    if row is not None:
        raise StorageError("ResourceAlreadyExists" if row["is_dir"] else "ResourceTypeMismatch")
    now = now_ns()
    times = common.smb_times(ctx, now, None, create=True)
    attrs = common.smb_attrs(ctx, True, None, create=True)
    meta = metadata_from(ctx)
    store.begin()
    try:
        perm = common.smb_perm_key(ctx, True, None, create=True)
        node_id = store.alloc_node_id(tree)
        etag = new_etag(now)
        name = ctx.parts[-1]
        store.insert_node(
            tree_id=tree,
            node_id=node_id,
            parent_id=parent_id,
            name=name,
            name_key=name_key(name),
            is_dir=1,
            attrs=attrs,
            atime=now,
            mtime=now,
            etag=etag,
            metadata=meta,
            perm_key=perm,
            **times,
        )
        store.commit()
    except BaseException:
        store.rollback()
        raise
    row = common.written_node(ctx, tree, node_id)
    resp = response(201)
    add_etag(resp, row)
    resp.add("x-ms-request-server-encrypted", "true")
    add_smb(resp, row)
    return resp


async def get_properties(ctx: Ctx) -> Response:
    share = read_share(ctx)
    row = existing(ctx, share["tree_id"], ctx.parts, want_dir=True)
    resp = response(200)
    add_etag(resp, row)
    add_metadata(resp, row["metadata"])
    resp.add("x-ms-server-encrypted", "true")
    add_smb(resp, row)
    return resp


async def delete(ctx: Ctx) -> Response:
    store = ctx.store
    share = writable(ctx)
    tree = share["tree_id"]
    if not ctx.parts:
        raise StorageError("InvalidUri")
    row = existing(ctx, tree, ctx.parts, want_dir=True)
    if store.has_children(tree, row["node_id"]):
        raise StorageError("DirectoryNotEmpty")
    store.delete_node(tree, row["node_id"])
    return response(202)


async def set_metadata(ctx: Ctx) -> Response:
    return common.set_node_metadata(ctx, want_dir=True)


async def set_properties(ctx: Ctx) -> Response:
    store = ctx.store
    share = writable(ctx)
    tree = share["tree_id"]
    row = existing(ctx, tree, ctx.parts, want_dir=True)
    now = now_ns()
    times = common.smb_times(ctx, now, row, create=False)
    attrs = common.smb_attrs(ctx, True, row, create=False)
    perm = common.smb_perm_key(ctx, True, row, create=False)
    etag = new_etag(now)
    store.update_node(
        tree, row["node_id"], attrs=attrs, perm_key=perm, etag=etag, mtime=now, **times
    )
    row = common.written_node(ctx, tree, row["node_id"])
    resp = response(200)
    add_etag(resp, row)
    resp.add("x-ms-request-server-encrypted", "true")
    add_smb(resp, row)
    return resp


# ----------------------------------------------------------------------------- listing


async def list_entries(ctx: Ctx) -> Response:
    q = ctx.req.query
    share = read_share(ctx)
    tree = share["tree_id"]
    dir_row = existing(ctx, tree, ctx.parts, want_dir=True)
    prefix = q.get("prefix", "")
    marker = q.get("marker", "")
    limit = int_param(ctx, "maxresults", MAX_RESULTS, 1, MAX_RESULTS)
    include = {x.strip().lower() for x in q.get("include", "").split(",") if x.strip()}
    for x in include:
        if x not in ("timestamps", "etag", "attributes", "permissionkey"):
            raise StorageError(
                "InvalidQueryParameterValue",
                details={"QueryParameterName": "include", "QueryParameterValue": q["include"]},
            )
    start = name_key(decode_marker(marker)) if marker else ""
    rows = ctx.store.list_children(tree, dir_row["node_id"], name_key(prefix), start, limit + 1)
    nxt = rows[limit] if len(rows) > limit else None
    rows = rows[:limit]

    ts, et = "timestamps" in include, "etag" in include
    attrs, permk = "attributes" in include, "permissionkey" in include
    out = []
    for r in rows:
        props = []
        if not r["is_dir"]:
            props.append(f"<Content-Length>{r['size']}</Content-Length>")
        if ts:
            props.append(
                f"<CreationTime>{smb_time(r['ctime'])}</CreationTime>"
                f"<LastAccessTime>{smb_time(r['atime'])}</LastAccessTime>"
                f"<LastWriteTime>{smb_time(r['wtime'])}</LastWriteTime>"
                f"<ChangeTime>{smb_time(r['chtime'])}</ChangeTime>"
            )
        if et:
            props.append(f"<Last-Modified>{http_date(r['mtime'])}</Last-Modified>")
            props.append(f"<Etag>{esc(r['etag'])}</Etag>")
        tag = "Directory" if r["is_dir"] else "File"
        item = f"<{tag}>{name_el(r['name'])}<FileId>{file_id(r['node_id'])}</FileId>"
        item += f"<Properties>{''.join(props)}</Properties>" if props else "<Properties />"
        if attrs:
            item += f"<Attributes>{esc(r['attrs'])}</Attributes>"
        if permk:
            item += f"<PermissionKey>{r['perm_key']}</PermissionKey>"
        out.append(item + f"</{tag}>")

    head = (
        f'<EnumerationResults ServiceEndpoint="{esc(service_endpoint(ctx))}" '
        f'ShareName="{esc(ctx.share)}"'
    )
    if share["snapshot"]:
        head += f' ShareSnapshot="{share["snapshot"]}"'
    head += f' DirectoryPath="{esc(ctx.path)}">'
    parts = [head]
    if marker:
        parts.append(el("Marker", marker))
    if prefix:
        parts.append(el("Prefix", prefix))
    if "maxresults" in q:
        parts.append(el("MaxResults", limit))
    parts.append(f"<DirectoryId>{file_id(dir_row['node_id'])}</DirectoryId>")
    parts.append(f"<Entries>{''.join(out)}</Entries>" if out else "<Entries />")
    parts.append(el("NextMarker", encode_marker(nxt["name"])) if nxt else "<NextMarker />")
    parts.append("</EnumerationResults>")
    return xml_response("".join(parts))


# ----------------------------------------------------------------------------- rename


def source_parts(ctx: Ctx, url: str) -> list[str]:
    """Share-relative path components of a rename/copy source URL in this account and share."""
    path = unquote(urlsplit(url).path, errors="surrogatepass")
    segs = [s for s in path.split("/")]
    segs = segs[1:] if segs and segs[0] == "" else segs
    if len(segs) >= 2 and segs[0] == ctx.app.account:
        segs = segs[1:]
    if not segs or segs[0] != ctx.share:
        raise StorageError("InvalidInput", "The source and destination must be in the same share.")
    parts = strip_trailing_dots(
        [s for s in segs[1:] if s], ctx.req.headers.get("x-ms-source-allow-trailing-dot")
    )
    for p in parts:
        if not valid_component(p):
            raise StorageError("InvalidResourceName")
    return parts


async def rename(ctx: Ctx) -> Response:
    return await rename_node(ctx, want_dir=True)


async def rename_node(ctx: Ctx, want_dir: bool) -> Response:
    store = ctx.store
    share = writable(ctx)
    tree = share["tree_id"]
    h = ctx.req.headers
    src_url = h.get("x-ms-file-rename-source")
    if not src_url:
        raise StorageError(
            "MissingRequiredHeader", details={"HeaderName": "x-ms-file-rename-source"}
        )
    src_parts = source_parts(ctx, src_url)
    if not src_parts or not ctx.parts:
        raise StorageError("InvalidInput")
    try:
        _, src = walk(ctx, tree, src_parts)
    except StorageError as exc:
        if exc.code == "ParentNotFound":
            raise StorageError("ResourceNotFound") from None
        raise
    if src is None or bool(src["is_dir"]) != want_dir:
        raise StorageError("ResourceNotFound")
    dest_parent, dest = walk(ctx, tree, ctx.parts)
    replace = bool_header(ctx, "x-ms-file-rename-replace-if-exists")
    ignore_ro = bool_header(ctx, "x-ms-file-rename-ignore-readonly")
    if want_dir and store.is_ancestor(tree, src["node_id"], dest_parent):
        raise StorageError("InvalidInput", "The destination is inside the source directory.")
    common.check_write_lease(ctx, src, "x-ms-source-lease-id")
    dead: list[int] = []
    now = now_ns()
    async with ctx.app.locks.hold((tree, src["node_id"])):
        store.begin()
        try:
            if dest is not None and dest["node_id"] != src["node_id"]:
                if not replace:
                    raise StorageError("ResourceAlreadyExists")
                if dest["is_dir"] or want_dir:
                    raise StorageError(
                        "ResourceAlreadyExists"
                        if dest["is_dir"] == src["is_dir"]
                        else "ResourceTypeMismatch"
                    )
                if "ReadOnly" in dest["attrs"] and not ignore_ro:
                    raise StorageError("ReadOnlyAttribute")
                common.check_write_lease(ctx, dest, "x-ms-destination-lease-id")
                store.delete_node(tree, dest["node_id"])
                if dest["blob_id"] is not None:
                    dead = store.decref_many([dest["blob_id"]])
            times = common.smb_times(ctx, now, src, create=False)
            attrs = common.smb_attrs(ctx, want_dir, src, create=False)
            perm = common.smb_perm_key(ctx, want_dir, src, create=False)
            cols: dict[str, object] = dict(
                parent_id=dest_parent,
                name=ctx.parts[-1],
                name_key=name_key(ctx.parts[-1]),
                attrs=attrs,
                perm_key=perm,
                etag=new_etag(now),
                mtime=now,
                **times,
            )
            if ctx.req.metadata():
                cols["metadata"] = metadata_from(ctx)
            store.update_node(tree, src["node_id"], **cols)
            store.commit()
        except BaseException:
            store.rollback()
            raise
    store.unlink_blobs(dead)
    row = common.written_node(ctx, tree, src["node_id"])
    resp = response(200)
    add_etag(resp, row)
    resp.add("x-ms-request-server-encrypted", "true")
    add_smb(resp, row)
    return resp


async def list_handles(ctx: Ctx) -> Response:
    share = read_share(ctx)
    if ctx.parts:
        _, row = walk(ctx, share["tree_id"], ctx.parts)
        if row is None:
            raise StorageError("ResourceNotFound")
    return xml_response("<EnumerationResults><Entries /><NextMarker /></EnumerationResults>")


async def force_close_handles(ctx: Ctx) -> Response:
    share = read_share(ctx)
    if ctx.parts:
        _, row = walk(ctx, share["tree_id"], ctx.parts)
        if row is None:
            raise StorageError("ResourceNotFound")
    return response(200, ("x-ms-number-of-handles-closed", 0), ("x-ms-number-of-handles-failed", 0))
