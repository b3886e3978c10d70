#!/usr/bin/env bash
# The device checks the CUDA ports owe (docs/gpu.md), in stages that each fit a 10-minute device call.
#
#   bash benchmarks/gpu_session.sh STAGE [STAGE ...]      (stages: quick env correctness timing
#                                                          sanitizer ncu tuning; all = every one
#                                                          but quick)
#
# Each stage writes its logs under $LOGS (default: $OUT, default ./gpu-session), one file per
# command, so a session with little device time can run the stages in separate calls and keep
# every figure. When $LOGS is elsewhere (the device tool brings back at most 8 files from
# $OUT), $OUT/session.tgz is rewritten after every command: a call cut short still returns
# everything done so far.
#
# `quick` is the whole session in one call for a lease of ~15 device minutes: the ports'
# targets first (flash2 against SDPA, predicted/measured), then every port once, a subset of
# the correctness tests, one ncu and one racecheck, each command under its own timeout and all
# of them under QUICK_BUDGET_S (default 480 s: what is left is skipped, and says so).
# Nothing is installed: the machine needs the project's dependencies (numpy, numba, scipy,
# tabulate, tqdm, threadpoolctl; pytest + hypothesis for the tests), CuPy, and optionally
# PyTorch (SDPA reference), compute-sanitizer and ncu. The `env` stage lists what is missing.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-session}"
LOGS="${LOGS:-$OUT}"
mkdir -p "$OUT" "$LOGS"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DEADLINE=""          # set by stage_quick: commands starting after it are skipped
CMD_TIMEOUT="${CMD_TIMEOUT:-0}"     # seconds per command (0: none)

run() {      # run NAME CMD...: log to $LOGS/NAME.log, echo the tail, keep going on failure
    local name=$1; shift
    if [ -n "$DEADLINE" ] && [ "$SECONDS" -ge "$DEADLINE" ]; then
        echo "== $name: skipped (QUICK_BUDGET_S spent)"
        echo "$name skipped 0" >> "$LOGS/stages.txt"
        return
    fi
    echo "== $name: $*"
    local t0=$SECONDS limit=$CMD_TIMEOUT
    if [ -n "$DEADLINE" ]; then       # never past the deadline (at least 30 s a command)
        local left=$((DEADLINE - SECONDS))
        [ "$left" -lt 30 ] && left=30
        { [ "$limit" -eq 0 ] || [ "$left" -lt "$limit" ]; } && limit=$left
    fi
    if [ "$limit" -gt 0 ]; then
        timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
    else
        "$@" > "$LOGS/$name.log" 2>&1
    fi
    local rc=$?
    tail -n 25 "$LOGS/$name.log"
    echo "== $name: exit $rc in $((SECONDS - t0)) s$([ "$rc" -eq 124 ] && echo " (timed out)")"
    echo "$name $rc $((SECONDS - t0))" >> "$LOGS/stages.txt"
    if [ "$LOGS" != "$OUT" ]; then tar czf "$OUT/session.tgz" -C "$LOGS" . 2>/dev/null; fi
}

stage_quick() {
    DEADLINE=$((SECONDS + ${QUICK_BUDGET_S:-480}))
    [ "$CMD_TIMEOUT" -eq 0 ] && CMD_TIMEOUT=150
    run env-short bash -c "nvidia-smi -L; nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem,driver_version --format=csv; $PY -c 'import cupy, torch; print(cupy.__version__, torch.__version__)'"
    # the timing model's microbenchmark constants on this board (GEMM, clock under load,
    # triad bandwidth, DRAM latency, the stream occupancy sweep, mma.sync, ex2, ALU and FMA
    # ceilings; about 20 s)
    run q-microbench "$PY" benchmarks/gpu_microbench.py --json "$LOGS/q-microbench.json" \
        --toml "$LOGS/measured-gpu.toml"
    # the pipe model's chain rule on a synthetic loop: do MMAs and exps of resident warps,
    # staggered or in step, or of two CTAs per SM, hide each other? (a few seconds)
    run q-overlap "$PY" benchmarks/gpu_overlap.py --json "$LOGS/q-overlap.json"
    # PyTorch eager attention (the papers' "standard" bars) step by step against the model
    run q-eager "$PY" benchmarks/profile_eager.py --json "$LOGS/q-eager.json"
    # the targets: flash2 >= 0.5x SDPA (and each SDPA backend), pred/meas within 1.5x
    run q-flash2 "$PY" -m attnsim gpu-check flash2 standard --seq 4096 16384 --format json \
        -o "$LOGS/q-flash2.json"
    run q-d128 "$PY" -m attnsim gpu-check flash2 flash3 --head-dim 128 --seq 16384 \
        --format json -o "$LOGS/q-d128.json"
    # every other port once at N = 4096 (the CPU run is too large there: device references)
    run q-ports "$PY" -m attnsim gpu-check flash1 gqa ring local block_sparse linear performer \
        diff nsa reformer mla --seq 4096 --format json -o "$LOGS/q-ports.json"
    run q-bwd "$PY" -m attnsim gpu-check flash2 --pass fwd+bwd --seq 4096 --format json \
        -o "$LOGS/q-bwd.json"
    # correctness against the CPU simulation: small ragged cases of every port (48 tests,
    # bf16 and the backward included; the full list is the correctness stage)
    run q-pytest "$PY" -m pytest -m gpu tests/gpu -q -p no:cacheprovider \
        -k "(b1h2g2-97x97-d64-causal and not dropout) or (decode and not bf16 and not h128) or (ring and not bf16) or (nsa and 130x130) or (reformer and 192x192)" \
        --junitxml="$LOGS/q-pytest.xml"
    run q-ncu "$PY" benchmarks/ncu_dram.py flash2 --seq 16384 --ncu "${NCU:-ncu}" \
        --json "$LOGS/q-ncu-flash2.json"
    # the FMA/ALU/XU pipes' instructions against the counted ones (a run of its own: a
    # metric this ncu lacks must not cost the DRAM check above)
    run q-ncu-pipes "$PY" benchmarks/ncu_dram.py flash2 --seq 4096 --pipes --ncu "${NCU:-ncu}" \
        --json "$LOGS/q-ncu-pipes-flash2.json"
    run q-racecheck "${COMPUTE_SANITIZER:-compute-sanitizer}" --tool racecheck \
        --error-exitcode 9 "$PY" -m pytest -m gpu tests/gpu -q -p no:cacheprovider \
        -k "(flash2 or nsa or reformer or ring) and (97x97 or 130x130 or 192x192 or 333x333) and not bf16"
    run q-rest "$PY" -m attnsim gpu-check --seq 16384 --format json -o "$LOGS/q-rest.json"
    DEADLINE=""
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
        --junitxml="$LOGS/pytest-gpu.xml"
}

stage_timing() {
    run microbench "$PY" benchmarks/gpu_microbench.py --json "$LOGS/microbench.json" \
        --toml "$LOGS/measured-gpu.toml"
    run overlap "$PY" benchmarks/gpu_overlap.py --json "$LOGS/overlap.json"
    # the targets: flash2 >= 0.5x SDPA; predicted/measured within 1.5x at large N
    run gpu-check-dense "$PY" -m attnsim gpu-check standard flash1 flash2 \
        --seq 1024 4096 16384 --format json -o "$LOGS/gpu-check-dense.json"
    run gpu-check-dense-causal "$PY" -m attnsim gpu-check flash2 --causal \
        --seq 1024 4096 16384 --format json -o "$LOGS/gpu-check-causal.json"
    run gpu-check-d128 "$PY" -m attnsim gpu-check flash2 flash3 --head-dim 128 \
        --seq 4096 16384 --format json -o "$LOGS/gpu-check-d128.json"
    run gpu-check-bf16 "$PY" -m attnsim gpu-check flash2 --dtype bf16 \
        --seq 4096 16384 --format json -o "$LOGS/gpu-check-bf16.json"
    run gpu-check-bwd "$PY" -m attnsim gpu-check flash2 flash1 standard --pass fwd+bwd \
        --seq 1024 4096 --format json -o "$LOGS/gpu-check-bwd.json"
    run gpu-check-rest "$PY" -m attnsim gpu-check local block_sparse masked_dense gqa linear \
        --seq 4096 16384 --format json -o "$LOGS/gpu-check-rest.json"
    run gpu-check-mla "$PY" -m attnsim gpu-check mla --path absorbed upproject --heads 128 \
        --head-dim 128 --batch 4 --seq 4096 32768 --format json -o "$LOGS/gpu-check-mla.json"
    run gpu-check-nsa-reformer "$PY" -m attnsim gpu-check nsa reformer --heads 16 \
        --seq 4096 16384 --format json -o "$LOGS/gpu-check-nsa-reformer.json"
    # one device of the ring: link-bound blocks (N = 4K over 8: the predictions with and
    # without the link differ) and large ones (N = 64K: the link hidden, the two agree)
    run gpu-check-ring "$PY" -m attnsim gpu-check ring --devices 4 8 --head-dim 128 --heads 8 \
        --seq 4096 65536 --format json -o "$LOGS/gpu-check-ring.json"
    run gpu-check-all "$PY" -m attnsim gpu-check --seq 4096 --format markdown \
        -o "$LOGS/gpu-check-all.md"
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
    run ncu-standard "$PY" benchmarks/ncu_dram.py standard --seq 4096 --ncu "$n" --json "$LOGS/ncu-standard.json"
    run ncu-flash2 "$PY" benchmarks/ncu_dram.py flash2 --seq 16384 --ncu "$n" --json "$LOGS/ncu-flash2.json"
    run ncu-flash2-causal "$PY" benchmarks/ncu_dram.py flash2 --seq 16384 --causal --ncu "$n" --json "$LOGS/ncu-flash2-causal.json"
    run ncu-flash1 "$PY" benchmarks/ncu_dram.py flash1 --seq 8192 --ncu "$n" --json "$LOGS/ncu-flash1.json"
    run ncu-block-sparse "$PY" benchmarks/ncu_dram.py block_sparse --seq 8192 --ncu "$n" --json "$LOGS/ncu-block-sparse.json"
    run ncu-gqa "$PY" benchmarks/ncu_dram.py gqa --decode --seq 65536 --heads 32 --kv-heads 8 --ncu "$n" --json "$LOGS/ncu-gqa.json"
    run ncu-linear "$PY" benchmarks/ncu_dram.py linear --seq 65536 --ncu "$n" --json "$LOGS/ncu-linear.json"
    run ncu-mla "$PY" benchmarks/ncu_dram.py mla --decode --seq 32768 --heads 128 --head-dim 128 --ncu "$n" --json "$LOGS/ncu-mla.json"
    run ncu-mla-upproject "$PY" benchmarks/ncu_dram.py mla --decode --seq 32768 --heads 128 --head-dim 128 --option path=upproject --ncu "$n" --json "$LOGS/ncu-mla-upproject.json"
    run ncu-nsa "$PY" benchmarks/ncu_dram.py nsa --causal --seq 16384 --heads 64 --kv-heads 4 --head-dim 128 --batch 1 --ncu "$n" --json "$LOGS/ncu-nsa.json"
    run ncu-reformer "$PY" benchmarks/ncu_dram.py reformer --seq 16384 --ncu "$n" --json "$LOGS/ncu-reformer.json"
    run ncu-ring "$PY" benchmarks/ncu_dram.py ring --seq 65536 --heads 8 --head-dim 128 --option devices=8 --ncu "$n" --json "$LOGS/ncu-ring.json"
    run ncu-flash1-bwd "$PY" benchmarks/ncu_dram.py flash1 --pass bwd --seq 4096 --ncu "$n" --json "$LOGS/ncu-flash1-bwd.json"
    run ncu-standard-bwd "$PY" benchmarks/ncu_dram.py standard --pass bwd --seq 2048 --ncu "$n" --json "$LOGS/ncu-standard-bwd.json"
}

stage_tuning() {
    run warp-layout-d64 "$PY" benchmarks/flash2_warp_layout.py --head-dim 64 --seq 4096 16384
    run warp-layout-d64-causal "$PY" benchmarks/flash2_warp_layout.py --head-dim 64 --causal --seq 16384
}

[ $# -gt 0 ] || { sed -n '2,20p' "$0"; exit 2; }
for stage in "$@"; do
    case "$stage" in
        all) stage_env; stage_correctness; stage_timing; stage_sanitizer; stage_ncu; stage_tuning ;;
        quick|env|correctness|timing|sanitizer|ncu|tuning) "stage_$stage" ;;
        *) echo "unknown stage $stage; stages: quick env correctness timing sanitizer ncu tuning all" >&2; exit 2 ;;
    esac
done
echo "logs in $LOGS/ (stages.txt: name, exit status, seconds)$([ "$LOGS" != "$OUT" ] && echo "; all of it in $OUT/session.tgz")"
