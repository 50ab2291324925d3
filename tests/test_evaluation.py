import json
import math
import os
import sys
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mmeb_fixtures import (
    CLASSIFY,
    IMAGE_TARGET,
    IMAGENET,
    MSCOCO_T2I,
    FakeEncoder,
    make_mmeb_eval_fixture,
    mmeb_row,
    write_concept_images,
)
from PIL import Image

import llave_hf.evaluation.evaluator as evaluator_module
from llave_hf.cli.evaluate import main
from llave_hf.evaluation import (
    MMEB_DATASETS,
    DatasetResult,
    EvaluationResults,
    MMEBDataError,
    MMEBEvaluator,
    aggregate_mmeb,
    format_summary,
)


NUM_ITEMS = {"ImageNet-1K": 4 + 4, "MSCOCO_t2i": 2 + 5, "Emoji_t2i": 2 + 3}  # distinct (text, image) per dataset


@pytest.fixture
def data_dir(tmp_path):
    return make_mmeb_eval_fixture(tmp_path / "mmeb")


def test_scores_known_by_construction(data_dir, tmp_path):
    encoder = FakeEncoder()
    output_dir = str(tmp_path / "out")
    evaluator = MMEBEvaluator(data_dir, output_dir=output_dir, batch_size=3, k_values=(1, 2), show_progress_bar=False)
    assert evaluator.dataset_names == ["ImageNet-1K", "MSCOCO_t2i", "Emoji_t2i"]  # MMEB order, then the others
    results = evaluator(encoder)

    imagenet = results.datasets["ImageNet-1K"]
    assert imagenet.meta_task == "Classification" and imagenet.split == "IND"
    # Row 3: "fish" scores 1, the positive "bird" ties "cat" at 0 and ranks below it (ties are pessimistic): rank 3.
    expected = {"precision@1": 0.75, "recall@1": 0.75, "recall@2": 0.75, "mrr": (1 + 1 + 1 + 1 / 3) / 4}
    assert imagenet.precision_at_1 == 0.75 and imagenet.recall_at_k == {1: 0.75, 2: 0.75}
    assert imagenet.mrr == pytest.approx(expected["mrr"])
    # Cosines are 1 for the matching concept and 0 otherwise; row 3: positive 0, hardest negative ("fish") 1.
    assert asdict(imagenet.similarity) == pytest.approx(
        {"positive_mean": 0.75, "hardest_negative_mean": 0.25, "negative_mean": 1 / 8, "gap": 0.5}
    )
    assert asdict(imagenet.counts) == {
        "num_queries": 4,
        "num_candidates": 12,
        "min_candidates": 3,
        "max_candidates": 3,
        "num_encoded_items": 8,
        "num_duplicate_positives": 1,
        "num_tied_top": 0,
        "max_queries": None,
        "num_single_candidate": 0,
    }
    assert results.datasets["MSCOCO_t2i"].precision_at_1 == 1.0
    assert results.datasets["Emoji_t2i"].precision_at_1 == 0.5
    assert results.datasets["Emoji_t2i"].meta_task is None
    assert results.precision_at_1 == {"ImageNet-1K": 0.75, "MSCOCO_t2i": 1.0, "Emoji_t2i": 0.5}

    # Every distinct item encoded exactly once per dataset; the MMEB placeholder reaches the encoder untouched;
    # empty texts / paths become None and image paths are resolved against the data folder.
    assert len(encoder.items) == sum(NUM_ITEMS.values())
    assert (CLASSIFY, os.path.join(data_dir, "images/cat.png")) in encoder.items
    assert (None, os.path.join(data_dir, "images/dog.png")) in encoder.items
    assert ("cat", None) in encoder.items

    aggregate = results.aggregate
    assert aggregate.means["Classification"] == 0.75 and aggregate.means["Retrieval"] == 1.0
    assert aggregate.means["VQA"] is None and aggregate.means["OOD"] is None
    assert aggregate.means["IND"] == aggregate.means["Overall"] == aggregate.overall == 0.875  # Emoji_t2i stays out
    assert aggregate.num_datasets["Overall"] == 2
    assert aggregate.other == {"Emoji_t2i": 0.5}

    # The files keep their layout: {"scores": {"precision@1", "recall@k", "mrr"}, "similarity", "counts", ...}.
    with open(os.path.join(output_dir, "ImageNet-1K.json")) as f:
        stored = json.load(f)
    assert stored == imagenet.to_dict()
    assert stored["scores"] == pytest.approx(expected)
    assert list(stored) == [
        "dataset", "meta_task", "split", "scores", "similarity", "counts", "histogram", "per_query", "run"
    ]  # fmt: skip
    with open(os.path.join(output_dir, "summary.json")) as f:
        assert json.load(f) == results.to_dict()
    summary = open(os.path.join(output_dir, "summary.md")).read()
    assert "| ImageNet-1K | Classification | IND | 75.0 | 75.0 | 83.3 | 0.750 | 0.250 | 0.500 | 4 |" in summary
    assert "| 75.0 (1) | - (0) | 100.0 (1) | - (0) | 87.5 (2) | - (0) | 87.5 (2) |" in summary
    assert "only candidate" not in summary  # every query here has negatives
    assert "left out of the aggregates: Emoji_t2i" in summary
    with Image.open(os.path.join(output_dir, imagenet.histogram)) as png:
        assert png.format == "PNG" and png.size == (640, 400)

    # The per-query outcomes give back every aggregate score, query by query in row order.
    for result in results.datasets.values():
        per_query = result.load_per_query(output_dir)
        ranks, positive, hardest = per_query["rank"], per_query["positive"], per_query["hardest_negative"]
        assert len(ranks) == result.counts.num_queries
        assert np.mean(ranks == 1) == result.precision_at_1 and np.mean(1 / ranks) == pytest.approx(result.mrr)
        assert np.mean(ranks <= 2) == result.recall_at_k[2]
        assert np.array_equal(ranks == 1, positive > hardest)  # no ties in this data
        assert np.mean(positive - hardest) == pytest.approx(result.similarity.gap)
    assert list(imagenet.load_per_query(output_dir)["rank"]) == [1, 1, 1, 3]  # row 3 (from 0), as above


# A `<Name>.json` in the layout written before results became dataclasses: resuming reads it as it is.
STORED_RESULT = {
    "dataset": "Single",
    "meta_task": None,
    "split": None,
    "scores": {"precision@1": 1.0, "recall@1": 1.0, "recall@5": 1.0, "recall@10": 1.0, "mrr": 1.0},
    "similarity": {"positive_mean": 1.0, "hardest_negative_mean": None, "negative_mean": None, "gap": None},
    "counts": {
        "num_queries": 2, "num_candidates": 2, "min_candidates": 1, "max_candidates": 1, "num_encoded_items": 4,
        "num_duplicate_positives": 0, "num_tied_top": 0, "max_queries": None, "num_single_candidate": 2,
    },  # fmt: skip
    "histogram": "Single_similarity.png",
    "run": {"model": "FakeEncoder", "weights": None, "data": "in-memory mapping", "split": "test",
            "max_queries": None, "image_root": "/data/mmeb"},  # fmt: skip
}


def test_dataset_result_round_trips_the_json_layout():
    result = DatasetResult.from_dict(STORED_RESULT)
    assert result.dataset == "Single" and result.meta_task is None and result.split is None
    assert result.precision_at_1 == 1.0 and result.recall_at_k == {1: 1.0, 5: 1.0, 10: 1.0} and result.mrr == 1.0
    # null in the file (no query has a negative), NaN in memory.
    assert result.similarity.positive_mean == 1.0 and math.isnan(result.similarity.gap)
    assert result.counts.num_queries == 2 and result.counts.max_queries is None
    assert result.histogram == "Single_similarity.png" and result.run.model == "FakeEncoder"
    assert result.per_query is None  # written before per-query outcomes were saved
    assert result.to_dict() == {**STORED_RESULT, "per_query": None}
    assert json.loads(json.dumps(result.to_dict(), allow_nan=False)) == {**STORED_RESULT, "per_query": None}
    assert DatasetResult.from_dict({**STORED_RESULT, "run": None}).run is None
    # written before single-candidate queries were counted: read as unknown
    counts = {key: value for key, value in STORED_RESULT["counts"].items() if key != "num_single_candidate"}
    assert DatasetResult.from_dict({**STORED_RESULT, "counts": counts}).counts.num_single_candidate is None


def test_results_metrics_and_summary_round_trip(data_dir, tmp_path):
    output_dir = str(tmp_path / "out")
    results = MMEBEvaluator(data_dir, output_dir=output_dir, show_progress_bar=False)(FakeEncoder())
    assert results.metrics(prefix="eval_") == pytest.approx(
        {"eval_ImageNet-1K_p@1": 0.75, "eval_MSCOCO_t2i_p@1": 1.0, "eval_Emoji_t2i_p@1": 0.5, "eval_mean_p@1": 0.75}
    )
    assert list(results.metrics()) == ["ImageNet-1K_p@1", "MSCOCO_t2i_p@1", "Emoji_t2i_p@1", "mean_p@1"]
    one = EvaluationResults({"Emoji_t2i": results.datasets["Emoji_t2i"]})
    assert one.metrics(prefix="eval_") == {"eval_Emoji_t2i_p@1": 0.5}  # no mean of a single dataset

    assert EvaluationResults.from_dict(results.to_dict()) == results
    assert EvaluationResults.load(os.path.join(output_dir, "summary.json")) == results
    for name, result in results.datasets.items():
        assert DatasetResult.load(os.path.join(output_dir, f"{name}.json")) == result


def test_dataset_without_negatives_resumes_and_reports(data_dir, tmp_path):
    rows = [mmeb_row("cat", tgt_img_path=["images/cat.png"]), mmeb_row("dog", tgt_img_path=["images/dog.png"])]
    output_dir = str(tmp_path / "out")
    evaluator = MMEBEvaluator({"Single": rows}, image_root=data_dir, output_dir=output_dir, show_progress_bar=False)
    first = evaluator(FakeEncoder())
    assert math.isnan(first.datasets["Single"].similarity.hardest_negative_mean)
    with open(os.path.join(output_dir, "Single.json")) as f:
        stored = json.load(f)
    assert stored == {
        **STORED_RESULT, "per_query": "Single_per_query.npz", "run": {**STORED_RESULT["run"], "image_root": data_dir}
    }  # fmt: skip

    encoder = FakeEncoder()
    second = evaluator(encoder)
    assert encoder.items == [] and second.to_dict() == first.to_dict()
    summary = format_summary(second)
    assert "| Single | other | - | 100.0 | 100.0 | 100.0 | 100.0 | 1.000 | - | - | 2 |" in summary
    assert "only candidate" in summary and "- Single: 2 of 2 queries" in summary


def test_candidates_that_all_duplicate_the_ground_truth_are_reported(data_dir, tmp_path, caplog):
    """Every candidate of row 0 repeats its ground truth: dropped, the query is right whatever the model."""
    rows = [
        mmeb_row("cat", tgt_img_path=["images/cat.png"] * 3, tgt_text=["a cat"] * 3),
        mmeb_row("dog", tgt_img_path=["images/dog.png", "images/cat.png"]),
    ]
    output_dir = str(tmp_path / "out")
    evaluator = MMEBEvaluator({"Dup": rows}, image_root=data_dir, output_dir=output_dir, show_progress_bar=False)
    with caplog.at_level("WARNING"):
        result = evaluator(FakeEncoder()).datasets["Dup"]
    assert result.counts.num_single_candidate == 1 and result.counts.num_duplicate_positives == 2
    assert "Dataset 'Dup': 1 of 2 queries have no candidate besides the ground truth" in caplog.text
    with open(os.path.join(output_dir, "Dup.json")) as f:
        assert json.load(f)["counts"]["num_single_candidate"] == 1
    with open(os.path.join(output_dir, "summary.md")) as f:
        assert "- Dup: 1 of 2 queries" in f.read()
    with open(os.path.join(output_dir, "summary.json")) as f:
        assert json.load(f)["datasets"]["Dup"]["counts"]["num_single_candidate"] == 1


def test_resume_skips_finished_datasets(data_dir, tmp_path):
    output_dir = str(tmp_path / "out")
    first = MMEBEvaluator(data_dir, output_dir=output_dir, show_progress_bar=False)(FakeEncoder())

    encoder = FakeEncoder()
    second = MMEBEvaluator(data_dir, output_dir=output_dir, show_progress_bar=False)(encoder)
    assert encoder.items == []
    assert second == first

    os.remove(os.path.join(output_dir, "MSCOCO_t2i.json"))
    encoder = FakeEncoder()
    third = MMEBEvaluator(data_dir, output_dir=output_dir, show_progress_bar=False)(encoder)
    assert len(encoder.items) == NUM_ITEMS["MSCOCO_t2i"]
    assert third == first


def test_resume_refuses_results_of_another_run(data_dir, tmp_path):
    output_dir = str(tmp_path / "out")
    first = MMEBEvaluator(data_dir, datasets=["ImageNet-1K"], output_dir=output_dir, show_progress_bar=False)
    first.evaluate(FakeEncoder())
    path = os.path.join(output_dir, "ImageNet-1K.json")
    with open(path) as f:
        stored = json.load(f)
    assert stored["run"] == {
        "model": "FakeEncoder",
        "weights": None,  # a bare encode callable has no weights to fingerprint
        "data": data_dir,
        "split": "test",
        "max_queries": None,
        "image_root": data_dir,
    }

    class OtherEncoder(FakeEncoder):
        pass

    other_root = str(tmp_path / "copy")
    write_concept_images(os.path.join(other_root, "images"))
    changes = [
        ({"max_queries": 2}, "max_queries: None there, 2 now"),
        ({"image_root": other_root}, f"image_root: '{data_dir}' there, '{other_root}' now"),
        ({"split": "validation"}, "split: 'test' there, 'validation' now"),
        ({}, "model: 'FakeEncoder' there, '.*OtherEncoder' now"),
    ]
    for kwargs, difference in changes:
        encoder = OtherEncoder() if not kwargs else FakeEncoder()
        evaluator = MMEBEvaluator(
            data_dir, datasets=["ImageNet-1K", "MSCOCO_t2i"], output_dir=output_dir, show_progress_bar=False, **kwargs
        )
        with pytest.raises(ValueError, match=f"ImageNet-1K.json holds results of another run \\({difference}\\)"):
            evaluator.evaluate(encoder)
        assert encoder.items == []  # checked before any dataset is encoded
    with open(path) as f:
        assert json.load(f) == stored
    assert not os.path.exists(os.path.join(output_dir, "MSCOCO_t2i.json"))

    # Other data pointed at the same output (a copy of the folder holding only ImageNet-1K).
    copy = tmp_path / "copy"
    pq.write_table(pa.Table.from_pylist(IMAGENET), copy / "ImageNet-1K.parquet")
    with pytest.raises(ValueError, match="data: .* there, .*copy' now.*delete the file to evaluate ImageNet-1K"):
        MMEBEvaluator(str(copy), output_dir=output_dir, show_progress_bar=False).evaluate(FakeEncoder())


def test_missing_matplotlib_fails_before_encoding(data_dir, tmp_path, monkeypatch):
    output_dir = str(tmp_path / "out")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install llave-hf\[eval\]`, or pass histograms=False"):
        MMEBEvaluator(data_dir, output_dir=output_dir)
    MMEBEvaluator(data_dir)  # nothing written, no histogram
    MMEBEvaluator(data_dir, output_dir=output_dir, histograms=False, show_progress_bar=False).evaluate(FakeEncoder())
    assert sorted(os.listdir(output_dir)) == [
        "Emoji_t2i.json", "Emoji_t2i_per_query.npz", "ImageNet-1K.json", "ImageNet-1K_per_query.npz",
        "MSCOCO_t2i.json", "MSCOCO_t2i_per_query.npz", "summary.json", "summary.md",
    ]  # fmt: skip
    monkeypatch.undo()

    # The scores are written before the plot: a failing plot loses no work.
    def broken_plot(*args, **kwargs):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(evaluator_module, "save_similarity_histogram", broken_plot)
    os.remove(os.path.join(output_dir, "MSCOCO_t2i.json"))
    evaluator = MMEBEvaluator(data_dir, datasets=["MSCOCO_t2i"], output_dir=output_dir, show_progress_bar=False)
    with pytest.raises(RuntimeError, match="plot failed"):
        evaluator.evaluate(FakeEncoder())
    with open(os.path.join(output_dir, "MSCOCO_t2i.json")) as f:
        assert json.load(f)["scores"]["precision@1"] == 1.0


def test_in_memory_hub_and_max_queries(data_dir, monkeypatch):
    image_root = os.path.join(data_dir, "images")
    strip = [{**row, "qry_img_path": os.path.basename(row["qry_img_path"])} for row in IMAGENET]
    columns = {key: [row[key] for row in MSCOCO_T2I] for key in MSCOCO_T2I[0]}
    columns["tgt_img_path"] = [[os.path.basename(p) for p in paths] for paths in columns["tgt_img_path"]]
    evaluator = MMEBEvaluator(
        {"ImageNet-1K": strip, "MSCOCO_t2i": columns}, image_root=image_root, max_queries=3, show_progress_bar=False
    )
    encoder = FakeEncoder()
    results = evaluator(encoder)
    assert results.datasets["ImageNet-1K"].precision_at_1 == 1.0  # the wrong row 3 is cut off
    assert results.datasets["ImageNet-1K"].counts.num_queries == 3
    assert results.datasets["MSCOCO_t2i"].counts.num_queries == 2
    assert (IMAGE_TARGET, os.path.join(image_root, "fish.png")) in encoder.items
    assert (CLASSIFY, os.path.join(image_root, "fish.png")) not in encoder.items  # query of the cut row

    import datasets

    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        return datasets.Dataset.from_list(IMAGENET)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    hub = MMEBEvaluator("TIGER-Lab/MMEB-eval", datasets=["ImageNet-1K"], image_root=data_dir, show_progress_bar=False)
    assert hub(FakeEncoder()).datasets["ImageNet-1K"].precision_at_1 == 0.75
    assert calls == [("TIGER-Lab/MMEB-eval", "ImageNet-1K", "test")]
    assert MMEBEvaluator("TIGER-Lab/MMEB-eval").dataset_names == list(MMEB_DATASETS)


def _row(**changes):
    return {**IMAGENET[1], **changes}


@pytest.mark.parametrize(
    "rows, message",
    [
        ([_row(), _row(tgt_text=[], tgt_img_path=[])], "Dataset 'Bad', row 1: empty candidate list"),
        ([_row(tgt_text=["dog", "cat"], tgt_img_path=[""])], "row 0: tgt_text has 2 items but tgt_img_path has 1"),
        ([{"qry_text": "x", "qry_img_path": "", "tgt_text": ["y"]}], r"row 0: missing column\(s\) \['tgt_img_path'\]"),
        ({"qry_text": ["x"], "qry_img_path": [""], "tgt_text": [["y"]]}, r"'Bad': missing column\(s\) \['tgt_img_"),
        ([_row(), _row(tgt_img_path=["", "images/zebra.png", ""])], "row 1, candidate 1 = 'images/zebra.png': image"),
        ([_row(tgt_text="dog")], "row 0: tgt_text must be a list, got str"),
        ([_row(tgt_text=["", "cat"], tgt_img_path=["", ""])], "row 0: candidate 0 has neither text nor image"),
        ([_row(qry_text=3)], "row 0: qry text must be a string, got 3"),
        ([], "Dataset 'Bad' has no rows"),
    ],
)
def test_bad_input_fails_before_encoding(data_dir, rows, message):
    encoder = FakeEncoder()
    evaluator = MMEBEvaluator({"Bad": rows}, image_root=data_dir, show_progress_bar=False)
    with pytest.raises(MMEBDataError, match=message):
        evaluator(encoder)
    assert encoder.items == []


def test_bad_input_in_files(data_dir):
    table = pa.Table.from_pylist([{"qry_text": "x", "qry_img_path": ""}])
    pq.write_table(table, os.path.join(data_dir, "Bad.parquet"))
    with pytest.raises(MMEBDataError, match=r"Dataset 'Bad': missing column\(s\) \['tgt_text', 'tgt_img_path'\]"):
        MMEBEvaluator(data_dir, datasets=["Bad"]).prepare("Bad")
    with pytest.raises(MMEBDataError, match=r"Dataset\(s\) \['Nope'\] not found"):
        MMEBEvaluator(data_dir, datasets=["ImageNet-1K", "Nope"])
    with open(os.path.join(data_dir, "Broken.jsonl"), "w") as f:
        f.write(json.dumps(IMAGENET[0]) + "\n{not json\n")
    with pytest.raises(MMEBDataError, match="Dataset 'Broken', .*Broken.jsonl line 2"):
        MMEBEvaluator(data_dir, datasets=["Broken"]).prepare("Broken")
    with pytest.raises(TypeError, match="with `encode` or an encode callable, got Linear"):
        MMEBEvaluator(data_dir, datasets=["ImageNet-1K"])(torch.nn.Linear(2, 2))
    with pytest.raises(MMEBDataError, match="image file not found: .*elsewhere.*cat.png"):
        MMEBEvaluator(data_dir, datasets=["ImageNet-1K"], image_root=os.path.join(data_dir, "elsewhere")).prepare(
            "ImageNet-1K"
        )


def test_aggregate_reproduces_llave_7b():
    # LLaVE-7B per-dataset P@1 from the paper, in MMEB_DATASETS order.
    paper = [
        77.1, 82.1, 74.3, 90.3, 79.1, 45.1, 51.6, 90.9, 46.2, 20.1,
        71.1, 70.8, 90.3, 53.5, 62.2, 55.8, 54.4, 48.5, 68.4, 79.4,
        83.0, 54.5, 76.6, 81.2, 78.9, 74.7, 67.0, 90.4, 23.3, 63.9, 68.0, 89.1,
        87.0, 95.4, 92.8, 92.5,
    ]  # fmt: skip
    scores = dict(zip(MMEB_DATASETS, paper))
    published = {"Classification": 65.7, "VQA": 65.4, "Retrieval": 70.9, "Grounding": 91.9}
    published.update({"IND": 75.0, "OOD": 64.4, "Overall": 70.3})

    aggregate = aggregate_mmeb({**scores, "Emoji_t2i": 12.0})
    for key, value in published.items():
        assert aggregate.means[key] == pytest.approx(value, abs=0.1), key
    assert aggregate.num_datasets == {
        "Classification": 10, "VQA": 10, "Retrieval": 12, "Grounding": 4, "IND": 20, "OOD": 16, "Overall": 36,
    }  # fmt: skip
    assert aggregate.other == {"Emoji_t2i": 12.0}


def test_cli_end_to_end_with_tiny_model(data_dir, tmp_path, capsys):
    from llave_hf.testing import tiny_model_and_processor

    model, processor = tiny_model_and_processor("llava_onevision")
    model_dir, output_dir = str(tmp_path / "model"), str(tmp_path / "out")
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    capsys.readouterr()  # drop what saving printed (deepspeed's first import announces the accelerator on stdout)
    main(["--model", model_dir, "--data", data_dir, "--datasets", "ImageNet-1K", "MSCOCO_t2i"]
         + ["--output", output_dir, "--batch-size", "4", "--max-queries", "3"])  # fmt: skip

    printed = capsys.readouterr().out
    assert "| ImageNet-1K | Classification | IND |" in printed and "| MSCOCO_t2i | Retrieval | IND |" in printed
    assert sorted(os.listdir(output_dir)) == [
        "ImageNet-1K.json", "ImageNet-1K_per_query.npz", "ImageNet-1K_similarity.png", "MSCOCO_t2i.json",
        "MSCOCO_t2i_per_query.npz", "MSCOCO_t2i_similarity.png", "summary.json", "summary.md",
    ]  # fmt: skip
    with open(os.path.join(output_dir, "ImageNet-1K.json")) as f:
        result = json.load(f)
    assert result["counts"]["num_queries"] == 3 and 0.0 <= result["scores"]["precision@1"] <= 1.0
    assert -1.0 <= result["similarity"]["positive_mean"] <= 1.0
    # The random tiny model's own cosines, recomputed directly, give the same P@1.
    texts = [row["tgt_text"] for row in IMAGENET[:3]]
    queries = model.encode(
        texts=[CLASSIFY] * 3, images=[os.path.join(data_dir, row["qry_img_path"]) for row in IMAGENET[:3]]
    )
    right = 0
    for query, candidates in zip(queries, texts):
        unique = list(dict.fromkeys(candidates))  # the duplicate of the positive is dropped
        scores = model.encode(texts=unique) @ query
        right += int(scores[0] > scores[1:].max())
    assert result["scores"]["precision@1"] == pytest.approx(right / 3)
    assert result["run"]["model"] == model_dir and result["run"]["max_queries"] == 3
    # A model built in memory has no path: its config stands for it.
    assert MMEBEvaluator(data_dir).run_signature(model).model.startswith("config sha256:")

    # A second run skips the finished datasets: their files are not rewritten, and the summary is complete.
    written = {name: os.stat(os.path.join(output_dir, name)).st_mtime_ns for name in os.listdir(output_dir)}
    main(["--model", model_dir, "--data", data_dir, "--datasets", "ImageNet-1K", "MSCOCO_t2i"]
         + ["--output", output_dir, "--batch-size", "4", "--max-queries", "3"])  # fmt: skip
    assert capsys.readouterr().out == printed
    for name in ("ImageNet-1K.json", "ImageNet-1K_similarity.png", "MSCOCO_t2i.json", "MSCOCO_t2i_similarity.png"):
        assert os.stat(os.path.join(output_dir, name)).st_mtime_ns == written[name], name
    with open(os.path.join(output_dir, "summary.json")) as f:
        summary = json.load(f)
    assert list(summary["datasets"]) == ["ImageNet-1K", "MSCOCO_t2i"]
    assert summary["datasets"]["ImageNet-1K"] == result and summary["aggregate"]["num_datasets"]["Overall"] == 2

    # Other weights at the same path (a retrained model) are another run: refused, not skipped with the old scores.
    name, parameter = list(model.named_parameters())[-1]
    with torch.no_grad():
        parameter[0] += 1e-3
    model.save_pretrained(model_dir)
    difference = r"weights: 'sha256:[0-9a-f]{16}' there, 'sha256:[0-9a-f]{16}' now"
    with pytest.raises(ValueError, match=f"ImageNet-1K.json holds results of another run \\({difference}\\)"):
        main(["--model", model_dir, "--data", data_dir, "--datasets", "ImageNet-1K", "MSCOCO_t2i"]
             + ["--output", output_dir, "--batch-size", "4", "--max-queries", "3"])  # fmt: skip


def test_weights_fingerprint_follows_the_values_in_memory():
    from llave_hf.testing import tiny_model_and_processor

    model, _ = tiny_model_and_processor("qwen2", seed=0)
    fingerprint = evaluator_module._weights_fingerprint
    first = fingerprint(model)
    assert first == fingerprint(model.encode) == fingerprint(tiny_model_and_processor("qwen2", seed=0)[0])
    assert fingerprint(tiny_model_and_processor("qwen2", seed=1)[0]) != first
    # a tensor larger than the values read from it: a training step (every value moves) changes the fingerprint
    embeddings = model.get_input_embeddings().weight
    assert embeddings.numel() > evaluator_module._FINGERPRINT_VALUES_PER_TENSOR
    with torch.no_grad():
        embeddings.add_(torch.randn_like(embeddings) * 1e-4)
    assert fingerprint(model) != first
    assert fingerprint(FakeEncoder()) is None
