"""Golden fixtures (fixtures/): official-format checkpoints made by transformers, and the outputs it
computed. Ours must reproduce them; and the reference, re-run now, must still produce them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mae
from helpers import make_fixtures

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CASES = sorted(p.name.removesuffix(".golden.pt") for p in FIXTURES.glob("*.golden.pt"))


def load_case(name: str) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    checkpoint = torch.load(FIXTURES / f"{name}.pth", weights_only=True, map_location="cpu")
    golden = torch.load(FIXTURES / f"{name}.golden.pt", weights_only=True, map_location="cpu")
    return checkpoint["model"], golden


def test_every_case_of_the_script_has_its_files() -> None:
    assert sorted(make_fixtures().CASES) == CASES
    for name in CASES:
        assert (FIXTURES / f"{name}.pth").is_file()


@pytest.mark.parametrize("name", CASES)
def test_ours_reproduces_the_golden_outputs(name: str) -> None:
    state_dict, golden = load_case(name)
    config = mae.MAEConfig(**golden["config"])  # type: ignore[arg-type]
    model = mae.MaskedAutoencoderViT(config).eval()
    assert list(state_dict) == list(model.state_dict())  # official layout, official order
    model.load_state_dict(state_dict, strict=True)
    with torch.no_grad():
        loss, pred, mask = model(golden["imgs"], golden["mask_ratio"], noise=golden["noise"])  # type: ignore[arg-type]
        _, _, ids_restore = model.forward_encoder(golden["imgs"], golden["mask_ratio"], golden["noise"])  # type: ignore[arg-type]
    assert torch.equal(mask, golden["mask"]) and torch.equal(ids_restore, golden["ids_restore"])
    # Golden files may have been made on another CPU, whose kernels can round differently: 1e-6.
    torch.testing.assert_close(pred, golden["pred"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(loss, golden["loss"], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_reference_still_produces_the_golden_outputs(name: str) -> None:
    state_dict, golden = load_case(name)
    fresh_state, fresh = make_fixtures().compute_case(name)
    assert list(fresh_state) == list(state_dict)
    for key in state_dict:
        torch.testing.assert_close(fresh_state[key], state_dict[key], atol=0, rtol=0, msg=key)
    for key in ("imgs", "noise", "mask", "ids_restore"):
        assert torch.equal(fresh[key], golden[key]), key  # type: ignore[arg-type]
    for key in ("pred", "loss"):
        torch.testing.assert_close(fresh[key], golden[key], atol=1e-6, rtol=1e-6)
