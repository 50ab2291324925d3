# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""
The llave-hf emoji demo (`make demo`, `make demo-full`, `python examples/emoji_demo/run_demo.py [--full]`): does
LLaVE's hardness-weighted loss beat InfoNCE when fine-tuning a model that already works, on random or mined batches?
Real image-text pairs, a CPU, error bars over seeds.

1. Data: OpenMoji emoji with their CLDR names (`emoji_data.py`); a fifth of them held out for evaluation in whole
   variant families, so that skin-tone and gender variants, flags, clock faces, ... are each other's hard negatives
   among the held-out candidates.
2. Model: a tiny random LLaVA-OneVision backbone whose tokenizer is trained on the training captions only.
3. Stage 1 (`demo-pretrain.yaml`): InfoNCE from the random start, once: the shared "pretrained" model, as LLaVE
   starts from a capable multimodal model that already separates easy negatives.
4. Stage 2 (`demo-finetune.yaml`): fine-tuning from it over a grid (`grid.py`): losses (InfoNCE, α = 9, α = 9
   mean-normalised, α = 9 with warm-up) × batches (random, or mined by B3 from the stage-1 model) × seeds. Each run
   is `train_run.py` (`llave-train` with a progress callback) then `llave-eval` on the held-out split, in
   subprocesses, one per core with one thread each.
5. `REPORT.md` (from `report.md.jinja`): each cell's mean ± standard deviation over seeds, its paired difference to
   InfoNCE with a 95% interval, the similarity gap, the share of the gradient on the hardest negatives, a gap histogram
   per loss.
6. A Hub-ready folder of the best run (`save_for_hub`), reloaded with `AutoModel.from_pretrained(folder,
   trust_remote_code=True)` to answer a text query and an image query.

`make demo` trains the quick grid (`grid.QUICK_GRID`, under 10 minutes on 2 cores) and says what it leaves out;
`make demo-full` the whole one (`grid.FULL_GRID`). Everything goes to `--output-dir` (default `demo_output/`);
rendered images to the llave-hf cache.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import AutoModel, AutoProcessor, PreTrainedTokenizerFast

from llave_hf.cli.train import parse_args
from llave_hf.evaluation import EvaluationResults
from llave_hf.hub import save_for_hub, training_settings
from llave_hf.modeling.configuration_llave import LlaveEmbeddingConfig
from llave_hf.modeling.modeling_llave import LlaveEmbeddingModel
from llave_hf.modeling.processing_llave import LLAVE_PROMPT_TEMPLATE, MMEB_IMAGE_PLACEHOLDER
from llave_hf.processors import build_processor
from llave_hf.testing import tiny_backbone_config, tiny_image_processor, train_bpe_tokenizer

# The example's own modules, beside this file (a script's folder is on its import path).
from emoji_data import (
    EVAL_DATASETS, I2T_INSTRUCTION, IMAGE_TARGET_TEXT, T2I_INSTRUCTION, EmojiDataset, build_emoji_dataset
)  # fmt: skip
from grid import BASELINE, FULL_GRID, LOSSES, QUICK_GRID, Batches, Cell, Grid, PairedDifference, Spread
from train_run import read_progress


# The example's files, found beside this one (not relative to the installed library).
EXAMPLE_DIR = Path(__file__).resolve().parent
PRETRAIN_PRESET = EXAMPLE_DIR / "demo-pretrain.yaml"
FINETUNE_PRESET = EXAMPLE_DIR / "demo-finetune.yaml"
TRAIN_RUN = EXAMPLE_DIR / "train_run.py"
REPORT_TEMPLATE = "report.md.jinja"
# How often the demo reads the runs' progress files and exit codes.
POLL_SECONDS = 0.5

# The demo backbone: `llave_hf.testing`'s tiny LLaVA-OneVision (language model hidden size 64, 2 layers; SigLIP tower
# hidden size 32, 2 layers). 64-px tiles of 16-px patches see the rendered emoji at full resolution with as few image
# tokens as 32-px tiles of 8-px patches; a single grid pinpoint gives the base view plus one tile.
IMAGE_SIZE = 64
PATCH_SIZE = 16
MAX_LENGTH = 512
VOCAB_SIZE = 2000
# The same pipeline at toy scale, for the tests: 40 emoji, a few steps per stage.
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
# jobs: training then evaluation, in subprocesses


@dataclass
class Job:
    """One run: its `train_run.py` arguments (preset first), then `llave-eval` of the trained model; run in
    subprocesses with `threads` threads, logging to `run_dir/train.log` and `run_dir/eval.log`."""

    name: str
    run_dir: Path
    train_arguments: list[str]
    dataset: EmojiDataset
    threads: int = 1
    seconds: float = 0.0
    _process: subprocess.Popen | None = field(default=None, repr=False)
    _commands: list[tuple[str, list[str]]] = field(default_factory=list, repr=False)
    _started: float = field(default=0.0, repr=False)
    _label: str = field(default="train", repr=False)

    @property
    def progress_file(self) -> Path:
        return self.run_dir / "progress.json"

    @property
    def eval_dir(self) -> Path:
        return self.run_dir / "eval"

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        evaluate = [
            "-m", "llave_hf.cli.evaluate", "--model", str(self.run_dir), "--data", str(self.dataset.eval_dir),
            "--image-root", str(self.dataset.image_root), "--datasets", *EVAL_DATASETS, "--output",
            str(self.eval_dir), "--batch-size", "64",
        ]  # fmt: skip
        self._commands = [
            ("train", [str(TRAIN_RUN), str(self.progress_file), *self.train_arguments]),
            ("eval", evaluate),
        ]
        self._started = time.perf_counter()
        self._next()

    def _next(self) -> None:
        label, arguments = self._commands.pop(0)
        # One thread per run: several runs share the cores (a tiny model gains little from more, and a busy machine
        # stalls a multi-threaded one at every step).
        threads = str(self.threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}
        with open(self.run_dir / f"{label}.log", "w", encoding="utf-8") as log:
            self._process = subprocess.Popen(
                [sys.executable, *arguments], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self._label = label

    def poll(self) -> bool:
        """Whether the job is done; starts its next command when one ends, raises when one fails."""
        code = self._process.poll()
        if code is None:
            return False
        if code:
            log = self.run_dir / f"{self._label}.log"
            lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
            raise RuntimeError(
                f"{self._label} of {self.name} failed (exit code {code}); end of {log}:\n" + "\n".join(lines[-20:])
            )
        if self._commands:
            self._next()
            return False
        self.seconds = time.perf_counter() - self._started
        return True

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()


def run_jobs(jobs: list[Job], slots: int, description: str) -> float:
    """Runs `jobs`, `slots` at a time, with one progress bar of their training steps together; returns the
    wall-clock seconds they took."""
    start = time.perf_counter()
    total = sum(parse_args(job.train_arguments)[2].max_steps for job in jobs)
    pending, running = list(jobs), []
    with tqdm(total=total, desc=description, unit="step") as bar:
        try:
            while pending or running:
                while pending and len(running) < slots:
                    running.append(pending.pop(0))
                    running[-1].start()
                time.sleep(POLL_SECONDS)
                running = [job for job in running if not job.poll()]
                bar.update(sum(read_progress(job.progress_file) for job in jobs) - bar.n)
        finally:
            for job in running:
                job.kill()
    return time.perf_counter() - start


def command_line(preset: Path, options: dict) -> list[str]:
    """`llave-train` arguments: the preset, then `--key value` for each option (which override it)."""
    return [str(preset)] + [item for key, value in options.items() for item in (f"--{key}", str(value))]


# ----------------------------------------------------------------------------------------------------------------
# results


@dataclass
class RunResult:
    """What the report needs of one trained and evaluated run."""

    evaluation: EvaluationResults
    log_history: list[dict]
    seconds: float
    eval_dir: Path

    @classmethod
    def load(cls, job: Job) -> "RunResult":
        state = json.loads((job.run_dir / "trainer_state.json").read_text(encoding="utf-8"))
        evaluation = EvaluationResults.load(str(job.eval_dir / "summary.json"))
        return cls(evaluation, state["log_history"], job.seconds, job.eval_dir)

    def precision(self, dataset: str) -> float:
        return self.evaluation.datasets[dataset].precision_at_1

    @property
    def mean_precision(self) -> float:
        """P@1 averaged over both directions."""
        return sum(self.precision(name) for name in EVAL_DATASETS) / len(EVAL_DATASETS)

    @property
    def gap(self) -> float:
        """Mean positive-hardest-negative cosine gap, averaged over both directions."""
        return sum(self.evaluation.datasets[name].similarity.gap for name in EVAL_DATASETS) / len(EVAL_DATASETS)

    def training_mean(self, key: str) -> float:
        """A logged training quantity averaged over the run's logs (each log: the mean of its steps)."""
        values = [entry[key] for entry in self.log_history if key in entry]
        return sum(values) / len(values)

    def last_log(self, key: str) -> float:
        return [entry[key] for entry in self.log_history if key in entry][-1]

    def per_query_gaps(self) -> np.ndarray:
        """Per-query positive-hardest-negative gaps of both directions (queries without a negative left out)."""
        gaps = []
        for name in EVAL_DATASETS:
            per_query = self.evaluation.datasets[name].load_per_query(self.eval_dir)
            gap = per_query["positive"] - per_query["hardest_negative"]
            gaps.append(gap[~np.isnan(gap)])
        return np.concatenate(gaps)


@dataclass
class CellSummary:
    """A cell's runs over the seeds: spreads, and paired differences to InfoNCE and to random batches."""

    cell: Cell
    runs: dict[int, RunResult]
    precision: dict[str, Spread]
    gap: Spread
    gradient_share: Spread
    train_loss: Spread
    top1: Spread
    versus_baseline: PairedDifference | None  # mean P@1 minus InfoNCE's on the same batches and seeds
    versus_random: PairedDifference | None  # mined batches: mean P@1 minus the same loss's on random batches
    gap_versus_baseline: PairedDifference | None

    @classmethod
    def of(cls, cell: Cell, results: dict[tuple[str, int], RunResult], seeds) -> "CellSummary":
        runs = {seed: results[cell.name, seed] for seed in seeds}

        def paired(other: Cell, value) -> PairedDifference | None:
            if other == cell or (other.name, seeds[0]) not in results:
                return None
            return PairedDifference.of([value(runs[s]) for s in seeds], [value(results[other.name, s]) for s in seeds])

        baseline = Cell(BASELINE, cell.batches)
        mean_precision, gap = (lambda run: run.mean_precision), (lambda run: run.gap)
        return cls(
            cell=cell,
            runs=runs,
            precision={name: Spread.of(run.precision(name) for run in runs.values()) for name in EVAL_DATASETS},
            gap=Spread.of(run.gap for run in runs.values()),
            gradient_share=Spread.of(run.training_mean("hard_negative_gradient_share") for run in runs.values()),
            train_loss=Spread.of(run.last_log("loss") for run in runs.values()),
            top1=Spread.of(run.last_log("top1_accuracy") for run in runs.values()),
            versus_baseline=paired(baseline, mean_precision),
            versus_random=paired(Cell(cell.loss, Batches.RANDOM), mean_precision),
            gap_versus_baseline=paired(baseline, gap),
        )


def save_gap_histogram(path: Path, title: str, series: dict[str, np.ndarray]) -> None:
    """One PNG of per-query gap distributions (positive minus hardest-negative cosine), one outline per series."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bins = np.histogram_bin_edges(np.concatenate(list(series.values())), bins=50)
    figure = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for label, values in series.items():
        label = f"{label} (mean {values.mean():.3f})"
        axes.hist(values, bins=bins, density=True, histtype="step", linewidth=1.6, label=label)
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set_xlabel("positive minus hardest-negative cosine, per held-out query (right of 0: ranked first)")
    axes.set_ylabel("density")
    axes.set_title(title)
    axes.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


# ----------------------------------------------------------------------------------------------------------------
# report


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


def _format_percent(value: float) -> str:
    return f"{100 * value:.1f}"


def render_report(context: dict) -> str:
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
    return environment.get_template(REPORT_TEMPLATE).render(**context)


# ----------------------------------------------------------------------------------------------------------------
# entry point


def parse_demo_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python examples/emoji_demo/run_demo.py", description=__doc__.split("\n\n")[0].strip()
    )
    parser.add_argument("--output-dir", default="demo_output", help="where data, runs, report and model go")
    parser.add_argument("--full", action="store_true", help="the whole grid (`make demo-full`): every loss, batches "
                        "and seed of grid.FULL_GRID (default: grid.QUICK_GRID)")  # fmt: skip
    parser.add_argument("--losses", nargs="+", choices=list(LOSSES), help="stage-2 losses (default: the grid's)")
    parser.add_argument("--batches", nargs="+", choices=[b.value for b in Batches], help="random and/or mined")
    parser.add_argument("--seeds", nargs="+", type=int, help="stage-2 seeds (default: the grid's)")
    parser.add_argument("--num-emoji", type=int, default=None, help="emoji to use (default: all, about 2,400)")
    parser.add_argument("--max-steps", type=int, default=None, help="steps of each stage (default: the presets')")
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per step (default: the presets')")
    parser.add_argument("--jobs", type=int, default=None, help="runs trained at once (default: one per CPU core)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the data split, the random start and stage 1")
    parser.add_argument("--cache-dir", default=None, help="image cache (default: $LLAVE_HF_CACHE, ~/.cache/llave_hf)")
    parser.add_argument("--quick", action="store_true", help=f"toy scale for tests: {QUICK}")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, getattr(args, key) or value)
    base = FULL_GRID if args.full else QUICK_GRID
    args.grid = Grid(
        tuple(args.losses or base.losses),
        tuple(Batches(b) for b in args.batches) if args.batches else base.batches,
        tuple(args.seeds or base.seeds),
    )
    if BASELINE.name not in args.grid.losses:
        parser.error(f"--losses must include {BASELINE.name}: every cell is compared with it.")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_demo_args(argv)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the driver's own work (the Hub folder, the queries) is small
    try:
        return _demo(args, start)
    finally:
        torch.set_num_threads(threads)


def _demo(args: argparse.Namespace, start: float) -> dict:
    output_dir = Path(args.output_dir)
    init_dir, runs_dir, hub_dir, figures_dir = (output_dir / name for name in ("init", "runs", "hub", "figures"))
    # Leftovers of an earlier demo would mix into this one's results (the evaluator reuses results it finds).
    for folder in (init_dir, runs_dir, hub_dir, figures_dir):
        shutil.rmtree(folder, ignore_errors=True)
    grid, cores = args.grid, os.cpu_count() or 1
    slots = args.jobs or cores

    print("1/6 Data: OpenMoji emoji, held-out families for evaluation")
    dataset = build_emoji_dataset(
        output_dir / "emoji", num_emoji=args.num_emoji, image_size=IMAGE_SIZE, seed=args.seed, cache_dir=args.cache_dir
    )
    print(
        f"    {dataset.num_train_emoji} training emoji ({dataset.num_train_rows} rows), {dataset.num_eval_emoji} "
        f"held out ({dataset.num_candidates} candidates per query); images in {dataset.image_root}"
    )

    print("2/6 Model: tiny random LLaVA-OneVision, tokenizer trained on the training captions")
    tokenizer = train_tokenizer(training_texts(Dataset.from_parquet(str(dataset.train_file))))
    model, processor = build_model(tokenizer, seed=args.seed)
    model.save_pretrained(init_dir)
    processor.save_pretrained(init_dir)
    num_parameters = sum(parameter.numel() for parameter in model.parameters())
    print(f"    {num_parameters:,} parameters, {len(tokenizer)} tokens -> {init_dir}")

    common = {"train_data": dataset.train_file, "image_root": dataset.image_root}
    common.update({"max_steps": args.max_steps, "per_device_train_batch_size": args.batch_size})
    common = {key: value for key, value in common.items() if value is not None}
    if args.quick:
        common["logging_steps"] = 1
    pretrain_dir = runs_dir / "pretrain"
    pretrain = Job(
        "pretrain",
        pretrain_dir,
        command_line(
            PRETRAIN_PRESET,
            {"model_name_or_path": init_dir, "output_dir": pretrain_dir, "seed": args.seed, **common},
        ),
        dataset,
        threads=cores,  # alone on the machine
    )
    print(f"3/6 Stage 1: InfoNCE from the random start, {cores} threads (log: {pretrain_dir}/train.log)")
    stage_seconds = {"pretrain": run_jobs([pretrain], 1, "Stage 1")}

    jobs = {
        (cell.name, seed): Job(
            f"{cell.name} seed {seed}",
            runs_dir / cell.name / f"seed{seed}",
            command_line(
                FINETUNE_PRESET,
                {"model_name_or_path": pretrain_dir, "output_dir": runs_dir / cell.name / f"seed{seed}",
                 "seed": seed, **cell.options(), **common},
            ),  # fmt: skip
            dataset,
        )
        for seed in grid.seeds
        for cell in grid.cells
    }
    print(
        f"4/6 Stage 2: {len(grid.cells)} cells x {len(grid.seeds)} seeds = {len(jobs)} runs from the stage-1 model, "
        f"{slots} at a time, one thread each (logs: {runs_dir}/<cell>/seed<k>/)"
    )
    stage_seconds["finetune"] = run_jobs(list(jobs.values()), slots, "Stage 2")

    print("5/6 Report: spreads over seeds, paired differences, histograms")
    results = {key: RunResult.load(job) for key, job in jobs.items()}
    start_result = RunResult.load(pretrain)
    summaries = [CellSummary.of(cell, results, list(grid.seeds)) for cell in grid.cells]
    figures = {}
    for loss in grid.losses:
        series = {"stage-1 start": start_result.per_query_gaps()}
        for batches in grid.batches:
            name = Cell(LOSSES[loss], batches).name
            series[f"{batches.value} batches"] = np.concatenate([results[name, s].per_query_gaps() for s in grid.seeds])
        figures[loss] = f"figures/gap_{loss}.png"
        save_gap_histogram(output_dir / figures[loss], f"{LOSSES[loss].description}: held-out gaps", series)

    best_key = max(results, key=lambda key: results[key].mean_precision)
    best_dir = jobs[best_key].run_dir
    print(f"6/6 Hub-ready folder of the best run ({best_key[0]}, seed {best_key[1]}), reloaded to answer queries")
    _, finetune_data_args, finetune_args = parse_args(jobs[best_key].train_arguments)
    pretrain_args = parse_args(pretrain.train_arguments)[2]
    save_for_hub(
        AutoModel.from_pretrained(best_dir),
        AutoProcessor.from_pretrained(best_dir),
        hub_dir,
        model_name=f"llave-tiny-openmoji-{best_key[0]}",
        training_args=training_settings(finetune_args),
        eval_results=results[best_key].evaluation,
        widget_texts=((T2I_INSTRUCTION + "red heart", "Text query"),),
    )
    answers = answer_queries(hub_dir, dataset, args.seed)

    full_runs = len(FULL_GRID.cells) * len(FULL_GRID.seeds)
    setup = {
        "command": " ".join(["python examples/emoji_demo/run_demo.py", *args.argv]),
        "total_seconds": time.perf_counter() - start,
        "cpu_count": cores,
        "slots": slots,
        "num_train_emoji": dataset.num_train_emoji,
        "num_train_rows": dataset.num_train_rows,
        "num_eval_emoji": dataset.num_eval_emoji,
        "num_candidates": dataset.num_candidates,
        "num_queries": start_result.evaluation.datasets[EVAL_DATASETS[0]].counts.num_queries,
        "num_parameters": num_parameters,
        "text_config": {
            k: getattr(model.config.backbone_config.text_config, k) for k in ("hidden_size", "num_hidden_layers")
        },
        "vision_config": {
            k: getattr(model.config.backbone_config.vision_config, k)
            for k in ("hidden_size", "num_hidden_layers", "image_size", "patch_size")
        },
        "vocab_size": len(tokenizer),
        "stages": {
            name: {
                "max_steps": stage.max_steps,
                "batch_size": stage.per_device_train_batch_size,
                "epochs": stage.max_steps * stage.per_device_train_batch_size / dataset.num_train_rows,
                "learning_rate": stage.learning_rate,
                "seconds": stage_seconds[name],
            }
            for name, stage in (("pretrain", pretrain_args), ("finetune", finetune_args))
        },
        "temperature": finetune_args.loss_temperature,
        "skip_ranks": finetune_data_args.batch_mining_skip_ranks,
        "alpha_warmup_steps": LOSSES["hardness-warmup"].loss_alpha_warmup_steps,
        "grid": {"losses": list(grid.losses), "batches": [b.value for b in grid.batches], "seeds": list(grid.seeds)},
        "num_runs": len(jobs),
        "left_out": grid.left_out(FULL_GRID),
        "full_runs": full_runs,
        "hub_dir": str(hub_dir),
    }
    context = {
        "setup": setup,
        "start": start_result,
        "summaries": summaries,
        "losses": {name: LOSSES[name] for name in grid.losses},
        "figures": figures,
        "best": {"cell": best_key[0], "seed": best_key[1], "result": results[best_key]},
        "answers": format_answers(answers),
        "datasets": EVAL_DATASETS,
    }
    report = render_report(context)
    (output_dir / "REPORT.md").write_text(report, encoding="utf-8")
    saved = {
        "setup": setup,
        "start": {"evaluation": start_result.evaluation.to_dict(), "seconds": start_result.seconds},
        "runs": {
            f"{name}/seed{seed}": {
                "evaluation": result.evaluation.to_dict(),
                "seconds": result.seconds,
                "hard_negative_gradient_share": result.training_mean("hard_negative_gradient_share"),
                "last_log": [entry for entry in result.log_history if "loss" in entry][-1],
            }
            for (name, seed), result in results.items()
        },
        "best": f"{best_key[0]}/seed{best_key[1]}",
        "answers": answers,
    }
    (output_dir / "results.json").write_text(json.dumps(saved, indent=1, ensure_ascii=False), encoding="utf-8")
    results_section = report[report.index("## Results") : report.index("## Histograms")]
    print(f"\n{results_section}{format_answers(answers)}\n\nReport: {output_dir / 'REPORT.md'}")
    return {"setup": setup, "results": results, "summaries": summaries, "best": best_key, "answers": answers}


if __name__ == "__main__":
    main()
