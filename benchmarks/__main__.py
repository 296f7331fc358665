"""`python -m benchmarks {forward,load} ...`: run a benchmark (see benchmarks/README.md)."""

from __future__ import annotations

import sys

from . import forward, load

COMMANDS = {"forward": forward.main, "load": load.main}

if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "forward"
    rest = sys.argv[2:] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else sys.argv[1:]
    if name not in COMMANDS:
        sys.exit(f"unknown benchmark {name!r}; valid: {', '.join(COMMANDS)}")
    sys.exit(COMMANDS[name](rest))
