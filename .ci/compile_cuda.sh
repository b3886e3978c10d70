#!/usr/bin/env bash
# Compile every CUDA port (algorithms/cuda/*.cu) with nvcc for sm_80 (A100) and sm_90 (H100).
# A failed compile fails the script, naming the file, the architecture and the defines.
# Without nvcc: says so and exits 1, unless ATTNSIM_SKIP_NVCC=1 (then exits 0).
# --list: print every (source, defines) configuration, one "file<TAB>defines" line each, and
# exit without compiling (benchmarks/kernel_code_diff.py reads it).
#
# Each file is compiled with its default tile defines, with them and bf16 storage
# (-DATTN_BF16=1, what algorithms/ports adds for --dtype bf16), plus the extra tile configurations
# below (the sizes the simulator's plans pick on A100/H100, and a padded head_dim; flash2's
# dropout builds, -DATTN_DROPOUT=1, what algorithms/ports adds for --dropout).
#
# Register spills fail the build too: ptxas -v is read for every compilation, a summary of
# registers and spills is printed, and a spill above its source's SPILL_BUDGET fails.
set -u
cd "$(dirname "$0")/.."
LIST_ONLY=0
[ "${1:-}" = "--list" ] && LIST_ONLY=1

NVCC="${NVCC:-$(command -v nvcc || true)}"
if [ -z "$NVCC" ] && [ "$LIST_ONLY" = "0" ]; then
    if [ "${ATTNSIM_SKIP_NVCC:-0}" = "1" ]; then
        echo "compile_cuda: nvcc not found; skipped (ATTNSIM_SKIP_NVCC=1)"
        exit 0
    fi
    echo "compile_cuda: nvcc not found on PATH (set NVCC=/path/to/nvcc, or ATTNSIM_SKIP_NVCC=1 to skip)" >&2
    exit 1
fi

declare -A EXTRA=(
    [flash2_fwd.cu]="-DBLOCK_Q=128 -DBLOCK_K=128 -DHEAD_DIM=128|-DBLOCK_Q=128 -DBLOCK_K=128 -DHEAD_DIM=64 -DWARP_M_TILES=2|-DBLOCK_Q=64 -DBLOCK_K=64 -DHEAD_DIM=40|-DBLOCK_Q=16 -DBLOCK_K=16 -DHEAD_DIM=256|-DATTN_DROPOUT=1|-DATTN_DROPOUT=1 -DATTN_BF16=1|-DBLOCK_Q=64 -DBLOCK_K=64 -DHEAD_DIM=40 -DATTN_DROPOUT=1|-DBLOCK_Q=16 -DBLOCK_K=16 -DHEAD_DIM=256 -DATTN_DROPOUT=1"
    [flash1_fwd.cu]="-DBLOCK_Q=128 -DBLOCK_K=227 -DHEAD_DIM=128|-DBLOCK_Q=40 -DBLOCK_K=331 -DHEAD_DIM=40"
    [block_sparse_fwd.cu]="-DBLOCK_Q=128 -DBLOCK_K=128 -DHEAD_DIM=64"
    [standard.cu]="-DTILE_M=64 -DTILE_N=64 -DHEAD_DIM=40"
    [gqa_decode.cu]="-DBLOCK_Q=64 -DGROUP=4 -DBLOCK_K=64 -DHEAD_DIM=64|-DBLOCK_Q=16 -DGROUP=8 -DBLOCK_K=128 -DHEAD_DIM=128|-DBLOCK_Q=4 -DGROUP=32 -DBLOCK_K=128 -DHEAD_DIM=128"
    [mla_decode.cu]="-DGROUP=64 -DBLOCK_Q=1 -DBLOCK_K=128 -DHEAD_DIM=128|-DGROUP=64 -DBLOCK_Q=1 -DBLOCK_K=64 -DHEAD_DIM=128|-DGROUP=16 -DBLOCK_Q=2 -DBLOCK_K=128 -DHEAD_DIM=128|-DGROUP=4 -DBLOCK_Q=1 -DBLOCK_K=128 -DDC=64 -DDR=16 -DHEAD_DIM=32 -DCOL_SLICES=1"
    [mla_upproject.cu]="-DBLOCK_Q=1 -DBLOCK_K=128 -DHEAD_DIM=128 -DDR=64 -DDC=512|-DBLOCK_Q=3 -DBLOCK_K=128 -DHEAD_DIM=32 -DDR=16 -DDC=64 -DTILE_M=64 -DTILE_N=64|-DBLOCK_Q=64 -DBLOCK_K=64 -DHEAD_DIM=40 -DDR=16 -DDC=128|-DBLOCK_Q=16 -DBLOCK_K=64 -DHEAD_DIM=256 -DDR=64 -DDC=512"
    [flash2_bwd.cu]="-DBLOCK_Q=128 -DBLOCK_K=128 -DHEAD_DIM=64 -DBWD_WARPS=8|-DBLOCK_Q=64 -DBLOCK_K=128 -DHEAD_DIM=128 -DBWD_WARPS=8|-DBLOCK_Q=128 -DBLOCK_K=128 -DHEAD_DIM=40 -DBWD_WARPS=8|-DBLOCK_Q=64 -DBLOCK_K=64 -DHEAD_DIM=256 -DBWD_WARPS=8|-DBLOCK_Q=16 -DBLOCK_K=16 -DHEAD_DIM=64 -DBWD_WARPS=1|-DATTN_DROPOUT=1|-DATTN_DROPOUT=1 -DATTN_BF16=1|-DBLOCK_Q=128 -DBLOCK_K=128 -DHEAD_DIM=40 -DBWD_WARPS=8 -DATTN_DROPOUT=1|-DBLOCK_Q=64 -DBLOCK_K=64 -DHEAD_DIM=256 -DBWD_WARPS=8 -DATTN_DROPOUT=1|-DBLOCK_Q=16 -DBLOCK_K=16 -DHEAD_DIM=64 -DBWD_WARPS=1 -DATTN_DROPOUT=1"
    [diff_fwd.cu]="-DBLOCK_Q=128 -DBLOCK_K=128 -DHEAD_DIM=64 -DSUB_K=64|-DBLOCK_Q=128 -DBLOCK_K=128 -DHEAD_DIM=32 -DSUB_K=128|-DBLOCK_Q=128 -DBLOCK_K=128 -DHEAD_DIM=96 -DSUB_K=32"
    [reformer.cu]="-DHEAD_DIM=64 -DCHUNK=32 -DHASHES=1 -DHASH_ROWS=128 -DROT_COLS=3 -DSORT_TILE=4096 -DCOMBINE_ROWS=128|-DHEAD_DIM=64 -DCHUNK=64 -DHASHES=2 -DHASH_ROWS=128 -DROT_COLS=66 -DSORT_TILE=4096 -DCOMBINE_ROWS=128|-DHEAD_DIM=128 -DCHUNK=64 -DHASHES=4 -DHASH_ROWS=128 -DROT_COLS=128 -DSORT_TILE=4096 -DCOMBINE_ROWS=128|-DHEAD_DIM=128 -DCHUNK=16 -DHASHES=8 -DHASH_ROWS=64 -DROT_COLS=64 -DSORT_TILE=256 -DCOMBINE_ROWS=64"
    [nsa_fwd.cu]="-DHEAD_DIM=64 -DCOMPRESS_TILE=64 -DCBLOCK=16 -DCSTRIDE=8 -DGROUP=4 -DBLOCK_Q=64 -DBLOCK_K=64 -DSBLOCK=32 -DN_SEL=4 -DSELECT_TILE=32|-DHEAD_DIM=96 -DCOMPRESS_TILE=64 -DCBLOCK=16 -DCSTRIDE=8 -DGROUP=4 -DBLOCK_Q=64 -DBLOCK_K=32 -DSBLOCK=32 -DN_SEL=4 -DSELECT_TILE=32|-DHEAD_DIM=32 -DCOMPRESS_TILE=64 -DCBLOCK=8 -DCSTRIDE=2 -DGROUP=32 -DBLOCK_Q=16 -DBLOCK_K=32 -DSBLOCK=32 -DN_SEL=4 -DSELECT_TILE=32"
    [standard_bwd.cu]="-DTILE_M=64 -DTILE_N=64 -DHEAD_DIM=40|-DTILE_M=128 -DTILE_N=128 -DHEAD_DIM=128"
    [flash1_bwd.cu]="-DBLOCK_Q=40 -DBLOCK_K=363 -DHEAD_DIM=40|-DBLOCK_Q=81 -DBLOCK_K=81 -DHEAD_DIM=128|-DBLOCK_Q=113 -DBLOCK_K=113 -DHEAD_DIM=128|-DBLOCK_Q=40 -DBLOCK_K=260 -DHEAD_DIM=40|-DBLOCK_Q=56 -DBLOCK_K=56 -DHEAD_DIM=256"
    [feature_attn.cu]="-DCHUNK=64 -DHEAD_DIM=128 -DFEAT_KIND=0 -DFEAT_UNITS=128|-DCHUNK=128 -DHEAD_DIM=64 -DFEAT_KIND=0 -DFEAT_UNITS=64|-DCHUNK=128 -DHEAD_DIM=64 -DFEAT_KIND=1 -DFEAT_UNITS=64|-DCHUNK=32 -DHEAD_DIM=128 -DFEAT_KIND=1 -DFEAT_UNITS=128|-DCHUNK=128 -DHEAD_DIM=64 -DFEAT_KIND=2 -DFEAT_UNITS=266|-DCHUNK=64 -DHEAD_DIM=128 -DFEAT_KIND=2 -DFEAT_UNITS=156|-DCHUNK=16 -DHEAD_DIM=128 -DFEAT_KIND=2 -DFEAT_UNITS=156|-DCHUNK=128 -DHEAD_DIM=40 -DFEAT_KIND=2 -DFEAT_UNITS=148"
)

# Largest register spill (bytes, ptxas "spill stores") accepted per source, over all its
# configurations here; anything above fails. Each nonzero budget is a known, documented spill
# (docs/gpu.md) — measure on a GPU before raising one.
declare -A SPILL_BUDGET=(
    # FA-2's 4-warp layout (2 row tiles a warp) at d = 64, B_c = 128: 255 registers + 68 B;
    # ring_step (the same loop, plus the ring's state pointers and step arguments) 76 B there
    [flash2_fwd.cu]=76
    # the backward at d = 256 (B_r = B_c = 64): dK_j, dV_j of 256 columns in 8 warps; its
    # dropout build at the d = 128 plan (64 x 128) spills 32 B (sm_80) / 28 B (sm_90): the
    # keep mask's hash beside 252-254 registers (docs/gpu.md "The flash2 dropout")
    [flash2_bwd.cu]=236
    # mla_attn's 16-warp CTA (64 heads x 4 column slices) is capped at 128 registers a thread:
    # 2 registers spill at B_c = 64 (A100 plan); none at B_c = 128
    [mla_decode.cu]=8
    # flash1_bwd at d = 256 (B_r = B_c = 56, a hand-picked H100 plan; the sweep has none):
    # dK_j, dV_j of 8 granules a warp next to the fully unrolled d = 256 S/dP granule and the
    # dropout hash, 255 registers + 4 B (sm_80) / 20 B (sm_90); every d <= 128 plan spills nothing
    [flash1_bwd.cu]=20
    # standard_pv at TILE 64 x 64: ptxas keeps 80 registers and spills 12 B (not pressure)
    [standard.cu]=12
    # performer at d = 128 with 128-row tiles (the non-causal A100/H100 plans): feature_state
    # 72 B on sm_90 (255 registers). feature_causal, which spilled up to 812 B at d = 128
    # with whole 128-key chunks of A in registers, now builds A in FA_SUB-key slices: no
    # spill in any configuration it is launched with (docs/gpu.md)
    [feature_attn.cu]=72
    # nsa_cmp at g x B_r = 512 packed rows (32 warps, 64 registers a thread: the hand-picked
    # g = 32, d = 32 configuration): 24 B on sm_80, 4 B on sm_90; the plans' sweep spills nothing
    [nsa_fwd.cu]=24
)

# Besides those: every configuration the simulator's plans give the ports over a sweep of
# A100/H100/H200 workloads (attnsim/port_configs.py; needs the project importable —
# ATTNSIM_PLAN_CONFIGS=0 skips them).
declare -A PLANNED=()
if [ "${ATTNSIM_PLAN_CONFIGS:-1}" = "1" ]; then
    if ! planned=$("${PYTHON:-python3}" -m attnsim.port_configs 2>&1); then
        echo "compile_cuda: could not list the plans' configurations (is the project installed?):" >&2
        echo "$planned" >&2
        exit 1
    fi
    while IFS=$'\t' read -r file defs; do
        [ -n "$file" ] && PLANNED[$file]+="${PLANNED[$file]:+|}$defs"
    done <<< "$planned"
fi

# One job per (source, arch, defines), run in parallel (nproc at a time); each writes its
# nvcc output and a "status registers spill" line, read back below in job order.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
compile_one() {      # compile_one INDEX SRC ARCH DEFS
    local out status regs spill
    # -cubin: device code only, as CuPy's RawKernel builds it; the sources have no host code,
    # and skipping the host compiler's pass takes a third off each compilation
    # shellcheck disable=SC2086  # defines are deliberately word-split
    out=$("$NVCC" -arch="$3" -std=c++17 -Werror all-warnings -Xptxas -v -cubin -o /dev/null $4 "$2" 2>&1)
    status=$?
    regs=$(echo "$out" | grep -o 'Used [0-9]* registers' | grep -o '[0-9]*' | sort -n | tail -1)
    spill=$(echo "$out" | grep -o '[0-9]* bytes spill stores' | grep -o '^[0-9]*' | sort -n | tail -1)
    echo "$out" > "$WORK/$1.out"
    echo "$status ${regs:-?} ${spill:-0}" > "$WORK/$1.res"
}
export -f compile_one
export NVCC WORK="$work"

jobs=()
for src in algorithms/cuda/*.cu; do
    name=$(basename "$src")
    IFS='|' read -r -a configs <<< "${EXTRA[$name]:-}${PLANNED[$name]:+|${PLANNED[$name]}}"
    configs=("" "-DATTN_BF16=1" "${configs[@]}")
    # drop repeats (a planned configuration may equal a hand-picked one with its defines in
    # another order): each configuration's defines sorted, then the first of each kept
    mapfile -t configs < <(printf '%s\n' "${configs[@]}" |
        awk '{ n = split($0, w, " "); for (i = 2; i <= n; i++) { x = w[i]
                   for (j = i - 1; j >= 1 && w[j] > x; j--) w[j + 1] = w[j]; w[j + 1] = x }
               s = ""; for (i = 1; i <= n; i++) s = s (i > 1 ? " " : "") w[i]
               if (!seen[s]++) print s }')
    if [ "$LIST_ONLY" = "1" ]; then
        printf "$name\t%s\n" "${configs[@]}"
        continue
    fi
    for arch in sm_80 sm_90; do
        for defs in "${configs[@]}"; do
            jobs+=("$src"$'\t'"$arch"$'\t'"$defs")
        done
    done
done
[ "$LIST_ONLY" = "1" ] && exit 0
for i in "${!jobs[@]}"; do printf '%s\t%s\0' "$i" "${jobs[$i]}"; done |
    xargs -0 -P "$(nproc)" -I{} bash -c 'IFS=$'"'"'\t'"'"' read -r i src arch defs <<< "$1"; compile_one "$i" "$src" "$arch" "$defs"' _ {}

failed=0
summary=""
for i in "${!jobs[@]}"; do
    IFS=$'\t' read -r src arch defs <<< "${jobs[$i]}"
    name=$(basename "$src")
    read -r status regs spill < "$work/$i.res"
    if [ "$status" -ne 0 ]; then
        echo "FAILED: $name for $arch ${defs:-(default defines)}" >&2
        cat "$work/$i.out" >&2
        failed=$((failed + 1))
        continue
    fi
    summary+="$name $arch ${defs:-(defaults)}: $regs registers, $spill B spilled"$'\n'
    budget=${SPILL_BUDGET[$name]:-0}
    if [ "$spill" -gt "$budget" ]; then
        echo "FAILED: $name for $arch ${defs:-(default defines)} spills $spill bytes of registers (budget $budget)" >&2
        grep -i 'spill\|registers' "$work/$i.out" >&2
        failed=$((failed + 1))
    fi
done
count=${#jobs[@]}
printf '%s' "$summary"
if [ "$failed" -ne 0 ]; then
    echo "compile_cuda: $failed of $count compilations failed" >&2
    exit 1
fi
echo "compile_cuda: $count compilations OK ($("$NVCC" --version | tail -1))"
