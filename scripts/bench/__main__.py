"""`python -m scripts.bench`: the one command that runs the benchmarks."""

import sys

from scripts.bench.run import main

sys.exit(main())
