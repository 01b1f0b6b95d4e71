"""List Ranges and List All Ranges, with snapshot diffs (Range and ClearRange)."""

from __future__ import annotations

import trio

from .. import ranges as rg
from ..blobs import diff_blobs
from ..context import Ctx
from ..errors import StorageError
from ..messages import Response
from . import common
from .common import (
    add_etag,
    existing,
    read_share,
    walk,
    xml_response,
)
from .file_content import (
    blob_path,
    parse_range,
)
from .service import decode_marker, encode_marker

# ----------------------------------------------------------------------------- ranges


async def list_ranges(ctx: Ctx) -> Response:
    store = ctx.store
    share = read_share(ctx)
    row = existing(ctx, share["tree_id"], ctx.parts, want_dir=False)
    common.check_read_lease(ctx, row)
    size = row["size"]
    cur = rg.truncate(store.blob_ranges(row["blob_id"]), size)
    prev_snap = ctx.req.query.get("prevsharesnapshot")
    cleared: rg.Ranges = []
    if prev_snap:
        prev_share = store.get_share(ctx.share, prev_snap)
        if prev_share is None:
            raise StorageError("ShareSnapshotNotFound")
        try:
            _, prev = walk(ctx, prev_share["tree_id"], ctx.parts)
        except StorageError:
            prev = None
        if prev is None or prev["is_dir"]:
            changed = cur
        elif prev["blob_id"] == row["blob_id"]:
            changed = []
            if prev["size"] > size:
                cleared = rg.truncate(
                    rg.clip(store.blob_ranges(prev["blob_id"]), size, prev["size"]), size
                )
        else:
            changed, cleared = await trio.to_thread.run_sync(
                diff_blobs,
                blob_path(ctx, prev),
                rg.truncate(store.blob_ranges(prev["blob_id"]), prev["size"]),
                blob_path(ctx, row),
                cur,
                size,
            )
    else:
        changed = cur
    rng = parse_range(ctx, required=False)
    if rng is not None:
        s, last = rng
        e = size if last is None else last + 1
        changed, cleared = rg.clip(changed, s, e), rg.clip(cleared, s, e)
    items = [(s, e, "Range") for s, e in changed] + [(s, e, "ClearRange") for s, e in cleared]
    items.sort()
    # Paging (List All Ranges): the marker is the start offset of the next item.
    q = ctx.req.query
    paged = "maxresults" in q or "marker" in q
    if q.get("marker"):
        after = int(decode_marker(q["marker"]) or 0)
        items = [it for it in items if it[0] >= after]
    limit = common.int_param(ctx, "maxresults", len(items) or 1, 1)
    nxt = items[limit] if len(items) > limit else None
    items = items[:limit]
    inner = "".join(f"<{t}><Start>{s}</Start><End>{e - 1}</End></{t}>" for s, e, t in items)
    if nxt is not None:
        inner += f"<NextMarker>{encode_marker(str(nxt[0]))}</NextMarker>"
    elif paged:
        inner += "<NextMarker />"
    resp = xml_response(f"<Ranges>{inner}</Ranges>" if inner else "<Ranges />")
    add_etag(resp, row)
    resp.add("x-ms-content-length", size)
    return resp
