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


def test_every_package_of_the_library_is_installed() -> None:
    """A sub-package missing from pyproject's ``packages`` works in an editable install and is absent from a wheel."""
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(root).parts)
        for top in ("mae", "reference")
        for init in (root / top).rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
