"""Share operations: create, delete, properties, metadata, quota, stats, snapshots, ACLs,
permissions and share leases."""

from __future__ import annotations

import json
import sqlite3
import time

from ..context import Ctx
from ..errors import StorageError, share_lease_error
from ..formats import http_date, new_etag, now_ns, snapshot_id
from ..messages import Response
from ..xmlbody import child_text, el, parse
from . import common
from .common import add_metadata, live_share, metadata_from, read_share, response, xml_response

MAX_QUOTA_GIB = 102400
RECENT_DELETE_SECONDS = 5.0
MAX_SNAPSHOTS = 200
DEFAULT_QUOTA_GIB = 5120
ACCESS_TIERS = {
    "transactionoptimized": "TransactionOptimized",
    "hot": "Hot",
    "cool": "Cool",
    "premium": "Premium",
}


def _quota(ctx: Ctx, default: int | None) -> int | None:
    v = ctx.req.headers.get("x-ms-share-quota")
    if v is None:
        return default
    try:
        q = int(v)
    except ValueError:
        raise StorageError(
            "InvalidHeaderValue", details={"HeaderName": "x-ms-share-quota"}
        ) from None
    if not 1 <= q <= MAX_QUOTA_GIB:
        raise StorageError("InvalidHeaderValue", details={"HeaderName": "x-ms-share-quota"})
    return q


def _tier(ctx: Ctx) -> str | None:
    v = ctx.req.headers.get("x-ms-access-tier")
    if v is None:
        return None
    t = ACCESS_TIERS.get(v.lower())
    if t is None:
        raise StorageError("InvalidHeaderValue", details={"HeaderName": "x-ms-access-tier"})
    return t


async def create(ctx: Ctx) -> Response:
    store = ctx.store
    quota = _quota(ctx, DEFAULT_QUOTA_GIB)
    tier = _tier(ctx) or "TransactionOptimized"
    meta = metadata_from(ctx)
    if store.get_share(ctx.share) is not None:
        raise StorageError("ShareAlreadyExists")
    now = now_ns()
    etag = new_etag(now)
    store.begin()
    try:
        tree = store.insert_share(
            name=ctx.share,
            snapshot="",
            quota=quota,
            metadata=meta,
            etag=etag,
            mtime=now,
            created=now,
            access_tier=tier,
            tier_changed=now,
        )
        store.insert_node(
            tree_id=tree,
            node_id=0,
            parent_id=-1,
            name="",
            name_key="",
            is_dir=1,
            attrs="Directory",
            ctime=now,
            wtime=now,
            chtime=now,
            atime=now,
            mtime=now,
            etag=etag,
            perm_key=common.DIR_PERM_KEY,
        )
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return response(201, ("ETag", etag), ("Last-Modified", http_date(now)))


async def get_properties(ctx: Ctx) -> Response:
    row = read_share(ctx)
    _expire_lease(ctx, row)
    row = read_share(ctx)
    resp = response(200, ("ETag", row["etag"]), ("Last-Modified", http_date(row["mtime"])))
    add_metadata(resp, row["metadata"])
    resp.add("x-ms-share-quota", row["quota"])
    if not row["snapshot"]:
        state = row["lease_state"]
        resp.add("x-ms-lease-state", state)
        resp.add("x-ms-lease-status", "locked" if state == "leased" else "unlocked")
        if state == "leased":
            resp.add(
                "x-ms-lease-duration",
                "infinite" if row["lease_duration"] == "infinite" else "fixed",
            )
        resp.add("x-ms-access-tier", row["access_tier"])
        resp.add("x-ms-access-tier-change-time", http_date(row["tier_changed"]))
    return resp


def _check_share_lease(ctx: Ctx, share: sqlite3.Row) -> None:
    """Changes to a leased share need its lease id; a lease id on an unleased share is an error."""
    _expire_lease(ctx, share)
    row = ctx.store.get_share(share["name"], share["snapshot"])
    if row is None:  # pragma: no cover - answered InternalError
        raise RuntimeError(f"share {share['name']!r} is gone while checking its lease")
    given = ctx.req.headers.get("x-ms-lease-id")
    if row["lease_state"] == "leased":
        if not given:
            raise share_lease_error("LeaseIdMissing")
        if given.lower() != (row["lease_id"] or "").lower():
            raise share_lease_error("LeaseIdMismatchWithContainerOperation")
    elif given:
        raise share_lease_error("LeaseNotPresentWithContainerOperation")


async def delete(ctx: Ctx) -> Response:
    store = ctx.store
    snap = ctx.req.query.get("sharesnapshot", "")
    if not snap and store.get_share(ctx.share) is None:
        # Deletion is asynchronous in the service: deleting again right away still answers 202.
        if time.monotonic() - ctx.app.recently_deleted.get(ctx.share, -1e9) < RECENT_DELETE_SECONDS:
            return response(202)
    row = read_share(ctx)
    include = (ctx.req.headers.get("x-ms-delete-snapshots") or "").lower()
    if not snap:
        snaps = store.share_snapshots(ctx.share)
        if snaps and include not in ("include", "include-leased"):
            raise StorageError("ShareHasSnapshots")
        if include != "include-leased":
            _check_share_lease(ctx, row)
        trees = [row["tree_id"]] + [s["tree_id"] for s in snaps]
    else:
        trees = [row["tree_id"]]
    dead: list[int] = []
    store.begin()
    try:
        for t in trees:
            dead += store.delete_tree(t)
        store.commit()
    except BaseException:
        store.rollback()
        raise
    store.unlink_blobs(dead)
    if not snap:
        ctx.app.recently_deleted[ctx.share] = time.monotonic()
    return response(202)


async def set_metadata(ctx: Ctx) -> Response:
    row = common.writable(ctx)
    _check_share_lease(ctx, row)
    now = now_ns()
    etag = new_etag(now)
    ctx.store.update_share(row["tree_id"], metadata=metadata_from(ctx), etag=etag, mtime=now)
    return response(200, ("ETag", etag), ("Last-Modified", http_date(now)))


async def set_properties(ctx: Ctx) -> Response:
    row = common.writable(ctx)
    _check_share_lease(ctx, row)
    quota = _quota(ctx, None)
    tier = _tier(ctx)
    now = now_ns()
    etag = new_etag(now)
    cols: dict[str, object] = {"etag": etag, "mtime": now}
    if quota is not None:
        cols["quota"] = quota
    if tier is not None and tier != row["access_tier"]:
        cols["access_tier"] = tier
        cols["tier_changed"] = now
    ctx.store.update_share(row["tree_id"], **cols)
    return response(200, ("ETag", etag), ("Last-Modified", http_date(now)))


async def stats(ctx: Ctx) -> Response:
    row = read_share(ctx)
    usage = ctx.store.share_usage(row["tree_id"])
    resp = xml_response(f"<ShareStats>{el('ShareUsageBytes', usage)}</ShareStats>")
    resp.add("ETag", row["etag"])
    resp.add("Last-Modified", http_date(row["mtime"]))
    return resp


async def snapshot(ctx: Ctx) -> Response:
    store = ctx.store
    row = common.writable(ctx)
    if len(store.share_snapshots(ctx.share)) >= MAX_SNAPSHOTS:
        raise StorageError("ShareSnapshotCountExceeded")
    meta = metadata_from(ctx) if ctx.req.metadata() else row["metadata"]
    now = now_ns()
    snap = snapshot_id(now // 1_000_000_000 * 1_000_000_000)
    if store.get_share(ctx.share, snap) is not None:
        snap = snapshot_id(now)
    # Wait for content writes in flight (they run partly in threads) and hold new ones back.
    async with ctx.app.gate(row["tree_id"]).exclusive():
        store.begin()
        try:
            new_tree = store.snapshot_tree(row["tree_id"], snap)
            store.update_share(new_tree, metadata=meta)
            store.commit()
        except BaseException:
            store.rollback()
            raise
    return response(
        201,
        ("x-ms-snapshot", snap),
        ("ETag", row["etag"]),
        ("Last-Modified", http_date(row["mtime"])),
    )


# ----------------------------------------------------------------------------- ACL


async def get_acl(ctx: Ctx) -> Response:
    row = live_share(ctx)
    items = []
    for p in json.loads(row["acl"]):
        pol = "".join(
            el(tag, p.get(key))
            for tag, key in (("Start", "start"), ("Expiry", "expiry"), ("Permission", "permission"))
            if p.get(key)
        )
        items.append(
            f"<SignedIdentifier>{el('Id', p['id'])}<AccessPolicy>{pol}</AccessPolicy></SignedIdentifier>"
        )
    inner = (
        f"<SignedIdentifiers>{''.join(items)}</SignedIdentifiers>"
        if items
        else "<SignedIdentifiers />"
    )
    resp = xml_response(inner)
    resp.add("ETag", row["etag"])
    resp.add("Last-Modified", http_date(row["mtime"]))
    return resp


async def set_acl(ctx: Ctx) -> Response:
    row = common.writable(ctx)
    _check_share_lease(ctx, row)
    body = await ctx.req.read_body(1 << 20)
    acl = []
    if body.strip():
        doc = parse(body)
        for si in doc.findall("SignedIdentifier"):
            pol = si.find("AccessPolicy")
            acl.append(
                {
                    "id": child_text(si, "Id", ""),
                    "start": child_text(pol, "Start", ""),
                    "expiry": child_text(pol, "Expiry", ""),
                    "permission": child_text(pol, "Permission", ""),
                }
            )
    if len(acl) > 5:
        raise StorageError("InvalidXmlDocument")
    now = now_ns()
    etag = new_etag(now)
    ctx.store.update_share(row["tree_id"], acl=json.dumps(acl), etag=etag, mtime=now)
    return response(200, ("ETag", etag), ("Last-Modified", http_date(now)))


# ----------------------------------------------------------------------------- permissions


async def create_permission(ctx: Ctx) -> Response:
    live_share(ctx)
    body = await ctx.req.read_body(1 << 20)
    try:
        perm = json.loads(body.decode("utf-8"))["permission"]
    except (ValueError, KeyError, TypeError):
        raise StorageError("InvalidInput") from None
    key = common.store_permission(ctx, perm)
    return response(201, ("x-ms-file-permission-key", key))


async def get_permission(ctx: Ctx) -> Response:
    live_share(ctx)
    key = ctx.req.headers.get("x-ms-file-permission-key", "")
    sddl: str | None
    if key in (common.DIR_PERM_KEY, common.FILE_PERM_KEY):
        sddl = "O:SYG:SYD:(A;;FA;;;BA)(A;;FA;;;SY)(A;;0x1301bf;;;AU)(A;;0x1200a9;;;BU)"
    else:
        sddl = ctx.store.get_permission(key)
        if sddl is None:
            raise StorageError("FilePermissionNotFound")
    return Response(
        status=200,
        headers=[("Content-Type", "application/json")],
        body=json.dumps({"permission": sddl}).encode(),
    )


# ----------------------------------------------------------------------------- leases


def _expire_lease(ctx: Ctx, row: sqlite3.Row) -> None:
    """A fixed-duration lease that ran out becomes 'expired' (like available)."""
    if row["lease_state"] == "leased" and row["lease_until"] and row["lease_until"] <= time.time():
        ctx.store.update_share(row["tree_id"], lease_state="expired", lease_until=None)


async def lease(ctx: Ctx) -> Response:
    store = ctx.store
    row = common.writable(ctx)
    _expire_lease(ctx, row)
    row = live_share(ctx)
    h = ctx.req.headers
    action = (h.get("x-ms-lease-action") or "").lower()
    given = (h.get("x-ms-lease-id") or "").lower()
    state = row["lease_state"]
    current = (row["lease_id"] or "").lower()
    resp = response(200, ("ETag", row["etag"]), ("Last-Modified", http_date(row["mtime"])))
    if action == "acquire":
        dur = h.get("x-ms-lease-duration", "-1")
        try:
            d = int(dur)
        except ValueError:
            d = 0
        if d != -1 and not 15 <= d <= 60:
            raise StorageError("InvalidHeaderValue", details={"HeaderName": "x-ms-lease-duration"})
        new_id = common.new_lease_id(ctx)
        if state == "leased" and new_id.lower() != current:
            raise StorageError("LeaseAlreadyPresent")
        store.update_share(
            row["tree_id"],
            lease_id=new_id,
            lease_state="leased",
            lease_duration="infinite" if d == -1 else "fixed",
            lease_until=None if d == -1 else time.time() + d,
        )
        resp.status = 201
        resp.add("x-ms-lease-id", new_id)
        return resp
    if action == "break":
        if state != "leased":
            raise share_lease_error("LeaseNotPresentWithLeaseOperation")
        store.update_share(row["tree_id"], lease_state="broken", lease_until=None)
        resp.status = 202
        resp.add("x-ms-lease-time", 0)
        return resp
    if not given:
        raise StorageError("MissingRequiredHeader", details={"HeaderName": "x-ms-lease-id"})
    if state != "leased" and not (action == "release" and state == "broken" and given == current):
        raise share_lease_error("LeaseNotPresentWithLeaseOperation")
    if given != current:
        raise share_lease_error("LeaseIdMismatchWithLeaseOperation")
    if action == "release":
        store.update_share(
            row["tree_id"],
            lease_id=None,
            lease_state="available",
            lease_duration=None,
            lease_until=None,
        )
        return resp
    if action == "change":
        new_id = common.new_lease_id(ctx)
        store.update_share(row["tree_id"], lease_id=new_id)
        resp.add("x-ms-lease-id", new_id)
        return resp
    if action == "renew":
        if row["lease_until"]:
            # a fixed-duration lease restarts its period
            left = row["lease_until"] - time.time()
            store.update_share(row["tree_id"], lease_until=time.time() + max(left, 15))
        resp.add("x-ms-lease-id", row["lease_id"])
        return resp
    raise StorageError("InvalidHeaderValue", details={"HeaderName": "x-ms-lease-action"})
