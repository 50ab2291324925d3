#!/usr/bin/env bash
# One call on a GPU machine (under 8 minutes on an H100/H200): installs what the machine lacks from wheels carried in
# .whl/, then LLaVE-0.5B training throughput on the MMEB-train mix (sdpa; sub-batched, padded, and sub-batched with
# torch.compile; samples/s, tokens/s, MFU), the profiler's top kernels, and bf16 encode against float32 (cosine >=
# 0.999 on text, image and image+text items).
#
#   benchmarks/gpu/fetch_wheels.sh               # here, beforehand: fills .whl/ (ignored by git, never committed)
#   benchmarks/gpu/run.sh                        # on the GPU machine
#   benchmarks/gpu/run.sh --tiny --device cpu    # smoke test of all of it on a CPU
#
# PYTHON (default python3) runs everything; extra arguments go to every script. Exits non-zero if any step failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
status=0

if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# llave_hf from this tree without building it: modeling/ and hub_cards/ install as llave_hf.modeling and
# llave_hf.hub_cards (setup.cfg's package_dir).
source_dir=$(mktemp -d)
trap 'rm -rf "$source_dir"' EXIT
cp -r llave_hf "$source_dir/" && cp -r modeling "$source_dir/llave_hf/modeling" \
    && cp -r hub_cards "$source_dir/llave_hf/hub_cards" || exit 1
export PYTHONPATH=$source_dir${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error

"$PYTHON" - <<'PY' || exit 1
import torch, transformers, llave_hf
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
print(f"torch {torch.__version__}, transformers {transformers.__version__}, llave_hf from {llave_hf.__path__[0]}, {gpu}")
PY

run() {  # a failing step is reported and the others still run
    echo; echo "=== $*"
    local start=$SECONDS
    "$PYTHON" "$@" || { echo "FAILED (exit $?): $*"; status=1; }
    echo "--- $((SECONDS - start)) s"
}
run benchmarks/bench_train_gpu.py --attn sdpa "$@"
run benchmarks/bench_train_gpu.py --attn sdpa --no-sub-batching "$@"
run benchmarks/bench_train_gpu.py --attn sdpa --compile --profile "$@"
run benchmarks/gpu/check_bf16.py --attn sdpa "$@"
exit $status
