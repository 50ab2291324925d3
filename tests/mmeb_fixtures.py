"""Tiny MMEB-format datasets on disk. MMEB-train: solid-colour shape images (32x32 PNG) and their captions as
parquet. MMEB-eval: concept-coloured images, three small datasets and `FakeEncoder`, whose right answers are known by
construction."""

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from datasets import Dataset
from PIL import Image, ImageDraw


COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 60, 220), "yellow": (240, 220, 40),
    "purple": (130, 40, 170), "orange": (250, 140, 20), "black": (10, 10, 10), "pink": (250, 150, 200),
}  # fmt: skip
SHAPES = ("square", "circle")
I2T = "<|image_1|> Find a caption describing the given image."
T2I = "Find me an everyday image that matches the given caption: "
IMAGE_TARGET = "<|image_1|> Represent the given image."


def draw(colour: str, shape: str, size: int = 32) -> Image.Image:
    """A white image with a coloured square (filling it) or circle."""
    image = Image.new("RGB", (size, size), "white")
    drawing = ImageDraw.Draw(image)
    if shape == "square":
        drawing.rectangle((0, 0, size - 1, size - 1), fill=COLOURS[colour])
    else:
        drawing.ellipse((4, 4, size - 5, size - 5), fill=COLOURS[colour])
    return image


def make_mmeb_fixture(root: Path, num_colours: int = len(COLOURS), split_subsets: bool = True) -> dict:
    """
    Writes `root/images/<colour>_<shape>.png` and MMEB-train rows: subset `ToyI2T` (image -> caption) and `ToyT2I`
    (caption -> image), each with a hard negative (the other shape of the same colour). With `split_subsets`, one
    parquet file per subset in `root/data/`, else a single `root/data/train.parquet` with a `subset` column.

    Returns the paths (`data`, `image_root`) and the rows per subset.
    """
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(parents=True, exist_ok=True)
    subsets = {"ToyI2T": [], "ToyT2I": []}
    for colour in list(COLOURS)[:num_colours]:
        for shape in SHAPES:
            other = SHAPES[1 - SHAPES.index(shape)]
            draw(colour, shape).save(root / "images" / f"{colour}_{shape}.png")
            caption, negative = f"a {colour} {shape}", f"a {colour} {other}"
            path, negative_path = f"images/{colour}_{shape}.png", f"images/{colour}_{other}.png"
            subsets["ToyI2T"].append(
                {"qry": I2T, "qry_image_path": path, "pos_text": caption, "pos_image_path": "", "neg_text": negative,
                 "neg_image_path": ""}
            )  # fmt: skip
            subsets["ToyT2I"].append(
                {"qry": T2I + caption, "qry_image_path": "", "pos_text": IMAGE_TARGET, "pos_image_path": path,
                 "neg_text": IMAGE_TARGET, "neg_image_path": negative_path}
            )  # fmt: skip
    if split_subsets:
        for name, rows in subsets.items():
            Dataset.from_list(rows).to_parquet(str(root / "data" / f"{name}.parquet"))
    else:
        rows = [{**row, "subset": name} for name, subset_rows in subsets.items() for row in subset_rows]
        Dataset.from_list(rows).to_parquet(str(root / "data" / "train.parquet"))
    data = root / "data" if split_subsets else root / "data" / "train.parquet"
    return {"data": data, "image_root": root, "subsets": subsets}


# ---- MMEB-eval format: tiny datasets whose right answers are known by construction ----

CONCEPTS = ("cat", "dog", "bird", "fish")
CONCEPT_COLORS = {(255, 0, 0): "cat", (0, 255, 0): "dog", (0, 0, 255): "bird", (255, 255, 0): "fish"}
CLASSIFY = "<|image_1|> Represent the given image for classification."


class FakeEncoder:
    """Embeds by content, so right answers are known by construction: one dimension per concept, +1 for each concept
    word in the text and +1 for the concept whose colour the image has. Records every item it is asked for."""

    def __init__(self):
        self.items = []

    def __call__(self, texts, images, **kwargs):
        self.items.extend(zip(texts, images))
        embeddings = torch.zeros(len(texts), len(CONCEPTS) + 1)
        for row, (text, image) in enumerate(zip(texts, images)):
            for word in (text or "").split():
                if word in CONCEPTS:
                    embeddings[row, CONCEPTS.index(word)] += 1
            if image is not None:
                embeddings[row, CONCEPTS.index(CONCEPT_COLORS[Image.open(image).getpixel((0, 0))])] += 1
            if not embeddings[row].any():
                embeddings[row, -1] = 1
        return embeddings


def mmeb_row(qry_text, qry_img_path="", tgt_text=None, tgt_img_path=None) -> dict:
    """A row in MMEB-eval format; missing candidate texts / image paths are empty strings, as in MMEB files."""
    size = len(tgt_text if tgt_text is not None else tgt_img_path)
    return {
        "qry_text": qry_text,
        "qry_img_path": qry_img_path,
        "tgt_text": tgt_text if tgt_text is not None else [""] * size,
        "tgt_img_path": tgt_img_path if tgt_img_path is not None else [""] * size,
    }


# ImageNet-1K: image queries, label candidates. Rows 0-2 right; row 3 shows a fish but its ground truth is "bird"
# (wrong on purpose): P@1 0.75 with FakeEncoder. Row 0 lists its positive twice: the copy is dropped, not counted as
# a tied negative.
IMAGENET = [
    mmeb_row(CLASSIFY, "images/cat.png", ["cat", "dog", "cat", "bird"]),
    mmeb_row(CLASSIFY, "images/dog.png", ["dog", "cat", "fish"]),
    mmeb_row(CLASSIFY, "images/bird.png", ["bird", "fish", "dog"]),
    mmeb_row(CLASSIFY, "images/fish.png", ["bird", "fish", "cat"]),
]
# MSCOCO_t2i: text queries, image candidates (image-only, or with the MMEB image template); both right.
MSCOCO_T2I = [
    mmeb_row(T2I + "a dog", tgt_img_path=["images/dog.png", "images/cat.png"]),
    mmeb_row(
        T2I + "a bird",
        tgt_text=[IMAGE_TARGET] * 3,
        tgt_img_path=["images/bird.png", "images/fish.png", "images/dog.png"],
    ),
]
# A custom dataset outside MMEB: one right, one wrong (P@1 0.5).
EMOJI = [
    mmeb_row("fish", tgt_img_path=["images/fish.png", "images/cat.png"]),
    mmeb_row("bird", tgt_img_path=["images/cat.png", "images/bird.png"]),
]


def write_concept_images(folder) -> None:
    """`<concept>.png`: a 4x4 image of the concept's colour."""
    os.makedirs(folder, exist_ok=True)
    for color, concept in CONCEPT_COLORS.items():
        Image.new("RGB", (4, 4), color).save(os.path.join(folder, f"{concept}.png"))


def make_mmeb_eval_fixture(root: Path) -> str:
    """Writes `root/images/` and three datasets in MMEB-eval format: `ImageNet-1K.parquet`, `MSCOCO_t2i.jsonl` and
    `Emoji_t2i.parquet` (outside MMEB). Returns the folder, as `MMEBEvaluator(data=...)` takes it."""
    write_concept_images(root / "images")
    pq.write_table(pa.Table.from_pylist(IMAGENET), root / "ImageNet-1K.parquet")
    with open(root / "MSCOCO_t2i.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in MSCOCO_T2I)
    pq.write_table(pa.Table.from_pylist(EMOJI), root / "Emoji_t2i.parquet")
    return str(root)
