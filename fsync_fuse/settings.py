"""Tiering policies: set by mount options, changed at run time through the control surface,
kept in the index (`nsmeta`) so a remount keeps what an administrator set.

A mount option given explicitly wins over the persisted value (and is persisted); without it
the persisted value stands; without either, the default. The cache applies the free-space
and date policies (cache/API.md); the proactive recall is read by the mount's listing hook.
"""

from __future__ import annotations

import json

from cache import BlockCache
from fsync_fuse.namespace import Namespace
from fsync_fuse.policies import POLICIES, Policies

_KEY = b"policies"


class Settings:
    def __init__(self, *, ns: Namespace, cache: BlockCache, given: dict[str, str]) -> None:
        """`given`: the mount options given explicitly (name -> text, already checked)."""
        self.ns, self.cache = ns, cache
        self.policies = Policies()
        with ns.env.begin() as txn:
            raw = txn.get(_KEY, db=ns.db_meta)
        stored = json.loads(raw) if raw else {}
        for name, value in stored.items():
            if name in POLICIES:
                setattr(self.policies, name, value)
        for name, text in given.items():
            setattr(self.policies, name, POLICIES[name][0](text))
        if given:
            self._save()
        self._apply()

    def values(self) -> dict[str, str]:
        """Every policy as text (what `status` shows and `set` takes)."""
        return {name: show(getattr(self.policies, name)) for name, (_p, show) in POLICIES.items()}

    def set(self, name: str, text: str) -> None:
        """Change a policy now (ValueError with a message for a bad name or value)."""
        if name not in POLICIES:
            raise ValueError(f"unknown policy {name!r} (known: {', '.join(POLICIES)})")
        setattr(self.policies, name, POLICIES[name][0](text))
        self._save()
        self._apply()

    def _save(self) -> None:
        data = {name: getattr(self.policies, name) for name in POLICIES}
        with self.ns.env.begin(write=True) as txn:
            txn.put(_KEY, json.dumps(data).encode(), db=self.ns.db_meta)

    def _apply(self) -> None:
        self.cache.min_free_pct = self.policies.min_free_space
        self.cache.tier_after = self.policies.tier_after
