#!/usr/bin/env bash
# The GPU checks that CPU machines cannot run, as one short script (sized for a 15-minute device
# budget; not yet run on a GPU): the Triton merging kernels and the compiled FlexAttention path under test on CUDA, the
# merge-kernel micro-benchmarks, the VGGT-1B global-attention layer in bf16 at 100 and 300
# frames with both kernel paths (HARNESS_MERGE_KERNELS=triton, then torch), and every VGGT method
# end to end at 100 frames with the memory wall's measured column.
#
#   PYTHON=.venv/bin/python bash tests/benchmarks/gpu_check.sh [OUT_DIR]     (default: gpu-check/)
set -u -o pipefail
out=${1:-${OUT:-gpu-check}}
py=${PYTHON:-python}
mkdir -p "$out"
"$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU here'; print(torch.cuda.get_device_name())" \
    | tee "$out/device.txt" || exit 2
"$py" -m pytest -q -p no:cacheprovider -rs tests/methods/test_triton_kernels.py tests/baselines/test_blocksparse.py \
    tests/baselines/test_hess.py tests/baselines/test_litevggt.py \
    2>&1 | tail -25 | tee "$out/tests.txt"
"$py" -m pytest tests/benchmarks/test_bench_merge_kernels.py -q -p no:cacheprovider --override-ini=addopts= \
    --benchmark-timer=harness.measure.benchtimer.synchronized_perf_counter --benchmark-json="$out/microbench.json" \
    2>&1 | tail -25 | tee "$out/microbench.txt"
for kern in triton torch; do
    HARNESS_MERGE_KERNELS=$kern PYTHONPATH=. "$py" tests/benchmarks/bench_merging_layer.py --device cuda \
        --dtype bfloat16 --frames 100 300 --repeats 5 --skip httm_q0.4_kv0.3 2>&1 | tee "$out/layer-$kern.txt"
done
# every VGGT method end to end at 100 frames of VGGT-1B (bf16, VGGT*): the CUDA paths of the 2026
# methods (HeSS's FlexAttention and its Fisher calibration, a forward and backward of VGGT-1B on 20
# frames; QuantVGGT's fake quantization, autocast dtypes) and measured peaks
# for the memory wall's model (the page goes to $out, not to docs/)
timeout 420 "$py" -m harness.cli run vggt-methods --preset gpu --set frames=100 --out "$out/vggt-methods-100" \
    --no-report -q 2>&1 | tail -5 | tee "$out/vggt-methods.txt"
cp -r docs/results/memory-wall.md docs/results/memory-wall "$out/" 2>/dev/null
"$py" -m reports.memory_wall build --root "$out" --measured "$out/vggt-methods-100" 2>&1 | tail -3 \
    | tee -a "$out/vggt-methods.txt"
