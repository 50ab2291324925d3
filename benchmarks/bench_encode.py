"""`encode` throughput: length-sorted batching (what `encode` does) vs batches in input order, side by side.

Inputs are texts of mixed lengths (a few words to a few hundred), shuffled, on a small Qwen2 text backbone. The
unsorted baseline calls `encode` once per input-order batch, which is exactly batching without sorting.

    python benchmarks/bench_encode.py [--items 512] [--batch-size 32] [--repeats 3]
"""

import argparse
import random
import statistics
import time

import torch

from llave_hf.testing import tiny_model_and_processor


WORDS = "the quick brown fox jumps over a lazy dog while red green blue birds sing on the old tree".split()


def mixed_length_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lengths = [rng.choice([4, 8, 16, 32, 64, 128, 256]) for _ in range(count)]
    return [" ".join(rng.choice(WORDS) for _ in range(length)) for length in lengths]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    model, _ = tiny_model_and_processor(
        "qwen2", hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=4, max_position_embeddings=4096,
    )  # fmt: skip
    model.processor.max_length = 4096
    texts = mixed_length_texts(args.items)
    size = args.batch_size

    def sorted_run():
        return model.encode(texts=texts, batch_size=size)

    def unsorted_run():
        return torch.cat([model.encode(texts=texts[i : i + size], batch_size=size) for i in range(0, len(texts), size)])

    torch.testing.assert_close(sorted_run(), unsorted_run(), rtol=0, atol=5e-5)  # same vectors, also a warm-up
    samples = {"sorted": [], "unsorted": []}
    for _ in range(args.repeats):  # interleaved, so machine load hits both alike
        for name, run in (("sorted", sorted_run), ("unsorted", unsorted_run)):
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    times = {name: statistics.median(values) for name, values in samples.items()}

    print(f"encode benchmark: {args.items} texts of 4-256 words, batch size {size}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    for name in ("sorted", "unsorted"):
        print(f"{name:10}{times[name]:8.2f} s{args.items / times[name]:10.1f} items/s")
    print(f"speed-up of length-sorted batching: {times['unsorted'] / times['sorted']:.2f}x")


if __name__ == "__main__":
    main()
