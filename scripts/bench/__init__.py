"""Benchmark harness: fsync-fuse against local disk, the SDK and rclone, as ratios in one run.

Run it with `python -m scripts.bench` from the repository root; see scripts/bench/README.md.
"""
