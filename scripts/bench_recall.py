"""How much faster `fsync-fuse recall` gets with threads, against a slow share (issue 14).

    sudo .venv/bin/python -m scripts.bench_recall [--files 200] [--size 64K] [--latency-ms 20]

Puts `--files` files in one directory of a fresh share on the bundled emulator, mounts it,
adds `--latency-ms` to every request, then times `fsync-fuse recall DIR --threads 1` and,
after `fsync-fuse tier DIR`, `--threads 16` (and any `--threads` given), each on the same
tiered directory. Prints seconds (the whole command, and its own time without the Python
start-up), files/s and the speed-up over one thread. The issue's target: 16 threads at least
8x faster than 1 with 20 ms of latency. On a 2-core machine the emulator, the daemon and the
command (all Python) share the cores: a 64 KiB recall costs the daemon ~1.6 ms of CPU (its
ranged GET on the short path of remote/azure_short.py; ~3.4 ms through the SDK's pipeline)
and the emulator ~0.6 ms, which bounds the speed-up of small files there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fsync_fuse.config import parse_size  # noqa: E402
from tests.emulator_proc import Emulator  # noqa: E402
from tests.mount.helpers import Mount, Share, env  # noqa: E402


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "fsync_fuse", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env(),
    )
    if r.returncode != 0:
        raise SystemExit(f"fsync-fuse {args}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--size", type=parse_size, default=parse_size("64K"))
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--threads", type=int, nargs="*", default=[16])
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-recall-"))
    with Emulator(data_dir=work / "emulator") as emu:
        from azure.storage.fileshare import ShareServiceClient

        ShareServiceClient.from_connection_string(emu.connection_string).create_share("bench")
        share = Share(emu.connection_string, "bench")
        for i in range(args.files):
            share.put(f"dir/f{i:04}.bin", os.urandom(args.size))
        mount = Mount(
            emu.share_url("bench"),
            work / "mnt",
            work / "cache",
            work / "mount.log",
            ["--cache-size", "1G"],
        ).start()
        try:
            target = mount.mnt / "dir"
            os.listdir(target)
            emu.set_faults(latency_ms=args.latency_ms)
            results: dict[int, float] = {}
            inside: dict[int, float] = {}  # the command's own time (start-up left out)
            for threads in [1, *args.threads]:
                cli("tier", target)
                t0 = time.perf_counter()
                r = cli("recall", "--threads", threads, "--json", "--quiet", target)
                results[threads] = time.perf_counter() - t0
                out = json.loads(r.stdout)
                done = out["files"]
                inside[threads] = out["seconds"]
                if done != args.files:
                    raise SystemExit(f"--threads {threads}: {done} of {args.files} recalled")
            emu.clear_faults()
        finally:
            mount.stop()
    base, base_in = results[1], inside[1]
    print(
        f"recall of {args.files} files of {args.size:,} bytes, {args.latency_ms:g} ms per request"
    )
    print("| threads | seconds | files/s | speed-up | without start-up: seconds | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|")
    for threads, secs in results.items():
        own = inside[threads]
        print(
            f"| {threads} | {secs:.2f} | {args.files / secs:.0f} | {base / secs:.1f}x "
            f"| {own:.2f} | {base_in / own:.1f}x |"
        )
    if args.json:
        figures = {str(k): {"seconds": v, "own_seconds": inside[k]} for k, v in results.items()}
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
