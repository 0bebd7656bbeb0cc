"""`python -m starchat` runs the CLI."""

import sys

from starchat.cli import main

sys.exit(main())
