# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""
The llave-hf demo (`make demo`, `python -m llave_hf.demo`): LLaVE's hardness-weighted contrastive loss against
InfoNCE on real image-text pairs, on a CPU, in minutes.

1. Data: OpenMoji emoji with their CLDR names (`llave_hf.emoji_data`); a fifth of them held out for evaluation in
   whole variant families, so that skin-tone and gender variants, flags, clock faces, ... are each other's hard
   negatives among the held-out candidates.
2. Model: a tiny random LLaVA-OneVision backbone whose tokenizer is trained on the training captions only (the
   held-out names never shape it), saved once as the common start of every run.
3. Training: one `python -m llave_hf.train training_args/demo-cpu.yaml` subprocess per loss (same data, start and
   seed), all at once with one thread each: tiny models gain little from a second thread, and a busy machine makes
   multi-threaded ones crawl.
4. Evaluation: `MMEBEvaluator` on the held-out split (text->image and image->text ranking among 50 candidates).
5. `REPORT.md` (table, histograms), a Hub-ready folder of the best run (`save_for_hub`), reloaded with
   `AutoModel.from_pretrained(folder, trust_remote_code=True)` to answer a text query and an image query.

Everything goes to `--output-dir` (default `demo_output/`); rendered images to the llave-hf cache.
"""

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import AutoModel, AutoProcessor, PreTrainedTokenizerFast

from .emoji_data import I2T_INSTRUCTION, IMAGE_TARGET_TEXT, T2I_INSTRUCTION, build_emoji_dataset
from .evaluation import MMEBEvaluator
from .hub import save_for_hub, training_settings
from .modeling.configuration_llave import LlaveEmbeddingConfig
from .modeling.modeling_llave import LlaveEmbeddingModel
from .modeling.processing_llave import LLAVE_PROMPT_TEMPLATE, MMEB_IMAGE_PLACEHOLDER
from .processors import build_processor
from .testing import tiny_backbone_config, tiny_image_processor, train_bpe_tokenizer
from .train import parse_args


PRESET = Path(__file__).resolve().parent.parent / "training_args" / "demo-cpu.yaml"


@dataclass(frozen=True)
class Run:
    """One training run of the demo: its loss settings."""

    name: str
    loss_alpha: float
    hardness_normalization: str
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


# The Trainer's progress bar in the child's output: "  45%|████▌     | 675/1500 [00:49<01:00, 13.6it/s]".
_PROGRESS = re.compile(r"(?:^|[\r\n])\s*\d+%\|[^|\r\n]*\| *(\d+)/(\d+) \[")


def train_command(run: Run, init_dir: Path, dataset, run_dir: Path, seed: int, overrides: dict) -> list[str]:
    """The `llave_hf.train` arguments of one run (after the interpreter)."""
    arguments = {
        "model_name_or_path": init_dir,
        "train_data": dataset.train_file,
        "image_root": dataset.image_root,
        "output_dir": run_dir,
        "loss_alpha": run.loss_alpha,
        "hardness_normalization": run.hardness_normalization,
        "seed": seed,
        **overrides,
    }
    return [str(PRESET)] + [item for key, value in arguments.items() for item in (f"--{key}", str(value))]


def _train(command: list[str], run_dir: Path, bar: tqdm) -> float:
    """Runs `python -m llave_hf.train command`, logging to `run_dir/train.log` and following its progress bar.

    Returns the wall-clock seconds the subprocess took."""
    run_dir.mkdir(parents=True, exist_ok=True)
    # One thread per run: several runs share the cores instead (and a busy machine does not stall each step).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    with open(run_dir / "train.log", "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "llave_hf.train", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            errors="replace",
        )
        tail = ""
        while chunk := process.stdout.read(256):
            log.write(chunk)
            tail = (tail + chunk)[-512:]
            steps = [int(done) for done, total in _PROGRESS.findall(tail) if int(total) == bar.total]
            if steps and steps[-1] != bar.n:
                bar.update(steps[-1] - bar.n)
        process.wait()
    if process.returncode:
        lines = (run_dir / "train.log").read_text(encoding="utf-8").splitlines()
        raise RuntimeError(
            f"Training {run_dir.name} failed (exit code {process.returncode}); end of {run_dir / 'train.log'}:\n"
            + "\n".join(lines[-20:])
        )
    return time.perf_counter() - start


def train_runs(runs, init_dir, dataset, runs_dir, seed, overrides, jobs) -> dict[str, dict]:
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


def evaluate_run(run_dir: Path, dataset, batch_size: int = 64) -> dict:
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
    return evaluator.evaluate(model, processor=processor)


def _mean_precision(evaluation: dict) -> float:
    return sum(result["scores"]["precision@1"] for result in evaluation["datasets"].values()) / len(
        evaluation["datasets"]
    )


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def answer_queries(folder: Path, dataset, seed: int) -> list[dict]:
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


def compare(run: Run, baseline: Run, evaluations: dict, num_queries: int) -> str:
    """A measured verdict on `run` against `baseline`: mean P@1 over both directions, and the cosine gap."""
    p, q = (_mean_precision(evaluations[r.name]) for r in (run, baseline))
    # Binomial standard error of the difference (queries of both directions counted as independent: a rough bar).
    count = num_queries * len(evaluations[run.name]["datasets"])
    error = math.sqrt(p * (1 - p) / count + q * (1 - q) / count)
    difference = 100 * (p - q)
    if p - q > 2 * error:
        verdict = f"beats {baseline.name} on this data"
    elif q - p > 2 * error:
        verdict = f"does worse than {baseline.name} on this data"
    else:
        verdict = f"does not beat {baseline.name} on this data (the difference is within noise)"
    gaps = {
        r.name: sum(d["similarity"]["gap"] for d in evaluations[r.name]["datasets"].values()) / 2
        for r in (run, baseline)
    }
    widened = "widens" if gaps[run.name] > gaps[baseline.name] else "does not widen"
    return (
        f"**{run.name}** ({run.description}) {verdict}: mean P@1 {_pct(p)} vs {_pct(q)} "
        f"({difference:+.1f} points; two standard errors ≈ {200 * error:.1f} points). It {widened} the mean "
        f"positive-hardest-negative gap ({gaps[run.name]:.3f} vs {gaps[baseline.name]:.3f})."
    )


def write_report(output_dir: Path, runs, setup: dict, training: dict, evaluations: dict, best: str, answers) -> str:
    """Writes `output_dir/REPORT.md` and returns its text."""
    language, vision = setup["text_config"], setup["vision_config"]
    first = next(iter(evaluations.values()))["datasets"]
    num_queries = first["Emoji_t2i"]["counts"]["num_queries"]
    candidates = first["Emoji_t2i"]["counts"]["num_candidates"] / num_queries
    columns = ["run", "loss", "P@1 t2i", "P@1 i2t", "R@5 t2i", "R@5 i2t", "MRR t2i", "MRR i2t", "gap t2i", "gap i2t"]
    columns += ["margin t2i", "margin i2t"]
    columns += ["train time (s)", "final train loss", "in-batch top-1"]
    table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for run in runs:
        t2i, i2t = (evaluations[run.name]["datasets"][name] for name in ("Emoji_t2i", "Emoji_i2t"))
        log = training[run.name]["last_log"]
        cells = [f"**{run.name}**" if run.name == best else run.name, run.description]
        cells += [_pct(d["scores"][key]) for key in ("precision@1", "recall@5", "mrr") for d in (t2i, i2t)]
        cells += [f"{d['similarity']['gap']:.3f}" for d in (t2i, i2t)]
        cells += [f"{d['similarity']['positive_mean'] - d['similarity']['negative_mean']:.3f}" for d in (t2i, i2t)]
        cells += [f"{training[run.name]['train_runtime']:.1f}", f"{log['loss']:.3f}"]
        cells.append(f"{100 * log['top1_accuracy']:.1f}% (of {setup['batch_size']})")
        table.append("| " + " | ".join(cells) + " |")

    baseline = next((run for run in runs if run.loss_alpha == 0), None)
    verdicts = [compare(run, baseline, evaluations, num_queries) for run in runs if baseline and run is not baseline]
    histograms = []
    for run in runs:
        for name, result in evaluations[run.name]["datasets"].items():
            histograms.append(f"![{run.name} {name}](runs/{run.name}/eval/{result['histogram']})")

    text = f"""# llave-hf demo: LLaVE's hardness-weighted loss vs InfoNCE on held-out emoji

Written by `python -m llave_hf.demo` in {setup['total_seconds']:.0f} s on {setup['cpu_count']} CPU cores; every number
below was measured in that run.

## Setup

- **Data**: {setup['num_train_emoji']} OpenMoji emoji for training ({setup['num_train_rows']} rows: text->image and
  image->text, one per English name or alias), {setup['num_eval_emoji']} held out in whole variant families. Each
  held-out query ranks its answer among {candidates:.0f} held-out candidates: its skin-tone/gender variants and series
  neighbours (flags, clocks, ...) first, then random ones. Chance: P@1 {_pct(1 / candidates)}%, R@5
  {_pct(min(5, candidates) / candidates)}%.
- **Model**: a tiny random LLaVA-OneVision ({setup['num_parameters']:,} parameters: language model hidden size
  {language['hidden_size']}, {language['num_hidden_layers']} layers; SigLIP tower hidden size
  {vision['hidden_size']}, {vision['num_hidden_layers']} layers, {vision['image_size']}-px tiles of
  {vision['patch_size']}-px patches), with LLaVE's prompt format and last-token pooling, and a byte-level BPE
  tokenizer of {setup['vocab_size']} tokens trained on the training captions only. The vision tower is trained: LLaVE
  freezes a *pretrained* SigLIP tower, and no pretrained tower is available offline; frozen, a random one would only
  offer random features.
- **Training**: every run starts from the same weights with the same data order and seed: {setup['max_steps']} steps
  of {setup['batch_size']} pairs ({setup['epochs']:.1f} epochs), learning rate {setup['learning_rate']:g}, cosine
  schedule, τ = {setup['temperature']:g}, symmetric loss, in-batch negatives only (as LLaVE), preset
  `training_args/demo-cpu.yaml`. The runs trained at the same time, one CPU thread each (train time: the training
  loop's wall clock).

## Results on the held-out emoji

{chr(10).join(table)}

P@1, R@5, MRR: % of queries ({num_queries} per direction) whose answer ranks first, in the top 5, and the mean
reciprocal rank. Gap: mean cosine of the answer minus that of the most similar wrong candidate (the diagnostic of
LLaVE's Table 1); margin: mean cosine of the answer minus that of all wrong candidates (0 without any signal). Final train loss, in-batch top-1: means over the last {setup['logging_steps']:g} training steps.
Best run (highest mean P@1): **{best}**. One seed per loss: the error bars below cover the sampling of the held-out
queries, not the variation between seeds.

{chr(10).join(f"- {verdict}" for verdict in verdicts)}

## Similarity histograms

Cosine of the answer, of the hardest wrong candidate and of all wrong candidates, per run and direction (written by
`MMEBEvaluator`; per-dataset JSON and `summary.md` beside them).

{chr(10).join(histograms)}

## Hub-ready model

`{setup['hub_dir']}` holds the best run (**{best}**) as a Hub repository (`llave_hf.hub.save_for_hub`: safetensors
weights, config with `auto_map`, modeling and processor code, tokenizer, model card, `handler.py`). Reloaded with
`AutoModel.from_pretrained(folder, trust_remote_code=True)`, it ranks all {setup['num_eval_emoji']} held-out emoji:

```
{format_answers(answers)}
```
"""
    (output_dir / "REPORT.md").write_text(text, encoding="utf-8")
    return text


# ----------------------------------------------------------------------------------------------------------------
# entry point


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m llave_hf.demo", description=__doc__.split("\n\n")[0].strip())
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
    best = max(runs, key=lambda run: _mean_precision(evaluations[run.name])).name

    print(f"5/5 Hub-ready folder of the best run ({best}), reloaded to answer queries")
    training_args = parse_args(training[best]["command"])[2]
    best_model = AutoModel.from_pretrained(runs_dir / best)
    save_for_hub(
        best_model,
        AutoProcessor.from_pretrained(runs_dir / best),
        hub_dir,
        model_name=f"llave-tiny-openmoji-{best}",
        training_args=training_settings(training_args),
        eval_results={name: r["scores"]["precision@1"] for name, r in evaluations[best]["datasets"].items()},
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
        "text_config": {k: getattr(model.config.backbone_config.text_config, k) for k in ("hidden_size", "num_hidden_layers")},
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
    report = write_report(output_dir, runs, setup, training, evaluations, best, answers)
    results = {"setup": setup, "training": training, "evaluations": evaluations, "best": best, "answers": answers}
    (output_dir / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
    results_section = report[report.index("## Results") : report.index("## Similarity")]
    print(f"\n{results_section}{format_answers(answers)}\n\nReport: {output_dir / 'REPORT.md'}")
    return results


if __name__ == "__main__":
    main()
