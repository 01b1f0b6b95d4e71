"""`python -m scripts.bench`: prepare the data once, run the selected workloads on every
contestant side by side, print the markdown table and write it with a JSON of every figure.

Exit status: 0 when everything ran and every read-back was correct, 1 when a measurement
failed or data read back was wrong (the figures are written either way), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import churn, report, trees
from . import migrate as mig
from . import smallfiles as sf
from . import workloads as wl
from .machine import REPO, drop_caches, machine, make_file, versions
from .mounts import FsyncFuse, LocalDisk, MountFailed, Rclone
from .profiling import Profiler
from .report import Results
from .sdk import Sdk, create_tree
from .settings import CONTESTANTS, QUICK, WORKLOADS, Settings, human_size, parse_size
from .workloads import BIG, Bench, FsContestant, sha256_file

log = logging.getLogger("bench")

SHARE = "bench"
NS_SHARE = "bench-ns"


def _list(allowed: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(allowed)}")
        return items

    return parse


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m scripts.bench",
        description="Benchmark fsync-fuse against local disk, a direct SDK transfer and "
        "rclone mount on the bundled emulator; report ratios against the targets of issue #5.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 32 MiB files, 300 small files, 2,000 entries, 1 repetition",
    )
    p.add_argument(
        "--only",
        type=_list(WORKLOADS),
        metavar="WORKLOADS",
        help=f"comma-separated subset of: {', '.join(WORKLOADS)}",
    )
    p.add_argument(
        "--contestants",
        type=_list(CONTESTANTS),
        metavar="NAMES",
        help=f"comma-separated subset of: {', '.join(CONTESTANTS)}",
    )
    p.add_argument("--file-size", type=_size, metavar="SIZE", help="workloads 1-4 (default 1G)")
    p.add_argument(
        "--cache-size",
        type=_size,
        metavar="SIZE",
        help="for fsync-fuse and rclone alike (default 4 x file size)",
    )
    p.add_argument("--reps", type=int, help="repetitions of each workload (default 3)")
    p.add_argument("--entries", type=int, help="metadata tree size (default 100000)")
    p.add_argument("--namespace-entries", type=int, help="memory workload (default 1000000)")
    p.add_argument("--small-files", type=int, help="files of the sdist to extract (0: all)")
    p.add_argument("--sdist", help=f"sdist to extract (default {Settings.sdist})")
    p.add_argument(
        "--header-dir",
        help=f"the `headers` workload's tree, archived with owners, modes and times "
        f"(default {Settings.header_dir})",
    )
    p.add_argument("--rand-runtime", type=float, help="cap of each random-read run (s)")
    p.add_argument("--sdk-concurrency", type=int, help="parallel ranged GET/PUT (default 8)")
    p.add_argument(
        "--writeback-delay",
        type=float,
        help="fsync-fuse --writeback-delay = rclone --vfs-write-back (default 1)",
    )
    p.add_argument(
        "--fsync-flag",
        action="append",
        dest="fsync_flags",
        metavar="FLAG",
        help="extra flag for `fsync-fuse mount` (repeat; e.g. --fsync-flag=--read-ahead=128M)",
    )
    p.add_argument(
        "--rclone-flag",
        action="append",
        dest="rclone_flags",
        metavar="FLAG",
        help="extra flag for `rclone mount` (repeat)",
    )
    p.add_argument(
        "--out", type=Path, help="directory for the .md and .json (default bench-results/)"
    )
    p.add_argument("--work-dir", type=Path, help="scratch directory (default: new under /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the fsync-fuse daemon in each timed step of the first repetition "
        "(profiles in WORK_DIR/profiles, summaries in the JSON)",
    )
    p.add_argument("--debug", action="store_true", help="verbose logging")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    s = Settings()
    if args.quick:
        s.quick = True
        for k, v in QUICK.items():
            setattr(s, k, v)
    for k in (
        "file_size",
        "cache_size",
        "reps",
        "entries",
        "namespace_entries",
        "small_files",
        "sdist",
        "header_dir",
        "rand_runtime",
        "sdk_concurrency",
        "writeback_delay",
        "fsync_flags",
        "rclone_flags",
        "work_dir",
        "keep",
        "profile",
    ):
        v = getattr(args, k)
        if v is not None and v is not False:
            setattr(s, k, v)
    if args.only:
        s.workloads = args.only
    if args.contestants:
        s.contestants = args.contestants
    if args.out:
        s.out_dir = args.out
    s.data_cache = REPO / "tests" / ".data-cache"
    return s


class _Stop(Exception):
    pass


def _on_term(signum, frame) -> None:
    raise _Stop(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    for name in ("azure", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    s = settings_from(args)
    if s.reps < 1 or s.file_size < (1 << 20):
        print("bench: --reps must be >= 1 and --file-size >= 1M", file=sys.stderr)
        return 2
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    signal.signal(signal.SIGTERM, _on_term)
    work = s.work_dir or Path(tempfile.mkdtemp(prefix="fsync-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = Results()
    meta: dict = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": s.as_json(),
        "machine": machine(),
        "versions": versions(),
        "flags": {},
        "contestant_errors": {},
    }
    started: list = []
    emu = None
    code = 0
    try:
        emu, bench = _prepare(s, work, results, meta, started)
        _run(bench, s, meta)
    except (KeyboardInterrupt, _Stop) as exc:
        log.error("interrupted (%s): cleaning up", exc)
        code = 130
    except Exception:  # noqa: BLE001 - a harness bug: still clean up and write what we have
        log.exception("benchmark aborted")
        meta["aborted"] = traceback.format_exc()
        code = 1
    finally:
        for c in reversed(started):
            try:
                c.stop()
            except Exception as exc:  # noqa: BLE001 - keep cleaning up
                log.error("stopping %s: %s", c.name, exc)
        if emu is not None:
            emu.stop()
        meta["machine"]["loadavg_end"] = os.getloadavg()
        meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        md, js = report.write(s.out_dir, f"bench-{stamp}", results, meta)
        if not s.keep and s.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(report.markdown(results, meta))
    print(f"results: {md}\n         {js}")
    if code:
        return code
    bad = meta["contestant_errors"] or any(
        c.errors or c.verified is False for per in results.cells.values() for c in per.values()
    )
    return 1 if bad else 0


def _prepare(s: Settings, work: Path, results: Results, meta: dict, started: list):
    """Emulator, shares, data and contestants; returns (emulator, bench)."""
    sys.path.insert(0, str(REPO))
    from tests.emulator_proc import Emulator

    wants = set(s.workloads)
    mounts_wanted = {"fsync-fuse", "rclone"} & set(s.contestants)
    emu = Emulator(data_dir=work / "emulator" / "data")
    emu.start()
    started_emu = emu
    try:
        sdk = Sdk(emu.connection_string, SHARE, s.sdk_concurrency, s.sdk_chunk)
        svc = sdk.service()
        svc.create_share(SHARE)
        need_ns = "memory" in wants and mounts_wanted
        if need_ns:
            svc.create_share(NS_SHARE)
        need_meta = "metadata" in wants or "emulator" in s.contestants
        loads = ([(SHARE, "meta", s.entries)] if need_meta else []) + (
            [(NS_SHARE, "", s.namespace_entries)] if need_ns else []
        )
        if loads:
            for share, _, _ in loads:  # rows for the bulk loader to copy
                tmpl = Sdk(emu.connection_string, share).share
                tmpl.get_directory_client(trees.TEMPLATE_DIR).create_directory()
                tmpl.get_file_client(f"{trees.TEMPLATE_DIR}/{trees.TEMPLATE_FILE}").create_file(0)
            emu.stop()
            t0 = time.perf_counter()
            for share, prefix, n in loads:
                try:
                    trees.write_emulator_store(emu.data_dir, share, prefix, n)
                except Exception as exc:  # noqa: BLE001 - the API is the slow fallback
                    log.warning(
                        "bulk load into the store failed (%s); creating %s via the API", exc, share
                    )
                    emu.start()
                    api = Sdk(emu.connection_string, share, 16)
                    api.share.get_file_client(
                        f"{trees.TEMPLATE_DIR}/{trees.TEMPLATE_FILE}"
                    ).delete_file()
                    api.share.get_directory_client(trees.TEMPLATE_DIR).delete_directory()
                    create_tree(api, prefix, n)
                    emu.stop()
            emu.start()
            log.info("namespace trees loaded on the emulator in %.1fs", time.perf_counter() - t0)
        local_root = work / "local"
        (local_root / "data").mkdir(parents=True)
        bench = Bench(
            s=s,
            work=work,
            sdk=sdk,
            results=results,
            fs=[],
            local_root=local_root,
            profiler=Profiler(work / "profiles", s.profile),
            emulator_pid=emu.proc.pid if emu.proc else None,
            share_url=emu.share_url(SHARE),
        )
        meta["profiles"] = bench.profiler.summaries
        if wants & {"seq-read", "rand-read", "seq-write"} or "emulator" in s.contestants:
            big = local_root / BIG
            make_file(big, s.file_size)
            bench.big_sha = sha256_file(big)
            t0 = time.perf_counter()
            sdk.upload(big, BIG)
            log.info(
                "%s test file uploaded in %.1fs", human_size(s.file_size), time.perf_counter() - t0
            )
        if "metadata" in wants and "local" in s.contestants:
            trees.write_local(local_root / "meta", s.entries)
        for key, prepare in (("small-files", sf.prepare_sdist), ("headers", sf.prepare_headers)):
            if key in wants or (key == "small-files" and "migrate" in wants):
                tree = bench.trees[key] = prepare(bench)
                meta.setdefault("trees", {})[key] = {"files": len(tree.manifest), "what": tree.what}
        drop_caches()

        def make_mount(kind: str, share: str) -> FsContestant:
            tag = "" if share == SHARE else "-ns"
            logs = work / "logs"
            logs.mkdir(exist_ok=True)
            if kind == "fsync-fuse":
                return FsyncFuse(
                    emu.share_url(share),
                    work / f"mnt-fsync{tag}",
                    work / f"cache-fsync{tag}",
                    s.effective_cache_size,
                    s.writeback_delay,
                    logs / f"fsync-fuse{tag}.log",
                    s.fsync_flags,
                )
            return Rclone(
                emu.connection_string,
                share,
                work / f"mnt-rclone{tag}",
                work / f"cache-rclone{tag}",
                s.effective_cache_size,
                s.writeback_delay,
                logs / f"rclone{tag}.log",
                s.rclone_flags,
            )

        bench.make_mount = make_mount
        for name in ("local", "fsync-fuse", "rclone"):
            if name not in s.contestants:
                continue
            try:
                c = LocalDisk(local_root) if name == "local" else make_mount(name, SHARE)
                c.start()
            except (MountFailed, OSError) as exc:
                log.error("contestant %s unavailable: %s", name, exc)
                meta["contestant_errors"][name] = str(exc)
                continue
            started.append(c)
            bench.fs.append(c)
            meta["flags"][name] = c.flags
        meta["flags"]["sdk"] = [
            f"ranged GET/PUT of {human_size(s.sdk_chunk)}",
            f"{s.sdk_concurrency} in parallel",
        ]
        return started_emu, bench
    except BaseException:
        for c in reversed(started):
            c.stop()
        started.clear()
        emu.stop()
        raise


def _run(bench: Bench, s: Settings, meta: dict) -> None:
    wants = s.workloads
    t_all = time.perf_counter()
    timings = meta.setdefault("workload_seconds", {})
    steps = [
        ("emulator", "emulator" in s.contestants, lambda: wl.emulator_alone(bench)),
        ("seq-read", "seq-read" in wants, lambda: wl.seq_read(bench)),
        ("rand-read", "rand-read" in wants, lambda: wl.rand_read(bench)),
        ("seq-write", "seq-write" in wants, lambda: wl.seq_write(bench)),
        (
            "small-files",
            "small-files" in wants,
            lambda: sf.run_tree(bench, bench.trees["small-files"]),
        ),
        ("headers", "headers" in wants, lambda: sf.run_tree(bench, bench.trees["headers"])),
        ("metadata", "metadata" in wants, lambda: wl.metadata(bench)),
        ("memory", "memory" in wants and bool(bench.mounts), lambda: wl.memory(bench, NS_SHARE)),
        ("migrate", "migrate" in wants, lambda: mig.run(bench, bench.share_url)),
        ("churn", "churn" in wants, lambda: churn.run(bench)),
    ]
    for name, enabled, fn in steps:
        if not enabled:
            continue
        log.info("=== %s", name)
        t0 = time.perf_counter()
        fn()
        timings[name] = round(time.perf_counter() - t0, 1)
    timings["total"] = round(time.perf_counter() - t_all, 1)
