"""An Azure Files-compatible server for tests, demos and benchmarks."""
