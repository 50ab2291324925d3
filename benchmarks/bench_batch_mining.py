"""Time and peak memory of B3 batch mining (`llave_hf.batch_mining.BatchMiningSampler`) on random vectors.

Target: MMEB-train's 662K rows at LLaVE-2B's width (1536), global batches of 32 (LLaVE's 4 per device x 8 GPUs).
Each size runs in its own process (peak RSS is per process) and is split into its stages: the faiss kNN search
(an inverted-file index at every size here, as at 662K; the sampler searches exactly below
`EXACT_SEARCH_MAX_ROWS`), the METIS partition, and one epoch's packing into batches (`batches()`, run per epoch).
The times at the sizes run are fitted by a power law (log-log least squares) and extrapolated to `--target` rows.
Random vectors have no cluster structure: the kNN graph is as hard to cut as it gets, the search as costly as any.

    python benchmarks/bench_batch_mining.py                         # 20K, 40K, 80K rows, extrapolated to 662K
    python benchmarks/bench_batch_mining.py --rows 662000           # the full size (~4 GB of vectors, ~3 copies)
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 40_000, 80_000])
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--batch", type=int, default=32, help="global batch (per-device batch x processes)")
    parser.add_argument("--skip-ranks", type=int, default=3)
    parser.add_argument("--neighbors", type=int, default=10)
    parser.add_argument("--target", type=int, default=662_000, help="rows to extrapolate to")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child process: one size
    return parser.parse_args()


def run_one(args: argparse.Namespace) -> dict:
    from llave_hf import batch_mining

    batch_mining.EXACT_SEARCH_MAX_ROWS = 0  # the inverted-file search at every size, as at 662K rows
    stages = {}
    for name in ("mine_neighbors", "partition_neighbors"):
        function = getattr(batch_mining, name)

        def timed(*call_args, function=function, name=name, **kwargs):
            start = time.perf_counter()
            result = function(*call_args, **kwargs)
            stages[name] = stages.get(name, 0.0) + time.perf_counter() - start
            return result

        setattr(batch_mining, name, timed)
    vectors = np.random.default_rng(0).standard_normal((args.one, args.dim), dtype=np.float32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    sampler = batch_mining.BatchMiningSampler(
        vectors, args.batch, 1, seed=0, skip_ranks=args.skip_ranks, num_neighbors=args.neighbors
    )
    stages["mining"] = time.perf_counter() - start
    start = time.perf_counter()
    batches = sampler.batches()
    stages["epoch_packing"] = time.perf_counter() - start
    assert sorted(row for batch in batches for row in batch) == list(range(args.one))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"rows": args.one, **stages, "vectors_gb": vectors.nbytes / 2**30, "rss_before_gb": before, "peak_gb": peak}


def main() -> None:
    args = parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args)))
        return
    print(f"dim {args.dim}, global batch {args.batch}, skip_ranks {args.skip_ranks}, neighbors {args.neighbors}")
    print(f"{'rows':>8} {'kNN s':>8} {'METIS s':>8} {'mining s':>9} {'epoch s':>8} {'vectors GB':>10} {'peak GB':>8}")
    results = []
    for rows in args.rows:
        command = [sys.executable, __file__, "--one", str(rows), "--dim", str(args.dim), "--batch", str(args.batch)]
        command += ["--skip-ranks", str(args.skip_ranks), "--neighbors", str(args.neighbors)]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        results.append(result)
        print(
            f"{rows:>8} {result['mine_neighbors']:>8.1f} {result['partition_neighbors']:>8.1f} "
            f"{result['mining']:>9.1f} {result['epoch_packing']:>8.1f} {result['vectors_gb']:>10.2f} "
            f"{result['peak_gb']:>8.2f}"
        )
    if len(results) > 1 and args.target not in args.rows:
        rows = np.log([result["rows"] for result in results])
        print(f"extrapolated to {args.target} rows (power law fitted to the sizes above):")
        for stage in ("mine_neighbors", "partition_neighbors", "mining", "epoch_packing"):
            slope, intercept = np.polyfit(rows, np.log([result[stage] for result in results]), 1)
            print(f"  {stage:>20}: ~ rows^{slope:.2f} -> {np.exp(intercept + slope * np.log(args.target)):,.0f} s")
        # memory grows linearly in the rows (vectors, their normalised copy, the index's copy, the graph)
        per_row = np.polyfit([r["rows"] for r in results], [r["peak_gb"] - r["rss_before_gb"] for r in results], 1)
        vectors = args.target * args.dim * 4 / 2**30
        print(f"  {'peak memory':>20}: ~ {vectors:.1f} GB of vectors + {np.polyval(per_row, args.target):.1f} GB mining")

if __name__ == "__main__":
    main()
