"""The tiering options of `fsync-fuse mount` (fsync_fuse/settings.py keeps the policies)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from fsync_fuse.policies import MODES, POLICIES


def _checked(name: str) -> Callable[[str], str]:
    parse = POLICIES[name][0]

    def check(text: str) -> str:
        try:
            parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return check


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "tiering",
        "policies are kept in the cache: given here they are changed, left out the mount "
        "keeps what was set before (also at run time: `fsync-fuse set`)",
    )
    g.add_argument(
        "--min-free-space",
        type=_checked("min_free_space"),
        metavar="PCT",
        help="keep at least PCT%% of the cache directory's volume free, evicting clean "
        "unpinned content (default 0: only --cache-size bounds the cache)",
    )
    g.add_argument(
        "--tier-after",
        type=_checked("tier_after"),
        metavar="DURATION",
        help="tier content not read or written for this long, e.g. 30d, 12h, 90s (default off)",
    )
    g.add_argument(
        "--proactive-recall",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="when another site changes a file this mount had cached and used recently, "
        "fetch the new version in the background (default off)",
    )
    g.add_argument(
        "--initial-download",
        choices=MODES,
        default="namespace",
        help="on a new or replacement machine: namespace serves the namespace at once and "
        "fetches on demand (default); recent also recalls the most recently modified files "
        "until the cache is 90%% full; all every file that fits; newest first, once per cache",
    )
    g.add_argument(
        "--metrics",
        metavar="ADDR:PORT",
        help="serve Prometheus metrics over HTTP, e.g. 127.0.0.1:9184",
    )


def given_policies(args: argparse.Namespace) -> dict[str, str]:
    """The policies given explicitly on the command line (name -> text)."""
    out: dict[str, str] = {}
    if args.min_free_space is not None:
        out["min_free_space"] = args.min_free_space
    if args.tier_after is not None:
        out["tier_after"] = args.tier_after
    if args.proactive_recall is not None:
        out["proactive_recall"] = "on" if args.proactive_recall else "off"
    return out


def metrics_address(text: str | None) -> tuple[str, int] | None:
    """'ADDR:PORT' -> (addr, port); ValueError with a message for anything else."""
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--metrics {text!r}: expected ADDR:PORT, e.g. 127.0.0.1:9184")
    return host.strip("[]") or "127.0.0.1", int(port)
