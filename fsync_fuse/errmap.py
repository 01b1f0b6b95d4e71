"""How a failure inside a kernel request becomes the errno the kernel gets, with one log line
for the failures a user should hear of (shared by the live tree, fs.py, and the snapshot
tree, snapfs.py)."""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

import pyfuse3
import trio

from remote.base import RemoteError

log = logging.getLogger("fsync_fuse.fs")

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")

#: errnos that are answers, not failures: not logged
QUIET = frozenset({errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.EINVAL, errno.ENAMETOOLONG})


def answer_errors(
    fn: Callable[Concatenate[S, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """Answer the kernel with an errno for every failure, logging one line for real ones."""

    @functools.wraps(fn)
    async def wrapper(self: S, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except RemoteError as exc:
            log.warning("%s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except OSError as exc:  # FsError, NameError_, CacheFull
            if exc.errno not in QUIET:
                log.info("%s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except trio.Cancelled:
            raise
        except Exception:
            log.exception("%s failed unexpectedly", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper
