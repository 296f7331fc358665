"""The official file catalogue: names, URLs, families, published md5 prefixes, and the data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from mae.files import OFFICIAL_FILES, data_dir, official_file


def test_catalogue() -> None:
    assert len(OFFICIAL_FILES) == 13
    assert official_file("somewhere/mae_visualize_vit_large.pth") is OFFICIAL_FILES["mae_visualize_vit_large.pth"]
    assert official_file("mine.pth") is None
    expected_md5 = {
        "mae_pretrain_vit_base.pth": "8cad7c",
        "mae_pretrain_vit_large.pth": "b8b06e",
        "mae_pretrain_vit_huge.pth": "9bdbb0",
        "mae_finetuned_vit_base.pth": "1b25e9",
        "mae_finetuned_vit_large.pth": "51f550",
        "mae_finetuned_vit_huge.pth": "2541f2",
    }
    assert {n: f.md5_prefix for n, f in OFFICIAL_FILES.items() if f.md5_prefix} == expected_md5


@pytest.mark.parametrize(
    ("name", "url", "contents", "target"),
    [
        ("mae_visualize_vit_large.pth", "https://dl.fbaipublicfiles.com/mae/visualize/mae_visualize_vit_large.pth",
         "full", False),
        ("mae_pretrain_vit_base_full.pth", "https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base_full.pth",
         "full", True),
        ("mae_pretrain_vit_huge.pth", "https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_huge.pth",
         "encoder", None),
        ("mae_finetuned_vit_large.pth", "https://dl.fbaipublicfiles.com/mae/finetune/mae_finetuned_vit_large.pth",
         "classifier", None),
    ],
)  # fmt: skip
def test_entries(name: str, url: str, contents: str, target: bool | None) -> None:
    f = OFFICIAL_FILES[name]
    assert (f.url, f.contents, f.norm_pix_loss) == (url, contents, target)


def test_data_dir_follows_mae_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MAE_HOME", raising=False)
    assert data_dir() == Path("data")
    monkeypatch.setenv("MAE_HOME", str(tmp_path))
    assert data_dir() == tmp_path
