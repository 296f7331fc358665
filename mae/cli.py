"""The `mae` command line (also `python -m mae`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _verify(args: argparse.Namespace) -> int:
    from . import verify

    variants = list(verify.VARIANTS) if args.variant == "all" else [args.variant]
    return verify.run(variants, args.report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mae", description="Masked Autoencoders (He et al., 2022) in PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser(
        "verify",
        help="prove this implementation equal to the installed references",
        description="Compare keys, shapes, forward outputs and losses with transformers, timm and (with "
        "$MAE_OFFICIAL_REPO set) the official code. Exits non-zero on any failure.",
    )
    p.add_argument("--variant", choices=["base", "large", "huge", "all"], default="all")
    p.add_argument("--report", type=Path, help="also write the table to FILE (.json for JSON, else Markdown)")
    p.set_defaults(func=_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
