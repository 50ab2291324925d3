# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""
What truncating embeddings costs, on the emoji demo: two runs from the same start, data and seed, one trained with
`--matryoshka_dims` and one without, each evaluated on the held-out emoji at every trained dimension
(`encode(truncate_dim=d)`).

    python examples/emoji_demo/matryoshka_demo.py [--max-steps N] [--quick]

Prints a Markdown table of P@1 (text->image, image->text) per dimension and writes it with the raw numbers to
`--output-dir` (default `demo_output/matryoshka`).
"""

import argparse
import functools
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModel, AutoProcessor

from llave_hf.evaluation import MMEBEvaluator

# The example's own modules, beside this file.
from emoji_data import build_emoji_dataset
from run_demo import IMAGE_SIZE, PRETRAIN_PRESET, QUICK, build_model, train_tokenizer, training_texts


ROOT = Path(__file__).resolve().parent.parent.parent
DIMS = (64, 32, 16, 8)  # the demo model's embedding size is 64
LOSS_ALPHA = 9.0  # the released loss, from the random start (stage 1's preset otherwise)


def train(name: str, extra: list[str], init_dir: Path, dataset, output_dir: Path, args) -> Path:
    run_dir = output_dir / "runs" / name
    command = [sys.executable, str(ROOT / "train.py"), str(PRETRAIN_PRESET)]
    options = {
        "model_name_or_path": init_dir,
        "train_data": dataset.train_file,
        "image_root": dataset.image_root,
        "output_dir": run_dir,
        "seed": args.seed,
        "loss_alpha": LOSS_ALPHA,
        "max_steps": args.max_steps,
        "per_device_train_batch_size": args.batch_size,
        "disable_tqdm": "true",
    }
    command += [item for key, value in options.items() if value is not None for item in (f"--{key}", str(value))]
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with open(run_dir / "train.log", "w") as log:
        subprocess.run(command + extra, check=True, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    return run_dir


def evaluate(run_dir: Path, dataset) -> dict[int, dict[str, float]]:
    """P@1 per held-out dataset at each dimension."""
    model = AutoModel.from_pretrained(run_dir).eval()
    processor = AutoProcessor.from_pretrained(run_dir)
    evaluator = MMEBEvaluator(
        str(dataset.eval_dir),
        datasets=list(dataset.eval_datasets),
        image_root=str(dataset.image_root),
        output_dir=None,
        keep_in_memory=True,
        show_progress_bar=False,
    )
    return {
        dim: evaluator(functools.partial(model.encode, processor=processor, truncate_dim=dim)).precision_at_1
        for dim in DIMS
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="demo_output/matryoshka")
    parser.add_argument("--num-emoji", type=int, default=None, help="emoji to use (default: all, about 2,400)")
    parser.add_argument("--max-steps", type=int, default=None, help="training steps per run (default: the preset's)")
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per step (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None, help="image cache (default: $LLAVE_HF_CACHE, ~/.cache/llave_hf)")
    parser.add_argument("--quick", action="store_true", help=f"toy scale for tests: {QUICK}")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, getattr(args, key) or value)
    output_dir = Path(args.output_dir)
    dataset = build_emoji_dataset(
        output_dir / "emoji", num_emoji=args.num_emoji, image_size=IMAGE_SIZE, seed=args.seed, cache_dir=args.cache_dir
    )
    tokenizer = train_tokenizer(training_texts(Dataset.from_parquet(str(dataset.train_file))))
    model, processor = build_model(tokenizer, seed=args.seed)
    init_dir = output_dir / "init"
    model.save_pretrained(init_dir)
    processor.save_pretrained(init_dir)

    runs = {"plain": [], "matryoshka": ["--matryoshka_dims", *map(str, DIMS)]}
    with ThreadPoolExecutor(len(runs)) as pool:  # side by side, one thread each
        futures = {name: pool.submit(train, name, extra, init_dir, dataset, output_dir, args) for name, extra in runs.items()}
        run_dirs = {name: future.result() for name, future in futures.items()}
    torch.set_num_threads(1)
    results = {name: evaluate(run_dir, dataset) for name, run_dir in run_dirs.items()}

    names = list(dataset.eval_datasets)
    lines = [
        "| dimension | " + " | ".join(f"{run}: {name}" for run in results for name in names) + " |",
        "|---" * (1 + len(results) * len(names)) + "|",
    ]
    for dim in DIMS:
        cells = [f"{100 * results[run][dim][name]:.1f}" for run in results for name in names]
        lines.append(f"| {dim} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    (output_dir / "matryoshka.md").write_text(table + "\n", encoding="utf-8")
    (output_dir / "matryoshka.json").write_text(json.dumps({"args": vars(args), "p@1": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
