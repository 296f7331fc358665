"""`mae evaluate FILE --data_path DIR`: the figures of a classifier checkpoint equal an evaluation written here.

The independent evaluation loads the file's state dict into `mae.classifier.VisionTransformer` (with a
BatchNorm1d(affine=False, eps=1e-6) + Linear head for a linear probe, built here), reads every image of the
sorted class folders with the official evaluation transform built here from torchvision (resize the short
side to size / (224/256), bicubic; centre crop; ImageNet normalisation), and computes top-1, top-5 (top-k
with k = min(5, classes)) and the mean cross-entropy from log-softmax by hand, in float64. Checked on a
`mae finetune` checkpoint (global pooling), a `mae linprobe` one (class token, probe head), and a file in
the official fine-tuned layout (``{"model": state_dict}``: cls_token, pos_embed, patch_embed, blocks,
fc_norm, head; no norm) of a custom size, with 7 classes so that top-5 is not trivially 100 %.
Refusals: a pre-trained MAE, a class count that does not match the folder, a missing file, a custom file
that records no model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision import transforms as T
from train_helpers import (
    TINY_CLASSIFIER_CONFIG,
    TINY_CLASSIFIER_MODEL_ARGS,
    classification_argv,
    make_classification_data,
    run_cli,
    run_quietly,
    tiny_pretrained,
)

from mae.classifier import VisionTransformer

CUSTOM_MODEL = ["--model", "vit_base_patch16", "--model_args", *TINY_CLASSIFIER_MODEL_ARGS]


@dataclass
class Files:
    data: Path  # 3 classes
    data7: Path  # 7 classes
    pretrained: Path
    finetuned: Path
    probe: Path
    custom: Path  # the official fine-tuned layout, a custom size, 7 classes, no recorded model


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("evaluate")
    data = make_classification_data(root / "data")
    pretrained = tiny_pretrained(data, root / "pre")
    for command in ("finetune", "linprobe"):
        argv = classification_argv(command, data, root / command, "--finetune", str(pretrained), "--blr", "0.1")
        code, _, err = run_quietly(*argv, "--epochs", "1")
        assert code == 0, err
    torch.manual_seed(0)
    model = VisionTransformer(None, num_classes=7, global_pool=True, **TINY_CLASSIFIER_CONFIG)
    nn.init.normal_(model.head.weight)  # confident, varied predictions
    state = model.state_dict()
    # The official fine-tuned layout (models_vit.VisionTransformer with global pooling deletes `norm`).
    assert {k.split(".")[0] for k in state} == {"cls_token", "pos_embed", "patch_embed", "blocks", "fc_norm", "head"}
    torch.save({"model": state}, root / "custom.pth")
    return Files(
        data=data,
        data7=make_classification_data(root / "data7", classes=7),
        pretrained=pretrained,
        finetuned=root / "finetune" / "checkpoint-0.pth",
        probe=root / "linprobe" / "checkpoint-0.pth",
        custom=root / "custom.pth",
    )


def independent_figures(state: dict[str, Tensor], val: Path, size: int) -> dict[str, float]:
    """top-1, top-5 (percent) and mean cross-entropy of the classifier ``state`` on the folder ``val``."""
    probe = "head.1.weight" in state
    classes = state["head.1.weight" if probe else "head.weight"].shape[0]
    model = VisionTransformer(
        None, num_classes=classes, global_pool="fc_norm.weight" in state, **TINY_CLASSIFIER_CONFIG
    )
    if probe:
        dim = TINY_CLASSIFIER_CONFIG["embed_dim"]
        model.head = nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), nn.Linear(dim, classes))
    model.load_state_dict(state)  # strict
    model.eval()
    transform = T.Compose(
        [
            T.Resize(int(size / (224 / 256)), interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    folders = sorted(d for d in val.iterdir() if d.is_dir())
    assert len(folders) == classes
    images, labels = [], []
    for label, folder in enumerate(folders):
        for file in sorted(folder.iterdir()):
            images.append(transform(Image.open(file).convert("RGB")))
            labels.append(label)
    y = torch.tensor(labels)
    with torch.no_grad():
        logits = model(torch.stack(images)).double()
    logp = logits - logits.exp().sum(dim=1, keepdim=True).log()
    k = min(5, classes)
    ranked = logits.argsort(dim=1, descending=True)
    return {
        "acc1": 100.0 * float((ranked[:, 0] == y).double().mean()),
        "acc5": 100.0 * float((ranked[:, :k] == y[:, None]).any(dim=1).double().mean()),
        "loss": float(-logp[torch.arange(len(y)), y].mean()),
        "images": len(y),
    }


def evaluate(capsys: pytest.CaptureFixture[str], file: Path, data: Path, *more: str) -> tuple[int, str, str]:
    return run_cli(
        capsys, "evaluate", str(file), "--data_path", str(data), "--num_workers", "0", "--device", "cpu", *more
    )


CASES = {
    "mae finetune": ("finetuned", "data", [], {"probe": False, "global_pool": True}),
    "mae linprobe": ("probe", "data", [], {"probe": True, "global_pool": False}),
    "official layout, custom size": ("custom", "data7", CUSTOM_MODEL, {"probe": False, "global_pool": True}),
}


@pytest.mark.parametrize("file, data, more, facts", list(CASES.values()), ids=list(CASES))
def test_the_figures_equal_an_independent_evaluation(
    capsys: pytest.CaptureFixture[str], files: Files, file: str, data: str, more: list[str], facts: dict[str, Any]
) -> None:
    path, folder = getattr(files, file), getattr(files, data)
    state = torch.load(path, map_location="cpu", weights_only=False)["model"]
    expected = independent_figures(state, folder / "val", 32)
    # Batches of 5: the last one is partial, and the loss is still the mean over images.
    code, out, err = evaluate(capsys, path, folder, *more, "--json", "--batch_size", "5")
    assert code == 0, err
    got = json.loads(out)
    assert got["images"] == expected["images"] and got["acc1"] == pytest.approx(expected["acc1"], abs=1e-9)
    assert got["acc5"] == pytest.approx(expected["acc5"], abs=1e-9)
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert got | facts == got and got["input_size"] == 32 and got["model"] == "vit_base_patch16"
    assert got["data"] == str(folder / "val") and got["dtype"] == "float32"
    if file == "custom":
        assert 0 < got["acc1"] < got["acc5"] < 100  # 7 classes: top-5 is a real figure


def test_the_sentence_gives_the_same_figures(capsys: pytest.CaptureFixture[str], files: Files) -> None:
    code, out, err = evaluate(capsys, files.probe, files.data, "--json")
    assert code == 0, err
    got = json.loads(out)
    code, out, err = evaluate(capsys, files.probe, files.data)
    assert code == 0, err
    assert out.rstrip("\n").endswith(
        f"on 12 images of {files.data}/val: top-1 {got['acc1']:.2f}%, top-5 {got['acc5']:.2f}%, loss {got['loss']:.4f}"
    )
    assert "(vit_base_patch16, 3 classes, 32px, linear probe)" in out


REFUSALS = {
    "a pre-trained MAE": (
        "pretrained",
        "data",
        [],
        ["is a pre-trained MAE (encoder + decoder): it has no classification head", "mae finetune --finetune FILE"],
    ),
    "class count": (
        "finetuned",
        "data7",
        [],
        ["checkpoint-0.pth classifies 3 classes but", "data7/val has 7 class folders", "the same names"],
    ),
    "missing file": ("missing", "data", [], ["missing.pth does not exist", "fine-tuned or linear-probe checkpoint"]),
    "custom file, no model": (
        "custom",
        "data7",
        [],
        ["custom.pth: holds", "not a registered variant, and records no --model", "Pass --model (one of "],
    ),
    "custom file, wrong model": (
        "custom",
        "data7",
        [*CUSTOM_MODEL, "depth=3"],  # the last value given wins
        ["custom.pth: does not fit vit_base_patch16 (missing: blocks.2.", "Pass the --model and --model_args it was"],
    ),
}


@pytest.mark.parametrize("file, data, more, says", list(REFUSALS.values()), ids=list(REFUSALS))
def test_refusals_say_what_is_wrong(
    capsys: pytest.CaptureFixture[str], files: Files, file: str, data: str, more: list[str], says: list[str]
) -> None:
    path = files.custom.with_name("missing.pth") if file == "missing" else getattr(files, file)
    code, out, err = evaluate(capsys, path, getattr(files, data), *more)
    assert code == 1 and out == ""
    assert err.startswith("mae evaluate: error: ") and err.count("\n") == 1, err
    for text in says:
        assert text in err, err
