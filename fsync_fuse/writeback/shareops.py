"""Share calls that both the operation worker and the uploader make the same way."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fsync_fuse import dosattrib
from fsync_fuse.attrs import OUR_KEYS
from fsync_fuse.namespace import Namespace
from remote.base import AlreadyExists, NotFound, Remote

log = logging.getLogger(__name__)

T = TypeVar("T")


async def with_parents(
    remote: Remote, path: str, call: Callable[[], Awaitable[T]], *, expected: bool = False
) -> T:
    """Run `call()`; if the share lacks the parent directory (deleted elsewhere, or never
    created), create the missing directories (`mkdir -p`) and run it once more. `expected`:
    the caller knows they may not exist yet (migrate into SHARE/a/b): no warning."""
    try:
        return await call()
    except NotFound:
        parts = path.split("/")[:-1]
        if not parts:
            raise
    for i in range(1, len(parts) + 1):
        try:
            await remote.mkdir("/".join(parts[:i]))
        except AlreadyExists:
            pass
    log.log(
        logging.DEBUG if expected else logging.WARNING,
        "%s: parent directory was missing on the share; created it",
        path,
    )
    return await call()


async def share_meta(
    ns: Namespace,
    remote: Remote,
    ino: int,
    path: str,
    fallback: dict[str, str] | None = None,
) -> tuple[dict[str, str] | None, str | None]:
    """The metadata and SMB attributes (None: leave them) to write for `ino` now. Other
    tools' metadata keys and the share's attributes are read first when this mount never
    saw them (an entry known from a listing only): Set Metadata replaces every key."""
    rec = ns.get(ino)
    if rec is None:
        return fallback, None
    owner = ns.owner
    if not rec.extra_known or (rec.attrs is None and not rec.posix_default(owner)):
        try:
            e = await remote.stat(path, is_dir=rec.is_dir)
        except NotFound:
            e = None
        if e is not None:
            rec.attrs = e.attributes
            extra = {k: v for k, v in (e.metadata or {}).items() if k.lower() not in OUR_KEYS}
            # DOS attributes a client of the share changed are kept, not sent back over
            rec.extra = dosattrib.follow(extra, rec.attrs)
            ns.update(ino, extra=rec.extra, extra_known=True, attrs=rec.attrs)
    return rec.metadata(owner), rec.share_attributes(owner)
