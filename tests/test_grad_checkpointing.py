"""Gradient checkpointing (`mae.grad_checkpointing`, `--grad_checkpointing`): the same gradients, bit for bit, and
the blocks really run again in the backward.

The reference is the plain run of the same model: the same weights (seed 0), batches, masking noise (drawn by
the model from the same seed) and stochastic-depth masks. Every gradient of every optimizer step, and the
weights after them, must be `torch.equal` to it, through the training engines (`engine_pretrain`,
`engine_finetune`: 4 batches, accumulation over 2, so 2 optimizer steps, the second from updated weights):
pre-training, and fine-tuning with stochastic depth at a high rate (mixup off); float32 and bf16 autocast on the
CPU; in one process and under DDP (2 gloo processes). Bit equality is the expectation, not a tolerance: the
recompute runs the same kernels on the same inputs. Broken on purpose, it shows: a recompute that draws other
drop-path masks (no `preserve_rng_state`) gives other gradients; one outside the forward's autocast is refused
by torch's checkpoint itself (the recomputed tensors' dtype differs from the forward's).

That the blocks are recomputed is observed, not assumed: a forward pre-hook counts every Block's calls, once per
micro-batch in the plain run and twice with checkpointing (the second inside `backward`), so the tests fail if
the switch silently does nothing (lightly #2054: timm checkpointing without effect).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.multiprocessing.spawn import spawn
from torch.nn.parallel import DistributedDataParallel
from train_helpers import TINY_CLASSIFIER_ARGS, load_checkpoint, make_image_folder, one_thread, pretrain

import mae
from helpers import free_port, gloo_group, small_config
from mae.classifier import VisionTransformer, param_groups_lrd
from mae.encoder import MAEEncoder
from mae.train import auto_resume, engine_finetune, engine_pretrain
from mae.train.distributed import Dist
from mae.train.finetune import FINETUNE
from mae.train.finetune import build_parser as finetune_parser
from mae.train.linprobe import build_parser as linprobe_parser
from mae.train.optim import build_adamw
from mae.train.precision import autocast, grad_scaler
from mae.train.schedule import CosineSchedule
from mae.transformer import Block

WORLD, STEPS, ACCUM, BATCH = 2, 4, 2, 4  # 4 global batches of 4 images, 2 per optimizer step
DEPTH = 3  # stochastic depth rates linspace(0, 0.5, 3): two of the three blocks drop branches
DROP_PATH = 0.5  # high, so that most batches drop some sample's branch


def build(kind: str, checkpointed: bool) -> MAEEncoder:
    torch.manual_seed(0)
    model: MAEEncoder
    if kind == "pretrain":
        model = mae.MaskedAutoencoderViT(small_config())
    else:
        model = VisionTransformer(small_config(depth=DEPTH), num_classes=5, drop_path_rate=DROP_PATH)
    model.set_grad_checkpointing(checkpointed)
    return model


@contextmanager
def block_calls(model: nn.Module) -> Iterator[Counter[str]]:
    """Counts the calls of every Block of ``model`` (a pre-hook: it also sees a recompute that stops early)."""
    calls: Counter[str] = Counter()
    handles = [
        m.register_forward_pre_hook(lambda _m, _a, name=name: calls.update([name]))
        for name, m in model.named_modules()
        if isinstance(m, Block)
    ]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


@contextmanager
def every_block_call() -> Iterator[Counter[str]]:
    """Counts the calls of every Block of every model built meanwhile (a global pre-hook), under "Block"."""
    calls: Counter[str] = Counter()

    def count(module: nn.Module, _args: Any) -> None:
        if isinstance(module, Block):
            calls.update(["Block"])

    handle = torch.nn.modules.module.register_module_forward_pre_hook(count)
    try:
        yield calls
    finally:
        handle.remove()


def train_steps(
    kind: str, checkpointed: bool, data: dict[str, Tensor], dtype: torch.dtype, dist_: Dist
) -> tuple[list[dict[str, Tensor]], Counter[str]]:
    """STEPS batches (this process's rows) through the kind's engine: per optimizer step the gradients it used
    (``grad.NAME``) and the weights after it; and each Block's calls."""
    rows = slice(dist_.rank * BATCH // WORLD, (dist_.rank + 1) * BATCH // WORLD) if dist_.enabled else slice(None)
    model = build(kind, checkpointed)
    wrapped: nn.Module = DistributedDataParallel(model) if dist_.enabled else model
    device = torch.device("cpu")
    if kind == "pretrain":
        optimizer: torch.optim.Optimizer = build_adamw(model, 1e-3, 0.05)
    else:
        optimizer = torch.optim.AdamW(param_groups_lrd(model, 0.05, 0.75), lr=1e-3)  # type: ignore[arg-type]
    snapshots: list[dict[str, Tensor]] = []

    def after(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        snapshots[-1].update({k: v.detach().clone() for k, v in model.state_dict().items()})

    optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: snapshots.append(
            {f"grad.{n}": p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        )
    )
    optimizer.register_step_post_hook(after)
    loader = [(data["images"][s, rows], data["labels"][s, rows]) for s in range(STEPS)]
    common: dict[str, Any] = dict(steps=STEPS, accum_iter=ACCUM, autocast=autocast(device, dtype), dist=dist_)
    schedule = CosineSchedule(1e-3, 0.0, 0, 1)  # no warmup: the first step already changes the weights
    torch.manual_seed(1 + dist_.rank)  # the masking noise and the drop-path masks are drawn from here
    with block_calls(model) as calls:
        scaler = grad_scaler(device, dtype)
        if kind == "pretrain":
            engine_pretrain.train_one_epoch(wrapped, loader, optimizer, scaler, schedule, 0, **common)
        else:
            criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
            engine_finetune.train_one_epoch(wrapped, criterion, loader, optimizer, scaler, schedule, 0, **common)
    assert len(snapshots) == STEPS // ACCUM
    return snapshots, calls


def training_data() -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(2)
    return {
        "images": torch.randn(STEPS, BATCH, 3, 32, 32, generator=g),
        "labels": torch.randint(0, 5, (STEPS, BATCH), generator=g),
    }


def assert_all_equal(plain: list[dict[str, Tensor]], checkpointed: list[dict[str, Tensor]], what: str) -> None:
    assert len(plain) == len(checkpointed)
    for step, (a, b) in enumerate(zip(plain, checkpointed, strict=True)):
        assert a.keys() == b.keys()
        assert sum(k.startswith("grad.blocks.") for k in a) > 0, "no gradient of a block was recorded"
        differ = [k for k in a if not torch.equal(a[k], b[k])]
        assert not differ, f"{what}, optimizer step {step}: not bit-equal: {differ[:5]}"


def assert_recomputed(plain: Counter[str], checkpointed: Counter[str], kind: str) -> None:
    """Every block ran once per micro-batch without checkpointing, and once more (the recompute) with it."""
    expected = DEPTH if kind == "finetune" else small_config().depth + small_config().decoder_depth
    assert len(plain) == expected and set(plain.values()) == {STEPS}, plain
    assert checkpointed == Counter({name: 2 * STEPS for name in plain}), checkpointed


@pytest.fixture(scope="module")
def data() -> dict[str, Tensor]:
    return training_data()


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bf16"])
@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
def test_every_gradient_is_bit_equal_to_the_plain_run(data: dict[str, Tensor], kind: str, dtype: torch.dtype) -> None:
    plain, plain_calls = train_steps(kind, False, data, dtype, Dist())
    ours, calls = train_steps(kind, True, data, dtype, Dist())
    assert_recomputed(plain_calls, calls, kind)
    assert_all_equal(plain, ours, f"{kind}, {dtype}")


def test_the_recompute_is_in_the_backward_and_only_where_autograd_records() -> None:
    model = build("pretrain", True)
    imgs = torch.randn(2, 3, 32, 32)
    with block_calls(model) as calls:
        loss = model(imgs)[0]
        assert set(calls.values()) == {1}  # the forward ran every block once
        loss.backward()
        assert set(calls.values()) == {2} and len(calls) == 3  # 2 encoder blocks, 1 decoder block, again
        calls.clear()
        with torch.no_grad():  # evaluation: nothing to recompute
            model(imgs)
        assert set(calls.values()) == {1}


def test_the_flag_reaches_the_finetuned_model_and_not_linear_probing(tmp_path: Path) -> None:
    argv = ["--data_path", str(tmp_path), *TINY_CLASSIFIER_ARGS]
    assert FINETUNE.build_model(finetune_parser().parse_args([*argv, "--grad_checkpointing"]), 3).grad_checkpointing
    assert not FINETUNE.build_model(finetune_parser().parse_args(argv), 3).grad_checkpointing
    with pytest.raises(SystemExit):  # a frozen encoder has no activations to save memory on
        linprobe_parser().parse_args([*argv, "--grad_checkpointing"])


def test_mae_pretrain_with_the_flag_writes_the_same_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = make_image_folder(tmp_path / "data", classes=0, per_class=8)
    runs = {}
    for flag in ("", "--grad_checkpointing"):
        out = tmp_path / ("checkpointed" if flag else "plain")
        with every_block_call() as calls:
            code, stdout, err = pretrain(capsys, images, out, *([flag] if flag else []), epochs=1)
        assert code == 0, err
        assert ("gradient checkpointing" in stdout + err) == bool(flag)
        runs[flag] = (load_checkpoint(out / "checkpoint-0.pth"), calls["Block"])
    (plain, plain_calls), (ours, our_calls) = runs[""], runs["--grad_checkpointing"]
    # 8 images, batch 4: 2 steps of the 3 blocks (2 encoder, 1 decoder); with the flag each block again.
    assert plain_calls == 2 * 3 and our_calls == 2 * plain_calls
    for part in ("model", "optimizer"):
        differ = [k for k in plain[part] if not _same(plain[part][k], ours[part][k])]
        assert not differ, f"{part}: {differ[:5]}"
    assert vars(ours["args"]) == vars(plain["args"]) | {"grad_checkpointing": True, "output_dir": str(out)}
    # The flag changes no computed value: --auto_resume continues the run with or without it.
    current = vars(ours["args"]) | {"grad_checkpointing": False}
    assert auto_resume.find_run_to_continue(str(out), current) == out / "checkpoint-0.pth"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# ----------------------------------------------------------------------------------------------- DDP


def worker(rank: int, port: int, folder: str) -> None:
    with gloo_group(rank, port, WORLD):
        data = torch.load(Path(folder) / "data.pt", weights_only=True)
        dist_ = Dist(rank=rank, world_size=WORLD)
        result = {}
        for kind in ("pretrain", "finetune"):
            for checkpointed in (False, True):
                steps, calls = train_steps(kind, checkpointed, data, torch.float32, dist_)
                result[f"{kind}.{checkpointed}"] = {"steps": steps, "calls": dict(calls)}
        torch.save(result, Path(folder) / f"rank{rank}.pt")


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo")
def test_under_ddp_every_gradient_is_bit_equal_to_the_plain_ddp_run(tmp_path: Path, data: dict[str, Tensor]) -> None:
    torch.save(data, tmp_path / "data.pt")
    spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)  # type: ignore[no-untyped-call]
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for kind in ("pretrain", "finetune"):
            plain, ours = result[f"{kind}.False"], result[f"{kind}.True"]
            assert_recomputed(Counter(plain["calls"]), Counter(ours["calls"]), kind)
            assert_all_equal(plain["steps"], ours["steps"], f"DDP rank {rank}, {kind}")
