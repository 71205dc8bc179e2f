#!/usr/bin/env bash
# The README's speed and memory tables: every tools/benchmark.py run, one after another (keep the machine
# otherwise idle: contenders alternate within each round, but load still adds noise). Writes docs/benchmark/.
#   bash tools/run_benchmarks.sh [OUT_DIR]          about 30 min on a 2-core CPU machine (+15 min of compiling
#                                                   the first time: inductor's cache is empty)
# On a GPU machine add the bf16 table:  DEVICE=cuda PEAK_TFLOPS=989 bash tools/run_benchmarks.sh
# A smoke run of the whole script (tiny models, one repeat): BENCH_EXTRA=--quick bash tools/run_benchmarks.sh /tmp/b
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/benchmark}
mkdir -p "$OUT"
bench() { local name=$1; shift; echo "# $(date -u +%H:%M:%S) $name"; bash run.sh python tools/benchmark.py "$@" ${BENCH_EXTRA:-} --out "$OUT/$name.json" 2>&1 \
  | tee "$OUT/$name.txt"; }
if [ "${DEVICE:-cpu}" = cuda ]; then
  bench backbones_cuda_bf16_b2 --device cuda --models backbones --sizes 512,800x1333,1024 --batch 2 --dtype fp32,bf16 \
    --repeats 10 --warmup 3 --peak-tflops "${PEAK_TFLOPS:-989}"
  bench models_cuda_bf16_b2 --device cuda --models maskrcnn,upernet --sizes 512,800x1333 --batch 2 --dtype fp32,bf16 \
    --repeats 10 --warmup 3 --no-flops
  bench cost_curve_cuda --device cuda --cost-curve --repeats 10 --warmup 3
  exit 0
fi
bench backbones_cpu_fp32_b1 --models backbones --sizes 224,512,800x1333 --batch 1 --repeats 5 --warmup 1
bench vit_cpu_fp32_b1_800x1333 --models vit-timm --sizes 800x1333 --batch 1 --repeats 5 --warmup 1
bench backbones_cpu_fp32_b2 --models swin-mmdet,cpvt-mmseg,cpvt-timm,vit-timm --sizes 512 --batch 2 --repeats 5 \
  --warmup 1 --no-flops
bench backbones_cpu_bf16_b1 --models swin-mmdet,cpvt-mmseg,swin-timm,cpvt-timm,vit-timm --sizes 512 --batch 1 \
  --dtype bf16 --repeats 5 --warmup 1 --no-flops
bench models_cpu_fp32_b2 --models maskrcnn,upernet --sizes 512 --batch 2 --repeats 5 --warmup 1 --no-flops
bench cost_curve_cpu --cost-curve --repeats 3 --warmup 1
# torch.compile on both sides (a few minutes of compiling with an empty inductor cache)
bench compile_cpu_fp32_b1 --models swin-mmdet,cpvt-mmseg --sizes 512 --batch 1 --modes fwdbwd --compile --repeats 5
