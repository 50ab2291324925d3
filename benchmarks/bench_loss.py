"""Cost of hardness weighting: forward + backward of the loss with α = 9 vs α = 0 (plain InfoNCE).

Candidates of the query→target direction = the B in-batch targets + B·n hard negatives (one process, no gather;
gathered columns cost the same per column), with its diagnostics and without the finiteness check, as the trainer
calls it. Defaults: 256 queries x (256 + 256·7 = 2048) candidates x 1536 dims (LLaVE-2B's width), symmetric loss,
float32. The two settings are timed alternately so that load from other processes hits both alike (in alternating
order); the median of the repeats is reported (and the minimum, steadier on a shared machine).

    python benchmarks/bench_loss.py            # full size
    python benchmarks/bench_loss.py --quick    # seconds, for a smoke run
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from llave_hf.loss import HardnessNormalization, hardness_weighted_contrastive_loss


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256, help="queries (= in-batch targets)")
    parser.add_argument("--hard-negatives", type=int, default=7, help="hard negatives per query")
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--normalization",
        choices=[option.value for option in HardnessNormalization],
        default="none",
        help="hardness_normalization for α=9",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu = process CPU time (time.process_time): insensitive to waiting for a core on a shared machine",
    )
    parser.add_argument("--quick", action="store_true", help="64 x (64 + 448) x 256, 5 repeats")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.dim, args.warmup, args.repeats = 64, 256, 2, 5
    return args


def time_step(clock, query, target, hard_negatives, **options) -> float:
    start = clock()
    output = hardness_weighted_contrastive_loss(
        query, target, hard_negatives=hard_negatives, check_finite=False, **options
    )
    output.loss.backward()
    elapsed = clock() - start
    for tensor in (query, target, hard_negatives):
        tensor.grad = None
    return elapsed


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, args.dim)
    query = F.normalize(torch.randn(shape, generator=generator), dim=-1).requires_grad_(True)
    target = F.normalize(torch.randn(shape, generator=generator), dim=-1).requires_grad_(True)
    hard_negatives = torch.randn(args.batch, args.hard_negatives, args.dim, generator=generator)
    hard_negatives = F.normalize(hard_negatives, dim=-1).requires_grad_(True)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    inputs = (clock, query, target, hard_negatives)
    settings = {
        "alpha=9": dict(alpha=9.0, hardness_normalization=args.normalization),
        "alpha=0": dict(alpha=0.0),
    }

    for _ in range(args.warmup):
        for options in settings.values():
            time_step(*inputs, **options)
    times = {name: [] for name in settings}
    for repeat in range(args.repeats):
        order = list(settings) if repeat % 2 == 0 else list(reversed(settings))  # no first-runner bias
        for name in order:
            times[name].append(time_step(*inputs, **settings[name]))
    medians = {name: statistics.median(values) for name, values in times.items()}
    minima = {name: min(values) for name, values in times.items()}

    candidates = args.batch * (1 + args.hard_negatives)
    print(
        f"loss fwd+bwd, {args.batch} queries x {candidates} candidates ({args.batch} targets + "
        f"{args.batch * args.hard_negatives} hard negatives) x {args.dim} dims, symmetric, float32, "
        f"{torch.get_num_threads()} threads, {args.clock} clock, median of {args.repeats}"
    )
    for name, median in medians.items():
        suffix = f" (hardness_normalization={args.normalization})" if name == "alpha=9" else ""
        print(f"  {name}: median {median * 1e3:8.2f} ms, min {minima[name] * 1e3:8.2f} ms{suffix}")
    print(
        f"  ratio alpha=9 / alpha=0: median {medians['alpha=9'] / medians['alpha=0']:.3f}, "
        f"min {minima['alpha=9'] / minima['alpha=0']:.3f} (target <= 1.10)"
    )


if __name__ == "__main__":
    main()
