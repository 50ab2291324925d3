"""How much of a training step's computed tokens are real, on a realistic MMEB-train mix, for three designs:

- released: the released LLaVE code, queries and targets as two forwards, each padded to its own longest row;
- one-forward: one padded forward of queries and targets together (llave-hf with `sub_batching=False`);
- sub-batched: one forward call that runs length sub-batches (`config.sub_batching=True`).

The mix: the 20 MMEB-train subsets in equal shares (LLaVE takes the first 50K rows of each), micro-batches of 4 pairs
ordered by `ModalityLengthGroupedSampler` with 8 processes, as the released recipe. Each item's length is that of
its LLaVE prompt for the Qwen tokenizer: 21 template tokens, about 1.3 tokens per word of instruction and text
(MMEB's instructions; content lengths drawn per subset), plus the image tokens of LLaVE-0.5B's anyres tiling
(1x1 to 2x2 tiles of 384 px, 729 tokens per tile, `count_anyres_tokens`) for an image size drawn around the typical
size of the subset's source (COCO photos 640x480, document scans 1700x2200, infographics 1000x2800, ...).

Then it times training steps (forward, hardness-weighted loss, backward) on CPU of a scaled-down LLaVA-OneVision
(4 layers, hidden 256, a 1-layer SigLIP at 384 px, frozen) on batches drawn from that mix, the three designs
interleaved on the same batches, and prints the step-time ratios against the one-forward design.

    python benchmarks/bench_padding.py [--batches 4000] [--timed-batches 3] [--overhead 256]
"""

import argparse
import math
import random
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image
from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil

from llave_hf import LlaveEmbeddingConfig, LlaveEmbeddingModel, LlaveProcessor
from llave_hf.loss import hardness_weighted_contrastive_loss
from llave_hf.modeling.backbones import count_anyres_tokens
from llave_hf.modeling.modeling_llave import length_sub_batches
from llave_hf.sampler import ModalityLengthGroupedSampler
from llave_hf.testing import SPECIAL_TOKENS, tiny_tokenizer


TEMPLATE_TOKENS = 21  # the LLaVE (Qwen chat) prompt around the user text, in Qwen tokens
TOKENS_PER_WORD = 1.3
PAIRS_PER_DEVICE, PROCESSES = 4, 8  # the released recipe: per-device batch 4 on 8 GPUs
TILE, TILE_TOKENS = 384, 729
PINPOINTS = [[TILE * h, TILE * w] for h in (1, 2) for w in (1, 2)]

# Typical (width, height) of each image source; drawn with +-20% jitter and a random orientation where photos vary.
IMAGE_KINDS = {
    "photo": (500, 375),  # ImageNet, VOC, SUN
    "meme": (600, 500),
    "coco": (640, 480),  # COCO (OK-VQA, A-OKVQA, Visual7W, VisDial, MSCOCO)
    "news": (1024, 683),
    "document": (1700, 2200),
    "infographic": (1000, 2800),
    "chart": (800, 600),
    "nlvr": (600, 400),  # CIRR
    "nights": (512, 512),
    "web": (800, 600),
    "crop": (160, 120),  # MSCOCO grounding targets: object crops
}


def _side(words: tuple[int, int], image: str | None, instruction: str) -> dict:
    return {"words": words, "image": image, "instruction": instruction}


_CLASSIFY = "Represent the given image for classification."
_VQA = "Represent the given image with the following question:"
_IMAGE = "Represent the given image."
# Per subset: (query, target) as (content words range, image kind or None, instruction).
MIX = {
    "ImageNet_1K": (_side((0, 0), "photo", _CLASSIFY), _side((1, 3), None, "")),
    "HatefulMemes": (_side((0, 0), "meme", "Represent the given image for binary classification to determine whether it constitutes hateful speech or not."), _side((1, 1), None, "")),  # noqa: E501
    "SUN397": (_side((0, 0), "photo", "Identify the scene shown in the image."), _side((1, 3), None, "")),
    "N24News": (_side((15, 40), "news", "Represent the given news image with the following caption for domain classification."), _side((1, 1), None, "")),  # noqa: E501
    "VOC2007": (_side((0, 0), "photo", "Identify the object shown in the image."), _side((1, 2), None, "")),
    "OK-VQA": (_side((6, 14), "coco", _VQA), _side((1, 3), None, "")),
    "A-OKVQA": (_side((6, 16), "coco", _VQA), _side((1, 4), None, "")),
    "DocVQA": (_side((6, 14), "document", _VQA), _side((1, 5), None, "")),
    "InfographicsVQA": (_side((8, 20), "infographic", _VQA), _side((1, 4), None, "")),
    "ChartQA": (_side((6, 16), "chart", _VQA), _side((1, 2), None, "")),
    "Visual7W": (_side((5, 12), "coco", _VQA), _side((2, 8), None, "")),
    "VisDial": (_side((80, 160), None, "Represent the given dialogue about an image, which is used for image retrieval:"), _side((0, 0), "coco", _IMAGE)),  # noqa: E501
    "CIRR": (_side((8, 20), "nlvr", "Given an image, find a similar everyday image with the described changes:"), _side((0, 0), "nlvr", _IMAGE)),  # noqa: E501
    "NIGHTS": (_side((0, 0), "nights", "Find a day-to-day image that looks similar to the provided image."), _side((0, 0), "nights", _IMAGE)),  # noqa: E501
    "WebQA": (_side((8, 20), None, "Find a Wikipedia image that answers this question:"), _side((8, 25), "web", "Represent the given Wikipedia image with related text information:")),  # noqa: E501
    "VisualNews_i2t": (_side((0, 0), "news", "Find a caption for the news in the given photo."), _side((12, 30), None, "")),  # noqa: E501
    "VisualNews_t2i": (_side((12, 30), None, "Retrieve an image of this news caption."), _side((0, 0), "news", _IMAGE)),  # noqa: E501
    "MSCOCO_t2i": (_side((8, 16), None, "Find me an everyday image that matches the given caption:"), _side((0, 0), "coco", _IMAGE)),  # noqa: E501
    "MSCOCO_i2t": (_side((0, 0), "coco", "Find an image caption describing the given everyday image."), _side((8, 16), None, "")),  # noqa: E501
    "MSCOCO": (_side((1, 3), "coco", "Select the portion of the image that isolates the object labeled as"), _side((0, 0), "crop", _IMAGE)),  # noqa: E501
}
SUBSETS = tuple(MIX)  # MMEB-train's 20 (checked against llave_hf.mmeb_train in main)


def anyres_tokens(width: int, height: int) -> int:
    """Image tokens of a (width, height) image under LLaVE's 2x2 anyres tiling of 384-px tiles."""
    processor = SimpleNamespace(
        num_image_tokens=TILE_TOKENS,
        vision_aspect_ratio="anyres_max_9",
        image_processor=SimpleNamespace(size={"height": TILE, "width": TILE}, image_grid_pinpoints=PINPOINTS),
    )
    return count_anyres_tokens(processor, {"image_sizes": torch.tensor([[height, width]])})[0]


def draw_item(side: dict, rng: random.Random) -> dict:
    """One item: its token count, text tokens and image size (or None)."""
    words = len(side["instruction"].split()) + rng.randint(*side["words"])
    text_tokens = TEMPLATE_TOKENS + math.ceil(TOKENS_PER_WORD * words)
    size = None
    if side["image"] is not None:
        width, height = IMAGE_KINDS[side["image"]]
        width, height = round(width * rng.uniform(0.8, 1.2)), round(height * rng.uniform(0.8, 1.2))
        if side["image"] in ("photo", "coco", "nlvr", "web") and rng.random() < 0.25:
            width, height = height, width  # portrait photos
        size = (width, height)
    image_tokens = anyres_tokens(*size) if size else 0
    return {"length": text_tokens + image_tokens, "text_tokens": text_tokens, "image_size": size}


def draw_rows(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        subset = rng.choice(SUBSETS)
        query_side, target_side = MIX[subset]
        rows.append({"subset": subset, "query": draw_item(query_side, rng), "target": draw_item(target_side, rng)})
    return rows


def micro_batches(rows: list[dict], pairs: int = PAIRS_PER_DEVICE) -> list[list[dict]]:
    """Micro-batches in the trainer's order: modality and length grouped (lengths as the sampler's: characters of
    text, here words stand in via text tokens)."""
    sampler = ModalityLengthGroupedSampler(
        [row["query"]["text_tokens"] + row["target"]["text_tokens"] for row in rows],
        [row["query"]["image_size"] is not None for row in rows],
        batch_size=pairs,
        world_size=PROCESSES,
    )
    order = list(sampler)
    batches = [order[start : start + pairs] for start in range(0, len(order), pairs)]
    return [[rows[index] for index in batch] for batch in batches if len(batch) == pairs]


def computed(batch: list[dict], design: str, overhead: int) -> tuple[int, int]:
    """(tokens, attention pairs) computed for a micro-batch, padding included."""
    queries = [row["query"]["length"] for row in batch]
    targets = [row["target"]["length"] for row in batch]
    if design == "released":
        groups = [queries, targets]
    elif design == "one-forward":
        groups = [queries + targets]
    else:
        lengths = queries + targets
        groups = [[lengths[i] for i in rows] for rows in length_sub_batches(lengths, overhead)]
    return sum(len(g) * max(g) for g in groups), sum(len(g) * max(g) ** 2 for g in groups)


DESIGNS = ("released", "one-forward", "sub-batched")


def report_shares(batches: list[list[dict]], overhead: int) -> None:
    real = sum(row[side]["length"] for batch in batches for row in batch for side in ("query", "target"))
    real_pairs = sum(row[side]["length"] ** 2 for batch in batches for row in batch for side in ("query", "target"))
    rows = 2 * PAIRS_PER_DEVICE * len(batches)
    print(f"{len(batches)} micro-batches of {PAIRS_PER_DEVICE} pairs, {real / rows:,.0f} real tokens per row")
    print(f"{'design':<14}{'real / computed tokens':>24}{'real / computed attention':>28}")
    for design in DESIGNS:
        totals = [computed(batch, design, overhead) for batch in batches]
        tokens, pairs = sum(t for t, _ in totals), sum(p for _, p in totals)
        print(f"{design:<14}{real / tokens:>24.3f}{real_pairs / pairs:>28.3f}")


# ---------------------------------------------------------------------------------------------------------------------
# CPU step time


def anyres_processor(tokenizer, tile: int = TILE, tile_tokens: int = TILE_TOKENS) -> LlaveProcessor:
    """A LLaVA-OneVision `LlaveProcessor` with LLaVE's 1x1 to 2x2 tiling of `tile`-px tiles."""
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": tile, "width": tile},
        image_grid_pinpoints=[[tile * h, tile * w] for h in (1, 2) for w in (1, 2)],
        image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )  # fmt: skip
    return LlaveProcessor(image_processor, tokenizer, backbone_type="llava_onevision", num_image_tokens=tile_tokens)


def scaled_down_model() -> tuple[LlaveEmbeddingModel, LlaveProcessor]:
    """LLaVA-OneVision with a 4-layer, 256-wide language model and a 1-layer SigLIP at 384 px (729 tokens a tile),
    its tower frozen, and its processor."""
    tokenizer = tiny_tokenizer()
    text = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=4, max_position_embeddings=8192,
    )  # fmt: skip
    vision = SiglipVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2, image_size=TILE,
        patch_size=14, vision_use_head=False,
    )  # fmt: skip
    backbone = LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"), image_grid_pinpoints=PINPOINTS,
        vision_aspect_ratio="anyres_max_9", vision_feature_layer=-1, vision_feature_select_strategy="full",
    )  # fmt: skip
    config = LlaveEmbeddingConfig(backbone_config=backbone)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = LlaveEmbeddingModel(config).train()
    model.freeze_vision_tower()
    return model, anyres_processor(tokenizer)


def batch_inputs(batch: list[dict], processor: LlaveProcessor, seed: int) -> dict:
    """Model inputs of a micro-batch (queries, then targets) with the mix's text lengths and image sizes: random text
    ids around the image tokens (as many as `processor` expands each image to), random images."""
    rng = np.random.RandomState(seed)
    items = [row["query"] for row in batch] + [row["target"] for row in batch]
    images = [
        Image.fromarray(rng.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        for size in (item["image_size"] for item in items)
        if size is not None
    ]
    image_inputs, counts = processor.process_images(images) if images else ({}, [])
    counts = iter(counts)
    image_token, vocab_size = processor.image_token_id, len(processor.tokenizer)
    rows = []
    for item in items:
        ids = torch.from_numpy(rng.randint(len(SPECIAL_TOKENS), vocab_size, item["text_tokens"]))
        if item["image_size"] is not None:  # the image goes after the template's first 14 tokens
            ids = torch.cat([ids[:14], torch.full((next(counts),), image_token), ids[14:]])
        rows.append(ids)
    longest = max(len(ids) for ids in rows)
    input_ids = torch.zeros(len(rows), longest, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)], attention_mask[row, : len(ids)] = ids, 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, **image_inputs}


def _slice(inputs: dict, rows: slice, model) -> dict:
    from llave_hf.grad_cache import slice_rows

    return slice_rows(inputs, rows.start, rows.stop, model.config.backbone_config)


def train_step(model, inputs: dict, design: str) -> float:
    """Seconds of one forward + loss + backward."""
    pairs = inputs["input_ids"].shape[0] // 2
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    if design == "released":
        model.config.sub_batching = False
        query = model(**_slice(inputs, slice(0, pairs), model)).embeddings
        target = model(**_slice(inputs, slice(pairs, 2 * pairs), model)).embeddings
    else:
        model.config.sub_batching = design == "sub-batched"
        embeddings = model(**inputs).embeddings
        query, target = embeddings[:pairs], embeddings[pairs:]
    hardness_weighted_contrastive_loss(query, target).loss.backward()
    return time.perf_counter() - start


def report_step_times(batches: list[list[dict]], count: int, overhead: int, seed: int) -> None:
    model, processor = scaled_down_model()
    model.config.sub_batch_overhead_tokens = overhead
    chosen = random.Random(seed).sample(batches, count)
    train_step(model, batch_inputs(chosen[0], processor, 0), "one-forward")  # warm-up
    times = {design: [] for design in DESIGNS}
    for index, batch in enumerate(chosen):
        inputs = batch_inputs(batch, processor, index)
        kinds = ",".join(sorted({row["subset"] for row in batch}))
        rotated = DESIGNS[index % 3 :] + DESIGNS[: index % 3]  # no design always runs first
        row_times = {design: train_step(model, inputs, design) for design in rotated}
        row_times = {design: row_times[design] for design in DESIGNS}
        for design, seconds in row_times.items():
            times[design].append(seconds)
        print(f"  batch {index}: lengths {inputs['attention_mask'].sum(1).tolist()} ({kinds}): "
              + ", ".join(f"{d} {s:.2f} s" for d, s in row_times.items()))  # fmt: skip
    base = sum(times["one-forward"])
    print(f"CPU step time over {count} batches (4-layer, 256-wide LLaVA-OneVision, {torch.get_num_threads()} threads):")
    for design in DESIGNS:
        ratios = [t / b for t, b in zip(times[design], times["one-forward"])]
        print(f"{design:<14} total {sum(times[design]):7.2f} s   ratio to one-forward {sum(times[design]) / base:.2f}"
              f" (median per batch {statistics.median(ratios):.2f})")  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=4000, help="micro-batches drawn for the token shares")
    parser.add_argument("--timed-batches", type=int, default=3, help="micro-batches timed on CPU (0: skip)")
    parser.add_argument("--overhead", type=int, default=256, help="sub_batch_overhead_tokens")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from llave_hf.mmeb_train import MMEB_TRAIN_SUBSETS  # needs `datasets`, which the GPU benchmark does without

    assert sorted(SUBSETS) == sorted(MMEB_TRAIN_SUBSETS)
    batches = micro_batches(draw_rows(args.batches * PAIRS_PER_DEVICE, args.seed))
    report_shares(batches, args.overhead)
    if args.timed_batches:
        report_step_times(batches, args.timed_batches, args.overhead, args.seed)


if __name__ == "__main__":
    main()
