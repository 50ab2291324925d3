# Copyright 2025 The llave-hf Authors. Licensed under the Apache License, Version 2.0.
"""`llave-eval`: scores a model on MMEB (or any data in MMEB-eval format) and prints the summary table.

Under `accelerate launch` (or `torchrun`) each process encodes a share of every dataset's distinct items on its own
device; the main process gathers the embeddings, scores and writes the files, as a single process would.
"""

import argparse
from collections.abc import Sequence

from transformers import AutoModel, AutoProcessor

from ..evaluation import MMEB_HUB_ID, MMEBEvaluator, format_summary
from ..evaluation.evaluator import process_state


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llave-eval", description=__doc__)
    parser.add_argument("--model", required=True, help="model folder or Hub id (loaded with trust_remote_code)")
    parser.add_argument("--data", default=MMEB_HUB_ID, help=f"Hub dataset id or local folder (default {MMEB_HUB_ID})")
    parser.add_argument("--image-root", default=None, help="folder that relative image paths start from")
    parser.add_argument("--datasets", nargs="+", default=["all"], help="'all' or dataset names")
    parser.add_argument(
        "--output",
        required=True,
        help="output folder; datasets already scored there by a run with the same model, data, split, --max-queries "
        "and --image-root are skipped (results of a run with other settings are an error)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-queries", type=int, default=None, help="score only the first N queries per dataset")
    parser.add_argument("--split", default="test", help="split of Hub datasets")
    parser.add_argument(
        "--device", default=None, help="default: this process's device (accelerate's; the GPU when there is one)"
    )
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
    )
    state = process_state()  # one process per device under `accelerate launch`
    device = args.device or state.device
    model = AutoModel.from_pretrained(args.model, trust_remote_code=True, dtype=args.dtype).to(device).eval()
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    results = evaluator(model, processor=processor)
    if state.is_main_process:
        print(format_summary(results), end="")


if __name__ == "__main__":
    main()
