#!/usr/bin/env python3
"""Throughput of the bundled Azure Files emulator over loopback, measured with the real SDK.

4 MiB ranged PUT (Put Range) and GET (Get File with x-ms-range), with 1 and N parallel clients
(separate processes, so the client side is not GIL-bound), plus small metadata requests
(Get File Properties) per second. Starts its own emulator in a temporary directory unless
--connection-string is given.

    .venv/bin/python scripts/bench_emulator.py [--mib 256] [--clients 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

CHUNK = 4 << 20


def _client(conn: str, share: str, path: str):
    from azure.storage.fileshare import ShareServiceClient

    svc = ShareServiceClient.from_connection_string(conn, retry_total=0)
    return svc.get_share_client(share).get_file_client(path)


def _worker(
    conn: str, share: str, path: str, mode: str, chunks: list[int], start_at: float
) -> float:
    f = _client(conn, share, path)
    data = os.urandom(CHUNK)
    f.get_file_properties()  # open the connection before the clock starts
    while time.time() < start_at:
        time.sleep(0.001)
    t = time.perf_counter()
    for i in chunks:
        if mode == "put":
            f.upload_range(data, offset=i * CHUNK, length=CHUNK)
        elif mode == "get":
            got = f.download_file(offset=i * CHUNK, length=CHUNK).readall()
            assert len(got) == CHUNK
        else:
            f.get_file_properties()
    return time.perf_counter() - t


def run(conn: str, share: str, path: str, mode: str, clients: int, chunks: int) -> float:
    """Aggregate rate: MB/s for put/get, requests/s for head."""
    per = [list(range(c, chunks, clients)) for c in range(clients)]
    start_at = time.time() + 1.0 + 0.2 * clients
    with ProcessPoolExecutor(clients) as pool:
        futs = [pool.submit(_worker, conn, share, path, mode, p, start_at) for p in per]
        times = [fu.result() for fu in futs]
    wall = max(times)
    if mode == "head":
        return chunks / wall
    return chunks * CHUNK / wall / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mib", type=int, default=256, help="data moved per measurement (MiB)")
    ap.add_argument("--clients", type=int, default=8, help="parallel clients for the second row")
    ap.add_argument("--heads", type=int, default=2000, help="metadata requests per measurement")
    ap.add_argument("--connection-string", help="use a running emulator instead of starting one")
    args = ap.parse_args()

    emu = None
    tmp = None
    if args.connection_string:
        conn = args.connection_string
    else:
        from tests.emulator_proc import Emulator

        tmp = tempfile.TemporaryDirectory(prefix="bench-emulator-")
        emu = Emulator(data_dir=Path(tmp.name) / "data")
        emu.start()
        conn = emu.connection_string
    try:
        from azure.storage.fileshare import ShareServiceClient

        share = "bench" + uuid.uuid4().hex[:8]
        svc = ShareServiceClient.from_connection_string(conn)
        svc.create_share(share)
        chunks = max(1, args.mib * (1 << 20) // CHUNK)
        path = "bench.bin"
        svc.get_share_client(share).get_file_client(path).create_file(chunks * CHUNK)

        rows = []
        for clients in (1, args.clients):
            put = run(conn, share, path, "put", clients, chunks)
            get = run(conn, share, path, "get", clients, chunks)
            head = run(conn, share, path, "head", clients, args.heads)
            rows.append((clients, put, get, head))
        print(
            f"\nemulator over loopback, {CHUNK >> 20} MiB ranges, {chunks * CHUNK >> 20} MiB per run"
            f" ({os.cpu_count()} CPUs, clients are processes using the azure-storage-file-share SDK)"
        )
        print(f"{'clients':>8} {'PUT MB/s':>10} {'GET MB/s':>10} {'HEAD req/s':>11}")
        for c, p, g, h in rows:
            print(f"{c:>8} {p:>10.0f} {g:>10.0f} {h:>11.0f}")
        svc.get_share_client(share).delete_share()
    finally:
        if emu is not None:
            emu.stop()
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
