#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks.md, in one go, on one CUDA GPU:
#
#     bash benchmarks/gpu_suite.sh [OUT_DIR]      # default OUT_DIR: bench_gpu/ (JSON per run + logs)
#
# 1. ddpm-bench, the paper's 35.7M CIFAR-10 U-Net, batch 128, bf16-mixed + channels_last + torch.compile + fused
#    AdamW: Lightning step vs bare loop, sampling, model-FLOPs utilisation against the measured bf16 matmul rate.
# 2. ddpm-bench, same network and batch, plain fp32 eager (what the fast paths are worth on their own).
# 3. compare_diffusers.py: ddpm-lab's fast path vs diffusers' UNet2DModel of the same size in its default fp32
#    loop, in one process (needs pip install -e '.[bench]').
# 4. ddpm-bench as 1 with torch.compile's reduce-overhead mode (CUDA graphs), training only.
# BENCH_EXTRA is appended to every command (e.g. BENCH_EXTRA="--repeats 30"); SUITE_SKIP="NAME ..." skips runs.
set -uo pipefail
out=${1:-bench_gpu}
mkdir -p "$out"
extra=${BENCH_EXTRA:-}
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/gpu.txt"
python -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)" |
    tee -a "$out/gpu.txt"

run() {  # run NAME COMMAND...: log to $out/NAME.log, keep going on failure, remember it
    local name=$1
    shift
    case " ${SUITE_SKIP:-} " in *" $name "*) echo "== $name: skipped (SUITE_SKIP)"; return ;; esac
    echo "== $name: $*"
    "$@" 2>&1 | tee "$out/$name.log" | grep -v -E "Warning|warn\(|^\s*$" | tail -n 25
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "!! $name failed (exit $rc)"; status=1; }
}

workload=(--model unet_cifar10 --batch-size 128 --device cuda --sample-batch 128 --sample-steps 50 --repeats 20)
# shellcheck disable=SC2086
run bench_bf16_fast python -m ddpm_lab.bench "${workload[@]}" --precision bf16-mixed --channels-last --compile \
    --fused on --mfu --profile --json "$out/bench_bf16_fast.json" $extra
# shellcheck disable=SC2086
run bench_fp32_eager python -m ddpm_lab.bench "${workload[@]}" --precision 32-true --fused off --skip bare \
    --json "$out/bench_fp32_eager.json" $extra
# shellcheck disable=SC2086
run compare_diffusers python benchmarks/compare_diffusers.py --base 128 --batch-size 128 --device cuda \
    --precision bf16-mixed --channels-last --compile --diffusers-precision 32-true --sample-batch 128 \
    --sample-steps 50 --repeats 20 --json "$out/compare_diffusers.json" $extra
# shellcheck disable=SC2086
run bench_bf16_cudagraphs python -m ddpm_lab.bench "${workload[@]}" --precision bf16-mixed --channels-last \
    --compile --compile-mode reduce-overhead --fused on --skip sample,bare --json "$out/bench_bf16_cudagraphs.json" $extra
exit $status
