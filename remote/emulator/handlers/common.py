"""Helpers shared by the handlers: share and path resolution, SMB properties, leases, headers."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid

from ... import naming
from ..context import Ctx
from ..errors import StorageError
from ..formats import (
    file_id,
    http_date,
    name_key,
    new_etag,
    now_ns,
    parse_attributes,
    parse_smb_time,
    smb_time,
)
from ..messages import Response
from ..xmlbody import document

DIR_PERM_KEY = "17100207456270243504*9622787259914961209"
FILE_PERM_KEY = "3254952746172754359*9622787259914961209"
SHARE_PERM_SUFFIX = "9622787259914961209"

CONTENT_HEADERS = {
    "x-ms-content-type": "content_type",
    "x-ms-content-encoding": "content_encoding",
    "x-ms-content-language": "content_language",
    "x-ms-cache-control": "cache_control",
    "x-ms-content-md5": "content_md5",
    "x-ms-content-disposition": "content_disposition",
}


def response(status: int, *headers: tuple[str, str | int | None]) -> Response:
    resp = Response(status=status)
    for k, v in headers:
        resp.add(k, v)
    return resp


def xml_response(inner: str, status: int = 200) -> Response:
    return Response(
        status=status, headers=[("Content-Type", "application/xml")], body=document(inner)
    )


# ----------------------------------------------------------------------------- shares


def live_share(ctx: Ctx) -> sqlite3.Row:
    row = ctx.store.get_share(ctx.share)
    if row is None:
        raise StorageError("ShareNotFound")
    return row


def read_share(ctx: Ctx) -> sqlite3.Row:
    """The share or, with ?sharesnapshot=, its snapshot."""
    snap = ctx.req.query.get("sharesnapshot", "")
    row = ctx.store.get_share(ctx.share, snap)
    if row is None:
        if snap and ctx.store.get_share(ctx.share) is not None:
            raise StorageError("ShareSnapshotNotFound")
        raise StorageError("ShareNotFound")
    return row


def writable(ctx: Ctx) -> sqlite3.Row:
    if ctx.req.query.get("sharesnapshot"):
        raise StorageError("ShareSnapshotOperationNotSupported")
    return live_share(ctx)


# ----------------------------------------------------------------------------- paths


def walk(ctx: Ctx, tree_id: int, parts: list[str]) -> tuple[int, sqlite3.Row | None]:
    """(parent node id, the node or None). Every ancestor must exist and be a directory."""
    store = ctx.store
    parent = 0
    for comp in parts[:-1]:
        hit = store.child_id(tree_id, parent, name_key(comp))
        if hit is None or not hit[1]:
            raise StorageError("ParentNotFound")
        parent = hit[0]
    if not parts:
        return -1, store.node(tree_id, 0)
    return parent, store.child(tree_id, parent, name_key(parts[-1]))


def existing(ctx: Ctx, tree_id: int, parts: list[str], want_dir: bool) -> sqlite3.Row:
    _, row = walk(ctx, tree_id, parts)
    if row is None or bool(row["is_dir"]) != want_dir:
        raise StorageError("ResourceNotFound")
    return row


def current_node(ctx: Ctx, tree_id: int, node_id: int) -> sqlite3.Row:
    """The node as it is now, read again after waiting for its lock: a request that ran
    meanwhile may have deleted it (ResourceNotFound)."""
    row = ctx.store.node(tree_id, node_id)
    if row is None:
        raise StorageError("ResourceNotFound")
    return row


def written_node(ctx: Ctx, tree_id: int, node_id: int) -> sqlite3.Row:
    """A node this request has just created or updated, for the response's headers."""
    row = ctx.store.node(tree_id, node_id)
    if row is None:  # pragma: no cover - answered InternalError
        raise RuntimeError(f"node {tree_id}/{node_id} is gone right after it was written")
    return row


# ----------------------------------------------------------------------------- metadata


def metadata_from(ctx: Ctx) -> str:
    meta = ctx.req.metadata()
    for k, _ in meta:
        if (
            not k
            or not (k[0].isalpha() or k[0] == "_")
            or not all(c.isalnum() or c == "_" for c in k)
        ):
            raise StorageError("InvalidMetadata")
    seen: dict[str, tuple[str, str]] = {}
    for k, v in meta:
        seen[k.lower()] = (k, v)
    if naming.metadata_size(dict(seen.values())) > naming.MAX_METADATA:
        raise StorageError("MetadataTooLarge")
    return json.dumps(list(seen.values()))


def add_metadata(resp: Response, meta_json: str) -> None:
    for k, v in json.loads(meta_json):
        resp.headers.append((f"x-ms-meta-{k}", v))


def metadata_xml(meta_json: str) -> str:
    from ..xmlbody import esc

    items = json.loads(meta_json)
    return "".join(f"<{k}>{esc(v)}</{k}>" for k, v in items)


# ----------------------------------------------------------------------------- SMB properties


def _time_header(ctx: Ctx, name: str, now: int, current: int | None, default: str) -> int | None:
    v = ctx.req.headers.get(name, default)
    lv = v.lower()
    if lv == "now":
        return now
    if lv == "preserve":
        if current is None:
            raise StorageError("InvalidHeaderValue", details={"HeaderName": name, "HeaderValue": v})
        return current
    return parse_smb_time(v, name)


def smb_times(ctx: Ctx, now: int, row: sqlite3.Row | None, create: bool) -> dict[str, int]:
    """Creation, last-write and change times from the request ('now', 'preserve', or a time)."""
    default = "now" if create else "preserve"
    out = {
        "ctime": _time_header(
            ctx, "x-ms-file-creation-time", now, row["ctime"] if row else None, default
        ),
        "wtime": _time_header(
            ctx, "x-ms-file-last-write-time", now, row["wtime"] if row else None, default
        ),
        "chtime": _time_header(
            ctx, "x-ms-file-change-time", now, row["chtime"] if row else None, "now"
        ),
    }
    return {k: v for k, v in out.items() if v is not None}


def smb_attrs(ctx: Ctx, is_dir: bool, row: sqlite3.Row | None, create: bool) -> str:
    v = ctx.req.headers.get("x-ms-file-attributes", "none" if create else "preserve")
    if v.lower() == "preserve":
        if row is None:
            raise StorageError(
                "InvalidHeaderValue",
                details={"HeaderName": "x-ms-file-attributes", "HeaderValue": v},
            )
        return row["attrs"]
    return parse_attributes(v, is_dir)


def smb_perm_key(ctx: Ctx, is_dir: bool, row: sqlite3.Row | None, create: bool) -> str:
    h = ctx.req.headers
    key = h.get("x-ms-file-permission-key")
    perm = h.get("x-ms-file-permission")
    if key and perm:
        raise StorageError("InvalidHeaderValue", details={"HeaderName": "x-ms-file-permission"})
    if key:
        if key not in (DIR_PERM_KEY, FILE_PERM_KEY) and ctx.store.get_permission(key) is None:
            raise StorageError("FilePermissionNotFound")
        return key
    if perm is None:
        if row is not None and not create:
            return row["perm_key"]
        return DIR_PERM_KEY if is_dir else FILE_PERM_KEY
    if perm.lower() == "inherit":
        return DIR_PERM_KEY if is_dir else FILE_PERM_KEY
    if perm.lower() == "preserve":
        if row is None:
            raise StorageError("InvalidHeaderValue", details={"HeaderName": "x-ms-file-permission"})
        return row["perm_key"]
    return store_permission(ctx, perm)


def store_permission(ctx: Ctx, sddl: str) -> str:
    if not sddl.startswith(("O:", "G:", "D:", "S:")) and "(" not in sddl:
        raise StorageError("InvalidFilePermission")
    digest = int.from_bytes(hashlib.sha256(sddl.encode()).digest()[:8], "big")
    key = f"{digest}*{SHARE_PERM_SUFFIX}"
    ctx.store.put_permission(key, sddl)
    return key


def add_smb(resp: Response, row: sqlite3.Row, parent_id: int | None = None) -> None:
    resp.add("x-ms-file-permission-key", row["perm_key"])
    resp.add("x-ms-file-attributes", row["attrs"])
    resp.add("x-ms-file-creation-time", smb_time(row["ctime"]))
    resp.add("x-ms-file-last-write-time", smb_time(row["wtime"]))
    resp.add("x-ms-file-change-time", smb_time(row["chtime"]))
    resp.add("x-ms-file-id", file_id(row["node_id"]))
    pid = row["parent_id"] if parent_id is None else parent_id
    resp.add("x-ms-file-parent-id", file_id(max(pid, 0)))


def add_etag(resp: Response, row: sqlite3.Row) -> None:
    resp.add("ETag", row["etag"])
    resp.add("Last-Modified", http_date(row["mtime"]))


# ----------------------------------------------------------------------------- leases


def check_write_lease(ctx: Ctx, row: sqlite3.Row | None, header: str = "x-ms-lease-id") -> None:
    """Writes to a leased file need its lease id; a lease id on an unleased file is an error."""
    given = ctx.req.headers.get(header)
    if row is None:
        return
    leased = row["lease_state"] == "leased"
    if leased:
        if not given:
            raise StorageError("LeaseIdMissing")
        if given.lower() != (row["lease_id"] or "").lower():
            raise StorageError("LeaseIdMismatchWithFileOperation")
    elif given:
        raise StorageError("LeaseNotPresentWithFileOperation")


def refuse_read_only(row: sqlite3.Row | None, ignore: bool = False) -> None:
    """A file with the ReadOnly attribute refuses a change of its content (Put Range, a
    resize, Create File or a copy over it) and its deletion; its properties stay settable,
    which is how the attribute is cleared. (As AzCopy's --force-if-read-only implies; the
    service documents only the rename's x-ms-file-rename-ignore-readonly.)"""
    if row is not None and not ignore and "ReadOnly" in (row["attrs"] or ""):
        raise StorageError("ReadOnlyAttribute")


def check_read_lease(ctx: Ctx, row: sqlite3.Row) -> None:
    given = ctx.req.headers.get("x-ms-lease-id")
    if not given:
        return
    if row["lease_state"] != "leased":
        raise StorageError("LeaseNotPresentWithFileOperation")
    if given.lower() != (row["lease_id"] or "").lower():
        raise StorageError("LeaseIdMismatchWithFileOperation")


def add_lease(resp: Response, row: sqlite3.Row) -> None:
    state = row["lease_state"]
    resp.add("x-ms-lease-state", state)
    resp.add("x-ms-lease-status", "locked" if state == "leased" else "unlocked")
    if state == "leased":
        resp.add("x-ms-lease-duration", row["lease_duration"] or "infinite")


def new_lease_id(ctx: Ctx) -> str:
    proposed = ctx.req.headers.get("x-ms-proposed-lease-id")
    if proposed:
        try:
            return str(uuid.UUID(proposed))
        except ValueError:
            raise StorageError(
                "InvalidHeaderValue", details={"HeaderName": "x-ms-proposed-lease-id"}
            ) from None
    return str(uuid.uuid4())


def bool_header(ctx: Ctx, name: str, default: bool = False) -> bool:
    v = ctx.req.headers.get(name)
    if v is None:
        return default
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise StorageError("InvalidHeaderValue", details={"HeaderName": name, "HeaderValue": v})


def int_param(ctx: Ctx, name: str, default: int, lo: int, hi: int | None = None) -> int:
    v = ctx.req.query.get(name)
    if v is None or v == "":
        return default
    try:
        n = int(v)
    except ValueError:
        raise StorageError(
            "InvalidQueryParameterValue",
            details={"QueryParameterName": name, "QueryParameterValue": v},
        ) from None
    if n < lo:
        raise StorageError(
            "OutOfRangeQueryParameterValue",
            "One of the query parameters specified in the request URI is outside the permissible range.",
            status=400,
            details={
                "QueryParameterName": name,
                "QueryParameterValue": v,
                "MinimumAllowed": str(lo),
            },
        )
    if hi is not None and n > hi:
        n = hi
    return n


def set_node_metadata(ctx: Ctx, want_dir: bool) -> Response:
    """Set Directory Metadata and Set File Metadata: replace the metadata, new ETag and times
    (a file also checks its write lease)."""
    share = writable(ctx)
    tree = share["tree_id"]
    row = existing(ctx, tree, ctx.parts, want_dir=want_dir)
    if not want_dir:
        check_write_lease(ctx, row)
    meta = metadata_from(ctx)
    now = now_ns()
    etag = new_etag(now)
    ctx.store.update_node(tree, row["node_id"], metadata=meta, etag=etag, mtime=now, chtime=now)
    return response(
        200,
        ("ETag", etag),
        ("Last-Modified", http_date(now)),
        ("x-ms-request-server-encrypted", "true"),
    )
