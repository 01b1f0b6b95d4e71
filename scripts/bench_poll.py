"""What change detection costs on a big share when nothing changes (issue 6).

    sudo .venv/bin/python -m scripts.bench_poll [--entries 100000] [--interval 2] [--hot 5]

Loads a tree of `--entries` entries (about 1 directory per 100 files) straight into the bundled
emulator's store, mounts it with `--poll-interval`, lists everything once (`find`, so every
directory has a listing to keep fresh), waits until no directory counts as recently used
(10 intervals), then counts the emulator's requests over several intervals: first with
nobody using the mount, then with `--hot` directories in use (listed once per interval).
Prints calls per interval beside the naive cost (one listing per directory per interval) and
how long the background sweep takes to revisit every directory. The cost per interval does
not depend on the interval; a short one only makes the run short.
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

from scripts.bench import trees  # noqa: E402
from scripts.bench.mounts import FsyncFuse  # noqa: E402

SHARE = "pollcost"


def requests_by_op(emu) -> dict[str, int]:
    return dict(emu.stats()["by_op"])


def delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: v - a.get(k, 0) for k, v in b.items() if v != a.get(k, 0)}


def rounds(mnt: Path) -> int:
    return json.loads(os.getxattr(mnt, "user.fsync.status"))["poll"]["rounds"]


def measure(emu, mnt: Path, intervals: int, interval: float, during=None) -> tuple[float, dict]:
    """Requests per poll round over `intervals` rounds (optionally doing `during()` each)."""
    r0, s0 = rounds(mnt), requests_by_op(emu)
    deadline = time.monotonic() + intervals * interval + interval / 2
    while time.monotonic() < deadline:
        if during is not None:
            during()
        time.sleep(interval)
    r1, s1 = rounds(mnt), requests_by_op(emu)
    d = delta(s0, s1)
    n = max(1, r1 - r0)
    return sum(d.values()) / n, {k: round(v / n, 1) for k, v in d.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--interval", type=float, default=2.0, help="--poll-interval of the mount")
    ap.add_argument("--hot", type=int, default=5, help="directories in use in the second phase")
    ap.add_argument("--intervals", type=int, default=5, help="rounds measured per phase")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    from azure.storage.fileshare import ShareServiceClient

    from tests.emulator_proc import Emulator

    work = Path(tempfile.mkdtemp(prefix="bench-poll-"))
    emu = Emulator(data_dir=work / "emulator")
    emu.start()
    mount = None
    try:
        svc = ShareServiceClient.from_connection_string(emu.connection_string)
        share = svc.create_share(SHARE)
        share.get_directory_client(trees.TEMPLATE_DIR).create_directory()
        share.get_file_client(f"{trees.TEMPLATE_DIR}/{trees.TEMPLATE_FILE}").create_file(0)
        emu.stop()
        t0 = time.perf_counter()
        n = trees.write_emulator_store(emu.data_dir, SHARE, "", args.entries)
        emu.start()
        tree = trees.summary(args.entries)
        print(f"loaded {n} entries ({tree['dirs']} directories) in {time.perf_counter() - t0:.1f}s")

        mnt = work / "mnt"
        mount = FsyncFuse(
            emu.share_url(SHARE),
            mnt,
            work / "cache",
            1 << 30,
            5.0,
            work / "mount.log",
            ["--poll-interval", str(args.interval)],
        )
        mount.start()
        t0 = time.perf_counter()
        out = subprocess.run(["find", str(mnt)], capture_output=True, text=True, check=True)
        seen = len(out.stdout.splitlines()) - 1
        print(f"first find: {seen} entries in {time.perf_counter() - t0:.1f}s")
        if seen != tree["entries"]:
            print(f"error: find saw {seen} entries, the tree has {tree['entries']}")
            return 1
        cool = 10 * args.interval + args.interval
        print(f"waiting {cool:.0f}s for every directory to count as not recently used")
        time.sleep(cool)

        idle, idle_ops = measure(emu, mnt, args.intervals, args.interval)
        hot_dirs = [mnt / f"t0000/d{i:03d}" for i in range(args.hot)]
        used, used_ops = measure(
            emu, mnt, args.intervals, args.interval, lambda: [os.listdir(d) for d in hot_dirs]
        )
        dirs = tree["dirs"] + 1  # and the root
        sweep = max(1.0, dirs / 16)
        result = {
            "entries": tree["entries"],
            "directories": dirs,
            "calls_per_interval_idle": round(idle, 1),
            "calls_per_interval_idle_by_op": idle_ops,
            f"calls_per_interval_{args.hot}_dirs_in_use": round(used, 1),
            "calls_per_interval_in_use_by_op": used_ops,
            "naive_calls_per_interval": dirs,
            "sweep_revisits_every_dir_after_intervals": round(sweep),
        }
        print()
        print(
            "| share | calls per interval, nobody using it | with "
            f"{args.hot} directories in use | one listing per directory | full sweep |"
        )
        print("|---|---:|---:|---:|---:|")
        print(
            f"| {tree['entries']:,} entries, {dirs:,} directories | {idle:.1f} | {used:.1f} | "
            f"{dirs:,} | every {sweep:.0f} intervals |"
        )
        print(f"\nby operation (idle): {idle_ops}")
        print(f"by operation (in use): {used_ops}")
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return 0
    finally:
        if mount is not None:
            mount.stop()
        emu.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    raise SystemExit(main())
