"""`python -m qaqnuz`: the `qaqnuz` command (how `serve --workers` starts its workers)."""

import sys

from qaqnuz.cli import main

sys.exit(main())
