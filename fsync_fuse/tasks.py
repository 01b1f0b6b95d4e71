"""Parts that start background tasks own them in a nursery of their own.

`run` is started in the mount's nursery (assembly.py `Mount.run`) and holds this part's
nursery open until the mount stops; until then `_nursery` is None and the part starts
nothing (the in-process tests and the daemon's start-up see the same rule).
"""

from __future__ import annotations

import trio


class TaskOwner:
    _nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()
