"""Two changes to a pyfuse3 source tree (3.5), which scripts/setup.sh builds pyfuse3 from.

1. A `fallocate` request handler (pyfuse3 has none). libfuse's low-level API has the
   `fallocate` operation, but pyfuse3 does not register a handler for it, so the kernel gets
   ENOSYS and reports EOPNOTSUPP for every mode (databases and downloaders then fall back to
   writing zeros, or fail). This adds the handler the way pyfuse3 writes all of its own (a C
   callback that schedules an async one calling `Operations.fallocate(fh, mode, offset,
   length)`), registers it, and gives `Operations` a default that answers ENOSYS as before.

2. The kernel's capability probe answered in C. FUSE clears SB_NOSEC, so before every
   write(2) the kernel asks the filesystem for `security.capability` (file capabilities it
   would have to strip); a filesystem that has extended attributes cannot answer ENOSYS
   once and be left alone. When `Operations.no_file_capabilities` is true (the filesystem
   never stores that attribute), the C callback answers ENODATA itself instead of running
   the Python handler: measured ~90-150 us per write() through the handler
   (notes/perf-session6.md).

`Operations.fsync_fuse_patches` says which of these a build has (setup.sh rebuilds when it
is lower than PATCHES). Idempotent; fails loudly if the source does not look as expected.

    python scripts/pyfuse3_patches.py PYFUSE3_SOURCE_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

MARK = "fsync-fuse: fallocate"

HANDLER = f"""

# {MARK}
cdef void fuse_fallocate (fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
                          off_t length, fuse_file_info *fi):
    cdef _Container c = _Container()
    c.req = req
    c.ino = ino
    c.flags = mode
    c.off = offset
    c.size = length
    c.fh = fi.fh
    save_retval(fuse_fallocate_async(c))

async def fuse_fallocate_async (_Container c):
    cdef int ret

    try:
        await operations.fallocate(c.fh, c.flags, c.off, c.size)
    except FUSEError as e:
        ret = fuse_reply_err(c.req, e.errno)
    else:
        ret = fuse_reply_err(c.req, 0)

    if ret != 0:
        log.error('fuse_fallocate(): fuse_reply_* failed with %s', strerror(-ret))
"""

#: the patches of this script; a build with fewer is rebuilt (scripts/setup.sh)
PATCHES = 2

PROBE_MARK = "fsync-fuse: capability probe"
GETXATTR = """cdef void fuse_getxattr (fuse_req_t req, fuse_ino_t ino, const_char *name,
                         size_t size):
    cdef _Container c = _Container()
"""
PROBE = f"""cdef void fuse_getxattr (fuse_req_t req, fuse_ino_t ino, const_char *name,
                         size_t size):
    cdef _Container c = _Container()
    # {PROBE_MARK}: answered here when the filesystem never stores file capabilities
    if operations.no_file_capabilities and string.strcmp(name, b'security.capability') == 0:
        fuse_reply_err(req, ENOATTR)
        return
"""

ATTRIBUTES = f"""
    #: which fsync-fuse patches this build has (scripts/pyfuse3_patches.py)
    fsync_fuse_patches: int = {PATCHES}
    #: the filesystem never stores security.capability: the kernel's probe before every
    #: write is answered in C ({PROBE_MARK})
    no_file_capabilities: bool = False
"""

DEFAULT = f"""
    async def fallocate(self, fh: FileHandleT, mode: int, offset: int, length: int) -> None:
        \'\'\'Allocate, punch or zero space of open file *fh* ({MARK}).

        *mode* holds the FALLOC_FL_* flags of fallocate(2).
        \'\'\'

        raise FUSEError(errno.ENOSYS)
"""


def patch(src: Path) -> bool:
    """Patch the tree; False when it was already patched."""
    handlers = src / "src" / "pyfuse3" / "handlers.pxi"
    internal = src / "src" / "pyfuse3" / "internal.pxi"
    ops = src / "src" / "pyfuse3" / "_pyfuse3.py"
    text = handlers.read_text()
    if MARK in text and PROBE_MARK in text:
        return False
    if GETXATTR not in text:
        raise SystemExit(f"{handlers}: no fuse_getxattr callback as expected")
    handlers.write_text(text.replace(GETXATTR, PROBE).rstrip("\n") + "\n" + HANDLER)
    reg = "    fuse_ops.poll = fuse_poll\n"
    text = internal.read_text()
    if reg not in text:
        raise SystemExit(f"{internal}: no `{reg.strip()}` to register the handler after")
    internal.write_text(text.replace(reg, reg + "    fuse_ops.fallocate = fuse_fallocate\n"))
    anchor = "    async def fsyncdir(self, fh: FileHandleT, datasync: bool) -> None:\n"
    flags = "    enable_acl: bool = False\n"
    text = ops.read_text()
    if anchor not in text or flags not in text:
        raise SystemExit(f"{ops}: no fsyncdir method or enable_acl flag to add after")
    text = text.replace(flags, flags + ATTRIBUTES)
    ops.write_text(text.replace(anchor, DEFAULT.lstrip("\n") + "\n" + anchor))
    return True


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print("patched" if patch(Path(sys.argv[1])) else "already patched")
