"""The registry of named MAE variants: `register_model` is the one step that adds a variant.

A variant is a factory under a name (plus optional aliases, e.g. the official long names `*_dec512d8b`),
marked official or not. Every per-variant check reads this registry: `mae verify --variant NAME`, and the
tests' key-order, shape, forward, eps and initialisation checks (`tests/test_mae.py`,
`tests/test_variants.py`). The official variants are those of the MAE release; their key counts are
pinned in the tests, never derived from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from ..mae import MaskedAutoencoderViT

Factory = TypeVar("Factory", bound="Callable[..., MaskedAutoencoderViT]")


@dataclass(frozen=True)
class Variant:
    """One registered variant: its name, the factory that builds it, and what the harness needs to know."""

    name: str
    factory: Callable[..., MaskedAutoencoderViT]
    official: bool = False  # released by the MAE authors (facebookresearch/mae): its facts are pinned in the tests
    aliases: tuple[str, ...] = ()  # other names for the same factory
    label: str = ""  # short label in tables, e.g. "ViT-B/16" (the name when empty)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def display(self) -> str:
        return self.label or self.name


# name or alias -> factory (what `create_model` looks up), and name -> variant, in registration order.
_REGISTRY: dict[str, Callable[..., MaskedAutoencoderViT]] = {}
_VARIANTS: dict[str, Variant] = {}


def register_model(
    name: str, factory: Factory, *, official: bool = False, aliases: Iterable[str] = (), label: str = ""
) -> Factory:
    """Register `factory` under `name` (and `aliases`); returns the factory unchanged.

    `factory(**overrides)` must build the variant, with `MAEConfig` fields as keyword overrides. Once
    registered, `create_model(name)`, `list_models()`, `mae verify --variant NAME` and every per-variant
    test see it. A name already taken raises ValueError (call `unregister_model` first to replace one).
    """
    names = (name, *aliases)
    for n in names:
        if not isinstance(n, str) or not n.isidentifier():
            raise ValueError(f"a model name must be a Python identifier such as 'mae_vit_small_patch16'; got {n!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{name!r}: a name is given twice in {list(names)}")
    taken = [n for n in names if n in _REGISTRY]
    if taken:
        raise ValueError(
            f"model name(s) {', '.join(map(repr, taken))} already registered; "
            "choose another name, or unregister_model() the old variant first"
        )
    if not callable(factory):
        raise TypeError(f"{name!r}: the factory must be callable; got {type(factory).__name__}")
    if not isinstance(official, bool):
        raise TypeError(f"{name!r}: official must be a bool; got {official!r}")
    variant = Variant(name, factory, official, tuple(aliases), label)
    for n in names:
        _REGISTRY[n] = factory
    _VARIANTS[name] = variant
    return factory


def unregister_model(name: str) -> None:
    """Remove a variant registered under `name` (its aliases go with it). Official variants stay."""
    variant = get_variant(name)
    if variant.official:
        raise ValueError(f"{variant.name!r} is an official variant: it cannot be unregistered")
    for n in variant.names:
        del _REGISTRY[n]
    del _VARIANTS[variant.name]


def get_variant(name: str) -> Variant:
    """The variant registered under `name` or one of its aliases; ValueError listing the names otherwise."""
    for variant in _VARIANTS.values():
        if name in variant.names:
            return variant
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")


def list_variants(official: bool | None = None) -> list[Variant]:
    """Every registered variant once (aliases folded in), in registration order; `official` filters."""
    return [v for v in _VARIANTS.values() if official is None or v.official == official]


def list_models(official: bool | None = None) -> list[str]:
    """Every registered model name, aliases included, sorted; `official=True` gives the official ones only."""
    return sorted(n for v in list_variants(official) for n in v.names)
