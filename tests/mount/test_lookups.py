"""The compact lookup counts (fsync_fuse/lookups.py) behave like a dict of counts."""

from __future__ import annotations

import random

from fsync_fuse.lookups import CHUNK, LookupCounts


def test_counts_match_a_dict_model():
    rnd = random.Random(3)
    counts, model = LookupCounts(), {}
    inos = [rnd.randrange(1, 40 * CHUNK) for _ in range(300)] + [2, 3, CHUNK - 1, CHUNK]
    for _ in range(20000):
        ino = rnd.choice(inos)
        if rnd.random() < 0.55:
            n = rnd.choice([1, 1, 1, 2, 300])  # 300: past the one-byte range
            counts.add(ino, n)
            model[ino] = model.get(ino, 0) + n
        else:
            n = rnd.choice([1, 1, 2, 200, 1000])
            left = max(0, model.get(ino, 0) - n)
            assert counts.forget(ino, n) == left
            if left:
                model[ino] = left
            else:
                model.pop(ino, None)
        assert counts.get(ino) == model.get(ino, 0)
        assert (ino in counts) == (ino in model)
        assert len(counts) == len(model)
    for ino in inos:
        assert counts.get(ino) == model.get(ino, 0)
    for ino, n in list(model.items()):
        assert counts.forget(ino, n) == 0
    assert len(counts) == 0 and not counts._chunks and not counts._big  # all memory returned


def test_a_million_inodes_take_about_a_byte_each():
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        counts = LookupCounts()
        for ino in range(2, 1_000_002):
            counts.add(ino)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(counts) == 1_000_000
    assert used < 2 << 20, used  # a dict of the same counts: ~70 MiB
