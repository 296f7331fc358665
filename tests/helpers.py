"""Helpers shared by the tests: cached full-size models and small configurations."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest
import torch

import mae
from mae.models import list_variants

if TYPE_CHECKING:
    from _pytest.mark.structures import ParameterSet

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# The official variants (pinned, never read from the registry): short key -> model name. The tests that need
# an official reference (timm's MAE encoders, the official factories, the pinned counts) run over these.
VARIANTS = {
    "base": "mae_vit_base_patch16",
    "large": "mae_vit_large_patch16",
    "huge": "mae_vit_huge_patch14",
}


def variant_params(official: bool | None = None) -> list[ParameterSet]:
    """One `pytest.param` per registered variant, read from the registry when the test module is collected:
    every per-variant check parametrised with it covers a new `register_model` without further edits.

    The id is the model name (`pytest -k mae_vit_small_patch16`); the xdist group is the official short key
    ("base") where there is one, so each worker builds each full-size model once (`full_model`).
    """
    keys = {name: key for key, name in VARIANTS.items()}
    return [
        pytest.param(v.name, id=v.name, marks=pytest.mark.xdist_group(keys.get(v.name, v.name)))
        for v in list_variants(official)
    ]


def model_name(variant: str) -> str:
    """The registered model name of an official short key ("base"), or of a model name (unchanged)."""
    return VARIANTS.get(variant, variant)


_built: dict[str, mae.MaskedAutoencoderViT] = {}


def full_model(variant: str) -> mae.MaskedAutoencoderViT:
    """A full-size model of `variant` (an official short key or a registered name), built once per test
    process with seed 0 (eval mode).

    Tests that use it are grouped per variant (`xdist_group`), so each worker builds each size once.
    """
    name = model_name(variant)
    if name not in _built:
        torch.manual_seed(0)
        _built[name] = mae.create_model(name).eval()
    return _built[name]


def assert_bit_equal(ours: torch.Tensor, theirs: torch.Tensor, what: str = "") -> None:
    """Bit equality (the same kernels run on both sides); the message gives the largest difference."""
    assert ours.shape == theirs.shape, f"{what}: shapes {tuple(ours.shape)} != {tuple(theirs.shape)}"
    if not torch.equal(ours, theirs):
        diff = (ours.double() - theirs.double()).abs().max().item()
        raise AssertionError(f"{what}: not bit-equal, max abs diff {diff:.3g}")


def small_config(**overrides: object) -> mae.MAEConfig:
    """A tiny MAE configuration for fast tests."""
    base = dict(
        img_size=32,
        patch_size=8,
        in_chans=3,
        embed_dim=32,
        depth=2,
        num_heads=4,
        decoder_embed_dim=16,
        decoder_depth=1,
        decoder_num_heads=2,
    )
    base.update(overrides)
    return mae.MAEConfig(**base)  # type: ignore[arg-type]


def free_port() -> int:
    """A free TCP port on the loopback interface, for a process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def gloo_group(rank: int, port: int, world_size: int) -> Iterator[None]:
    """A spawned test worker's gloo process group on the loopback rendezvous at ``port`` (torch on one thread
    per process: the ranks share the machine's cores), destroyed on the way out, also on an error."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


def make_fixtures() -> ModuleType:
    """`fixtures/make_fixtures.py` as a module (its cases, and the functions that compute them)."""
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
