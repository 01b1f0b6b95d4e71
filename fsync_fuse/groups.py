"""Unwrapping trio's ExceptionGroups where a nursery fans out remote calls.

trio (strict exception groups) wraps every child task's error in an ExceptionGroup, so an
`except RemoteError` around such a nursery never matches: a failed `stat` in a listing or a
failed Put Range would escape as "unexpected". `single_error` turns the group back into the
one error that matters, so callers keep handling remote failures as they always did.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio

from remote.base import RemoteError


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


def most_significant(group: BaseExceptionGroup) -> BaseException | None:
    """The error to re-raise bare: a permanent remote refusal before a transient one before
    any other Exception. None when the group holds only cancellations or something that is
    not an Exception (KeyboardInterrupt...): those must travel as they are."""
    leaves = [e for e in _leaves(group) if not isinstance(e, trio.Cancelled)]
    if not leaves or any(not isinstance(e, Exception) for e in leaves):
        return None
    remote = [e for e in leaves if isinstance(e, RemoteError)]
    permanent = [e for e in remote if not e.transient]
    return (permanent or remote or leaves)[0]


@contextmanager
def single_error() -> Iterator[None]:
    """Around a nursery whose children make remote calls: re-raise the most significant
    child error bare (the group is kept as its `__cause__` for the log)."""
    try:
        yield
    except BaseExceptionGroup as group:
        exc = most_significant(group)
        if exc is None:
            raise
        raise exc from group
