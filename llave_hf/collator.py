# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""The training batch of a LLaVE model: `ContrastiveBatch`, and `ContrastiveCollator`, which builds it from MMEB-train
rows (`llave_hf.mmeb_train`)."""

import dataclasses
import hashlib
import multiprocessing
import os
import posixpath
import random
import unicodedata
from collections.abc import Callable

import torch
from datasets import Dataset
from transformers import BatchFeature
from transformers.utils import logging

from .image_paths import resolve_image_path
from .mmeb_train import row_negatives
from .modeling.processing_llave import DEFAULT_MAX_IMAGE_PIXELS, load_image, load_video


# Paths the collator decodes as videos (the rest are images).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v")


logger = logging.get_logger(__name__)

__all__ = ["ContrastiveBatch", "ContrastiveCollator", "content_id"]


@dataclasses.dataclass
class ContrastiveBatch:
    """
    One contrastive micro-batch: queries, their targets and hard negatives as the rows of ONE processor batch, so that
    the model encodes them in one forward pass (DDP allows one per step), plus content ids for false-negative masking.

    With B queries and n hard negatives per query, the `B * (2 + n)` rows of `inputs` are:

        [0, B)              queries
        [B, 2B)             targets: row B + i is the positive of query i
        [2B, 2B + B * n)    hard negatives, query-major: row 2B + i * n + j is negative j of query i

    `split` cuts the model's embeddings of these rows into `(query, target, hard_negatives)`. Content ids are
    63-bit hashes of an item's normalised content (`content_id`): equal ids mark identical items (the class label
    "Yes" twice), which the loss can exclude as negatives. Any collator returning this works with
    `ContrastiveTrainer`; `ContrastiveCollator` builds it from MMEB-train rows.

    Args:
        inputs (`BatchFeature`): the processor's output for all rows (`input_ids`, `attention_mask` and the
            backbone's image inputs).
        num_queries (`int`): B.
        num_negatives (`int`): n, hard negatives per query (0 = in-batch negatives only).
        query_ids (`torch.LongTensor` of shape `(B,)`): content ids of the queries.
        target_ids (`torch.LongTensor` of shape `(B,)`): content ids of the targets.
        negative_ids (`torch.LongTensor` of shape `(B, n)`, *optional*): content ids of the hard negatives; `None`
            when n = 0.
    """

    inputs: BatchFeature
    num_queries: int
    num_negatives: int
    query_ids: torch.Tensor
    target_ids: torch.Tensor
    negative_ids: torch.Tensor | None = None

    def __post_init__(self):
        size, count = self.num_queries, self.num_negatives
        shapes = {"query_ids": (size,), "target_ids": (size,), "negative_ids": (size, count) if count else None}
        for name, expected in shapes.items():
            value = getattr(self, name)
            shape = None if value is None else tuple(value.shape)
            if shape != expected:
                raise ValueError(f"ContrastiveBatch.{name}: shape {shape}, expected {expected} (B={size}, n={count}).")

    @property
    def num_rows(self) -> int:
        """Rows of `inputs`: B * (2 + n)."""
        return self.num_queries * (2 + self.num_negatives)

    def split(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """`(query (B, dim), target (B, dim), hard_negatives (B, n, dim) or None)` from the embeddings of the rows."""
        if embeddings.shape[0] != self.num_rows:
            raise ValueError(
                f"{embeddings.shape[0]} embeddings for a batch of {self.num_rows} rows "
                f"(B={self.num_queries} queries, n={self.num_negatives} negatives each)."
            )
        size = self.num_queries
        query, target = embeddings[:size], embeddings[size : 2 * size]
        hard_negatives = embeddings[2 * size :].view(size, self.num_negatives, -1) if self.num_negatives else None
        return query, target, hard_negatives

    def to(self, device=None, dtype: torch.dtype | None = None, non_blocking: bool = False) -> "ContrastiveBatch":
        """The batch on `device`; `dtype` casts the floating-point inputs only (pixel values), as `BatchFeature.to`.

        accelerate's prepared dataloaders call it (`send_to_device` moves any object with a `to` method).
        """

        def move(tensor: torch.Tensor) -> torch.Tensor:
            cast = dtype if tensor.is_floating_point() else None
            return tensor.to(device=device, dtype=cast, non_blocking=non_blocking)

        return self._map_tensors(move)

    def pin_memory(self) -> "ContrastiveBatch":
        """The batch in pinned memory (`DataLoader(pin_memory=True)` calls it), for faster copies to the GPU."""
        return self._map_tensors(torch.Tensor.pin_memory)

    def _map_tensors(self, function: Callable[[torch.Tensor], torch.Tensor]) -> "ContrastiveBatch":
        inputs = BatchFeature(
            {key: function(value) if isinstance(value, torch.Tensor) else value for key, value in self.inputs.items()}
        )
        return dataclasses.replace(
            self,
            inputs=inputs,
            query_ids=function(self.query_ids),
            target_ids=function(self.target_ids),
            negative_ids=None if self.negative_ids is None else function(self.negative_ids),
        )


def content_id(text: str | None, image_path: str | None) -> int:
    """A stable 63-bit id of an item's content: NFKC-normalised, case-folded text with collapsed whitespace, plus the
    normalised relative image path. Equal ids mark identical items (e.g. the class label "Yes" twice)."""
    normalised = " ".join(unicodedata.normalize("NFKC", text or "").split()).casefold()
    path = posixpath.normpath(image_path.replace("\\", "/")) if image_path else ""
    digest = hashlib.blake2b(f"{normalised}\x00{path}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # fits a non-negative int64


class ContrastiveCollator:
    """
    Turns MMEB-train rows (`llave_hf.mmeb_train.load_mmeb_train`) into a `ContrastiveBatch` (its docstring gives the
    row layout). Images and videos (paths ending in `VIDEO_EXTENSIONS`) are opened here, i.e. lazily in the
    dataloader workers; a backbone without a video path refuses video rows.

    Bad rows (a missing or unreadable image, an item with neither text nor image, a placeholder without an image,
    fewer hard negatives than `num_hard_negatives`, or any failure of the processor on the row, such as a prompt
    whose template and image tokens alone exceed `max_length`) raise an error naming the row (`row_id`, its subset)
    and the file. With `skip_bad_samples=True` they are replaced instead, each by a good row drawn from `dataset`
    (deterministically from the bad row's id; a replacement passes the processor on its own), so that every batch
    keeps its size: processes that gather embeddings must hold batches of
    equal size, and an uneven one would hang them. Without `dataset` bad rows are dropped, which is safe only in a
    single process or without gathering. Skipped rows are logged and counted in `num_skipped` (shared with the
    dataloader workers).

    Args:
        processor: the model's `LlaveProcessor`.
        num_hard_negatives: hard negatives per query taken from `neg_text`/`neg_image_path` (0 = none).
        image_root: folder the image paths are relative to (default: the working directory). A path that leads out
            of it (absolute, `..`, a symbolic link pointing out) is a bad row (`llave_hf.image_paths`).
        allow_absolute_image_paths: trust the data's image paths: absolute ones and those leading out of the root are
            used as given.
        skip_bad_samples: replace (or drop) bad rows instead of raising.
        dataset: the training dataset, to draw replacements for bad rows from.
        max_replacement_attempts: draws per bad row before giving up with an error.
    """

    def __init__(
        self,
        processor,
        *,
        num_hard_negatives: int = 0,
        image_root: str | os.PathLike | None = None,
        allow_absolute_image_paths: bool = False,
        skip_bad_samples: bool = False,
        dataset: Dataset | None = None,
        max_replacement_attempts: int = 16,
    ):
        if num_hard_negatives < 0:
            raise ValueError(f"num_hard_negatives must be >= 0, got {num_hard_negatives}.")
        self.processor = processor
        self.num_hard_negatives = num_hard_negatives
        self.image_root = os.fspath(image_root) if image_root is not None else None
        self.allow_absolute_image_paths = allow_absolute_image_paths
        self.skip_bad_samples = skip_bad_samples
        self.dataset = dataset
        self.max_replacement_attempts = max_replacement_attempts
        # shared memory: the collator runs in the dataloader workers, the count is read in the main process
        self._num_skipped = multiprocessing.Value("q", 0)

    @property
    def num_skipped(self) -> int:
        """Bad rows skipped so far in this process (its dataloader workers included)."""
        return self._num_skipped.value

    def _item(self, text: str, path: str, name: str) -> tuple[str | None, object, object]:
        """An item's text and loaded image or video (a path with a video extension, `VIDEO_EXTENSIONS`); raises
        naming the item and the file when it is unusable."""
        image = video = None
        if path:
            path = resolve_image_path(path, self.image_root, name, self.allow_absolute_image_paths)
            if path.lower().endswith(VIDEO_EXTENSIONS):
                video = load_video(path, name, self.processor.video_fps, self.processor.video_max_frames)
            else:
                image = load_image(path, name, getattr(self.processor, "max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS))
        visual = image is not None or video is not None
        self.processor.format_text(text or None, visual, name=name)  # validates text and placeholder
        return text or None, image, video

    def _example(self, row: dict, position: int) -> dict:
        name = f"row {row['row_id']} ({row['subset']})" if "row_id" in row else f"batch row {position}"
        negatives = row_negatives(row)
        if len(negatives) < self.num_hard_negatives:
            raise ValueError(
                f"{name}: {len(negatives)} hard negative(s), num_hard_negatives={self.num_hard_negatives} "
                f"(load with require_negatives={self.num_hard_negatives} to drop such rows)."
            )
        pairs = [(row["qry"], row["qry_image_path"], "query"), (row["pos_text"], row["pos_image_path"], "target")]
        pairs += [(text, path, f"negative {k}") for k, (text, path) in enumerate(negatives[: self.num_hard_negatives])]
        names = [f"{name} {role}" for *_, role in pairs]
        items = [self._item(text or "", path or "", item_name) for (text, path, _), item_name in zip(pairs, names)]
        ids = [content_id(text, path) for text, path, _ in pairs]
        return {"items": items, "ids": ids, "names": names, "row": row}

    def _replacement(self, row: dict, taken: set[int]) -> dict:
        rng = random.Random(int(row["row_id"]))
        for _ in range(self.max_replacement_attempts):
            index = rng.randrange(len(self.dataset))
            if index in taken:
                continue
            candidate = self.dataset[index]
            try:
                example = self._example(candidate, 0)
                self._process([example])  # a replacement must not fail the batch in the processor either
            except MemoryError:
                raise
            except Exception as error:
                logger.warning(f"Replacement candidate rejected: {error}")
                continue
            taken.add(index)
            return example
        raise RuntimeError(
            f"row {row['row_id']}: no good replacement found in {self.max_replacement_attempts} draws; is most of the "
            "data broken?"
        )

    def _skip(self, error: Exception) -> None:
        with self._num_skipped.get_lock():
            self._num_skipped.value += 1
        logger.warning(f"Skipping a bad training row: {error}")

    def _process(self, examples: list[dict]) -> BatchFeature:
        """The processor's batch of the examples' items in `ContrastiveBatch` order."""
        size, count = len(examples), self.num_hard_negatives
        # queries, then targets, then negatives query-major: item k of each example sits at block k
        order = [(k, e) for k in (0, 1) for e in range(size)]
        order += [(2 + j, e) for e in range(size) for j in range(count)]
        texts = [examples[e]["items"][k][0] for k, e in order]
        images = [examples[e]["items"][k][1] for k, e in order]
        videos = [examples[e]["items"][k][2] for k, e in order]
        names = [examples[e]["names"][k] for k, e in order]
        has_video = any(video is not None for video in videos)
        return self.processor(text=texts, images=images, videos=videos if has_video else None, item_names=names)

    def _without_processor_failures(self, examples: list[dict], taken: set[int], error: Exception) -> list[dict]:
        """After the processor failed on the batch: the examples it takes one by one, plus replacements of the
        others. Re-raises `error` when every example passes alone (not a per-row failure)."""
        kept, failed = [], []
        for example in examples:
            try:
                self._process([example])
            except MemoryError:
                raise
            except Exception as row_error:
                self._skip(row_error)
                failed.append(example["row"])
            else:
                kept.append(example)
        if not failed:
            raise error
        if self.dataset is not None:
            kept += [self._replacement(row, taken) for row in failed]
        return kept

    def __call__(self, rows: list[dict]) -> ContrastiveBatch:
        examples, bad = [], []
        for position, row in enumerate(rows):
            try:
                examples.append(self._example(row, position))
            except (FileNotFoundError, ValueError, TypeError) as error:
                if not self.skip_bad_samples:
                    raise
                self._skip(error)
                bad.append(row)
        taken = {int(row["row_id"]) for row in rows if "row_id" in row}
        if bad and self.dataset is not None:
            examples += [self._replacement(row, taken) for row in bad]
        if not examples:
            raise ValueError(f"Every row of the batch is bad ({len(rows)} rows).")
        try:
            inputs = self._process(examples)
        except Exception as error:
            # The processor fails a whole batch for one row (e.g. its template and image tokens alone exceed
            # max_length): find that row by processing the rows one by one, only on this rare path.
            if not self.skip_bad_samples or isinstance(error, MemoryError):
                raise
            examples = self._without_processor_failures(examples, taken, error)
            if not examples:
                raise ValueError(f"Every row of the batch is bad ({len(rows)} rows).") from error
            inputs = self._process(examples)

        ids = torch.tensor([example["ids"] for example in examples], dtype=torch.long)
        count = self.num_hard_negatives
        return ContrastiveBatch(
            inputs=inputs,
            num_queries=len(examples),
            num_negatives=count,
            query_ids=ids[:, 0],
            target_ids=ids[:, 1],
            negative_ids=ids[:, 2:] if count else None,
        )
