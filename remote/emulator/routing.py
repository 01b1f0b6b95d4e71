"""Classifying a request: account, share and path from the URL, then the route of its operation.

A route key is (scope, method, comp), see handlers/__init__.py. Trailing dots of names are
dropped here (and for rename/copy sources) as the service does unless the client opts out.
"""

from __future__ import annotations

from urllib.parse import unquote

from .context import Route, RouteKey
from .errors import StorageError
from .messages import Request


def strip_trailing_dots(parts: list[str], allow_header: str | None) -> list[str]:
    """Without x-ms-allow-trailing-dot: true the service drops trailing dots of each name."""
    if (allow_header or "").lower() == "true":
        return parts
    return [p.rstrip(".") if p.endswith(".") else p for p in parts]


def split_path(req: Request) -> tuple[str, str, list[str]]:
    """(account, share, path components) of a path-style URL."""
    path = unquote(req.raw_path, errors="surrogatepass")
    segs = path.split("/")
    segs = segs[1:] if segs and segs[0] == "" else segs
    account = segs[0] if segs else ""
    share = segs[1] if len(segs) > 1 else ""
    parts = strip_trailing_dots(
        [p for p in segs[2:] if p != ""], req.headers.get("x-ms-allow-trailing-dot")
    )
    return account, share, parts


def scope_of(req: Request, share: str, parts: list[str]) -> str:
    """service / share / directory / file, or "share?" for a share URL without restype."""
    restype = req.query.get("restype", "")
    if not share:
        return "service"
    if restype == "share" and not parts:
        return "share"
    if restype == "directory":
        return "directory"
    if parts:
        return "file"
    return "share?"


def find_route(routes: dict[RouteKey, Route], req: Request) -> tuple[Route, str, list[str], str]:
    """(route, account, path components, share) of a request; StorageError when none fits."""
    account, share, parts = split_path(req)
    scope = scope_of(req, share, parts)
    comp = req.query.get("comp", "")
    method = "GET" if req.method == "HEAD" and scope != "file" else req.method
    route = routes.get((scope, method, comp))
    if route is None:
        if any(k[0] == scope and k[2] == comp for k in routes):
            raise StorageError("UnsupportedHttpVerb")
        raise StorageError(
            "InvalidQueryParameterValue",
            details={"QueryParameterName": "comp", "QueryParameterValue": comp},
        )
    if scope == "file" and route.op == "CreateFile" and "x-ms-copy-source" in req.headers:
        route = routes[("file", "PUT", "#copy")]
    if scope == "file" and route.op == "PutRange" and "x-ms-copy-source" in req.headers:
        route = routes[("file", "PUT", "#rangefromurl")]
    return route, account, parts, share
