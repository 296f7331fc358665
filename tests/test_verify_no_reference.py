"""`mae verify` on a machine with no reference installed (no transformers, no timm, no official checkout):
it must say that nothing was compared, with the install command, and exit non-zero, never pass.

transformers and timm are made missing for the test by `sys.modules[name] = None`, which makes
`importlib.util.find_spec` answer None and every `import` of them fail, as on a machine without them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mae.cli import main

REFERENCES = ("transformers", "timm")


@pytest.fixture
def no_reference(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in REFERENCES] + list(REFERENCES):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delenv("MAE_OFFICIAL_REPO", raising=False)
    monkeypatch.setenv("MAE_HOME", str(tmp_path / "no-checkpoints"))


@pytest.mark.xdist_group("base")
@pytest.mark.usefixtures("no_reference")
def test_verify_without_any_reference_says_so_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ImportError):
        import transformers  # noqa: F401  # the premise: the reference really cannot be imported
    report = tmp_path / "report.json"
    status = main(["verify", "--variant", "base", "--report", str(report)])
    out, err = capsys.readouterr()
    assert status == 1, out + err
    assert "no reference is installed, so nothing was compared: pip install 'mae[verify]'" in err
    rows = {(r["check"], r["reference"]): r for r in json.loads(report.read_text())}
    for key in [("forward", "transformers"), ("encoder features", "timm")]:
        assert rows[key]["status"] == "skip" and rows[key]["detail"] == "not installed: pip install 'mae[verify]'"
    assert rows[("weights and forward", "official")]["status"] == "skip"
    assert "MAE_OFFICIAL_REPO" in rows[("weights and forward", "official")]["detail"]
    assert rows[("keys: official counts", "official")]["status"] == "pass"  # the pinned facts still hold
    assert not any(r["status"] == "FAIL" for r in rows.values())  # nothing failed, and still not a pass
