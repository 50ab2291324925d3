# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""
The llave-hf emoji demo (`make demo`, `python examples/emoji_demo/run_demo.py`): LLaVE's hardness-weighted contrastive
loss against InfoNCE on real image-text pairs, on a CPU, in minutes.

1. Data: OpenMoji emoji with their CLDR names (`emoji_data.py`); a fifth of them held out for evaluation in whole
   variant families, so that skin-tone and gender variants, flags, clock faces, ... are each other's hard negatives
   among the held-out candidates.
2. Model: a tiny random LLaVA-OneVision backbone whose tokenizer is trained on the training captions only (the
   held-out names never shape it), saved once as the common start of every run.
3. Training: one `train_run.py demo-cpu.yaml` subprocess per loss (`llave-train` with a progress callback; same data,
   start and seed), all at once with one thread each: tiny models gain little from a second thread, and a busy
   machine makes multi-threaded ones crawl.
4. Evaluation: `MMEBEvaluator` on the held-out split (text->image and image->text ranking among 50 candidates).
5. `REPORT.md` (from `report.md.jinja`: table, histograms), a Hub-ready folder of the best run (`save_for_hub`),
   reloaded with `AutoModel.from_pretrained(folder, trust_remote_code=True)` to answer a text query and an image
   query.

Everything goes to `--output-dir` (default `demo_output/`); rendered images to the llave-hf cache.
"""

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jinja2
import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import AutoModel, AutoProcessor, PreTrainedTokenizerFast

from llave_hf.cli.train import parse_args
from llave_hf.evaluation import EvaluationResults, MMEBEvaluator
from llave_hf.hub import save_for_hub, training_settings
from llave_hf.modeling.configuration_llave import LlaveEmbeddingConfig
from llave_hf.modeling.modeling_llave import LlaveEmbeddingModel
from llave_hf.modeling.processing_llave import LLAVE_PROMPT_TEMPLATE, MMEB_IMAGE_PLACEHOLDER
from llave_hf.processors import build_processor
from llave_hf.testing import tiny_backbone_config, tiny_image_processor, train_bpe_tokenizer

# The example's own modules, beside this file (a script's folder is on its import path).
from emoji_data import I2T_INSTRUCTION, IMAGE_TARGET_TEXT, T2I_INSTRUCTION, EmojiDataset, build_emoji_dataset
from train_run import read_progress


# The example's files, found beside this one (not relative to the installed library).
EXAMPLE_DIR = Path(__file__).resolve().parent
PRESET = EXAMPLE_DIR / "demo-cpu.yaml"
TRAIN_RUN = EXAMPLE_DIR / "train_run.py"
REPORT_TEMPLATE = "report.md.jinja"
# How often the demo reads each run's progress file.
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Run:
    """One training run of the demo: its loss settings (`llave-train` options of the same names)."""

    name: str
    loss_alpha: float
    loss_hardness_normalization: Literal["none", "mean"]
    description: str


RUNS = {
    run.name: run
    for run in (
        Run("infonce", 0.0, "none", "InfoNCE (α = 0)"),
        Run("hardness", 9.0, "none", "hardness-weighted, α = 9, unnormalised weights (released LLaVE)"),
        Run("hardness-mean", 9.0, "mean", "hardness-weighted, α = 9, weights normalised to mean 1"),
    )
}

# The demo backbone: `llave_hf.testing`'s tiny LLaVA-OneVision (language model hidden size 64, 2 layers; SigLIP tower
# hidden size 32, 2 layers). 64-px tiles of 16-px patches see the rendered emoji at full resolution with as few image
# tokens as 32-px tiles of 8-px patches; a single grid pinpoint gives the base view plus one tile.
IMAGE_SIZE = 64
PATCH_SIZE = 16
MAX_LENGTH = 512
VOCAB_SIZE = 2000
# The same pipeline at toy scale, for the tests: 40 emoji, a few steps.
QUICK = dict(num_emoji=40, max_steps=4, batch_size=4)


# ----------------------------------------------------------------------------------------------------------------
# data and model


def training_texts(train_dataset) -> list[str]:
    """The user turns of the training prompts (placeholders removed): queries and positive captions."""
    texts = [text for column in ("qry", "pos_text") for text in train_dataset[column] if text]
    return [text.replace(MMEB_IMAGE_PLACEHOLDER, "").strip() for text in texts]


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """
    A byte-level BPE tokenizer with the Qwen special tokens, trained on `texts` inside the LLaVE prompt template.

    Trained on the training captions, it has whole-word tokens for the words the captions share (colours, "skin",
    "tone", "flag", "face", ...), which a tiny model composes far more easily than bytes; byte-level, it still encodes
    any text, the held-out names included.
    """
    return train_bpe_tokenizer((LLAVE_PROMPT_TEMPLATE.replace("{text}", text) for text in texts), vocab_size)


def build_model(tokenizer, seed: int = 0):
    """The demo's tiny random `LlaveEmbeddingModel` (see `IMAGE_SIZE`, `PATCH_SIZE`) and its processor."""
    grid = [[IMAGE_SIZE, IMAGE_SIZE]]
    backbone_config = tiny_backbone_config(
        "llava_onevision", tokenizer, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, grid_pinpoints=grid,
        max_position_embeddings=MAX_LENGTH,
    )  # fmt: skip
    image_processor = tiny_image_processor("llava_onevision", image_size=IMAGE_SIZE, grid_pinpoints=grid)
    torch.manual_seed(seed)
    model = LlaveEmbeddingModel(LlaveEmbeddingConfig(backbone_config=backbone_config))
    processor = build_processor(backbone_config, tokenizer, image_processor, max_length=MAX_LENGTH)
    return model, processor


# ----------------------------------------------------------------------------------------------------------------
# training


def train_command(
    run: Run, init_dir: Path, dataset: EmojiDataset, run_dir: Path, seed: int, overrides: dict
) -> list[str]:
    """The `llave-train` arguments of one run: the preset, then the options that override it."""
    arguments = {
        "model_name_or_path": init_dir,
        "train_data": dataset.train_file,
        "image_root": dataset.image_root,
        "output_dir": run_dir,
        "loss_alpha": run.loss_alpha,
        "loss_hardness_normalization": run.loss_hardness_normalization,
        "seed": seed,
        **overrides,
    }
    return [str(PRESET)] + [item for key, value in arguments.items() for item in (f"--{key}", str(value))]


def _train(command: list[str], run_dir: Path, bar: tqdm) -> float:
    """Runs `train_run.py` with `command` in a subprocess logging to `run_dir/train.log`, and moves `bar` to the step
    count the subprocess writes to `run_dir/progress.json` (see `train_run.ProgressFileCallback`).

    Returns the wall-clock seconds the subprocess took."""
    run_dir.mkdir(parents=True, exist_ok=True)
    progress_file = run_dir / "progress.json"
    # One thread per run: several runs share the cores instead (and a busy machine does not stall each step).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    with open(run_dir / "train.log", "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [sys.executable, str(TRAIN_RUN), str(progress_file), *command],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        finished = False
        while not finished:
            try:
                process.wait(timeout=POLL_SECONDS)
                finished = True
            except subprocess.TimeoutExpired:
                pass
            bar.update(read_progress(progress_file) - bar.n)
    wall_seconds = time.perf_counter() - start
    if process.returncode:
        lines = (run_dir / "train.log").read_text(encoding="utf-8", errors="replace").splitlines()
        raise RuntimeError(
            f"Training {run_dir.name} failed (exit code {process.returncode}); end of {run_dir / 'train.log'}:\n"
            + "\n".join(lines[-20:])
        )
    return wall_seconds


def train_runs(
    runs: list[Run], init_dir: Path, dataset: EmojiDataset, runs_dir: Path, seed: int, overrides: dict, jobs: int
) -> dict[str, dict]:
    """Trains every run, `jobs` at a time; returns per run its arguments, wall-clock time and Trainer logs."""
    commands = {run.name: train_command(run, init_dir, dataset, runs_dir / run.name, seed, overrides) for run in runs}
    max_steps = parse_args(commands[runs[0].name])[2].max_steps
    width = max(len(run.name) for run in runs)
    bars = {
        run.name: tqdm(total=max_steps, desc=f"Training {run.name:<{width}}", unit="step", position=i, leave=True)
        for i, run in enumerate(runs)
    }
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {
            run.name: pool.submit(_train, commands[run.name], runs_dir / run.name, bars[run.name]) for run in runs
        }
        wall = {name: future.result() for name, future in futures.items()}
    for bar in bars.values():
        bar.close()

    results = {}
    for run in runs:
        state = json.loads((runs_dir / run.name / "trainer_state.json").read_text(encoding="utf-8"))
        history = state["log_history"]
        results[run.name] = {
            "command": commands[run.name],
            "wall_seconds": wall[run.name],
            "train_runtime": next(entry["train_runtime"] for entry in history if "train_runtime" in entry),
            "steps": state["global_step"],
            "last_log": [entry for entry in history if "loss" in entry][-1],
        }
    return results


# ----------------------------------------------------------------------------------------------------------------
# evaluation and report


def evaluate_run(run_dir: Path, dataset: EmojiDataset, batch_size: int = 64) -> EvaluationResults:
    """`MMEBEvaluator` results of a trained run on the held-out split (JSON, summary.md, PNGs in `run_dir/eval`)."""
    model = AutoModel.from_pretrained(run_dir).eval()
    processor = AutoProcessor.from_pretrained(run_dir)
    evaluator = MMEBEvaluator(
        str(dataset.eval_dir),
        datasets=list(dataset.eval_datasets),
        image_root=str(dataset.image_root),
        output_dir=str(run_dir / "eval"),
        batch_size=batch_size,
    )
    return evaluator(model, processor=processor)


def mean_precision(results: EvaluationResults) -> float:
    """Precision@1 averaged over the datasets (here: both directions)."""
    return sum(results.precision_at_1.values()) / len(results.datasets)


def mean_gap(results: EvaluationResults) -> float:
    """The positive-hardest-negative cosine gap averaged over the datasets."""
    return sum(result.similarity.gap for result in results.datasets.values()) / len(results.datasets)


def answer_queries(folder: Path, dataset: EmojiDataset, seed: int) -> list[dict]:
    """Reloads the Hub folder with `AutoModel(..., trust_remote_code=True)` and ranks the held-out emoji for one text
    query (an emoji's name against their images) and one image query (an emoji's image against their names)."""
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    metadata = json.loads(dataset.metadata_file.read_text(encoding="utf-8"))
    held_out = [item for item in metadata["emoji"] if item["split"] == "eval"]
    rng = random.Random(seed)
    text_item, image_item = rng.sample(held_out, 2)
    images = [str(dataset.image_root / e["image"]) for e in held_out]
    names = [e["name"] for e in held_out]

    text_query = model.encode(texts=[T2I_INSTRUCTION + text_item["name"]])
    image_targets = model.encode(texts=[IMAGE_TARGET_TEXT] * len(images), images=images)
    image_query = model.encode(texts=[I2T_INSTRUCTION], images=[str(dataset.image_root / image_item["image"])])
    text_targets = model.encode(texts=names)

    answers = []
    for kind, item, scores in (
        ("text -> image", text_item, (text_query @ image_targets.T)[0]),
        ("image -> text", image_item, (image_query @ text_targets.T)[0]),
    ):
        order = scores.argsort(descending=True).tolist()
        answers.append(
            {
                "kind": kind,
                "query": item["name"] if kind.startswith("text") else f"the image of {item['name']!r}",
                "answer": item["name"],
                "rank": order.index(held_out.index(item)) + 1,
                "num_candidates": len(held_out),
                "top5": [(names[i], float(scores[i])) for i in order[:5]],
            }
        )
    return answers


def format_answers(answers: list[dict]) -> str:
    """The answers of `answer_queries` as printed: each query, then its top 5 with cosines."""
    lines = []
    for answer in answers:
        lines.append(
            f"{answer['kind']}: {answer['query']} (correct answer at rank {answer['rank']} of "
            f"{answer['num_candidates']} held-out emoji)"
        )
        for k, (name, cosine) in enumerate(answer["top5"], start=1):
            mark = "  <- correct" if name == answer["answer"] else ""
            lines.append(f"  {k}. {name}  (cosine {cosine:.3f}){mark}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Comparison:
    """A run against the baseline: mean P@1 over both directions, its rough error bar, and the mean cosine gap."""

    run: Run
    baseline: Run
    precision: float
    baseline_precision: float
    error: float  # binomial standard error of the difference of the mean P@1 (fraction)
    gap: float
    baseline_gap: float

    @classmethod
    def of(cls, run: Run, baseline: Run, evaluations: dict[str, EvaluationResults], num_queries: int) -> "Comparison":
        p, q = (mean_precision(evaluations[r.name]) for r in (run, baseline))
        # Queries of both directions counted as independent: a rough bar.
        count = num_queries * len(evaluations[run.name].datasets)
        error = math.sqrt(p * (1 - p) / count + q * (1 - q) / count)
        gap, baseline_gap = (mean_gap(evaluations[r.name]) for r in (run, baseline))
        return cls(run, baseline, p, q, error, gap, baseline_gap)

    @property
    def outcome(self) -> Literal["better", "worse", "within noise"]:
        """Whether the run's mean P@1 differs from the baseline's by more than two standard errors, and how."""
        if self.precision - self.baseline_precision > 2 * self.error:
            return "better"
        if self.baseline_precision - self.precision > 2 * self.error:
            return "worse"
        return "within noise"


def _format_percent(value: float) -> str:
    return f"{100 * value:.1f}"


def render_report(runs: list[Run], setup: dict, training: dict, evaluations: dict, best: str, answers) -> str:
    """The text of `REPORT.md`: `report.md.jinja` filled with the demo's measurements."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(EXAMPLE_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # `x | fmt(".3f")` is Python's `format(x, ".3f")`; `x | pct` a fraction as a percentage with one decimal.
    environment.filters["fmt"] = format
    environment.filters["pct"] = _format_percent
    first = next(iter(evaluations.values())).datasets["Emoji_t2i"].counts
    candidates = first.num_candidates / first.num_queries
    baseline = next((run for run in runs if run.loss_alpha == 0), None)
    comparisons = [
        Comparison.of(run, baseline, evaluations, first.num_queries) for run in runs if baseline and run is not baseline
    ]
    rows = [
        {
            "run": run,
            "best": run.name == best,
            "directions": [evaluations[run.name].datasets[name] for name in ("Emoji_t2i", "Emoji_i2t")],
            "evaluation": evaluations[run.name],
            **training[run.name],
        }
        for run in runs
    ]
    return environment.get_template(REPORT_TEMPLATE).render(
        setup=setup,
        rows=rows,
        best=best,
        num_queries=first.num_queries,
        candidates=candidates,
        comparisons=comparisons,
        answers=format_answers(answers),
    )


# ----------------------------------------------------------------------------------------------------------------
# entry point


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python examples/emoji_demo/run_demo.py", description=__doc__.split("\n\n")[0].strip()
    )
    parser.add_argument("--output-dir", default="demo_output", help="where data, runs, report and model go")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS), help="losses to train")
    parser.add_argument("--num-emoji", type=int, default=None, help="emoji to use (default: all, about 2,400)")
    parser.add_argument("--max-steps", type=int, default=None, help="training steps per run (default: the preset's)")
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per step (default: the preset's)")
    parser.add_argument("--jobs", type=int, default=None, help="runs trained at once (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the data split, the start weights and training")
    parser.add_argument("--cache-dir", default=None, help="image cache (default: $LLAVE_HF_CACHE, ~/.cache/llave_hf)")
    parser.add_argument("--quick", action="store_true", help=f"toy scale for tests: {QUICK}")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, getattr(args, key) or value)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the training subprocesses: robust on a shared machine, and enough for tiny models
    try:
        return _demo(args, start)
    finally:
        torch.set_num_threads(threads)


def _demo(args, start: float) -> dict:
    output_dir = Path(args.output_dir)
    init_dir, runs_dir, hub_dir = output_dir / "init", output_dir / "runs", output_dir / "hub"
    # Leftovers of an earlier demo would mix into this one's results (the evaluator reuses results it finds).
    for folder in (init_dir, runs_dir, hub_dir):
        shutil.rmtree(folder, ignore_errors=True)
    runs = [RUNS[name] for name in args.runs]

    print("1/5 Data: OpenMoji emoji, held-out families for evaluation")
    dataset = build_emoji_dataset(
        output_dir / "emoji", num_emoji=args.num_emoji, image_size=IMAGE_SIZE, seed=args.seed, cache_dir=args.cache_dir
    )
    print(
        f"    {dataset.num_train_emoji} training emoji ({dataset.num_train_rows} rows), {dataset.num_eval_emoji} "
        f"held out ({dataset.num_candidates} candidates per query); images in {dataset.image_root}"
    )

    print("2/5 Model: tiny random LLaVA-OneVision, tokenizer trained on the training captions")
    tokenizer = train_tokenizer(training_texts(Dataset.from_parquet(str(dataset.train_file))))
    model, processor = build_model(tokenizer, seed=args.seed)
    model.save_pretrained(init_dir)
    processor.save_pretrained(init_dir)
    num_parameters = sum(parameter.numel() for parameter in model.parameters())
    print(f"    {num_parameters:,} parameters, {len(tokenizer)} tokens -> {init_dir}")

    overrides = {"max_steps": args.max_steps, "per_device_train_batch_size": args.batch_size}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if args.quick:
        overrides["logging_steps"] = 1
    jobs = args.jobs or len(runs)
    print(f"3/5 Training {len(runs)} runs, {jobs} at a time, one thread each (logs: {runs_dir}/<run>/train.log)")
    training = train_runs(runs, init_dir, dataset, runs_dir, args.seed, overrides, jobs)

    print("4/5 Evaluating on the held-out emoji")
    evaluations = {run.name: evaluate_run(runs_dir / run.name, dataset) for run in runs}
    best = max(runs, key=lambda run: mean_precision(evaluations[run.name])).name

    print(f"5/5 Hub-ready folder of the best run ({best}), reloaded to answer queries")
    training_args = parse_args(training[best]["command"])[2]
    best_model = AutoModel.from_pretrained(runs_dir / best)
    save_for_hub(
        best_model,
        AutoProcessor.from_pretrained(runs_dir / best),
        hub_dir,
        model_name=f"llave-tiny-openmoji-{best}",
        training_args=training_settings(training_args),
        eval_results=evaluations[best],
        widget_texts=((T2I_INSTRUCTION + "red heart", "Text query"),),
    )
    answers = answer_queries(hub_dir, dataset, args.seed)

    setup = {
        "total_seconds": time.perf_counter() - start,
        "cpu_count": os.cpu_count(),
        "num_train_emoji": dataset.num_train_emoji,
        "num_train_rows": dataset.num_train_rows,
        "num_eval_emoji": dataset.num_eval_emoji,
        "num_parameters": num_parameters,
        "text_config": {
            k: getattr(model.config.backbone_config.text_config, k) for k in ("hidden_size", "num_hidden_layers")
        },
        "vision_config": {
            k: getattr(model.config.backbone_config.vision_config, k)
            for k in ("hidden_size", "num_hidden_layers", "image_size", "patch_size")
        },
        "vocab_size": len(tokenizer),
        "max_steps": training_args.max_steps,
        "batch_size": training_args.per_device_train_batch_size,
        "epochs": training_args.max_steps * training_args.per_device_train_batch_size / dataset.num_train_rows,
        "learning_rate": training_args.learning_rate,
        "temperature": training_args.loss_temperature,
        "logging_steps": training_args.logging_steps,
        "hub_dir": str(hub_dir),
    }
    report = render_report(runs, setup, training, evaluations, best, answers)
    (output_dir / "REPORT.md").write_text(report, encoding="utf-8")
    results = {"setup": setup, "training": training, "evaluations": evaluations, "best": best, "answers": answers}
    saved = {**results, "evaluations": {name: evaluation.to_dict() for name, evaluation in evaluations.items()}}
    (output_dir / "results.json").write_text(json.dumps(saved, indent=1, ensure_ascii=False), encoding="utf-8")
    results_section = report[report.index("## Results") : report.index("## Similarity")]
    print(f"\n{results_section}{format_answers(answers)}\n\nReport: {output_dir / 'REPORT.md'}")
    return results


if __name__ == "__main__":
    main()
