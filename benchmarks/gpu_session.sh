#!/usr/bin/env bash
# The device checks owed by issue 7, in stages that each fit a 10-minute device call.
#
#   bash benchmarks/gpu_session.sh STAGE [STAGE ...]      (stages: env correctness timing
#                                                          sanitizer ncu tuning; all = every one)
#
# Each stage writes its logs under $OUT (default: ./gpu-session), one file per command, so a
# session with little device time can run the stages in separate calls and keep every figure.
# Nothing is installed: the machine needs the project's dependencies (numpy, numba, scipy,
# tabulate, tqdm, threadpoolctl; pytest + hypothesis for the tests), CuPy, and optionally
# PyTorch (SDPA reference), compute-sanitizer and ncu. The `env` stage lists what is missing.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-session}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

run() {      # run NAME CMD...: log to $OUT/NAME.log, echo the tail, keep going on failure
    local name=$1; shift
    echo "== $name: $*"
    local t0=$SECONDS
    "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.log"
    echo "== $name: exit $rc in $((SECONDS - t0)) s"
    echo "$name $rc $((SECONDS - t0))" >> "$OUT/stages.txt"
}

stage_env() {
    run nvidia-smi nvidia-smi -q
    run imports "$PY" -c "
import importlib
for m in ('numpy', 'numba', 'scipy', 'tabulate', 'tqdm', 'threadpoolctl', 'pytest',
          'hypothesis', 'cupy', 'torch'):
    try:
        mod = importlib.import_module(m)
        print(f'{m:14s} {getattr(mod, \"__version__\", \"?\")}')
    except Exception as err:
        print(f'{m:14s} MISSING ({type(err).__name__}: {err})')
"
    run gpu-available "$PY" -c "
from attnsim import gpu
ok, why = gpu.gpu_available()
print(ok, why)
if ok:
    print(gpu.detect_gpu_model()); print(gpu.sdpa_available())"
}

stage_correctness() {
    # every port against the CPU simulation, fp16 and bf16, ragged/causal/GQA/split-KV
    run pytest-gpu "$PY" -m pytest -m gpu tests/gpu -q -p no:cacheprovider \
        --junitxml="$OUT/pytest-gpu.xml"
}

stage_timing() {
    # issue 7's targets: flash2 >= 0.5x SDPA; predicted/measured within 1.5x at large N
    run gpu-check-dense "$PY" -m attnsim gpu-check standard flash1 flash2 \
        --seq 1024 4096 16384 --format json -o "$OUT/gpu-check-dense.json"
    run gpu-check-dense-causal "$PY" -m attnsim gpu-check flash2 --causal \
        --seq 1024 4096 16384 --format json -o "$OUT/gpu-check-causal.json"
    run gpu-check-d128 "$PY" -m attnsim gpu-check flash2 flash3 --head-dim 128 \
        --seq 4096 16384 --format json -o "$OUT/gpu-check-d128.json"
    run gpu-check-bf16 "$PY" -m attnsim gpu-check flash2 --dtype bf16 \
        --seq 4096 16384 --format json -o "$OUT/gpu-check-bf16.json"
    run gpu-check-bwd "$PY" -m attnsim gpu-check flash2 flash1 standard --pass fwd+bwd \
        --seq 1024 4096 --format json -o "$OUT/gpu-check-bwd.json"
    run gpu-check-rest "$PY" -m attnsim gpu-check local block_sparse masked_dense gqa linear \
        --seq 4096 16384 --format json -o "$OUT/gpu-check-rest.json"
    run gpu-check-mla "$PY" -m attnsim gpu-check mla --path absorbed upproject --heads 128 \
        --head-dim 128 --batch 4 --seq 4096 32768 --format json -o "$OUT/gpu-check-mla.json"
    run gpu-check-nsa-reformer "$PY" -m attnsim gpu-check nsa reformer --heads 16 \
        --seq 4096 16384 --format json -o "$OUT/gpu-check-nsa-reformer.json"
    # one device of the ring: link-bound blocks (N = 16K over 8: predicted with and without
    # the link differ) and large ones (the link hidden: the two agree)
    run gpu-check-ring "$PY" -m attnsim gpu-check ring --devices 4 8 --head-dim 128 --heads 8 \
        --seq 16384 65536 --format json -o "$OUT/gpu-check-ring.json"
    run gpu-check-all "$PY" -m attnsim gpu-check --seq 4096 --format markdown \
        -o "$OUT/gpu-check-all.md"
}

stage_sanitizer() {
    local cs="${COMPUTE_SANITIZER:-compute-sanitizer}"
    run memcheck "$cs" --tool memcheck --error-exitcode 9 "$PY" -m pytest -m gpu tests/gpu -q \
        -p no:cacheprovider -k "97x97 or 200x333 or decode"
    run racecheck-flash2 "$cs" --tool racecheck --error-exitcode 9 "$PY" -m pytest -m gpu \
        tests/gpu -q -p no:cacheprovider -k "flash2 and 97x97"
    run racecheck-others "$cs" --tool racecheck --error-exitcode 9 "$PY" -m pytest -m gpu \
        tests/gpu -q -p no:cacheprovider -k "(flash1 or local or gqa) and 97x97"
    run racecheck-new "$cs" --tool racecheck --error-exitcode 9 "$PY" -m pytest -m gpu \
        tests/gpu -q -p no:cacheprovider -k "(nsa or reformer or upproject or ring) and not 32768 and not h128"
    run initcheck "$cs" --tool initcheck --error-exitcode 9 "$PY" -m pytest -m gpu tests/gpu \
        -q -p no:cacheprovider -k "standard and 97x97"
}

stage_ncu() {
    # one large case per port: DRAM bytes measured vs counted vs modelled
    local n="${NCU:-ncu}"
    run ncu-standard "$PY" benchmarks/ncu_dram.py standard --seq 4096 --ncu "$n" --json "$OUT/ncu-standard.json"
    run ncu-flash2 "$PY" benchmarks/ncu_dram.py flash2 --seq 16384 --ncu "$n" --json "$OUT/ncu-flash2.json"
    run ncu-flash2-causal "$PY" benchmarks/ncu_dram.py flash2 --seq 16384 --causal --ncu "$n" --json "$OUT/ncu-flash2-causal.json"
    run ncu-flash1 "$PY" benchmarks/ncu_dram.py flash1 --seq 8192 --ncu "$n" --json "$OUT/ncu-flash1.json"
    run ncu-block-sparse "$PY" benchmarks/ncu_dram.py block_sparse --seq 8192 --ncu "$n" --json "$OUT/ncu-block-sparse.json"
    run ncu-gqa "$PY" benchmarks/ncu_dram.py gqa --decode --seq 65536 --heads 32 --kv-heads 8 --ncu "$n" --json "$OUT/ncu-gqa.json"
    run ncu-linear "$PY" benchmarks/ncu_dram.py linear --seq 65536 --ncu "$n" --json "$OUT/ncu-linear.json"
    run ncu-mla "$PY" benchmarks/ncu_dram.py mla --decode --seq 32768 --heads 128 --head-dim 128 --ncu "$n" --json "$OUT/ncu-mla.json"
    run ncu-mla-upproject "$PY" benchmarks/ncu_dram.py mla --decode --seq 32768 --heads 128 --head-dim 128 --option path=upproject --ncu "$n" --json "$OUT/ncu-mla-upproject.json"
    run ncu-nsa "$PY" benchmarks/ncu_dram.py nsa --causal --seq 16384 --heads 64 --kv-heads 4 --head-dim 128 --batch 1 --ncu "$n" --json "$OUT/ncu-nsa.json"
    run ncu-reformer "$PY" benchmarks/ncu_dram.py reformer --seq 16384 --ncu "$n" --json "$OUT/ncu-reformer.json"
    run ncu-ring "$PY" benchmarks/ncu_dram.py ring --seq 65536 --heads 8 --head-dim 128 --option devices=8 --ncu "$n" --json "$OUT/ncu-ring.json"
    run ncu-flash1-bwd "$PY" benchmarks/ncu_dram.py flash1 --pass bwd --seq 4096 --ncu "$n" --json "$OUT/ncu-flash1-bwd.json"
    run ncu-standard-bwd "$PY" benchmarks/ncu_dram.py standard --pass bwd --seq 2048 --ncu "$n" --json "$OUT/ncu-standard-bwd.json"
}

stage_tuning() {
    run warp-layout-d64 "$PY" benchmarks/flash2_warp_layout.py --head-dim 64 --seq 4096 16384
    run warp-layout-d64-causal "$PY" benchmarks/flash2_warp_layout.py --head-dim 64 --causal --seq 16384
}

[ $# -gt 0 ] || { sed -n '2,10p' "$0"; exit 2; }
for stage in "$@"; do
    case "$stage" in
        all) stage_env; stage_correctness; stage_timing; stage_sanitizer; stage_ncu; stage_tuning ;;
        env|correctness|timing|sanitizer|ncu|tuning) "stage_$stage" ;;
        *) echo "unknown stage $stage; stages: env correctness timing sanitizer ncu tuning all" >&2; exit 2 ;;
    esac
done
echo "logs in $OUT/ (stages.txt: name, exit status, seconds)"
