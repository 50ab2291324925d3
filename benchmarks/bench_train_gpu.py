"""Training throughput of the LLaVE-0.5B architecture at random initialisation: samples/s, tokens/s, MFU, and
the top kernels of the PyTorch profiler.

Runs ContrastiveTrainer-equivalent steps (one forward of queries + targets, the hardness-weighted loss, backward,
AdamW step) on one GPU in bf16 with the vision tower frozen, as the paper's recipe. The architecture is
llava-onevision-qwen2-0.5b-ov's: SigLIP-so400m at 384 px (26 layers kept, as released) and Qwen2-0.5B, with LLaVE's
1x1 to 2x2 anyres tiling. Batches come from the realistic MMEB-train mix of `bench_padding.py` (the 20 subsets'
modalities, text lengths and typical image sizes), grouped by query modality and length as the trainer does; each
timed step takes the next micro-batch.

Model FLOPs per step count real tokens only (padding is not useful work): 6·N·tokens for the trained language model
(forward + backward) plus its attention (12·layers·hidden·len² per sequence, forward + backward, PaLM's convention), and
2·N·tiles·729 for the frozen vision tower's forward over the tiles actually encoded. MFU divides the achieved FLOP/s
by the GPU's dense bf16 peak (H100/H200 SXM 989 TFLOP/s, A100 312 TFLOP/s, or `--peak-tflops`).

    python benchmarks/bench_train_gpu.py [--batch 8] [--steps 10] [--attn sdpa] [--compile] [--profile]
    python benchmarks/bench_train_gpu.py --tiny --device cpu   # smoke test of the script itself
"""

import argparse
import statistics
import time

import os
import sys

import torch
from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig
from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

from llave_hf import LlaveEmbeddingConfig, LlaveEmbeddingModel
from llave_hf.loss import hardness_weighted_contrastive_loss
from llave_hf.testing import tiny_model_and_processor, tiny_tokenizer


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_padding import anyres_processor, batch_inputs, draw_rows, micro_batches  # noqa: E402


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
    return model, anyres_processor(tokenizer)


def model_flops(model, inputs) -> float:
    """Forward+backward model FLOPs of one step over its real tokens (see the module docstring)."""
    backbone_config = model.config.backbone_config
    text_config = backbone_config.get_text_config()
    lengths = inputs["attention_mask"].sum(1).double()
    language = sum(p.numel() for n, p in model.named_parameters() if "language_model" in n and "embed_tokens" not in n)
    attention = 12 * text_config.num_hidden_layers * text_config.hidden_size * float((lengths**2).sum())
    flops = 6 * language * float(lengths.sum()) + attention
    if "image_sizes" in inputs:
        vision_config = backbone_config.vision_config
        tiles = sum(  # the base view and the grid's tiles of each image: padded tiles are not encoded
            image_size_to_num_patches(size, backbone_config.image_grid_pinpoints, vision_config.image_size)
            for size in inputs["image_sizes"].tolist()
        )
        vision = sum(p.numel() for p in model.vision_tower.parameters())
        flops += 2 * vision * tiles * (vision_config.image_size // vision_config.patch_size) ** 2
    return flops


def print_top_kernels(model_step, device: torch.device, steps: int = 2, rows: int = 15) -> None:
    """The PyTorch profiler's top operators/kernels by device time over `steps` steps."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        for _ in range(steps):
            model_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    sort_by = "cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"top {rows} by {sort_by} over {steps} steps:")
    print(profiler.key_averages().table(sort_by=sort_by, row_limit=rows, max_name_column_width=60))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="query/target pairs per step (rows = 2x)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks")
    parser.add_argument("--no-sub-batching", action="store_true", help="one padded forward (config.sub_batching)")
    parser.add_argument("--profile", action="store_true", help="also print the profiler's top kernels")
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
        dtype = torch.float32
    else:
        model, processor = llave_05b(args.attn)
        dtype = torch.bfloat16
        torch.backends.cuda.matmul.allow_tf32 = True
    model.config.sub_batching = not args.no_sub_batching
    model.to(device=device, dtype=dtype).train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.freeze_vision_tower()
    if args.compile:
        # Regional compilation: the transformer blocks, where the FLOPs are. One compiled block serves every layer
        # (fast cold start), and the glue around them (the image-token placement, which syncs with the host in
        # transformers) stays eager instead of breaking the graph.
        for module in model.modules():
            if type(module).__name__.endswith(("DecoderLayer", "EncoderLayer")):
                module.compile(dynamic=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.0)
    batches = micro_batches(draw_rows(64 * args.batch), args.batch)
    # Prepared before timing (the dataloader's workers do this in training), moved to the device per step.
    inputs = [batch_inputs(batch, processor, seed) for seed, batch in enumerate(batches[: args.steps + 1])]
    position = iter(range(len(inputs) * 1000))

    def step():
        batch = {k: v.to(device, non_blocking=True) for k, v in inputs[next(position) % len(inputs)].items()}
        embeddings = model(**batch).embeddings
        loss = hardness_weighted_contrastive_loss(embeddings[: args.batch], embeddings[args.batch :]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    start = time.perf_counter()
    step()  # warm-up (allocations, kernels; compilation)
    print(f"warm-up step {time.perf_counter() - start:.1f} s")
    times = []
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    timed = inputs[1 : args.steps + 1]  # the batches the timed steps took (after the warm-up's)
    timed = [timed[i % len(timed)] for i in range(args.steps)]
    seconds = sum(times)
    tokens = sum(int(batch["attention_mask"].sum()) for batch in timed)
    padded = sum(batch["attention_mask"].numel() for batch in timed)
    flops = sum(model_flops(model, batch) for batch in timed)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    print(f"{'tiny' if args.tiny else 'LLaVE-0.5B'} on {name}, {args.attn}, compile={args.compile}, "
          f"sub_batching={model.config.sub_batching}, bf16={dtype == torch.bfloat16}, {args.batch} pairs per step, "
          f"{args.steps} steps, {tokens / args.steps:,.0f} real tokens per step ({tokens / padded:.2f} of the padded batch)")  # fmt: skip
    print(f"step time {seconds / args.steps:.3f} s (median {statistics.median(times):.3f}) | "
          f"{args.batch * args.steps / seconds:.1f} pairs/s | {tokens / seconds:,.0f} tokens/s | "
          f"{flops / seconds / 1e12:.1f} TFLOP/s model FLOPs" + (f" | MFU {flops / seconds / 1e12 / peak:.1%}" if peak else ""))  # fmt: skip
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    if args.profile:
        print_top_kernels(step, device)


if __name__ == "__main__":
    main()
