#!/usr/bin/env bash
# Compile every CUDA port (algorithms/cuda/*.cu) with nvcc for sm_80 (A100) and sm_90 (H100).
# A failed compile fails the script, naming the file, the architecture and the defines.
# Without nvcc: says so and exits 1, unless ATTNSIM_SKIP_NVCC=1 (then exits 0).
#
# Each file is compiled with its default tile defines, with them and bf16 storage
# (-DATTN_BF16=1, what ports.py adds for --dtype bf16), plus the extra tile configurations
# below (the sizes the simulator's plans pick on A100/H100, and a padded head_dim).
set -u
cd "$(dirname "$0")/.."

NVCC="${NVCC:-$(command -v nvcc || true)}"
if [ -z "$NVCC" ]; then
    if [ "${ATTNSIM_SKIP_NVCC:-0}" = "1" ]; then
        echo "compile_cuda: nvcc not found; skipped (ATTNSIM_SKIP_NVCC=1)"
        exit 0
    fi
    echo "compile_cuda: nvcc not found on PATH (set NVCC=/path/to/nvcc, or ATTNSIM_SKIP_NVCC=1 to skip)" >&2
    exit 1
fi

declare -A EXTRA=(
    [flash2_fwd.cu]="-DBLOCK_Q=128 -DBLOCK_K=128 -DHEAD_DIM=128|-DBLOCK_Q=128 -DBLOCK_K=128 -DHEAD_DIM=64 -DWARP_M_TILES=2|-DBLOCK_Q=64 -DBLOCK_K=64 -DHEAD_DIM=40|-DBLOCK_Q=16 -DBLOCK_K=16 -DHEAD_DIM=256"
    [flash1_fwd.cu]="-DBLOCK_Q=128 -DBLOCK_K=227 -DHEAD_DIM=128|-DBLOCK_Q=40 -DBLOCK_K=331 -DHEAD_DIM=40"
    [block_sparse_fwd.cu]="-DBLOCK_Q=128 -DBLOCK_K=128 -DHEAD_DIM=64"
    [standard.cu]="-DTILE_M=64 -DTILE_N=64 -DHEAD_DIM=40"
    [gqa_decode.cu]="-DBLOCK_Q=64 -DBLOCK_K=128 -DHEAD_DIM=64"
    [feature_attn.cu]="-DCHUNK=64 -DHEAD_DIM=128 -DFEAT_KIND=0 -DFEAT_UNITS=128|-DCHUNK=128 -DHEAD_DIM=64 -DFEAT_KIND=0 -DFEAT_UNITS=64|-DCHUNK=128 -DHEAD_DIM=64 -DFEAT_KIND=1 -DFEAT_UNITS=64|-DCHUNK=32 -DHEAD_DIM=128 -DFEAT_KIND=1 -DFEAT_UNITS=128|-DCHUNK=128 -DHEAD_DIM=64 -DFEAT_KIND=2 -DFEAT_UNITS=266|-DCHUNK=64 -DHEAD_DIM=128 -DFEAT_KIND=2 -DFEAT_UNITS=156|-DCHUNK=16 -DHEAD_DIM=128 -DFEAT_KIND=2 -DFEAT_UNITS=156|-DCHUNK=128 -DHEAD_DIM=40 -DFEAT_KIND=2 -DFEAT_UNITS=148"
)

failed=0
count=0
for src in algorithms/cuda/*.cu; do
    name=$(basename "$src")
    IFS='|' read -r -a configs <<< "${EXTRA[$name]:-}"
    configs=("" "-DATTN_BF16=1" "${configs[@]}")
    for arch in sm_80 sm_90; do
        for defs in "${configs[@]}"; do
            count=$((count + 1))
            # shellcheck disable=SC2086  # defines are deliberately word-split
            if ! out=$("$NVCC" -arch="$arch" -std=c++17 -Werror all-warnings -c -o /dev/null $defs "$src" 2>&1); then
                echo "FAILED: $name for $arch ${defs:-(default defines)}" >&2
                echo "$out" >&2
                failed=$((failed + 1))
            fi
        done
    done
done
if [ "$failed" -ne 0 ]; then
    echo "compile_cuda: $failed of $count compilations failed" >&2
    exit 1
fi
echo "compile_cuda: $count compilations OK ($("$NVCC" --version | tail -1))"
