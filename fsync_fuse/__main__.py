"""`python -m fsync_fuse` runs the command line."""

from fsync_fuse.cli import main

raise SystemExit(main())
