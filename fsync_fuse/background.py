"""Going to the background the way sshfs and `rclone mount --daemon` do.

The parent forks before trio starts, then waits on a pipe: the child writes "ok" once the
mount is ready, or the one-line reason it failed, and the parent exits 0 or 1 with that
message. The child starts a new session, logs to a file, and points stdout/stderr there too,
so even a crash leaves a trace.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

Ready = Callable[[str | None], None]


def daemonize(logfile: str, child: Callable[[Ready], int]) -> int:
    """Run `child(ready)` in a background process; return the parent's exit status."""
    rfd, wfd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        os.close(wfd)
        chunks = []
        while True:
            chunk = os.read(rfd, 4096)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(rfd)
        msg = b"".join(chunks).decode(errors="replace").strip()
        if msg == "ok":
            return 0
        if not msg:
            msg = f"the mount daemon exited before the mount was ready (see {logfile})"
        print(f"fsync-fuse: error: {msg}", file=sys.stderr)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        return 1

    # child
    os.close(rfd)
    os.setsid()
    reported = False

    def ready(error: str | None) -> None:
        nonlocal reported
        if reported:
            return
        reported = True
        try:
            os.write(wfd, b"ok" if error is None else error.encode())
        finally:
            os.close(wfd)

    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    out = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
    rc = 1
    try:
        rc = child(ready)
    except BaseException as exc:  # noqa: BLE001 - report, then exit
        import traceback

        traceback.print_exc()
        ready(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    finally:
        ready("the mount daemon stopped before the mount was ready")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
