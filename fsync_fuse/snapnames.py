"""Names of share snapshots as people see them: the GMT token SMB clients use for previous
versions (`@GMT-2026.12.06-13.45.00`), from the id the service gives a snapshot
(`2026-12-06T13:45:00.1234567Z`).

The token has whole seconds and the id 100 ns, so two snapshots made within one second would
share a token: the later ones get `~2`, `~3`, ... in the order of their ids, so every name
stays unique and stable while those snapshots exist. Commands accept either form.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_ID = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?Z$")
_TOKEN = re.compile(r"^@GMT-\d{4}\.\d{2}\.\d{2}-\d{2}\.\d{2}\.\d{2}(~\d+)?$")


def token(snapshot_id: str) -> str:
    """The GMT token of one snapshot id (ValueError for something that is not one)."""
    m = _ID.match(snapshot_id)
    if m is None:
        raise ValueError(f"not a share snapshot id: {snapshot_id!r}")
    y, mo, d, h, mi, s = m.groups()
    return f"@GMT-{y}.{mo}.{d}-{h}.{mi}.{s}"


def is_token(name: str) -> bool:
    return _TOKEN.match(name) is not None


def names(snapshot_ids: Iterable[str]) -> dict[str, str]:
    """{token name: snapshot id} for a share's snapshots, unique (see the module doc)."""
    out: dict[str, str] = {}
    for sid in sorted(snapshot_ids):
        try:
            base = token(sid)
        except ValueError:
            continue  # an id in a form this program does not know: not shown
        name, n = base, 1
        while name in out:
            n += 1
            name = f"{base}~{n}"
        out[name] = sid
    return out


def resolve(name: str, snapshot_ids: Iterable[str]) -> str | None:
    """The snapshot id `name` stands for (a token or an id), or None when there is none."""
    ids = list(snapshot_ids)
    if name in ids:
        return name
    return names(ids).get(name)
