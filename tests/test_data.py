"""MMEB-train loading, the contrastive batch and collator, the modality/length-grouped sampler, processor building."""

import json
import os

import pytest
import torch
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset
from accelerate.utils import send_to_device
from mmeb_fixtures import I2T, T2I, draw, make_mmeb_fixture
from PIL import Image
from torch.utils.data import DataLoader
from transformers import BatchFeature

from llave_hf.collator import ContrastiveBatch, ContrastiveCollator, content_id
from llave_hf.mmeb_train import REQUIRED_COLUMNS, load_mmeb_train
from llave_hf.sampler import ModalityLengthGroupedSampler
from llave_hf.processors import build_processor, load_processor
from llave_hf.testing import FAMILIES, tiny_backbone_config, tiny_image_processor, tiny_processor, tiny_tokenizer


COLUMNS = ["qry", "qry_image_path", "pos_text", "pos_image_path", "neg_text", "neg_image_path", "subset", "row_id"]


@pytest.fixture
def fixture(tmp_path):
    return make_mmeb_fixture(tmp_path / "mmeb", num_colours=4)


# ------------------------------------------------------------------------------------------------------------------
# loading


def test_folder_of_subset_files_with_caps_and_selection(fixture):
    full = load_mmeb_train(fixture["data"])
    assert full.column_names == COLUMNS
    assert full["subset"] == ["ToyI2T"] * 8 + ["ToyT2I"] * 8
    assert full["row_id"] == list(range(16))

    capped = load_mmeb_train(fixture["data"], subsets=["ToyT2I", "ToyI2T"], max_rows_per_subset=3)
    assert capped["subset"] == ["ToyT2I"] * 3 + ["ToyI2T"] * 3  # in the order asked for
    assert capped["qry"][:3] == [row["qry"] for row in fixture["subsets"]["ToyT2I"][:3]]  # the FIRST rows
    assert capped["row_id"] == list(range(6))
    # the placeholder is kept as written: the processor swaps it for the backbone's image token
    assert capped[3]["qry"] == I2T and capped[3]["qry_image_path"] == "images/red_square.png"


def test_single_file_with_a_subset_column(tmp_path):
    fixture = make_mmeb_fixture(tmp_path, num_colours=4, split_subsets=False)
    dataset = load_mmeb_train(fixture["data"], subsets=["ToyT2I"], max_rows_per_subset=2)
    assert dataset["subset"] == ["ToyT2I"] * 2
    assert dataset["qry"] == [T2I + "a red square", T2I + "a red circle"]
    with pytest.raises(FileNotFoundError, match="Subset.*Nope.*has ToyI2T, ToyT2I"):
        load_mmeb_train(fixture["data"], subsets=["Nope"])


def test_hub_layout_folder_picks_the_split(tmp_path):
    rows = {column: ["x"] for column in REQUIRED_COLUMNS}
    for subset in ("A", "B"):
        (tmp_path / subset).mkdir()
        Dataset.from_dict(rows).to_parquet(str(tmp_path / subset / "original-00000-of-00001.parquet"))
        Dataset.from_dict({**rows, "qry": ["diverse"]}).to_parquet(
            str(tmp_path / subset / "diverse_instruction-00000-of-00001.parquet")
        )
    dataset = load_mmeb_train(tmp_path, subsets=["B"])
    assert dataset["subset"] == ["B"] and dataset["qry"] == ["x"]
    assert load_mmeb_train(tmp_path, split="diverse_instruction")["qry"] == ["diverse", "diverse"]


def test_jsonl_without_negatives_and_require_negatives(tmp_path):
    with open(tmp_path / "Toy.jsonl", "w") as file:
        for index in range(3):
            file.write(
                json.dumps({"qry": f"q{index}", "qry_image_path": "", "pos_text": "p", "pos_image_path": ""}) + "\n"
            )
    dataset = load_mmeb_train(tmp_path / "Toy.jsonl")
    assert dataset.column_names == COLUMNS and dataset["neg_text"] == ["", "", ""]
    with pytest.raises(ValueError, match="No training rows"):
        load_mmeb_train(tmp_path / "Toy.jsonl", require_negatives=True)


def test_require_negatives_counts_the_negatives_a_row_holds(tmp_path, caplog):
    """`require_negatives=n` keeps the rows holding at least n hard negatives (lists count each entry), as training
    with `num_hard_negatives=n` needs; `True` means one."""
    records = [
        {**ROW, "qry": "none"},
        {**ROW, "qry": "one", "neg_text": "n", "neg_image_path": ""},
        {**ROW, "qry": "two", "neg_text": ["n1", "n2"], "neg_image_path": ["", ""]},
        {**ROW, "qry": "image and text", "neg_text": ["n1", ""], "neg_image_path": ["", "x.png"]},
        {**ROW, "qry": "one of two empty", "neg_text": ["n1", ""], "neg_image_path": ["", ""]},
    ]
    path = _jsonl(tmp_path / "Toy.jsonl", records)
    assert load_mmeb_train(path, require_negatives=True)["qry"] == [r["qry"] for r in records[1:]]
    with caplog.at_level("WARNING"):
        kept = load_mmeb_train(path, require_negatives=2)["qry"]
    assert kept == ["two", "image and text"]
    assert "Dropped 3 of 5 rows with fewer than 2 hard negative(s)" in caplog.text


def test_missing_column_names_the_file_and_the_expected_columns(tmp_path):
    Dataset.from_dict({"qry": ["q"], "pos_text": ["p"]}).to_parquet(str(tmp_path / "Broken.parquet"))
    with pytest.raises(ValueError) as error:
        load_mmeb_train(tmp_path)
    message = str(error.value)
    assert "Broken.parquet" in message and "missing column(s) qry_image_path, pos_image_path" in message
    assert "qry, qry_image_path, pos_text, pos_image_path" in message and "neg_text" in message


ROW = {"qry": "q", "qry_image_path": "", "pos_text": "p", "pos_image_path": ""}


def _jsonl(path, records) -> str:
    with open(path, "wb") as file:
        for record in records:
            file.write(record if isinstance(record, bytes) else json.dumps(record).encode() + b"\n")
    return str(path)


@pytest.mark.parametrize(
    "write, message",
    [
        (  # an int-typed column
            lambda d: pq.write_table(pa.table({**{k: ["q", "r"] for k in ROW}, "pos_text": [1, 2]}), f"{d}/A.parquet"),
            r"A.parquet, row 0, column 'pos_text': expected a string, got int 1\.",
        ),
        (  # a list of image paths
            lambda d: _jsonl(f"{d}/A.jsonl", [ROW, ROW, {**ROW, "qry_image_path": ["a.png", "b.png"]}]),
            r"A.jsonl, line 3 \(row 2\), column 'qry_image_path': expected a string, got list \['a.png', 'b.png'\]",
        ),
        (  # an int among strings (a blank line holds no row)
            lambda d: _jsonl(f"{d}/A.jsonl", [ROW, b"\n", ROW, {**ROW, "pos_text": 7}, ROW]),
            r"A.jsonl, line 4 \(row 2\), column 'pos_text': expected a string, got int 7\.",
        ),
        (lambda d: _jsonl(f"{d}/A.jsonl", [b"\n"]), r"A.jsonl: empty file, no rows"),
        (
            lambda d: pq.write_table(pa.table({k: pa.array([], pa.string()) for k in ROW}), f"{d}/A.parquet"),
            r"A.parquet: empty file, no rows",
        ),
        (lambda d: open(f"{d}/A.parquet", "wb").close(), r"A.parquet: not a readable parquet file"),
        (  # Latin-1, which datasets loads and a dataloader worker fails to decode mid-training
            lambda d: _jsonl(f"{d}/A.jsonl", [ROW, b'{"qry": "caf\xe9", "qry_image_path": "", "pos_text": "p", '
                                                b'"pos_image_path": ""}\n']),
            r"A.jsonl, line 2 \(row 1\), column 'qry': bytes b'\\xe9' at byte 12 of the line are not UTF-8",
        ),
        (
            lambda d: _jsonl(f"{d}/A.jsonl", [ROW, b'{"qry": "q", "qry_image_path": ""\n']),
            r"A.jsonl, line 2 \(row 1\): not valid JSON",
        ),
    ],
    ids=["int column", "list of image paths", "int among strings", "empty jsonl", "empty parquet",
         "zero-byte parquet", "not utf-8", "not json"],
)  # fmt: skip
def test_bad_files_fail_at_load_naming_the_file_row_and_column(tmp_path, write, message):
    write(tmp_path)
    with pytest.raises(ValueError, match=message):
        load_mmeb_train(tmp_path)


def test_bad_row_in_a_shard_names_that_shard_and_lists_of_negatives_load(tmp_path):
    (tmp_path / "A").mkdir()
    for shard, pos_text in enumerate((["p"] * 3, [None, None, 5])):  # an int-typed column in the second shard
        table = pa.table({**{k: ["q"] * 3 for k in ROW}, "pos_text": pos_text})
        pq.write_table(table, tmp_path / "A" / f"original-0000{shard}-of-00002.parquet")
    with pytest.raises(ValueError, match=r"original-00001-of-00002.parquet, row 2, column 'pos_text': .* got int 5"):
        load_mmeb_train(tmp_path)
    # negatives may be one string or a list of strings per row
    good = [{**ROW, "neg_text": "n"}, {**ROW, "neg_text": ["n1", "n2"], "neg_image_path": ["", ""]}]
    dataset = load_mmeb_train(_jsonl(tmp_path / "B.jsonl", good))
    assert dataset["neg_text"] == ["n", ["n1", "n2"]]


# ------------------------------------------------------------------------------------------------------------------
# collator


def test_content_ids_are_stable_63_bit_and_normalised():
    a = content_id("Yes", "")
    assert a == content_id("  yes ", None) == content_id("YES", "") and 0 <= a < 2**63
    assert content_id("<|image_1|> Represent it.", "img/a.png") == content_id(
        "<|image_1|>  represent it.", "img//a.png"
    )
    assert content_id("<|image_1|> Represent it.", "img/a.png") != content_id("<|image_1|> Represent it.", "img/b.png")
    assert a == 111534123614633465  # a fixed hash (not Python's salted `hash`): equal in every process and run


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_vl"])
def test_collator_layout(fixture, family):
    processor = tiny_processor(family)
    dataset = load_mmeb_train(fixture["data"], max_rows_per_subset=2)  # 2 image queries, then 2 text queries
    rows = [dataset[i] for i in range(4)]
    batch = ContrastiveCollator(processor, num_hard_negatives=1, image_root=fixture["image_root"])(rows)
    assert isinstance(batch, ContrastiveBatch) and (batch.num_queries, batch.num_negatives) == (4, 1)

    def item(text, path):
        return (text or None, Image.open(fixture["image_root"] / path) if path else None)

    items = [item(r["qry"], r["qry_image_path"]) for r in rows] + [
        item(r["pos_text"], r["pos_image_path"]) for r in rows
    ]
    items += [item(r["neg_text"], r["neg_image_path"]) for r in rows]
    expected = processor(text=[text for text, _ in items], images=[image for _, image in items])
    assert batch.inputs.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(batch.inputs[key], expected[key], rtol=0, atol=0)

    assert batch.query_ids.tolist() == [content_id(r["qry"], r["qry_image_path"]) for r in rows]
    assert batch.target_ids.tolist() == [content_id(r["pos_text"], r["pos_image_path"]) for r in rows]
    assert batch.negative_ids.tolist() == [[content_id(r["neg_text"], r["neg_image_path"])] for r in rows]
    # MMEB's placeholder became the backbone's image token, at the start of the user turn
    prompt = processor.tokenizer.decode(batch.inputs["input_ids"][0])
    assert f"user\n{processor.image_start_token}{processor.image_token}" in prompt
    assert "<|image_1|>" not in prompt


def test_without_negatives_and_text_only_backbone():
    rows = [
        {"qry": f"question {i}", "qry_image_path": "", "pos_text": f"answer {i}", "pos_image_path": ""}
        for i in range(3)
    ]
    batch = ContrastiveCollator(tiny_processor("qwen2"))(rows)
    assert batch.inputs["input_ids"].shape[0] == 6 and batch.negative_ids is None
    assert batch.num_negatives == 0


def _batch(size: int = 2, negatives: int = 1) -> ContrastiveBatch:
    rows = size * (2 + negatives)
    inputs = BatchFeature({"input_ids": torch.arange(rows * 3).view(rows, 3), "pixel_values": torch.ones(size, 3, 2)})
    ids = torch.arange(size)
    negative_ids = torch.arange(size * negatives).view(size, negatives) if negatives else None
    return ContrastiveBatch(inputs, size, negatives, query_ids=ids, target_ids=ids + 10, negative_ids=negative_ids)


def test_contrastive_batch_splits_embeddings_and_checks_its_layout():
    batch = _batch(size=2, negatives=2)
    embeddings = torch.arange(8.0)[:, None].expand(8, 3)
    query, target, negatives = batch.split(embeddings)
    assert query[:, 0].tolist() == [0, 1] and target[:, 0].tolist() == [2, 3]
    assert negatives.shape == (2, 2, 3) and negatives[:, :, 0].tolist() == [[4, 5], [6, 7]]  # query-major
    assert _batch(size=2, negatives=0).split(embeddings[:4])[2] is None
    with pytest.raises(ValueError, match="7 embeddings for a batch of 8 rows"):
        batch.split(embeddings[:7])
    with pytest.raises(ValueError, match=r"negative_ids: shape None, expected \(2, 2\)"):
        ContrastiveBatch(batch.inputs, 2, 2, query_ids=batch.query_ids, target_ids=batch.target_ids)
    with pytest.raises(ValueError, match=r"query_ids: shape \(3,\), expected \(2,\)"):
        ContrastiveBatch(batch.inputs, 2, 0, query_ids=torch.arange(3), target_ids=batch.target_ids)


def test_contrastive_batch_moves_like_a_batch_feature(monkeypatch):
    batch = _batch()
    # accelerate's prepared dataloaders move batches with send_to_device: it must keep the type
    moved = send_to_device(batch, "cpu", non_blocking=True)
    assert isinstance(moved, ContrastiveBatch) and torch.equal(moved.inputs["input_ids"], batch.inputs["input_ids"])
    cast = batch.to("cpu", dtype=torch.bfloat16)  # DeepSpeed's dtype: floating-point inputs only
    assert cast.inputs["pixel_values"].dtype == torch.bfloat16 and cast.inputs["input_ids"].dtype == torch.long
    assert cast.query_ids.dtype == cast.negative_ids.dtype == torch.long
    assert batch.inputs["pixel_values"].dtype == torch.float32  # the original is left as it was

    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda tensor: pinned.append(tensor.shape) or tensor)
    batch.pin_memory()
    assert len(pinned) == 5  # input_ids, pixel_values and the three id tensors


def _break_images(fixture):
    (fixture["image_root"] / "images" / "red_square.png").unlink()  # row 0 (ToyI2T) query image
    (fixture["image_root"] / "images" / "red_circle.png").write_bytes(b"not a png")  # row 1 query image


def test_bad_images_name_the_row_and_the_file(fixture):
    _break_images(fixture)
    dataset = load_mmeb_train(fixture["data"])
    collator = ContrastiveCollator(tiny_processor("llava_onevision"), image_root=fixture["image_root"])
    with pytest.raises(FileNotFoundError, match=r"row 0 \(ToyI2T\) query: image file not found: .*red_square\.png"):
        collator([dataset[0], dataset[2]])
    with pytest.raises(ValueError, match=r"row 1 \(ToyI2T\) query: cannot read image file .*red_circle\.png"):
        collator([dataset[2], dataset[1]])
    with pytest.raises(ValueError, match=r"row 2 \(ToyI2T\): 1 hard negative\(s\), num_hard_negatives=2"):
        ContrastiveCollator(tiny_processor("llava_onevision"), num_hard_negatives=2, image_root=fixture["image_root"])(
            [dataset[2]]
        )


def test_skip_bad_samples_replaces_or_drops_and_counts(fixture):
    _break_images(fixture)
    dataset = load_mmeb_train(fixture["data"])
    processor = tiny_processor("llava_onevision")
    rows = [dataset[i] for i in (0, 1, 2, 3)]

    dropping = ContrastiveCollator(processor, image_root=fixture["image_root"], skip_bad_samples=True)
    batch = dropping(rows)
    assert batch.num_queries == 2 and dropping.num_skipped == 2
    assert batch.query_ids.tolist() == [content_id(dataset[i]["qry"], dataset[i]["qry_image_path"]) for i in (2, 3)]

    replacing = ContrastiveCollator(
        processor, image_root=fixture["image_root"], skip_bad_samples=True, dataset=dataset
    )
    first, again = replacing(rows), replacing(rows)
    assert first.num_queries == 4 and replacing.num_skipped == 4  # batch size kept: processes stay in step
    assert torch.equal(first.target_ids, again.target_ids)  # replacements are deterministic
    assert len(set(first.target_ids.tolist())) == 4  # ... and are not rows already in the batch


def test_skip_bad_samples_covers_failures_in_the_processor(fixture):
    """A 64-px image takes 113 tokens with the tiny LLaVA-OneVision, over max_length 90: the processor fails the whole
    batch, after the per-row checks passed. Row 0 has one (its query), and so has row 12, the first replacement drawn
    for row 0 (its target), which must be rejected in turn."""
    dataset = load_mmeb_train(fixture["data"])
    for path in (dataset[0]["qry_image_path"], dataset[12]["pos_image_path"]):
        colour, shape = os.path.splitext(os.path.basename(path))[0].split("_")
        draw(colour, shape, size=64).save(fixture["image_root"] / path)
    processor = tiny_processor("llava_onevision")
    processor.max_length = 90
    rows = [dataset[i] for i in (0, 2, 3)]
    strict = ContrastiveCollator(processor, image_root=fixture["image_root"])
    with pytest.raises(ValueError, match=r"row 0 \(ToyI2T\) query: the prompt template and image tokens alone"):
        strict(rows)

    replacing = ContrastiveCollator(processor, image_root=fixture["image_root"], skip_bad_samples=True, dataset=dataset)
    batch = replacing(rows)
    assert batch.num_queries == 3 and replacing.num_skipped == 1  # batch size kept
    kept = [content_id(dataset[i]["qry"], dataset[i]["qry_image_path"]) for i in (2, 3)]
    assert batch.query_ids.tolist() == [*kept, content_id(dataset[13]["qry"], dataset[13]["qry_image_path"])]
    assert batch.inputs["attention_mask"].sum(1).max() <= 90
    assert torch.equal(replacing(rows).target_ids, batch.target_ids)  # replacements are deterministic

    dropping = ContrastiveCollator(processor, image_root=fixture["image_root"], skip_bad_samples=True)
    batch = dropping([dataset[i] for i in (2, 12, 3)])
    assert batch.num_queries == 2 and dropping.num_skipped == 1
    assert batch.query_ids.tolist() == [content_id(dataset[i]["qry"], dataset[i]["qry_image_path"]) for i in (2, 3)]


def test_skip_count_is_shared_with_dataloader_workers(fixture):
    _break_images(fixture)
    dataset = load_mmeb_train(fixture["data"])
    collator = ContrastiveCollator(
        tiny_processor("llava_onevision"), image_root=fixture["image_root"], skip_bad_samples=True, dataset=dataset
    )
    batches = list(DataLoader(dataset, batch_size=8, collate_fn=collator, num_workers=1))
    # rows 0, 1 (query images) and 8, 9 (the same images as targets), counted in the worker process
    assert [b.num_queries for b in batches] == [8, 8] and collator.num_skipped == 4


# ------------------------------------------------------------------------------------------------------------------
# sampler


def test_grouped_sampler_batches_one_modality_and_is_deterministic():
    image_queries = [i % 3 == 0 for i in range(50)]
    lengths = [(i * 37) % 101 for i in range(50)]
    sampler = ModalityLengthGroupedSampler(lengths, image_queries, batch_size=4, world_size=2, seed=1)
    order = list(sampler)
    assert sorted(order) == list(range(50))
    full = len(order) - (17 % 8 + 33 % 8)  # the mixed leftovers come last
    for start in range(0, full, 4):
        batch = order[start : start + 4]
        assert len({image_queries[i] for i in batch}) == 1, batch
    for start in range(0, full, 8):  # a mega-batch: longest first, dealt to the ranks in order
        megabatch = [lengths[i] for i in order[start : start + 8]]
        assert megabatch == sorted(megabatch, reverse=True)

    assert list(sampler) == order
    sampler.set_epoch(1)
    assert list(sampler) != order
    assert list(ModalityLengthGroupedSampler(lengths, image_queries, 4, 2, seed=2)) != order


def test_grouped_sampler_from_dataset(fixture):
    dataset = load_mmeb_train(fixture["data"])
    sampler = ModalityLengthGroupedSampler.from_dataset(dataset, batch_size=4)
    order = list(sampler)
    assert len(sampler) == 16 and sorted(order) == list(range(16))
    for start in range(0, 16, 4):
        assert len({bool(dataset[i]["qry_image_path"]) for i in order[start : start + 4]}) == 1


# ------------------------------------------------------------------------------------------------------------------
# processors


PROCESSOR_FIELDS = ("backbone_type", "image_token", "image_start_token", "image_end_token", "num_image_tokens")
# Hand-derived from the tiny configs: 32-px images, 8-px patches -> 16 features per tile or image. `backbone_type` is
# the backbone config's model_type (the family table's key).
EXPECTED_PROCESSOR_FIELDS = {
    "llava_onevision": ("llava_onevision", "<image>", "", "", 16),  # SigLIP: no CLS token
    "llava": ("llava", "<image>", "", "", 16),  # CLIP: the "default" strategy drops the CLS token
    "qwen2_vl": ("qwen2_vl", "<|image_pad|>", "<|vision_start|>", "<|vision_end|>", None),
    "qwen2_5_vl": ("qwen2_5_vl", "<|image_pad|>", "<|vision_start|>", "<|vision_end|>", None),
    "qwen3_vl": ("qwen3_vl", "<|image_pad|>", "<|vision_start|>", "<|vision_end|>", None),
    "qwen2": ("qwen2", "<image>", "", "", None),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_build_processor_reads_the_backbone_config(family):
    tokenizer = tiny_tokenizer()
    built = build_processor(
        tiny_backbone_config(family, tokenizer), tokenizer, tiny_image_processor(family), max_length=512
    )
    assert type(built).__name__ == ("LlaveTextProcessor" if family == "qwen2" else "LlaveProcessor")
    assert tuple(getattr(built, name) for name in PROCESSOR_FIELDS) == EXPECTED_PROCESSOR_FIELDS[family]


def test_load_processor_from_a_backbone_folder(tmp_path, make_image):
    tokenizer = tiny_tokenizer()
    reference = tiny_processor("llava_onevision", tokenizer)
    tokenizer.save_pretrained(tmp_path)
    reference.image_processor.save_pretrained(tmp_path)
    loaded = load_processor(str(tmp_path), tiny_backbone_config("llava_onevision", tokenizer), max_length=512)
    inputs = dict(text=["<|image_1|> Represent the given image.", "a caption"], images=[make_image(20, 50), None])
    for key, value in reference(**inputs).items():
        torch.testing.assert_close(loaded(**inputs)[key], value, rtol=0, atol=0)
