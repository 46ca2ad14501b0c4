#!/usr/bin/env bash
# Every GPU check and benchmark of the CUDA backend in one run on the GPU
# machine. Binaries are built on the CPU machine and carried in .carry/
# (stripped copies of target/release/{examples/gpu_check,ds4-gguf,ds4-bench}).
# Usage: bench/gpu-run.sh [correctness|speed|all]
set -uo pipefail
what=${1:-all}
B=${DS4_BIN:-.carry}
OUT=${OUT:-/tmp/ds4-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export DS4_KERNEL_CACHE=/tmp/ds4-kernels
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
if [[ $what == correctness || $what == all ]]; then
    echo "== correctness (CUDA vs CPU, tiny models)"
    timeout 400 "$B/gpu_check" correctness 2>&1 | tee "$OUT/correctness.log"
fi
if [[ $what == speed || $what == all ]]; then
    if [[ ! -s /dev/shm/full-q2.gguf ]]; then
        echo "== synth full q2 into /dev/shm"
        s=$SECONDS; "$B/ds4-gguf" synth -o /dev/shm/full-q2.gguf --preset full --quant q2 --seed 1 2>&1 | tail -2; echo "synth $((SECONDS - s)) s"
    fi
    echo "== speed (cold prefill + 32 greedy decode steps)"
    timeout 300 "$B/gpu_check" speed /dev/shm/full-q2.gguf 2048 8192 2>&1 | tee "$OUT/speed.log"
fi
if [[ $what == bench || $what == all ]]; then
    echo "== ds4-bench --cuda (decode at 2K and 32K)"
    timeout 400 "$B/ds4-bench" --cuda -m /dev/shm/full-q2.gguf --prompt-file "$B/promessi_sposi.txt" \
        --ctx-start 2048 --ctx-max 32768 --step-mul 16 --gen-tokens 64 --csv "$OUT/ds4rs-bench.csv" 2>&1 | tail -5
    cat "$OUT/ds4rs-bench.csv"
fi
