"""Tiny contrastive datasets and a minimal collator for trainer tests, independent of `llave_hf.collator`'s
`ContrastiveCollator`: it builds the `ContrastiveBatch` (whose docstring gives the row layout) from in-memory rows.
"""

import zlib

import numpy as np
import torch
from PIL import Image

from llave_hf.collator import ContrastiveBatch
from llave_hf.trainer_config import ContrastiveTrainingArguments


COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "pink", "brown", "grey", "cyan"]


def colour_image(index: int, size: int = 32) -> Image.Image:
    """A distinct, deterministic image per index (noise around a base colour; odd ones are wide)."""
    rng = np.random.RandomState(index)
    height, width = (size, size) if index % 2 == 0 else (size // 2, size)
    base = rng.randint(0, 256, 3)
    pixels = np.clip(base + rng.randint(-30, 30, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def rows(count: int, with_images: bool = True, negatives: int = 0) -> list[dict]:
    """`count` query/target pairs: image->caption and caption->image alternate when `with_images`."""
    items = []
    for index in range(count):
        caption = f"a {COLOURS[index % len(COLOURS)]} square number {index}"
        item = {"query": caption, "query_image": None, "target": f"caption {index}", "target_image": None}
        if with_images and index % 2 == 0:
            item.update(query="<|image_1|> Find a caption describing the given image.", query_image=index)
            item.update(target=caption)
        elif with_images:
            item.update(target="<|image_1|> Represent the given image.", target_image=index)
        item["negatives"] = [f"a distractor {index} {k}" for k in range(negatives)]
        items.append(item)
    return items


def tiny_training_args(output_dir: str, **overrides) -> ContrastiveTrainingArguments:
    """Deterministic arguments for comparing runs: sequential data, constant lr, no clipping or decay, no saving."""
    values = dict(
        output_dir=output_dir,
        use_cpu=True,
        per_device_train_batch_size=6,
        max_steps=2,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=0.0,
        train_sampling_strategy="sequential",
        dataloader_drop_last=True,
        loss_mask_false_negatives=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        seed=0,
    )
    values.update(overrides)
    return ContrastiveTrainingArguments(**values)


# Plain SGD for runs compared with each other: Adam's first update is lr * g / |g| whatever the scale of g, so a
# doubled loss (a missing DDP average, a doubled accumulation division) would move the parameters exactly as the right
# one. With SGD the update is lr * g: a doubled gradient moves the tiny models' parameters 0.07 further (lr 1e-3, the
# first step's gradient norm is about 400), far beyond the comparisons' tolerances.
SGD_COMPARISON = dict(optim="sgd", learning_rate=1e-3)


def content_id(text: str, image) -> int:
    return zlib.crc32(f"{text}\x00{image}".encode())


class TinyCollator:
    def __init__(self, processor):
        self.processor = processor

    def __call__(self, batch: list[dict]) -> ContrastiveBatch:
        negatives = len(batch[0]["negatives"])
        texts = [row["query"] for row in batch] + [row["target"] for row in batch]
        images = [row["query_image"] for row in batch] + [row["target_image"] for row in batch]
        texts += [text for row in batch for text in row["negatives"]]
        images += [None] * (len(batch) * negatives)
        images = [colour_image(index) if index is not None else None for index in images]
        return ContrastiveBatch(
            inputs=self.processor(text=texts, images=images),
            num_queries=len(batch),
            num_negatives=negatives,
            query_ids=torch.tensor([content_id(r["query"], r["query_image"]) for r in batch]),
            target_ids=torch.tensor([content_id(r["target"], r["target_image"]) for r in batch]),
            negative_ids=(
                torch.tensor([[content_id(t, None) for t in r["negatives"]] for r in batch]) if negatives else None
            ),
        )
