# Copyright 2025 The llave-hf Authors. Licensed under the Apache License, Version 2.0.
"""`llave-eval`: scores a model on MMEB (or any data in MMEB-eval format) and prints the summary table."""

import argparse
from collections.abc import Sequence

import torch
from transformers import AutoModel, AutoProcessor

from ..evaluation import MMEB_HUB_ID, MMEBEvaluator, format_summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llave-eval", description=__doc__)
    parser.add_argument(
        "--model",
        required=True,
        help="model folder or Hub id; LLaVE checkpoints (model_type 'llave') load with the installed llave_hf classes",
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run Python code from the model folder or repository (its auto_map), needed only for models whose "
        "classes llave_hf does not provide; off by default, as in transformers",
    )
    parser.add_argument("--data", default=MMEB_HUB_ID, help=f"Hub dataset id or local folder (default {MMEB_HUB_ID})")
    parser.add_argument("--image-root", default=None, help="folder that relative image paths start from")
    parser.add_argument(
        "--allow-absolute-image-paths",
        action="store_true",
        help="trust the data's image paths: absolute ones and those leading out of the image root are used as given "
        "(default: an error naming the row)",
    )
    parser.add_argument("--datasets", nargs="+", default=["all"], help="'all' or dataset names")
    parser.add_argument(
        "--output",
        required=True,
        help="output folder; datasets already scored there by a run with the same model, data, split, --max-queries "
        "and --image-root are skipped (results of a run with other settings are an error)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=None,
        help="refuse images with more pixels, from their header (default: the processor's setting, 64 MP)",
    )
    parser.add_argument("--max-queries", type=int, default=None, help="score only the first N queries per dataset")
    parser.add_argument("--split", default="test", help="split of Hub datasets")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", help="model dtype, e.g. bfloat16 (default: the checkpoint's)")
    parser.add_argument("--no-histograms", action="store_true", help="skip the similarity histograms (matplotlib)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None):
    """Runs `llave-eval` with `argv` (default: the command line)."""
    args = parse_args(argv)
    # Built first: bad data or options fail before the model is loaded.
    evaluator = MMEBEvaluator(
        args.data,
        datasets=args.datasets,
        image_root=args.image_root,
        split=args.split,
        output_dir=args.output,
        batch_size=args.batch_size,
        max_queries=args.max_queries,
        histograms=not args.no_histograms,
        allow_absolute_image_paths=args.allow_absolute_image_paths,
    )
    # Without the flag, a folder naming another model_type with an auto_map is refused by transformers instead of
    # importing its Python; a LLaVE checkpoint needs no flag, as importing llave_hf registered its classes.
    trust = args.trust_remote_code
    model = AutoModel.from_pretrained(args.model, trust_remote_code=trust, dtype=args.dtype).to(args.device).eval()
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=trust)
    if args.max_image_pixels is not None:
        processor.max_image_pixels = args.max_image_pixels
    results = evaluator(model, processor=processor)
    print(format_summary(results), end="")


if __name__ == "__main__":
    main()
