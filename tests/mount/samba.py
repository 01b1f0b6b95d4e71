"""Samba for the tests: smbd on a loopback port serving a mount, configured by
scripts/smb.conf.example (plus the test's own directories, port and guest access), and
smbclient to talk to it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "scripts" / "smb.conf.example"


def missing() -> str | None:
    """Why Samba tests cannot run here, or None."""
    for tool in ("smbd", "smbclient"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (scripts/setup.sh --test installs samba and smbclient)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Smbd:
    """One smbd serving `path` as //127.0.0.1/share on a free port, stopped by `stop`."""

    def __init__(self, work: Path, path: Path) -> None:
        self.work = work
        self.port = _free_port()
        dirs = {name: work / name for name in ("lock", "state", "cache", "private", "pid", "log")}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        test_globals = "\n".join(
            [
                f"  smb ports = {self.port}",
                "  interfaces = lo",
                "  bind interfaces only = yes",
                *(f"  {n} directory = {d}" for n, d in dirs.items() if n not in ("private", "log")),
                f"  private dir = {dirs['private']}",
                f"  log file = {dirs['log']}/smbd.log",
                "  map to guest = Bad User",
                "  guest account = root",
            ]
        )
        conf = EXAMPLE.read_text().replace("[global]\n", f"[global]\n{test_globals}\n", 1)
        conf = conf.replace("  path = /mnt/share\n", f"  path = {path}\n  guest ok = yes\n")
        assert str(path) in conf, "the example's share path moved"
        self.conf = work / "smb.conf"
        self.conf.write_text(conf)
        self.proc = subprocess.Popen(
            ["smbd", "--foreground", "--no-process-group", f"--configfile={self.conf}"],
            stdout=subprocess.DEVNULL,
            stderr=(work / "smbd.stderr").open("wb"),
            start_new_session=True,  # smbd signals its process group when it stops
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"smbd did not start: {(work / 'smbd.stderr').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.1)

    def client(self, *commands: str, timeout: float = 60, refused: bool = False) -> str:
        """Run smbclient commands (one session, in order); fails the test on any error, or
        (`refused`) unless one is refused."""
        r = subprocess.run(
            ["smbclient", "//127.0.0.1/share", "-p", str(self.port), "-N",
             f"--configfile={self.conf}", "-E", "-c", "; ".join(commands)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )  # fmt: skip
        out = r.stdout + r.stderr
        if refused:
            assert "NT_STATUS" in out, out
        else:
            assert r.returncode == 0 and "NT_STATUS" not in out, out
        return out

    def stop(self) -> None:
        """smbd and the children it forked for connections."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(15)
                break
            except subprocess.TimeoutExpired:
                continue


class Client:
    """An SMB2 client session on //127.0.0.1/share (smbprotocol, as guest): what smbclient
    cannot do, such as holding a byte-range lock while another client tries the range."""

    def __init__(self, port: int) -> None:
        import uuid

        from smbprotocol.connection import Connection
        from smbprotocol.session import Session
        from smbprotocol.tree import TreeConnect

        self.conn = Connection(uuid.uuid4(), "127.0.0.1", port, require_signing=False)
        self.conn.connect()
        session = Session(self.conn, "guest", "guest", require_encryption=False)
        session.connect()
        self.tree = TreeConnect(session, r"\\127.0.0.1\share")
        # (a guest session has no signing key to verify the negotiation with)
        self.tree.connect(require_secure_negotiate=False)

    def open(self, name: str, share_modes: int | None = None):
        """Open (or create) a file for reading and writing; `share_modes`: what others may
        do meanwhile (default: read and write; 0: nothing, as Office opens a document)."""
        from smbprotocol.open import (
            CreateDisposition,
            CreateOptions,
            FilePipePrinterAccessMask,
            ImpersonationLevel,
            Open,
            ShareAccess,
        )

        f = Open(self.tree, name)
        f.create(
            ImpersonationLevel.Impersonation,
            FilePipePrinterAccessMask.GENERIC_READ | FilePipePrinterAccessMask.GENERIC_WRITE,
            0,
            ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE
            if share_modes is None
            else share_modes,
            CreateDisposition.FILE_OPEN_IF,
            CreateOptions.FILE_NON_DIRECTORY_FILE,
        )
        return f

    @staticmethod
    def lock(f, offset: int, length: int, unlock: bool = False) -> None:
        """An exclusive byte-range lock (failing at once when taken), or its release."""
        from smbprotocol.open import LockFlags, SMB2LockElement

        e = SMB2LockElement()
        e["offset"], e["length"] = offset, length
        e["flags"] = (
            LockFlags.SMB2_LOCKFLAG_UNLOCK
            if unlock
            else LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
        )
        f.lock([e])

    def close(self) -> None:
        self.conn.disconnect(close=True)
