"""File leases: acquire (infinite), change, release, break."""

from __future__ import annotations

from ..context import Ctx
from ..errors import StorageError
from ..messages import Response
from . import common
from .common import (
    add_etag,
    existing,
    response,
    writable,
)

# ----------------------------------------------------------------------------- leases


async def lease(ctx: Ctx) -> Response:
    store = ctx.store
    share = writable(ctx)
    tree = share["tree_id"]
    row = existing(ctx, tree, ctx.parts, want_dir=False)
    h = ctx.req.headers
    action = (h.get("x-ms-lease-action") or "").lower()
    given = (h.get("x-ms-lease-id") or "").lower()
    state = row["lease_state"]
    current = (row["lease_id"] or "").lower()
    resp = response(200)
    add_etag(resp, row)
    if action == "acquire":
        dur = h.get("x-ms-lease-duration", "-1")
        if dur.strip() != "-1":
            raise StorageError(
                "InvalidHeaderValue",
                details={"HeaderName": "x-ms-lease-duration", "HeaderValue": dur},
            )
        new_id = common.new_lease_id(ctx)
        if state == "leased" and new_id.lower() != current:
            raise StorageError("LeaseAlreadyPresent")
        store.update_node(
            tree, row["node_id"], lease_id=new_id, lease_state="leased", lease_duration="infinite"
        )
        resp.status = 201
        resp.add("x-ms-lease-id", new_id)
        return resp
    if action == "break":
        if state != "leased":
            raise StorageError("LeaseNotPresentWithLeaseOperation")
        store.update_node(tree, row["node_id"], lease_state="broken", lease_duration=None)
        resp.status = 202
        resp.add("x-ms-lease-id", row["lease_id"])
        resp.add("x-ms-lease-time", 0)
        return resp
    if action not in ("release", "change"):
        raise StorageError("InvalidHeaderValue", details={"HeaderName": "x-ms-lease-action"})
    if not given:
        raise StorageError("MissingRequiredHeader", details={"HeaderName": "x-ms-lease-id"})
    if state != "leased":
        if action == "release" and state == "broken" and given == current:
            store.update_node(
                tree, row["node_id"], lease_id=None, lease_state="available", lease_duration=None
            )
            return resp
        raise StorageError("LeaseNotPresentWithLeaseOperation")
    if given != current:
        raise StorageError("LeaseIdMismatchWithLeaseOperation")
    if action == "release":
        store.update_node(
            tree, row["node_id"], lease_id=None, lease_state="available", lease_duration=None
        )
        return resp
    new_id = common.new_lease_id(ctx)
    store.update_node(tree, row["node_id"], lease_id=new_id)
    resp.add("x-ms-lease-id", new_id)
    return resp
