"""bf16 `encode` against float32: the cosine between the two embeddings of every item must be >= 0.999, for text,
image and image+text items. Exits non-zero when any falls short.

The model is the LLaVE-0.5B architecture at random initialisation (`bench_train_gpu.llave_05b`), or with `--tiny`
the tiny LLaVA-OneVision of the tests. Images are random pixels of several sizes and aspect ratios (1 to 4 anyres
tiles).

    python benchmarks/gpu/check_bf16.py [--device cuda] [--attn sdpa] [--threshold 0.999]
    python benchmarks/gpu/check_bf16.py --tiny --device cpu
"""

import argparse
import copy
import os
import sys

import numpy as np
import torch
from PIL import Image


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench_train_gpu import llave_05b  # noqa: E402

from llave_hf.testing import tiny_model_and_processor  # noqa: E402


def items(image_scale: int) -> dict[str, tuple[list, list]]:
    """Texts and images per kind: text, image, image+text."""
    rng = np.random.RandomState(0)
    sizes = [(1, 1), (1, 2), (2, 1), (3, 2)]  # (height, width) in tiles
    images = [
        Image.fromarray(rng.randint(0, 256, (h * image_scale, w * image_scale, 3), dtype=np.uint8)) for h, w in sizes
    ]
    texts = [
        "a dog running on the beach next to a red ball",
        "Find me an everyday image that matches the given caption: two people riding bicycles in the rain",
        "What is the capital of France?",
        "Represent the given dialogue about an image: is it sunny? yes. how many people? three, near a bus stop.",
    ]
    return {
        "text": (texts, [None] * len(texts)),
        "image": (["<|image_1|> Represent the given image."] * len(images), images),
        "image+text": ([f"<|image_1|> Represent the given image with the following question: {t}" for t in texts],
                       images),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--threshold", type=float, default=0.999)
    parser.add_argument("--tiny", action="store_true")
    args, _ = parser.parse_known_args(argv)  # run.sh passes every script the same arguments (e.g. --steps)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("No GPU: use --tiny --device cpu to smoke-test the script.")
        return 1
    if args.tiny:
        model, processor = tiny_model_and_processor("llava_onevision")
        image_scale = 32
    else:
        torch.manual_seed(0)
        model, processor = llave_05b(args.attn)
        image_scale = 384
    model.processor = processor
    reference = model.to(device=args.device, dtype=torch.float32).eval()
    half = copy.deepcopy(reference).to(dtype=torch.bfloat16)
    worst = 1.0
    for kind, (texts, images) in items(image_scale).items():
        full = reference.encode(texts=texts, images=images, batch_size=4)
        low = half.encode(texts=texts, images=images, batch_size=4)
        cosines = torch.nn.functional.cosine_similarity(full, low, dim=-1)
        worst = min(worst, float(cosines.min()))
        print(f"{kind:<11} bf16 vs float32 cosine: min {cosines.min():.5f}, mean {cosines.mean():.5f}")
    verdict = "PASS" if worst >= args.threshold else "FAIL"
    print(f"{verdict}: worst cosine {worst:.5f} (threshold {args.threshold})")
    return 0 if worst >= args.threshold else 1


if __name__ == "__main__":
    sys.exit(main())
