"""`python -m remote.emulator --data DIR [--host H --port P --account A --key K --faults JSON]`."""

import sys

from .cli import main

sys.exit(main())
