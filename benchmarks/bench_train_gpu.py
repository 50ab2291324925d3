"""Training throughput of the LLaVE-0.5B architecture at random initialisation: samples/s, tokens/s, MFU.

Runs ContrastiveTrainer-equivalent steps (one forward of queries + targets, the hardness-weighted loss, backward,
AdamW step) on one GPU in bf16 with the vision tower frozen, as the paper's recipe. The architecture is
llava-onevision-qwen2-0.5b-ov's: SigLIP-so400m at 384 px (26 layers kept, as released) and Qwen2-0.5B. Images
are 384x384 (one anyres tile plus the base view: 1,485 image tokens), texts about 60 tokens.

Model FLOPs per step follow the usual 6·N·tokens for the trained language model (forward + backward) plus its
attention (12·layers·hidden·seq² per sequence), and 2·N·tokens for the frozen vision tower's forward; MFU divides
the achieved FLOP/s by the GPU's dense bf16 peak (H100 SXM 989 TFLOP/s, H200 989 TFLOP/s, A100 312 TFLOP/s, or
`--peak-tflops`).

    python benchmarks/bench_train_gpu.py [--batch 8] [--steps 10] [--attn sdpa|flash_attention_2]
    python benchmarks/bench_train_gpu.py --tiny --device cpu   # smoke test of the script itself
"""

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image
from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil

from llave_hf import LlaveEmbeddingConfig, LlaveEmbeddingModel, LlaveProcessor
from llave_hf.loss import hardness_weighted_contrastive_loss
from llave_hf.testing import tiny_model_and_processor, tiny_tokenizer


PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}
PINPOINTS = [[384 * h, 384 * w] for h in (1, 2) for w in (1, 2)]


def llave_05b(attn: str):
    """The LLaVE-0.5B architecture (random weights) and a processor with a tokenizer of the same vocabulary size."""
    tokenizer = tiny_tokenizer()
    text = Qwen2Config(
        vocab_size=151_936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, max_position_embeddings=32_768, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        tie_word_embeddings=True,
    )  # fmt: skip
    vision = SiglipVisionConfig(
        hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16, image_size=384,
        patch_size=14, vision_use_head=False,
    )  # fmt: skip
    backbone = LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=PINPOINTS, vision_aspect_ratio="anyres_max_9",
    )  # fmt: skip
    config = LlaveEmbeddingConfig(backbone_config=backbone)
    config._attn_implementation = attn
    model = LlaveEmbeddingModel(config)
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": 384, "width": 384}, image_grid_pinpoints=PINPOINTS, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor = LlaveProcessor(image_processor, tokenizer, backbone_type="llava_onevision", num_image_tokens=729)
    return model, processor


def batch_items(size: int, image_size: int) -> tuple[list[str], list]:
    """Texts and images of `size` image queries followed by their `size` caption targets."""
    rng = np.random.RandomState(0)
    images = [Image.fromarray(rng.randint(0, 256, (image_size, image_size, 3), dtype=np.uint8)) for _ in range(size)]
    caption = "a photo of a dog running on the beach next to a red ball, with trees and a house behind it " * 2
    texts = ["<|image_1|> Find a caption describing the given everyday image."] * size + [caption] * size
    return texts, images + [None] * size


def model_flops(model, inputs) -> float:
    """Forward+backward FLOPs of one step (see the module docstring)."""
    backbone_config = model.config.backbone_config
    text_config = backbone_config.get_text_config()
    lengths = inputs["attention_mask"].sum(1).double()
    language = sum(p.numel() for n, p in model.named_parameters() if "language_model" in n and "embed_tokens" not in n)
    attention = 12 * text_config.num_hidden_layers * text_config.hidden_size * float((lengths**2).sum())
    vision = sum(p.numel() for p in model.vision_tower.parameters())
    vision_config = backbone_config.vision_config
    tiles = inputs["pixel_values"].shape[0] * inputs["pixel_values"].shape[1]  # padded tiles are encoded too
    vision_tokens = tiles * (vision_config.image_size // vision_config.patch_size) ** 2
    return 6 * language * float(lengths.sum()) + attention + 2 * vision * vision_tokens


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="query/target pairs per step (rows = 2x)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--tiny", action="store_true", help="tiny model (smoke test of this script)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("No GPU: this benchmark needs one (use --tiny --device cpu to smoke-test the script).")
        return
    device = torch.device(args.device)
    if args.tiny:
        model, processor = tiny_model_and_processor("llava_onevision")
        image_size, dtype = 32, torch.float32
    else:
        model, processor = llave_05b(args.attn)
        image_size, dtype = 384, torch.bfloat16
        torch.backends.cuda.matmul.allow_tf32 = True
    model.to(device=device, dtype=dtype).train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.freeze_vision_tower()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.0)
    texts, images = batch_items(args.batch, image_size)
    inputs = processor(text=texts, images=images).to(device)

    def step():
        embeddings = model(**inputs).embeddings
        loss = hardness_weighted_contrastive_loss(embeddings[: args.batch], embeddings[args.batch :]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up (allocations, kernels)
    times = []
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    tokens = int(inputs["attention_mask"].sum())
    flops = model_flops(model, inputs)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    print(f"{'tiny' if args.tiny else 'LLaVE-0.5B'} on {name}, {args.attn}, bf16={dtype == torch.bfloat16}, "
          f"{args.batch} pairs ({2 * args.batch} rows, {tokens} tokens) per step, median of {args.steps}")  # fmt: skip
    print(f"step time {seconds:.3f} s | {args.batch / seconds:.1f} pairs/s | {tokens / seconds:,.0f} tokens/s | "
          f"{flops / seconds / 1e12:.1f} TFLOP/s model FLOPs" + (f" | MFU {flops / seconds / 1e12 / peak:.1%}" if peak else ""))  # fmt: skip
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
