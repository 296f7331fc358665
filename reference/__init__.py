"""Adapters to the independent references that define "correct" for `mae`.

- `reference.hf`: transformers' `ViTMAEForPreTraining` (the always-available full-model reference);
- `reference.timm_encoder`: timm's `vit_*_224.mae` encoders;
- `reference.official`: the official code, from a checkout named by $MAE_OFFICIAL_REPO (never copied).

Imported only by the tests and `mae verify`; the `mae` library never depends on them.
"""
