"""Random reads where fio is missing: `python -m scripts.bench.randread FILE SIZE BS IOS RUNTIME`.

pread of BS bytes at seeded random aligned offsets, one at a time, until IOS reads or RUNTIME
seconds; prints {"ios": n, "seconds": s} as JSON.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time


def main(argv: list[str]) -> int:
    path, size, bs, ios, runtime = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), float(argv[4])
    rng = random.Random(42)
    blocks = size // bs
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        done = 0
        t0 = time.perf_counter()
        while done < ios and time.perf_counter() - t0 < runtime:
            off = rng.randrange(blocks) * bs
            if len(os.pread(fd, bs, off)) != bs:
                print(f"short read at {off}", file=sys.stderr)
                return 1
            done += 1
        elapsed = time.perf_counter() - t0
    finally:
        os.close(fd)
    print(json.dumps({"ios": done, "seconds": elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
