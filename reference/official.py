"""Adapter to the official MAE code (facebookresearch/mae, CC-BY-NC 4.0), which is never copied here.

Users who have a checkout set `MAE_OFFICIAL_REPO` to its path; this module imports `models_mae` from
there and builds the official model. Two shims make the 2022 code run on current libraries, applied
only while it is imported and built:
- timm's `Block` no longer accepts `qk_scale` (the official code passes `qk_scale=None`): a subclass
  drops that argument and is otherwise timm's Block, so construction draws the same random numbers;
- numpy removed the alias `np.float` (used by `util/pos_embed.py`): it is set to the builtin `float`,
  which is what it always meant.

`run_official_pretrain` runs the official `main_pretrain.main` itself, with six more shims, applied
only while it runs and undone after: it asserts `timm.__version__ == "0.3.2"` (the version is shown as
that); it imports `torch._six.inf` (a stand-in module gives `math.inf`) and
`timm.optim.optim_factory.add_weight_decay` (now `param_groups_weight_decay`, the same groups); it
calls `torch.cuda.synchronize()` after every step (a no-op on a machine without CUDA); it imports
tensorboard's `SummaryWriter` (a stand-in that records nothing, where tensorboard is not installed);
its resume calls `torch.load` with the current default `weights_only=True`, which refuses the
`argparse.Namespace` its own checkpoints hold (allowed while it runs); and it replaces `builtins.print`
(restored after). `training_shims()` applies them all for other official training code, e.g. the
`engine_pretrain` module that `official_engine()` returns.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

ENV_VAR = "MAE_OFFICIAL_REPO"
FACTORIES = {
    "base": "mae_vit_base_patch16_dec512d8b",
    "large": "mae_vit_large_patch16_dec512d8b",
    "huge": "mae_vit_huge_patch14_dec512d8b",
}


class OfficialRepoUnavailable(RuntimeError):
    """The official checkout is not configured or not usable; the message says why."""


def official_repo() -> Path | None:
    """The checkout named by $MAE_OFFICIAL_REPO, or None when the variable is unset or empty."""
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value).expanduser() if value else None


def skip_reason() -> str | None:
    """Why the official reference cannot be used here (None when it can)."""
    repo = official_repo()
    if repo is None:
        return f"official MAE code not configured: set {ENV_VAR} to a checkout of facebookresearch/mae"
    if not (repo / "models_mae.py").is_file():
        return f"{ENV_VAR}={repo} has no models_mae.py: point it at a checkout of facebookresearch/mae"
    try:
        import timm  # noqa: F401
    except ImportError:
        return "the official MAE code needs timm: pip install timm"
    return None


@contextlib.contextmanager
def _shims() -> Iterator[None]:
    import numpy as np
    import timm.models.vision_transformer as tvt

    original_block = tvt.Block
    had_float = hasattr(np, "float")

    class BlockAcceptingQkScale(original_block):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, qk_scale: Any = None, **kwargs: Any) -> None:
            if qk_scale is not None:
                raise ValueError("the shim only supports qk_scale=None, which is what the official code passes")
            super().__init__(*args, **kwargs)

    setattr(tvt, "Block", BlockAcceptingQkScale)  # noqa: B010  (a module attribute swapped for a while)
    if not had_float:
        setattr(np, "float", float)  # noqa: B010
    try:
        yield
    finally:
        setattr(tvt, "Block", original_block)  # noqa: B010
        if not had_float:
            delattr(np, "float")


@contextlib.contextmanager
def _training_shims() -> Iterator[None]:
    import argparse
    import builtins
    import math

    import timm
    import timm.optim
    import torch

    saved_version, saved_print, saved_sync = timm.__version__, builtins.print, torch.cuda.synchronize
    saved_modules = {name: sys.modules.get(name) for name in ("torch._six", "torch.utils.tensorboard")}
    six = ModuleType("torch._six")
    six.inf = math.inf  # type: ignore[attr-defined]
    sys.modules["torch._six"] = six
    try:
        import torch.utils.tensorboard
    except ImportError:
        board = ModuleType("torch.utils.tensorboard")
        board.SummaryWriter = _NullSummaryWriter  # type: ignore[attr-defined]
        sys.modules["torch.utils.tensorboard"] = board
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # timm's deprecated module path, torch.cuda.amp
        import timm.optim.optim_factory as optim_factory

        had_add = hasattr(optim_factory, "add_weight_decay")  # timm 0.3.2's name for the same groups
        if not had_add:
            optim_factory.add_weight_decay = timm.optim.param_groups_weight_decay  # type: ignore[attr-defined]
        timm.__version__ = "0.3.2"
        if not torch.cuda.is_available():
            torch.cuda.synchronize = lambda device=None: None
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                yield
        finally:
            timm.__version__ = saved_version
            builtins.print = saved_print
            torch.cuda.synchronize = saved_sync
            if not had_add:
                delattr(optim_factory, "add_weight_decay")
            for name, module in saved_modules.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module


class _NullSummaryWriter:
    """Stands in for tensorboard's SummaryWriter where tensorboard is not installed: records nothing."""

    def __init__(self, log_dir: str | None = None, **kwargs: Any) -> None:
        self.log_dir = log_dir

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def run_official_pretrain(argv: list[str], model_kwargs: dict[str, Any] | None = None) -> None:
    """Run the official `main_pretrain.py` with command-line `argv`, in this process, under the shims.

    `model_kwargs` (optional) replaces the model that `--model` names by the official
    `MaskedAutoencoderViT(**model_kwargs, norm_pix_loss=...)`, so small configurations can be trained.
    The official script reads `DATA/train`; pass `--device cpu` where there is no GPU.
    """
    reason = skip_reason()
    if reason:
        raise OfficialRepoUnavailable(reason)
    repo = str(official_repo())
    names = ("main_pretrain", "engine_pretrain", "models_mae", "models_vit", "util")
    saved = {n: sys.modules.pop(n) for n in list(sys.modules) if n in names or n.startswith("util.")}
    sys.path.insert(0, repo)
    try:
        with _shims(), _training_shims():
            main_pretrain = importlib.import_module("main_pretrain")
            args = main_pretrain.get_args_parser().parse_args(argv)
            if model_kwargs is not None:
                official_class = main_pretrain.models_mae.MaskedAutoencoderViT
                norm_layer = functools.partial(nn.LayerNorm, eps=1e-6)

                def factory(**kwargs: Any) -> Any:
                    return official_class(**model_kwargs, norm_layer=norm_layer, **kwargs)

                setattr(main_pretrain.models_mae, args.model, factory)
            if args.output_dir:
                Path(args.output_dir).mkdir(parents=True, exist_ok=True)
            main_pretrain.main(args)
    finally:
        sys.path.remove(repo)
        for loaded in [n for n in sys.modules if n in names or n.startswith("util.")]:
            del sys.modules[loaded]
        sys.modules.update(saved)


_modules: dict[str, ModuleType] = {}


def _models_mae() -> ModuleType:
    """The official `models_mae`."""
    return official_module("models_mae")


def official_module(name: str) -> ModuleType:
    """Import a module of the checkout (e.g. "models_mae", "util.lr_decay") once, under the shims."""
    if name in _modules:
        return _modules[name]
    reason = skip_reason()
    if reason:
        raise OfficialRepoUnavailable(reason)
    repo = str(official_repo())
    # The checkout's own `util` package would shadow others: import it, then take its names back out of
    # sys.modules so nothing else in this process sees them.
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if name == "util" or name.startswith("util.")}
    sys.path.insert(0, repo)
    try:
        with _shims():
            module = importlib.import_module(name)
    finally:
        sys.path.remove(repo)
        for loaded in [n for n in sys.modules if n in ("models_mae", "models_vit", "util") or n.startswith("util.")]:
            del sys.modules[loaded]
        sys.modules.update(saved)
    _modules[name] = module
    return module


@contextlib.contextmanager
def training_shims() -> Iterator[None]:
    """Every shim of `run_official_pretrain`, for running the official training code in this process."""
    with _shims(), _training_shims():
        yield


def official_engine() -> tuple[ModuleType, ModuleType]:
    """The official `engine_pretrain` module and the `util.misc` it uses, imported once.

    Call their functions inside `training_shims()`: `util.misc` imports `torch._six`, and the engine calls
    `torch.cuda.synchronize()` after every step, which exist (as stand-ins) only while the shims apply.
    """
    if "engine_pretrain" not in _modules:
        with _training_shims():
            official_module("engine_pretrain")
        sys.modules.pop("engine_pretrain", None)  # nothing else in this process sees the checkout's module
    engine = _modules["engine_pretrain"]
    return engine, engine.misc


def build_official(variant: str, **kwargs: Any) -> Any:
    """The official `models_mae.mae_vit_<variant>_*_dec512d8b(**kwargs)` model (random init).

    The shims stay active while it is built (its pos-embed code calls `np.float` at build time).
    """
    if variant not in FACTORIES:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(FACTORIES)}")
    module = _models_mae()
    with _shims():
        return getattr(module, FACTORIES[variant])(**kwargs)


def build_official_custom(**kwargs: Any) -> Any:
    """The official `models_mae.MaskedAutoencoderViT(**kwargs)` for any configuration (random init)."""
    module = _models_mae()
    with _shims():
        return module.MaskedAutoencoderViT(**kwargs)


def official_sincos(embed_dim: int, grid_size: int, cls_token: bool = False) -> Any:
    """The official `util.pos_embed.get_2d_sincos_pos_embed` (numpy float64 array)."""
    module = _models_mae()
    with _shims():
        return module.get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=cls_token)
