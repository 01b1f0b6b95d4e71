"""Sorted, disjoint, half-open byte intervals: the written ranges of a file.

A file's valid ranges are what List Ranges reports; Put Range adds, Clear Range and shrinking
remove. Lists are short in practice (sequential writers merge into one run).
"""

from __future__ import annotations

Ranges = list[tuple[int, int]]


def add(ranges: Ranges, start: int, end: int) -> Ranges:
    if start >= end:
        return ranges
    out: Ranges = []
    placed = False
    for s, e in ranges:
        if e < start:
            out.append((s, e))
        elif s > end:
            if not placed:
                out.append((start, end))
                placed = True
            out.append((s, e))
        else:
            start, end = min(s, start), max(e, end)
    if not placed:
        out.append((start, end))
    return out


def subtract(ranges: Ranges, start: int, end: int) -> Ranges:
    if start >= end:
        return ranges
    out: Ranges = []
    for s, e in ranges:
        if e <= start or s >= end:
            out.append((s, e))
            continue
        if s < start:
            out.append((s, start))
        if e > end:
            out.append((end, e))
    return out


def clip(ranges: Ranges, start: int, end: int) -> Ranges:
    out: Ranges = []
    for s, e in ranges:
        s2, e2 = max(s, start), min(e, end)
        if s2 < e2:
            out.append((s2, e2))
    return out


def truncate(ranges: Ranges, size: int) -> Ranges:
    return clip(ranges, 0, size)


def minus(a: Ranges, b: Ranges) -> Ranges:
    out = list(a)
    for s, e in b:
        out = subtract(out, s, e)
    return out


def intersect(a: Ranges, b: Ranges) -> Ranges:
    out: Ranges = []
    for s, e in b:
        out.extend(clip(a, s, e))
    out.sort()
    return out


def total(ranges: Ranges) -> int:
    return sum(e - s for s, e in ranges)
