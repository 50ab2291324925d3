#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored: never committed) the wheels benchmarks/gpu/run.sh installs on a GPU machine with torch
# with CUDA, accelerate and an older transformers but no network: the project needs transformers >= 5.20, and the
# versions of constraints.txt for it and the packages it pins. CPython 3.12, x86-64 manylinux.
set -euo pipefail
cd "$(dirname "$0")/../.."
pin() { grep -i "^$1==" constraints.txt; }
# huggingface_hub stays below 2 as the machine's own (transformers 5.17 asks <2; 5.24 asks >=1.31), so that the
# dependencies installed there (httpx, ...) still fit.
for requirement in "$(pin transformers)" "$(pin tokenizers)" "$(pin safetensors)" huggingface_hub==1.33.0; do
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$requirement"
done
du -sh .whl
