"""Tiering policies: their names, how they are written and read back (no heavy imports: the
command line checks options with this before anything starts). settings.py keeps them."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: --initial-download modes (initial.py)
MODES = ("namespace", "recent", "all")

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float | None:
    """'30d', '12h', '90s', '15m', '2w', '45' (seconds); 'off' or '0' -> None (no policy)."""
    t = text.strip().lower()
    if t in ("off", "none", "0", "0s", ""):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", t)
    if not m:
        raise ValueError(f"invalid duration {text!r} (examples: 30d, 12h, 90s)")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"invalid duration {text!r}")
    return seconds


def parse_percent(text: str) -> float:
    """'10', '10%' -> 10.0 (0 to 90)."""
    t = text.strip().rstrip("%").strip()
    try:
        pct = float(t)
    except ValueError:
        raise ValueError(f"invalid percentage {text!r} (examples: 10, 10%)") from None
    if not 0 <= pct <= 90:
        raise ValueError(f"percentage {text!r} must be from 0 to 90")
    return pct


def parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "on", "yes", "true"):
        return True
    if t in ("0", "off", "no", "false"):
        return False
    raise ValueError(f"invalid switch {text!r} (on or off)")


def show_duration(seconds: float | None) -> str:
    if seconds is None:
        return "off"
    for unit in ("w", "d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


@dataclass
class Policies:
    min_free_space: float = 0.0  # percent of the cache directory's volume kept free
    tier_after: float | None = None  # seconds unused after which content is tiered
    proactive_recall: bool = False  # fetch new versions of used files in the background


#: name -> (parse, show)
POLICIES: dict[str, tuple[Callable[[str], Any], Callable[[Any], str]]] = {
    "min_free_space": (parse_percent, lambda v: f"{v:g}%"),
    "tier_after": (parse_duration, show_duration),
    "proactive_recall": (parse_bool, lambda v: "on" if v else "off"),
}
