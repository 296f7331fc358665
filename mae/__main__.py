"""`python -m mae` runs the `mae` command line."""

import sys

from .cli import main

sys.exit(main())
