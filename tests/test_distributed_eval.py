"""Evaluation and `encode` spread over processes: 2 CPU processes give the scores and embeddings of one."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from mmeb_fixtures import make_mmeb_eval_fixture
from torchrun import torchrun

from llave_hf.cli.evaluate import main as llave_eval
from llave_hf.testing import tiny_model_and_processor


WORKER = Path(__file__).parent / "distributed_workers" / "eval_worker.py"
sys.path.insert(0, str(WORKER.parent))
from eval_worker import encode_items  # noqa: E402


def _scores(folder: str) -> dict:
    """Every dataset's scores and similarity statistics, from the files written."""
    with open(os.path.join(folder, "summary.json")) as f:
        summary = json.load(f)
    return {
        name: {**result["scores"], **result["similarity"], **result["counts"]}
        for name, result in summary["datasets"].items()
    }


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_processes_give_the_scores_and_embeddings_of_one(tmp_path):
    data_dir = make_mmeb_eval_fixture(tmp_path / "mmeb")
    model, processor = tiny_model_and_processor("llava_onevision")
    model_dir = str(tmp_path / "model")
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)

    single = str(tmp_path / "single")
    llave_eval(["--model", model_dir, "--data", data_dir, "--output", single, "--batch-size", "3", "--no-histograms"])
    texts, images = encode_items()
    expected = model.encode(texts=texts, images=images, batch_size=2)

    torchrun(WORKER, tmp_path, model_dir, data_dir, timeout=280)

    # the same files, the same numbers
    distributed = str(tmp_path / "eval")
    assert sorted(os.listdir(distributed)) == sorted(os.listdir(single))
    expected_scores, scores = _scores(single), _scores(distributed)
    assert scores.keys() == expected_scores.keys()
    for name in scores:
        for key, value in expected_scores[name].items():
            assert scores[name][key] == pytest.approx(value, abs=1e-6), (name, key)

    results = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    num_items = sum(expected_scores[name]["num_encoded_items"] for name in expected_scores)
    # each process encoded its share only (4 and 3 of the 7 items; about half of each dataset's items)
    assert [int(result["encode"]) for result in results] == [4, 3]
    shares = [int(result["evaluator"]) for result in results]
    assert max(shares) < num_items <= sum(shares), (shares, num_items)
    for result in results:
        torch.testing.assert_close(result["embeddings"], expected, rtol=0, atol=1e-6)
