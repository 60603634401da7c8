#!/usr/bin/env bash
# The GPU checks that CPU machines cannot run, as one short script (sized for a 15-minute device
# budget; not yet run on a GPU): the Triton merging kernels and the compiled FlexAttention path under test on CUDA, the
# merge-kernel micro-benchmarks, and the VGGT-1B global-attention layer in bf16 at 100 and 300
# frames with both kernel paths (HARNESS_MERGE_KERNELS=triton, then torch).
#
#   PYTHON=.venv/bin/python bash tests/benchmarks/gpu_check.sh [OUT_DIR]     (default: gpu-check/)
set -u -o pipefail
out=${1:-${OUT:-gpu-check}}
py=${PYTHON:-python}
mkdir -p "$out"
"$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU here'; print(torch.cuda.get_device_name())" \
    | tee "$out/device.txt" || exit 2
"$py" -m pytest -q -p no:cacheprovider -rs tests/methods/test_triton_kernels.py tests/baselines/test_blocksparse.py \
    2>&1 | tail -25 | tee "$out/tests.txt"
"$py" -m pytest tests/benchmarks/test_bench_merge_kernels.py -q -p no:cacheprovider --override-ini=addopts= \
    --benchmark-timer=harness.measure.benchtimer.synchronized_perf_counter --benchmark-json="$out/microbench.json" \
    2>&1 | tail -25 | tee "$out/microbench.txt"
for kern in triton torch; do
    HARNESS_MERGE_KERNELS=$kern PYTHONPATH=. "$py" tests/benchmarks/bench_merging_layer.py --device cuda \
        --dtype bfloat16 --frames 100 300 --repeats 5 --skip httm_q0.4_kv0.3 2>&1 | tee "$out/layer-$kern.txt"
done
