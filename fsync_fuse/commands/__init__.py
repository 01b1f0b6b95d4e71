"""Subcommands of the `fsync-fuse` command line, one module each."""
