"""`mae features`, `mae knn` and `mae attention` end to end on a tiny `mae pretrain` checkpoint: the features
equal the encoder's output computed here (and transformers' `ViTMAEModel` with every patch kept, in patch
order), kNN's top-1/top-5 equal the brute-force classifier of `test_knn.py` on them, the figure is drawn,
and bad inputs are refused in one line before any work."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mae
from mae.classifier import VisionTransformer
from mae.safetensors_io import load_file, read_metadata
from tests.test_knn import brute_force
from tests.train_helpers import (
    TINY_ARGS,
    TINY_CLASSIFIER_CONFIG,
    TINY_CLASSIFIER_MODEL_ARGS,
    TINY_CONFIG,
    make_classification_data,
    run_cli,
    run_quietly,
)

MEAN, STD = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1), torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(DATA with train/ and val/ of 3 classes, a 1-epoch tiny `mae pretrain --knn_every 1` checkpoint on
    DATA/train)."""
    root = tmp_path_factory.mktemp("look")
    data = make_classification_data(root / "data", classes=3)
    code, _, err = run_quietly(
        "pretrain", "--data_path", str(data), *TINY_ARGS, "--batch_size", "4", "--epochs", "1", "--warmup_epochs", "0",
        "--output_dir", str(root / "run"), "--knn_every", "1",
    )  # fmt: skip
    assert code == 0, err
    return data, root / "run" / "checkpoint-0.pth"


def _images(folder: Path, mean: torch.Tensor = MEAN, std: torch.Tensor = STD) -> tuple[torch.Tensor, list[int]]:
    """Every image of an ImageFolder, in its order, as the evaluation transform makes it (written out with
    torchvision's functional API: bicubic resize of the short side to 32 / 0.875 = 36, centre crop 32) and
    normalised with ``mean`` and ``std`` (default ImageNet's); and the labels."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((folder / name).iterdir()):
            img = TF.center_crop(TF.resize(Image.open(path).convert("RGB"), 36, InterpolationMode.BICUBIC), 32)
            images.append((TF.pil_to_tensor(img).float() / 255 - mean) / std)
            labels.append(label)
    return torch.stack(images), labels


def test_features_equal_the_encoder_and_transformers(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from reference.hf import build_hf

    data, checkpoint = trained
    out = tmp_path / "feats.safetensors"
    code, stdout, err = run_cli(
        capsys, "features", str(data / "val"), "--checkpoint", str(checkpoint), "-o", str(out),
        "--batch_size", "5", "--num_workers", "0", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    assert "12 images x 32 features" in stdout
    feats = load_file(out)
    assert list(feats) == ["cls", "avg", "labels"] and json.loads(read_metadata(out)["classes"]) == [
        "class_0", "class_1", "class_2"
    ]  # fmt: skip
    images, labels = _images(data / "val")
    assert feats["labels"].tolist() == labels
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    model = mae.MaskedAutoencoderViT(mae.MAEConfig(**TINY_CONFIG)).eval()
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        tokens = model.forward_features(images)
        hf = build_hf(model.config, state)
        hf.config.mask_ratio = 0.0  # every patch kept; ascending noise keeps them in patch order
        theirs = hf.vit(pixel_values=images, noise=torch.arange(16.0).expand(12, 16)).last_hidden_state
    for name, expected in (("cls", tokens[:, 0]), ("avg", tokens[:, 1:].mean(1))):
        torch.testing.assert_close(feats[name], expected, atol=1e-5, rtol=1e-5, msg=name)
    torch.testing.assert_close(feats["cls"], theirs[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats["avg"], theirs[:, 1:].mean(1), atol=1e-5, rtol=1e-5)
    # A flat folder (no class folders): the same images' features, without labels.
    code, _, err = run_cli(
        capsys, "features", str(data / "val" / "class_1"), "--checkpoint", str(checkpoint), "-o", str(out),
        "--num_workers", "0", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    flat = load_file(out)
    assert flat["labels"].tolist() == [-1] * 4 and json.loads(read_metadata(out)["classes"]) == []
    torch.testing.assert_close(flat["cls"], tokens[4:8, 0], atol=1e-5, rtol=1e-5)


def test_features_of_a_fine_tuned_classifier_with_its_statistics(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A global-pool classifier whose run recorded its model and its own --mean/--std: the images are normalised
    with those, and ``avg`` is what its head reads (fc_norm of the mean patch token)."""
    data, _ = trained
    torch.manual_seed(3)
    net = VisionTransformer(None, num_classes=3, global_pool=True, **TINY_CLASSIFIER_CONFIG).eval()
    torch.nn.init.normal_(net.fc_norm.weight)  # not the identity, so that a missing fc_norm shows
    mean, std = [0.3, 0.5, 0.7], [0.2, 0.3, 0.4]
    run = argparse.Namespace(
        model="vit_base_patch16", model_args=TINY_CLASSIFIER_MODEL_ARGS, input_size=32, in_chans=3, mean=mean, std=std
    )
    file = tmp_path / "classifier.pth"
    torch.save({"model": net.state_dict(), "args": run}, file)
    out = tmp_path / "f.safetensors"
    code, _, err = run_cli(
        capsys, "features", str(data / "val"), "--checkpoint", str(file), "-o", str(out), "--num_workers", "0",
        "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    images, _ = _images(data / "val", torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1))
    with torch.no_grad():
        expected = net.forward_head(net.forward_features(images), pre_logits=True)
    torch.testing.assert_close(load_file(out)["avg"], expected, atol=1e-5, rtol=1e-5)
    assert json.loads(read_metadata(out)["mean"]) == mean


def test_knn_equals_brute_force_on_the_encoder_features(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, checkpoint = trained
    code, stdout, err = run_cli(
        capsys, "knn", "--checkpoint", str(checkpoint), "--data_path", str(data), "--nb_knn", "20", "5",
        "--num_workers", "0", "--device", "cpu", "--json",
    )  # fmt: skip
    assert code == 0, err
    record = json.loads(stdout)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    model = mae.MaskedAutoencoderViT(mae.MAEConfig(**TINY_CONFIG)).eval()
    model.load_state_dict(state, strict=True)
    (train, train_labels), (val, val_labels) = _images(data / "train"), _images(data / "val")
    with torch.no_grad():
        train_cls = model.forward_features(train)[:, 0].double().numpy()
        val_cls = model.forward_features(val)[:, 0].double().numpy()
    assert (record["train_images"], record["val_images"], record["classes"]) == (24, 12, 3)
    for result in record["results"]:
        k = result["k"]
        top1, top5, _ = brute_force(train_cls, np.array(train_labels), val_cls, np.array(val_labels), k, 0.07, 3)
        assert (result["acc1"], result["acc5"]) == (top1, top5), k
    assert [r["k"] for r in record["results"]] == [20, 5]
    # `mae pretrain --knn_every 1` logged the same figures for the model it saved at that epoch.
    logged = json.loads((checkpoint.parent / "log.txt").read_text().splitlines()[-1])
    assert (logged["knn_top1"], logged["knn_top5"]) == (record["results"][0]["acc1"], record["results"][0]["acc5"])


def test_online_knn_leaves_the_training_unchanged(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """The same run without --knn_every saves the same weights and generator states, bit for bit; and without
    DATA/val, --knn_every is refused in one line before any work."""
    from tests.train_helpers import assert_same, load_checkpoint, tiny_pretrained

    data, checkpoint = trained
    plain = load_checkpoint(tiny_pretrained(data, tmp_path / "plain"))
    checked = load_checkpoint(checkpoint)
    assert_same(plain["model"], checked["model"], "model")
    assert_same(plain["rng"], checked["rng"], "rng")
    code, _, err = run_quietly(
        "pretrain", "--data_path", str(data / "train"), *TINY_ARGS, "--batch_size", "4", "--epochs", "1",
        "--output_dir", str(tmp_path / "none"), "--knn_every", "1",
    )  # fmt: skip
    assert code == 1 and "--knn_every needs --data_path" in err and not (tmp_path / "none").exists()


def test_attention_figure_is_written(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, checkpoint = trained
    out = tmp_path / "attention.png"
    code, _, err = run_cli(
        capsys,
        "attention",
        str(data / "val" / "class_0" / "img_0.png"),
        "--checkpoint",
        str(checkpoint),
        "-o",
        str(out),
    )
    assert code == 0, err
    with Image.open(out) as figure:
        assert figure.format == "PNG" and figure.width > 4 * figure.height / 2  # the image and 4 heads in a row
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary left behind


def test_bad_inputs_fail_in_one_line_before_any_work(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, checkpoint = trained
    decoder_only = tmp_path / "decoder.pth"
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    torch.save({"model": {k: v for k, v in state.items() if k.startswith(("decoder", "mask_token"))}}, decoder_only)
    out = tmp_path / "f.safetensors"
    cases = [
        (["features", str(data), "--checkpoint", str(tmp_path / "missing.pth"), "-o", str(out)], "does not exist"),
        (["features", str(data), "--checkpoint", str(decoder_only), "-o", str(out)], "holds no ViT encoder"),
        (["features", str(tmp_path / "nowhere"), "--checkpoint", str(checkpoint), "-o", str(out)], "is not a folder"),
        (["features", str(data), "--checkpoint", str(checkpoint), "-o", str(tmp_path / "f.pth")], ".safetensors"),
        (["knn", "--checkpoint", str(checkpoint), "--data_path", str(data / "val")], "must hold train/ and val/"),
        (["knn", "--checkpoint", str(checkpoint), "--data_path", str(data), "--nb_knn", "25"], "more than the 24"),
        (["attention", str(tmp_path / "missing.png"), "--checkpoint", str(checkpoint)], "does not exist"),
        (["attention", str(data / "val" / "class_0" / "img_0.png"), "--checkpoint", str(decoder_only)], "no ViT"),
    ]
    for argv, message in cases:
        code, _, err = run_cli(capsys, *argv)
        lines = [line for line in err.splitlines() if not line.startswith("INFO")]
        assert code == 1 and len(lines) == 1 and message in lines[0], (argv, err)
    assert not out.exists()
