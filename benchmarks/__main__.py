"""`python -m benchmarks [forward|load|train|finetune|memory|data|features|pretrain_run|cuda_check|all] ...`:
run a benchmark (see benchmarks/README.md).

Without a name, `all`: the forward benchmark, then the load benchmark, each with its defaults (`train`
and `finetune` take about 7 and 15 minutes more on 2 cores, and `memory` (gradient checkpointing) some
minutes, so they run only when named).
"""

from __future__ import annotations

import sys

from . import cuda_check, data, features, finetune, forward, load, memory, pretrain_run, train


def run_all(argv: list[str]) -> int:
    if argv:
        sys.exit("`all` takes no options; run `forward` and `load` separately to pass options")
    return forward.main([]) or load.main([])


COMMANDS = {
    "forward": forward.main, "load": load.main, "train": train.main, "finetune": finetune.main,
    "memory": memory.main, "data": data.main, "features": features.main, "pretrain_run": pretrain_run.main,
    "cuda_check": cuda_check.main, "all": run_all,
}  # fmt: skip

if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "all"
    if name.startswith("-"):
        sys.exit(f"name a benchmark before its options, e.g. python -m benchmarks forward {name}")
    if name not in COMMANDS:
        sys.exit(f"unknown benchmark {name!r}; valid: {', '.join(COMMANDS)}")
    sys.exit(COMMANDS[name](sys.argv[2:]))
