"""What a handler gets: the request context (`Ctx`) and the route that chose the handler.

This module sits below both the application (app.py) and the handlers, so that handlers never
import the application: `Ctx.app` is typed by the `EmulatorState` protocol, which says what of
the emulator a handler may use.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from .auth import Access, SasGrant
from .locks import KeyedLocks, WriteGate
from .messages import Request, Response
from .store import Store


class EmulatorState(Protocol):
    """The account-wide state handlers share (implemented by app.Emulator)."""

    account: str
    #: compute Content-MD5 for every Put Range answer, also for bodies of 256 KiB and more
    full_md5: bool
    store: Store
    locks: KeyedLocks
    #: share name -> when it was deleted (a second delete right after still answers 202)
    recently_deleted: dict[str, float]

    def gate(self, tree_id: int) -> WriteGate: ...


Handler = Callable[["Ctx"], Awaitable[Response]]


@dataclass
class Route:
    """A REST operation: its name (what /_admin/stats counts), handler and SAS access needs."""

    op: str
    handler: Handler
    access: Access


#: (scope, method, comp) -> route; see handlers/__init__.py.
RouteKey = tuple[str, str, str]


@dataclass
class Ctx:
    """Everything a handler needs about one request."""

    app: EmulatorState
    req: Request
    share: str
    parts: list[str]
    route: Route
    sas: SasGrant | None = None

    @property
    def store(self) -> Store:
        return self.app.store

    @property
    def path(self) -> str:
        return "/".join(self.parts)
