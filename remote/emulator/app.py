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
from dataclasses import dataclass, field
from pathlib import Path

from ..naming import MAX_DEPTH, MAX_PATH, path_units
from . import auth
from .auth import OBJECT, SERVICE, SHARE
from .context import Ctx, Route, RouteKey
from .defaults import DEFAULT_ACCOUNT, DEFAULT_KEY
from .errors import StorageError
from .faults import Faults, Stats
from .formats import iso_now_7, valid_component, valid_share_name
from .handlers import ROUTES
from .locks import KeyedLocks, WriteGate
from .messages import Request, Response
from .routing import find_route
from .store import Store
from .xmlbody import error_body

log = logging.getLogger(__name__)

DEFAULT_VERSION = "2025-01-05"


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
        self.routes: dict[RouteKey, Route] = ROUTES

    def gate(self, tree_id: int) -> WriteGate:
        g = self.gates.get(tree_id)
        if g is None:
            g = self.gates[tree_id] = WriteGate()
        return g

    def close(self) -> None:
        self.store.close()

    # ------------------------------------------------------------------ classification
    def route(self, req: Request) -> tuple[Route, str, list[str], str]:
        return find_route(self.routes, req)

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

    def _policy(self, share: str, si: str) -> dict[str, str] | None:
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
        if path_units(parts) > MAX_PATH:  # remote/naming.py: how the service counts
            raise StorageError("InvalidFileOrDirectoryPathName")

    def error_response(self, req: Request, exc: StorageError) -> Response:
        headers = [("x-ms-error-code", exc.code), *exc.headers]
        if req.method == "HEAD":
            return Response(status=exc.status, headers=headers)
        headers.append(("Content-Type", "application/xml"))
        body = error_body(exc.code, exc.message, req.request_id, iso_now_7(), exc.details)
        return Response(status=exc.status, headers=headers, body=body)

    def fault_response(self, req: Request, status: int, code: str | None = None) -> Response:
        """An injected failure: `status` 500/503 (InternalError/ServerBusy), or the error
        `code` given (a refused name or path: faults.py `refuse_names`, `refuse_paths`)."""
        if code is None:
            code = "ServerBusy" if status == 503 else "InternalError"
        resp = self.error_response(req, StorageError(code))
        resp.headers.append(("x-ms-version", req.headers.get("x-ms-version") or DEFAULT_VERSION))
        return resp


__all__ = ["Emulator", "Ctx", "Route", "OBJECT", "SHARE", "SERVICE"]
