"""Service-level operations: List Shares, Get/Set File Service Properties."""

from __future__ import annotations

import base64
import sqlite3
import xml.etree.ElementTree as ET

from ..context import Ctx
from ..errors import StorageError
from ..formats import http_date
from ..messages import Response
from ..xmlbody import el, esc, name_el, parse, serialize
from .common import int_param, metadata_xml, response, xml_response

MAX_RESULTS = 5000

DEFAULT_SERVICE_PROPERTIES = (
    "<StorageServiceProperties>"
    "<HourMetrics><Version>1.0</Version><Enabled>false</Enabled>"
    "<RetentionPolicy><Enabled>false</Enabled></RetentionPolicy></HourMetrics>"
    "<MinuteMetrics><Version>1.0</Version><Enabled>false</Enabled>"
    "<RetentionPolicy><Enabled>false</Enabled></RetentionPolicy></MinuteMetrics>"
    "<Cors />"
    "<ProtocolSettings><SMB><Multichannel><Enabled>false</Enabled></Multichannel></SMB>"
    "</ProtocolSettings>"
    "</StorageServiceProperties>"
)


def encode_marker(text: str) -> str:
    b = base64.b64encode(text.encode("utf-8", "surrogatepass")).decode()
    return f"1!{len(b)}!{b}"


def decode_marker(marker: str) -> str:
    try:
        _, n, b = marker.split("!", 2)
        if int(n) != len(b):
            raise ValueError
        return base64.b64decode(b).decode("utf-8", "surrogatepass")
    except (ValueError, UnicodeDecodeError):
        raise StorageError(
            "OutOfRangeInput",
            details={"QueryParameterName": "marker", "QueryParameterValue": marker},
        ) from None


def service_endpoint(ctx: Ctx) -> str:
    host = ctx.req.headers.get("host", "127.0.0.1")
    return f"http://{host}/{ctx.app.account}/"


async def list_shares(ctx: Ctx) -> Response:
    q = ctx.req.query
    prefix = q.get("prefix", "")
    marker = q.get("marker", "")
    limit = int_param(ctx, "maxresults", MAX_RESULTS, 1, MAX_RESULTS)
    include = {x.strip().lower() for x in q.get("include", "").split(",") if x.strip()}
    rows = ctx.store.list_shares(prefix, "", 1 << 30, "snapshots" in include)
    # order: by name, snapshots (oldest first) before the live share
    keyed = [((r["name"], 1 if r["snapshot"] == "" else 0, r["snapshot"]), r) for r in rows]
    keyed.sort(key=lambda kr: kr[0])
    if marker:
        mname, _, msnap = decode_marker(marker).partition("\n")
        mkey = (mname, 1 if msnap == "" else 0, msnap)
        keyed = [kr for kr in keyed if kr[0] >= mkey]
    page, rest = keyed[:limit], keyed[limit:]
    parts = [f'<EnumerationResults ServiceEndpoint="{esc(service_endpoint(ctx))}">']
    if prefix:
        parts.append(el("Prefix", prefix))
    if marker:
        parts.append(el("Marker", marker))
    if "maxresults" in q:
        parts.append(el("MaxResults", limit))
    items = []
    for _, r in page:
        items.append(share_item(r, "metadata" in include))
    parts.append(f"<Shares>{''.join(items)}</Shares>" if items else "<Shares />")
    if rest:
        r = rest[0][1]
        parts.append(
            el(
                "NextMarker",
                encode_marker(r["name"] + ("\n" + r["snapshot"] if r["snapshot"] else "")),
            )
        )
    else:
        parts.append("<NextMarker />")
    parts.append("</EnumerationResults>")
    return xml_response("".join(parts))


def share_item(r: sqlite3.Row, with_metadata: bool) -> str:
    props = [el("Last-Modified", http_date(r["mtime"])), el("Etag", r["etag"])]
    state = r["lease_state"]
    props.append(el("LeaseStatus", "locked" if state == "leased" else "unlocked"))
    props.append(el("LeaseState", state))
    if state == "leased":
        props.append(el("LeaseDuration", r["lease_duration"] or "infinite"))
    props.append(el("Quota", r["quota"]))
    if not r["snapshot"]:
        props.append(el("AccessTier", r["access_tier"]))
        props.append(el("AccessTierChangeTime", http_date(r["tier_changed"])))
    props.append(el("DefaultEncryptionScope", "$account-encryption-key"))
    props.append(el("DenyEncryptionScopeOverride", "false"))
    out = "<Share>" + name_el(r["name"])
    if r["snapshot"]:
        out += el("Snapshot", r["snapshot"])
    out += "<Properties>" + "".join(props) + "</Properties>"
    if with_metadata:
        meta = metadata_xml(r["metadata"])
        out += f"<Metadata>{meta}</Metadata>" if meta else "<Metadata />"
    return out + "</Share>"


async def get_properties(ctx: Ctx) -> Response:
    xml = ctx.store.get_prop("service_properties") or DEFAULT_SERVICE_PROPERTIES
    return xml_response(xml)


async def set_properties(ctx: Ctx) -> Response:
    body = await ctx.req.read_body(1 << 20)
    new = parse(body)
    if new.tag != "StorageServiceProperties":
        raise StorageError("InvalidXmlDocument")
    cur = ET.fromstring(ctx.store.get_prop("service_properties") or DEFAULT_SERVICE_PROPERTIES)
    for child in list(new):
        old = cur.find(child.tag)
        if old is not None:
            idx = list(cur).index(old)
            cur.remove(old)
            cur.insert(idx, child)
        else:
            cur.append(child)
    ctx.store.set_prop("service_properties", serialize(cur))
    return response(202)
