"""The Azure Files application: routing, authentication, dispatch to handlers, error answers.

`Emulator` is what the HTTP server calls. A request is classified into a REST operation
(by scope — service, share, directory, file — method, `restype` and `comp`), authenticated
(SharedKey or SAS), then handled by a function in `handlers/`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import trio

from . import auth
from .auth import OBJECT, SERVICE, SHARE, Access
from .errors import StorageError
from .faults import Faults, Stats
from .formats import iso_now_7, valid_component, valid_share_name
from .messages import Request, Response
from .store import Store
from .xmlbody import error_body

log = logging.getLogger(__name__)

DEFAULT_ACCOUNT = "devstoreaccount1"
DEFAULT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
DEFAULT_VERSION = "2025-01-05"
MAX_PATH_CHARS = 2048
MAX_DEPTH = 250

Handler = Callable[["Ctx"], Awaitable[Response]]


@dataclass
class Route:
    op: str
    handler: Handler
    access: Access


@dataclass
class Ctx:
    """Everything a handler needs about one request."""

    app: Emulator
    req: Request
    share: str
    parts: list[str]
    route: Route
    sas: auth.SasGrant | None = None

    @property
    def store(self) -> Store:
        return self.app.store

    @property
    def path(self) -> str:
        return "/".join(self.parts)

    @property
    def version(self) -> str:
        return self.req.headers.get("x-ms-version") or self.req.query.get("sv") or DEFAULT_VERSION


def strip_trailing_dots(parts: list[str], allow_header: str | None) -> list[str]:
    """Without x-ms-allow-trailing-dot: true the service drops trailing dots of each name."""
    if (allow_header or "").lower() == "true":
        return parts
    return [p.rstrip(".") if p.endswith(".") else p for p in parts]


class KeyedLocks:
    """One trio.Lock per key, created on demand and dropped when nobody holds or waits."""

    def __init__(self) -> None:
        self._locks: dict[object, list] = {}

    @asynccontextmanager
    async def hold(self, key: object):
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = [trio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                self._locks.pop(key, None)


class WriteGate:
    """Content writes of a share run (partly in worker threads) under `writing()`; a snapshot
    takes `exclusive()`, which waits for writes in flight and holds new ones back, so the frozen
    copy never sees half a write."""

    def __init__(self) -> None:
        self.active = 0
        self.closed: trio.Event | None = None
        self.drained: trio.Event | None = None

    @asynccontextmanager
    async def writing(self):
        while self.closed is not None:
            await self.closed.wait()
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            if self.active == 0 and self.drained is not None:
                self.drained.set()

    @asynccontextmanager
    async def exclusive(self):
        while self.closed is not None:
            await self.closed.wait()
        closed = self.closed = trio.Event()
        try:
            while self.active:
                self.drained = trio.Event()
                await self.drained.wait()
            yield
        finally:
            self.closed = None
            self.drained = None
            closed.set()


@dataclass
class Emulator:
    data_dir: Path
    account: str = DEFAULT_ACCOUNT
    key: str = DEFAULT_KEY
    #: compute Content-MD5 for every Put Range answer, also for bodies of 256 KiB and more
    full_md5: bool = False
    faults: Faults = field(default_factory=Faults)
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self) -> None:
        self.store = Store(Path(self.data_dir))
        try:
            self.key_bytes = base64.b64decode(self.key, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("the account key must be base64") from exc
        self.locks = KeyedLocks()
        self.gates: dict[int, WriteGate] = {}
        self.recently_deleted: dict[str, float] = {}
        from .handlers import ROUTES

        self.routes: dict[tuple[str, str, str], Route] = ROUTES

    def gate(self, tree_id: int) -> WriteGate:
        g = self.gates.get(tree_id)
        if g is None:
            g = self.gates[tree_id] = WriteGate()
        return g

    def close(self) -> None:
        self.store.close()

    # ------------------------------------------------------------------ classification
    def _split(self, req: Request) -> tuple[str, str, list[str]]:
        path = unquote(req.raw_path, errors="surrogatepass")
        segs = path.split("/")
        segs = segs[1:] if segs and segs[0] == "" else segs
        account = segs[0] if segs else ""
        share = segs[1] if len(segs) > 1 else ""
        parts = strip_trailing_dots(
            [p for p in segs[2:] if p != ""], req.headers.get("x-ms-allow-trailing-dot")
        )
        return account, share, parts

    def _scope(self, req: Request, share: str, parts: list[str]) -> str:
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

    def route(self, req: Request) -> tuple[Route, str, list[str], str]:
        account, share, parts = self._split(req)
        scope = self._scope(req, share, parts)
        comp = req.query.get("comp", "")
        method = "GET" if req.method == "HEAD" and scope != "file" else req.method
        route = self.routes.get((scope, method, comp))
        if route is None:
            if any(k[0] == scope and k[2] == comp for k in self.routes):
                raise StorageError("UnsupportedHttpVerb")
            raise StorageError(
                "InvalidQueryParameterValue",
                details={"QueryParameterName": "comp", "QueryParameterValue": comp},
            )
        if scope == "file" and route.op == "CreateFile" and "x-ms-copy-source" in req.headers:
            route = self.routes[("file", "PUT", "#copy")]
        if scope == "file" and route.op == "PutRange" and "x-ms-copy-source" in req.headers:
            route = self.routes[("file", "PUT", "#rangefromurl")]
        return route, account, parts, share

    def classify(self, req: Request) -> str:
        try:
            return self.route(req)[0].op
        except StorageError:
            return "Unknown"

    # ------------------------------------------------------------------ handling
    async def handle(self, req: Request) -> Response:
        try:
            route, account, parts, share = self.route(req)
            if account != self.account:
                raise StorageError("InvalidUri")
            sas = self._authenticate(req, route, share, parts)
            self._validate_names(share, parts, route)
            ctx = Ctx(self, req, share, parts, route, sas)
            resp = await route.handler(ctx)
        except StorageError as exc:
            resp = self.error_response(req, exc)
        except Exception:
            log.exception("internal error in %s %s", req.method, req.raw_path)
            if self.store.db.in_transaction:
                self.store.rollback()
            resp = self.error_response(req, StorageError("InternalError"))
        resp.headers.append(("x-ms-version", req.headers.get("x-ms-version") or DEFAULT_VERSION))
        return resp

    def _authenticate(
        self, req: Request, route: Route, share: str, parts: list[str]
    ) -> auth.SasGrant | None:
        if "authorization" in req.headers:
            if not req.headers["authorization"].startswith("SharedKey"):
                raise StorageError(
                    "AuthenticationFailed",
                    details={"AuthenticationErrorDetail": "Only SharedKey and SAS are supported."},
                )
            auth.verify_shared_key(req, self.account, self.key_bytes)
            if "x-ms-version" not in req.headers:
                raise StorageError("MissingRequiredHeader", details={"HeaderName": "x-ms-version"})
            return None
        if "sig" in req.query:
            return auth.verify_sas(
                req,
                self.account,
                self.key_bytes,
                route.access,
                share,
                "/".join(parts),
                policy_lookup=self._policy,
            )
        raise StorageError(
            "NoAuthenticationInformation",
            headers=[
                (
                    "WWW-Authenticate",
                    "Bearer authorization_uri=https://login.microsoftonline.com/common/oauth2/"
                    "authorize resource_id=https://storage.azure.com",
                )
            ],
        )

    def _policy(self, share: str, si: str) -> dict | None:
        """A stored access policy of the share (for service SAS with `si`)."""
        row = self.store.get_share(share)
        if row is None:
            return None
        for p in json.loads(row["acl"]):
            if p.get("id") == si:
                return p
        return None

    def _validate_names(self, share: str, parts: list[str], route: Route) -> None:
        if route.access.level == SERVICE:
            return
        if not valid_share_name(share):
            raise StorageError("InvalidResourceName")
        if route.access.level == SHARE:
            return
        for p in parts:
            if not valid_component(p):
                raise StorageError("InvalidResourceName")
        if len(parts) > MAX_DEPTH:
            raise StorageError(
                "InvalidFileOrDirectoryPathName",
                "File or directory path has too many subdirectories.",
            )
        if sum(len(p) + 1 for p in parts) > MAX_PATH_CHARS:
            raise StorageError("InvalidFileOrDirectoryPathName")

    def error_response(self, req: Request, exc: StorageError) -> Response:
        headers = [("x-ms-error-code", exc.code), *exc.headers]
        if req.method == "HEAD":
            return Response(status=exc.status, headers=headers)
        headers.append(("Content-Type", "application/xml"))
        body = error_body(exc.code, exc.message, req.request_id, iso_now_7(), exc.details)
        return Response(status=exc.status, headers=headers, body=body)

    def fault_response(self, req: Request, status: int) -> Response:
        code = "ServerBusy" if status == 503 else "InternalError"
        resp = self.error_response(req, StorageError(code))
        resp.headers.append(("x-ms-version", req.headers.get("x-ms-version") or DEFAULT_VERSION))
        return resp


__all__ = ["Emulator", "Ctx", "Route", "OBJECT", "SHARE", "SERVICE"]
