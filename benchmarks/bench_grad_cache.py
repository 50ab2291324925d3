"""GradCache vs an uncached step at the same batch: peak memory and time, measured side by side.

Targets: memory ratio <= 0.5, time ratio <= 1.5. The model is tiny but not trivial: a LLaVA-OneVision backbone with
a 4-layer, 256-wide language model and a SigLIP tower at 32 px, batch of image and text pairs plus hard negatives.
Peak memory is the peak resident memory of one step above the memory resident before it (VmHWM after resetting it
through /proc/self/clear_refs), in a fresh process per variant (CPU has no allocator counters); time is the median of interleaved steps in one process.

    python benchmarks/bench_grad_cache.py [--pairs 64] [--chunk 16] [--repeats 3] [--sub-batching]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def _setup(pairs: int, sub_batching: bool = False):
    from trainer_fixtures import TinyCollator, rows

    from llave_hf.loss import hardness_weighted_contrastive_loss
    from llave_hf.testing import tiny_model_and_processor

    model, processor = tiny_model_and_processor(
        "llava_onevision", hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=4,
    )  # fmt: skip
    model.config.sub_batching = sub_batching
    model.train()
    batch = TinyCollator(processor)(rows(pairs, negatives=1))

    def loss_fn(embeddings):
        query, target, hard_negatives = batch.split(embeddings)
        return hardness_weighted_contrastive_loss(query, target, hard_negatives=hard_negatives).loss

    return model, batch.inputs, loss_fn


def _step(model, inputs, loss_fn, chunk: int) -> None:
    from llave_hf.grad_cache import grad_cache_backward

    model.zero_grad(set_to_none=False)
    if chunk:
        config = model.config.backbone_config
        grad_cache_backward(model, inputs, chunk, loss_fn, torch.Tensor.backward, backbone_config=config)
    else:
        loss_fn(model(**inputs).embeddings).backward()


def _peak_over_current_bytes(run) -> int:
    """Peak resident memory while `run()` executes, above the resident memory before it (Linux /proc)."""

    def status(field: str) -> int:
        with open("/proc/self/status") as file:
            line = next(line for line in file if line.startswith(field))
        return int(line.split()[1]) * 1024  # kB

    with open("/proc/self/clear_refs", "w") as file:
        file.write("5")  # resets VmHWM (the peak) to the current resident size
    before = status("VmRSS:")
    run()
    return status("VmHWM:") - before


def measure_memory(pairs: int, chunk: int, sub_batching: bool) -> None:
    """Runs in a fresh process: prints the peak resident memory one step adds over its set-up."""
    model, inputs, loss_fn = _setup(pairs, sub_batching)
    for parameter in model.parameters():  # gradients exist in both variants: allocate them before measuring
        parameter.grad = torch.zeros_like(parameter)
    print(json.dumps({"peak_bytes": _peak_over_current_bytes(lambda: _step(model, inputs, loss_fn, chunk))}))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=16, help="GradCache chunk size in rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sub-batching", action="store_true", help="the model runs length sub-batches")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child is not None:
        measure_memory(args.pairs, args.memory_child, args.sub_batching)
        return

    peaks = {}
    for name, chunk in (("uncached", 0), ("gradcache", args.chunk)):
        command = [sys.executable, __file__, "--pairs", str(args.pairs), "--memory-child", str(chunk)]
        command += ["--sub-batching"] if args.sub_batching else []
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        peaks[name] = json.loads(output.strip().splitlines()[-1])["peak_bytes"]

    model, inputs, loss_fn = _setup(args.pairs, args.sub_batching)
    variants = (("uncached", 0), ("gradcache", args.chunk))
    for _, chunk in variants:  # warm-up
        _step(model, inputs, loss_fn, chunk)
    samples = {name: [] for name, _ in variants}
    for _ in range(args.repeats):  # interleaved, so machine load hits both alike
        for name, chunk in variants:
            start = time.perf_counter()
            _step(model, inputs, loss_fn, chunk)
            samples[name].append(time.perf_counter() - start)
    times = {name: statistics.median(values) for name, values in samples.items()}

    rows = inputs["input_ids"].shape[0]
    print(f"GradCache benchmark: {args.pairs} pairs + {args.pairs} hard negatives = {rows} rows, chunk {args.chunk}, "
          f"{inputs['input_ids'].shape[1]} tokens max, torch {torch.__version__}, {torch.get_num_threads()} threads, sub_batching={args.sub_batching}")  # fmt: skip
    print(f"{'':12}{'peak memory (MiB)':>20}{'step time (s)':>16}")
    for name in ("uncached", "gradcache"):
        print(f"{name:12}{peaks[name] / 2**20:>20.1f}{times[name]:>16.3f}")
    print(f"memory ratio gradcache/uncached: {peaks['gradcache'] / peaks['uncached']:.2f} (target <= 0.5)")
    print(f"time ratio gradcache/uncached:   {times['gradcache'] / times['uncached']:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
