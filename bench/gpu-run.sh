#!/usr/bin/env bash
# Every GPU check and benchmark of the CUDA backend in one run on the GPU
# machine (bench/RESULTS.md records its output). Binaries are built on the CPU
# machine and carried in .carry/ (stripped copies of
# target/release/{examples/gpu_check,ds4-gguf,ds4-bench,ds4-server,ds4}) with the prompt text
# .carry/promessi_sposi.txt (shared/data/bench/). A peer's ds4-bench binary,
# built by hand, is run side by side when DS4C_BENCH names it.
# Usage: OUT=dir bench/gpu-run.sh            (everything)
#        OUT=dir MODE=diag bench/gpu-run.sh   (matvec micro-benchmark, decode with the
#        old and new matvec kernels, one decode step under ncu)
#        OUT=dir MODE=diag2 bench/gpu-run.sh  (correctness, micro-benchmarks, decode with the
#        host counters, one decode step under ncu, ncu sections of the expert kernels)
#        OUT=dir MODE=extra bench/gpu-run.sh  (micro-benchmarks, one decode step under ncu)
#        OUT=dir MODE=quick bench/gpu-run.sh  (correctness, decode at 2K with the host counters)
#        OUT=dir MODE=short bench/gpu-run.sh  (correctness, decode 2K/8K, ds4.c at 2K when
#        DS4C_BENCH is set, the fused-path micro-benchmarks)
set -u
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export DS4_KERNEL_CACHE=${DS4_KERNEL_CACHE:-/tmp/ds4-kernels}
B=${DS4_BIN:-.carry}
OUT=${OUT:-/tmp/ds4-out}
M=/dev/shm/full-q2.gguf
P=$B/promessi_sposi.txt
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
[[ -s $M ]] || ("$B/ds4-gguf" synth -o $M --preset full --quant q2 --seed 1 > "$OUT/synth.log" 2>&1) &
# Shared steps of the modes below.
correctness() { # CUDA vs CPU on the tiny models, then wait for the synthesized file
    echo "== correctness: CUDA vs CPU on tiny models (matvec path, then cuBLAS path)"
    timeout 200 "$B/gpu_check" correctness > "$OUT/correctness.log" 2>&1
    grep -c PASS "$OUT/correctness.log"; grep "FAIL\|SKIP\|panick" "$OUT/correctness.log"
    wait
}
mvbench() { # micro-benchmarks; $1: lines to leave out of the printout
    echo "== matvec and MoE micro-benchmarks"
    timeout 200 "$B/gpu_check" mvbench > "$OUT/mvbench.log" 2>&1
    grep -v "${1:-^$}" "$OUT/mvbench.log"
}
ncu_step() { # one decode step at 2K under ncu: per-kernel GPU time
    echo "== one decode step under ncu (per-kernel GPU time)"
    DS4_NCU_STEP=1 DS4_PROMPT_FILE=$P timeout 240 ncu --profile-from-start off --clock-control none \
        --metrics gpu__time_duration.sum --csv --print-units base "$B/gpu_check" speed $M 2048 \
        > "$OUT/ncu-step.csv" 2> "$OUT/ncu-step.err"
    echo "ncu rc $? rows $(wc -l < "$OUT/ncu-step.csv")"
}
if [[ ${MODE:-} == short ]]; then
    correctness
    echo "== ds4-rs: decode at 2K and 8K with the host counters"
    DS4_CUDA_HOST_STATS=1 DS4_PROMPT_FILE=$P timeout 150 "$B/gpu_check" speed $M 2048 8192 2>&1 | tee "$OUT/speed.log"
    if [[ -n ${DS4C_BENCH:-} ]]; then
        echo "== peer: ds4.c CUDA (weights copied to VRAM), 2K"
        DS4_CUDA_COPY_MODEL=1 timeout 100 "$DS4C_BENCH" --cuda -m $M --prompt-file $P --ctx-start 2048 \
            --ctx-max 2048 --gen-tokens 64 --csv "$OUT/ds4c-decode.csv" > "$OUT/ds4c-decode.log" 2>&1
        cat "$OUT/ds4c-decode.csv"
    fi
    mvbench "^mv "
    exit 0
fi
if [[ ${MODE:-} == quick ]]; then
    correctness
    echo "== decode at 2K with the host counters"
    DS4_CUDA_HOST_STATS=1 DS4_PROMPT_FILE=$P timeout 150 "$B/gpu_check" speed $M 2048 2>&1 | tee "$OUT/speed.log"
    exit 0
fi
if [[ ${MODE:-} == extra ]]; then
    wait
    mvbench
    ncu_step
    exit 0
fi
if [[ ${MODE:-} == diag2 ]]; then
    correctness
    if [[ -z ${SKIP_MVBENCH:-} ]]; then
        mvbench
    fi
    echo "== decode at 2K and 8K with the host counters"
    DS4_CUDA_HOST_STATS=1 DS4_PROMPT_FILE=$P timeout 200 "$B/gpu_check" speed $M 2048 8192 2>&1 | tee "$OUT/speed.log"
    ncu_step
    [[ -n ${SKIP_MVBENCH:-} ]] && exit 0
    echo "== stall and memory sections of the fused expert kernels (micro-benchmark)"
    timeout 150 ncu --clock-control none -k regex:'mvs_gate_up|mvs_down' -c 2 \
        --section SpeedOfLight --section WarpStateStats --section MemoryWorkloadAnalysis \
        --section Occupancy --section SchedulerStats "$B/gpu_check" mvbench > "$OUT/ncu-sections.txt" 2>&1
    echo "ncu sections rc $?"
    exit 0
fi
if [[ ${MODE:-} == diag ]]; then
    correctness
    mvbench
    echo "== ds4-rs decode at 8K and 2K, new matvec kernels, then the old ones"
    DS4_MV_AB=1 DS4_PROMPT_FILE=$P timeout 200 "$B/gpu_check" speed $M 8192 2048 2>&1 | tee "$OUT/speed-ab.log"
    ncu_step
    exit 0
fi
correctness
echo "== ds4-rs: cold prefill 2K / 8K, decode (real text tokens)"
DS4_CUDA_HOST_STATS=1 DS4_PROMPT_FILE=$P timeout 120 "$B/gpu_check" speed $M 2048 8192 2>&1 | tee "$OUT/speed.log"
if [[ -n ${DS4C_BENCH:-} ]]; then
    echo "== peer: ds4.c CUDA (weights copied to VRAM)"
    DS4_CUDA_COPY_MODEL=1 timeout 150 "$DS4C_BENCH" --cuda -m $M --prompt-file $P --ctx-start 2048 \
        --ctx-max 32768 --step-mul 16 --gen-tokens 64 --csv "$OUT/ds4c-decode.csv" > "$OUT/ds4c-decode.log" 2>&1
    cat "$OUT/ds4c-decode.csv"
    DS4_CUDA_COPY_MODEL=1 timeout 80 "$DS4C_BENCH" --cuda -m $M --prompt-file $P --ctx-start 8192 \
        --ctx-max 8192 --gen-tokens 16 --csv "$OUT/ds4c-pp8k.csv" > "$OUT/ds4c-pp8k.log" 2>&1
    cat "$OUT/ds4c-pp8k.csv"
fi
echo "== ds4-rs: decode at 32K"
DS4_PROMPT_FILE=$P timeout 100 "$B/gpu_check" speed $M 32768 2>&1 | tee "$OUT/speed32k.log"
echo "== ds4-rs: ds4-bench --cuda at 2K with the kernel profile"
DS4_CUDA_PROFILE=1 timeout 80 "$B/ds4-bench" --cuda -m $M --prompt-file $P --ctx-start 2048 --ctx-max 2048 \
    --gen-tokens 16 --csv "$OUT/ds4rs-bench.csv" > "$OUT/ds4rs-bench.log" 2>&1
grep prof "$OUT/ds4rs-bench.log" | head -14; cat "$OUT/ds4rs-bench.csv"
echo "== ds4-server --cuda on the full-shape file: one streaming chat request"
"$B/ds4-server" --cuda -m $M --port 8123 -c 8192 > "$OUT/server.log" 2>&1 &
SP=$!
for _ in $(seq 1 150); do curl -sf localhost:8123/health > /dev/null 2>&1 && break; sleep 1; done
curl -sN --max-time 60 localhost:8123/v1/chat/completions -H 'content-type: application/json' \
    -d '{"model":"deepseek-v4-flash","messages":[{"role":"user","content":"Say hello."}],"stream":true,"max_tokens":16}' \
    > "$OUT/server-stream.txt"
echo "stream events: $(grep -c '^data:' "$OUT/server-stream.txt")"; head -c 400 "$OUT/server-stream.txt"; echo
kill $SP; wait $SP 2> /dev/null; grep -i -m3 "cuda\|backend" "$OUT/server.log"
echo "== ds4 --cuda one-shot on the full-shape file"
timeout 150 "$B/ds4" --cuda -m $M -p "Say hello." -n 16 > "$OUT/cli.log" 2>&1; echo "rc $?"; tail -c 400 "$OUT/cli.log"; echo
