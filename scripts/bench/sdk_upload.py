"""The direct SDK upload as a process of its own, the way a user runs a script with the SDK.

The migrate workload times `fsync-fuse migrate` as a whole process (interpreter start and
imports included); the SDK contestant it is held against pays the same start here instead of
running inside the harness's warm process.

    FSYNC_BENCH_CONNECTION_STRING=... python -m scripts.bench.sdk_upload SHARE SRC DEST [--concurrency N]

SRC a file: created at DEST at its size, then parallel Put Range. SRC a directory: every
directory level by level, then every file in parallel (`Sdk.upload_tree`). The connection
string comes from the environment so the key never shows on a command line.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .sdk import Sdk

ENV = "FSYNC_BENCH_CONNECTION_STRING"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("share")
    p.add_argument("src", type=Path)
    p.add_argument("dest", help="path in the share")
    p.add_argument("--concurrency", type=int, default=8)
    args = p.parse_args()
    sdk = Sdk(os.environ[ENV], args.share, args.concurrency)
    if args.src.is_dir():
        sdk.upload_tree(args.src, args.dest)
    else:
        sdk.upload(args.src, args.dest)


if __name__ == "__main__":
    main()
