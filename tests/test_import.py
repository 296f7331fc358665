"""`import mae` stays light: it does not pull in torch._dynamo (over a second on 2 cores) unless something is
compiled. The seeded masks under torch.compile are proven in `tests/test_compile.py`; the import cost itself is
measured in `benchmarks/` (here only what cannot flake: which modules are loaded)."""

from __future__ import annotations

import subprocess
import sys


def test_import_mae_and_the_cli_do_not_load_dynamo() -> None:
    code = (
        "import sys, mae, mae.cli; mae.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m.startswith(('torch._dynamo', 'torchvision', 'transformers'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"import mae loaded: {out}"
