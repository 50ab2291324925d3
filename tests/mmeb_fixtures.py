"""Tiny MMEB-train-format datasets on disk: solid-colour shape images (32x32 PNG) and their captions as parquet."""

from pathlib import Path

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
