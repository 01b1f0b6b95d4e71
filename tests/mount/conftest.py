"""Fixtures for tests that mount for real: a factory of mounts that are always cleaned up."""

from __future__ import annotations

import pytest

from tests.mount.helpers import Mount, Share, have_fuse


@pytest.fixture
def mounter(tmp_path):
    """mounter(url, name="m", cache="c", args=[...]) -> a started Mount; unmounted at the end
    (the test asserts exit statuses itself; leftovers are cleaned up without asserting)."""
    reason = have_fuse()
    if reason:
        pytest.skip(reason)
    mounts: list[Mount] = []

    def make(
        url: str,
        name: str = "mnt",
        cache: str = "cache",
        args: list[str] | None = None,
        start: bool = True,
    ) -> Mount:
        m = Mount(
            url,
            tmp_path / name,
            tmp_path / cache,
            tmp_path / f"{name}-{len(mounts)}.log",
            list(args or []),
        )
        mounts.append(m)
        return m.start() if start else m

    try:
        yield make
    finally:
        for m in mounts:
            if m.alive:
                try:
                    m.stop(timeout=60)
                except Exception:  # noqa: BLE001
                    pass
            m.abort()


@pytest.fixture
def share(emulator, share_name) -> Share:
    return Share(emulator.connection_string, share_name)


@pytest.fixture
def share_url(emulator, share_name) -> str:
    return emulator.share_url(share_name)
