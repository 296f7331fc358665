"""Adapter to the official MAE code (facebookresearch/mae, CC-BY-NC 4.0), which is never copied here.

Users who have a checkout set `MAE_OFFICIAL_REPO` to its path; this module imports `models_mae` from
there and builds the official model. Two shims make the 2022 code run on current libraries, applied
only while it is imported and built:
- timm's `Block` no longer accepts `qk_scale` (the official code passes `qk_scale=None`): a subclass
  drops that argument and is otherwise timm's Block, so construction draws the same random numbers;
- numpy removed the alias `np.float` (used by `util/pos_embed.py`): it is set to the builtin `float`,
  which is what it always meant.

`run_official_pretrain` runs the official `main_pretrain.main` itself, with seven more shims, applied
only while it runs and undone after: it asserts `timm.__version__ == "0.3.2"` (the version is shown as
that); it imports `torch._six.inf` (a stand-in module gives `math.inf`) and
`timm.optim.optim_factory.add_weight_decay` (now `param_groups_weight_decay`, the same groups); it
calls `torch.cuda.synchronize()` after every step (a no-op on a machine without CUDA); it imports
tensorboard's `SummaryWriter` (a stand-in that records nothing, where tensorboard is not installed);
its resume calls `torch.load` with the current default `weights_only=True`, which refuses the
`argparse.Namespace` its own checkpoints hold (allowed while it runs); and it replaces `builtins.print`
(restored after); and timm's RandAugment posterize keeps 0 bits at its top magnitude, which current
Pillow refuses: while the official code runs, it returns the black image Pillow gave in 2022 (about one
fine-tuning image in 500 otherwise stopped its run). `training_shims()` applies them all for other
official training code, e.g. the `engine_pretrain` module that `official_engine()` returns.

`run_official_finetune` and `run_official_linprobe` run `main_finetune.main` and `main_linprobe.main` the
same way, with OUR classifier (`mae.classifier.VisionTransformer`, the official keys and initialisation)
in place of the `models_vit` model that `--model` names, so both programs train the same model class. (The
official one subclasses timm's VisionTransformer, whose timm 1.x `forward` passes `attn_mask` to a
`forward_features` override that does not take it, and whose layout and init changed.) Three more shims
apply while they run: the official crop calls torchvision's `_get_image_size` (now `get_image_size`, the
same [width, height]); the scripts set `cudnn.benchmark = True` (restored after); `torch.cuda.amp.autocast()`
and `GradScaler()` warn that they are disabled on a machine without CUDA (those two warnings are silenced
there). Their `exit(0)` after `--eval` returns normally. `official_finetune_engine()` gives the
`engine_finetune` module with its `util.misc` (`NativeScalerWithGradNormCount`) and `util.lr_sched`, to call
inside `training_shims()`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import torch
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
    import builtins
    import math

    import timm
    import timm.data.auto_augment as auto_augment
    import timm.optim
    import torch  # a local name: `import torch.utils.tensorboard` below binds it in this function
    import torchvision.transforms.functional as tvf

    saved_version, saved_print, saved_sync = timm.__version__, builtins.print, torch.cuda.synchronize
    saved_benchmark = torch.backends.cudnn.benchmark
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
        had_image_size = hasattr(tvf, "_get_image_size")  # the official crop's name for get_image_size
        if not had_image_size:
            tvf._get_image_size = tvf.get_image_size
        # RandAugment's posterize at its top magnitude keeps 0 bits: Pillow >= 10 refuses that, the Pillow of
        # 2022 returned a black image (the official runs' behaviour; ours: `mae.train.augment`).
        saved_ops = dict(auto_augment.NAME_TO_OP)
        for name, op in saved_ops.items():
            if op is auto_augment.posterize:
                auto_augment.NAME_TO_OP[name] = _posterize_as_in_2022
        if not torch.cuda.is_available():
            torch.cuda.synchronize = lambda device=None: None
            # torch.cuda.amp.autocast() / GradScaler() on a machine without CUDA: disabled, as expected here.
            warnings.filterwarnings("ignore", "CUDA is not available or torch_xla is imported", UserWarning)
            warnings.filterwarnings("ignore", message=".*GradScaler is enabled, but CUDA is not available")
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                yield
        finally:
            auto_augment.NAME_TO_OP.clear()
            auto_augment.NAME_TO_OP.update(saved_ops)
            timm.__version__ = saved_version
            builtins.print = saved_print
            torch.cuda.synchronize = saved_sync
            torch.backends.cudnn.benchmark = saved_benchmark
            if not had_image_size:
                del tvf._get_image_size
            if not had_add:
                delattr(optim_factory, "add_weight_decay")
            for name, module in saved_modules.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module


def _posterize_as_in_2022(img: Any, bits_to_keep: int, **_: Any) -> Any:
    """timm's posterize with the Pillow the official runs had: 0 bits kept gives a black image."""
    from PIL import Image, ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


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


# The checkout's top-level modules that its scripts import (and its `util.*`): taken out of sys.modules after a
# run, so that nothing else in this process sees them.
_CHECKOUT_MODULES = (
    "main_pretrain", "main_finetune", "main_linprobe", "engine_pretrain", "engine_finetune", "models_mae",
    "models_vit", "util",
)  # fmt: skip


def _is_checkout_module(name: str) -> bool:
    return name in _CHECKOUT_MODULES or name.startswith("util.")


def _run_official_main(
    script: str, argv: list[str], install_model: Callable[[ModuleType, argparse.Namespace], None] | None = None
) -> None:
    """Import the checkout's `script` (e.g. "main_finetune"), parse `argv` with its parser, let `install_model`
    swap the model factory, and run its `main`, in this process under every shim. `exit(0)` returns normally."""
    reason = skip_reason()
    if reason:
        raise OfficialRepoUnavailable(reason)
    repo = str(official_repo())
    saved = {n: sys.modules.pop(n) for n in list(sys.modules) if _is_checkout_module(n)}
    sys.path.insert(0, repo)
    try:
        with _shims(), _training_shims():
            main_module = importlib.import_module(script)
            args = main_module.get_args_parser().parse_args(argv)
            if install_model is not None:
                install_model(main_module, args)
            if args.output_dir:
                Path(args.output_dir).mkdir(parents=True, exist_ok=True)
            try:
                main_module.main(args)
            except SystemExit as stop:  # `exit(0)` after `--eval`; any other exit goes on up
                if stop.code not in (0, None):
                    raise
    finally:
        sys.path.remove(repo)
        for loaded in [n for n in sys.modules if _is_checkout_module(n)]:
            del sys.modules[loaded]
        sys.modules.update(saved)


# Called with the imported script and its parsed arguments just before its `main` runs: it may wrap a name of the
# script's module (e.g. `trunc_normal_`, `build_dataset`) to record what the script computes, and raise to stop it.
Hook = Callable[[ModuleType, argparse.Namespace], None]


def _then(install: Hook, hook: Hook | None) -> Hook:
    """`install`, then `hook` (when given)."""

    def both(main_module: ModuleType, args: argparse.Namespace) -> None:
        install(main_module, args)
        if hook is not None:
            hook(main_module, args)

    return both


def run_official_pretrain(
    argv: list[str], model_kwargs: dict[str, Any] | None = None, hook: Hook | None = None
) -> None:
    """Run the official `main_pretrain.py` with command-line `argv`, in this process, under the shims.

    `model_kwargs` (optional) replaces the model that `--model` names by the official
    `MaskedAutoencoderViT(**model_kwargs, norm_pix_loss=...)`, so small configurations can be trained.
    The official script reads `DATA/train`; pass `--device cpu` where there is no GPU. `hook` (optional) is
    called with the imported script and its parsed arguments just before its `main` runs (see `Hook`).
    """

    def install(main_pretrain: ModuleType, args: argparse.Namespace) -> None:
        if model_kwargs is None:
            return
        official_class = main_pretrain.models_mae.MaskedAutoencoderViT
        norm_layer = functools.partial(nn.LayerNorm, eps=1e-6)

        def factory(**kwargs: Any) -> Any:
            return official_class(**model_kwargs, norm_layer=norm_layer, **kwargs)

        setattr(main_pretrain.models_mae, args.model, factory)

    _run_official_main("main_pretrain", argv, _then(install, hook))


# `--model` names of the official fine-tuning scripts (`models_vit`): the same names in `mae.classifier`.
CLASSIFIERS = ("vit_base_patch16", "vit_large_patch16", "vit_huge_patch14")
_FROM_FLAGS = {
    "num_classes": "--nb_classes",
    "global_pool": "--global_pool/--cls_token",
    "drop_path_rate": "--drop_path",
}


def _our_classifier(model_kwargs: dict[str, Any] | None) -> Callable[[ModuleType, argparse.Namespace], None]:
    """Installs, in place of `models_vit.<--model>`, a factory of OUR classifier: the named variant's
    configuration with `model_kwargs` (MAEConfig fields) applied, and the script's num_classes /
    global_pool / drop_path_rate. The configuration is checked before the script does any work."""
    extra = dict(model_kwargs or {})
    clashing = sorted(set(extra) & set(_FROM_FLAGS))
    if clashing:
        flags = ", ".join(f"{name} (use {_FROM_FLAGS[name]})" for name in clashing)
        raise ValueError(f"model_kwargs must not set what the script's flags set: {flags}")

    def install(main_module: ModuleType, args: argparse.Namespace) -> None:
        from mae import classifier
        from mae.config import resolve_config

        if args.model not in CLASSIFIERS:
            raise ValueError(f"--model {args.model!r} has no classifier here; valid: {', '.join(CLASSIFIERS)}")
        build = getattr(classifier, args.model)
        with torch.device("meta"):
            resolve_config(build().config, extra)  # unknown or inconsistent fields fail here, before any work

        def factory(**kwargs: Any) -> classifier.VisionTransformer:
            return build(**extra, **kwargs)

        setattr(main_module.models_vit, args.model, factory)

    return install


def run_official_finetune(
    argv: list[str], model_kwargs: dict[str, Any] | None = None, hook: Hook | None = None
) -> None:
    """Run the official `main_finetune.py` with command-line `argv`, in this process, under the shims.

    The model is OUR classifier (`mae.classifier.<--model>`, e.g. `vit_base_patch16`) with `model_kwargs`
    (MAEConfig fields such as img_size, patch_size, embed_dim, depth, num_heads) applied to the variant's
    configuration, and the script's `num_classes`, `drop_path_rate` and `global_pool`. The script reads
    `DATA/train` and `DATA/val`; pass `--device cpu` where there is no GPU. `--eval` returns after evaluating.
    `hook`: as in `run_official_pretrain`.
    """
    _run_official_main("main_finetune", argv, _then(_our_classifier(model_kwargs), hook))


def run_official_linprobe(
    argv: list[str], model_kwargs: dict[str, Any] | None = None, hook: Hook | None = None
) -> None:
    """Run the official `main_linprobe.py` with command-line `argv`, in this process, under the shims.

    The model is OUR classifier, as in `run_official_finetune` (the script passes no drop_path_rate: 0),
    with the official head `Sequential(BatchNorm1d(affine=False), Linear)` put on it by the script. Its
    transforms are fixed at 224 px: use a model with `img_size` 224 (a large patch keeps it cheap). `hook`: as
    in `run_official_pretrain`.
    """
    _run_official_main("main_linprobe", argv, _then(_our_classifier(model_kwargs), hook))


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


class OfficialFinetuneEngine(NamedTuple):
    """The official `engine_finetune` module and the checkout modules it works with."""

    engine: (
        ModuleType  # train_one_epoch(model, criterion, loader, optimizer, device, epoch, loss_scaler, ...), evaluate
    )
    misc: ModuleType  # util.misc: NativeScalerWithGradNormCount, MetricLogger, save_model, ...
    lr_sched: ModuleType  # util.lr_sched: adjust_learning_rate(optimizer, epoch, args)


def official_finetune_engine() -> OfficialFinetuneEngine:
    """The official `engine_finetune` module, its `util.misc` and `util.lr_sched`, imported once.

    Call their functions inside `training_shims()` (the engine calls `torch.cuda.synchronize()` after every
    step). They run with any classifier, ours included: `train_one_epoch(model, criterion, loader, optimizer,
    torch.device("cpu"), epoch, misc.NativeScalerWithGradNormCount(), max_norm, mixup_fn, log_writer=None,
    args=Namespace(accum_iter=..., lr=..., min_lr=..., warmup_epochs=..., epochs=...))` and
    `evaluate(loader, model, device)`.
    """
    if "engine_finetune" not in _modules:
        with _training_shims():
            official_module("engine_finetune")
        sys.modules.pop("engine_finetune", None)  # nothing else in this process sees the checkout's module
    engine = _modules["engine_finetune"]
    return OfficialFinetuneEngine(engine=engine, misc=engine.misc, lr_sched=engine.lr_sched)


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
