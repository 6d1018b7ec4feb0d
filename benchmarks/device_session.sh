#!/usr/bin/env bash
# One device call: the GPU stages of benchmarks/gpu.sh on cores 0-3 and, at the same time, a demo recipe
# sweep (benchmarks/demo_recipe_sweep.py) on cores 4-15. Needs $OUT and the lm-eval wheels in .whl/.
set -u
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    > "$OUT/pip.log" 2>&1 || echo "pip install failed: see pip.log"
export PYTHONPATH="/tmp/site:$PWD" TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
# editable install: the task folder is the package lm_interp_plugin.tasks only through pyproject's package-dir
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >> "$OUT/pip.log" 2>&1 || echo "editable install failed"
command -v python > /dev/null || { mkdir -p /tmp/bin; ln -sf "$(command -v python3)" /tmp/bin/python; export PATH="/tmp/bin:$PATH"; }
python -c "import lm_eval, datasets, transformers, torch; print('lm_eval', lm_eval.__version__, 'datasets', datasets.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__, torch.cuda.get_device_name(0))" 2>&1 | tail -3
nproc
(
    python benchmarks/demo_recipe_sweep.py --out /tmp/sweep --seeds ${SWEEP_SEEDS:-0 1 2 3} --cores 4-15 --budget "${SWEEP_BUDGET:-510}" \
        --variant 'v1={}' --variant 'words={"word_tasks": true}' \
        > "$OUT/sweep.log" 2>&1
    cp /tmp/sweep/sweep.json "$OUT/" 2>/dev/null
    (cd /tmp/sweep && find . \( -name results.json -o -name demo_manifest.json -o -name log.txt \) -print \
        | tar czf "$OUT/sweep_runs.tar.gz" -T -)
) &
SWEEP=$!
OMP_NUM_THREADS=4 taskset -c 0-3 bash benchmarks/gpu.sh --out "$OUT/gpu" --budget "${GPU_BUDGET:-470}" --wheels .whl ${GPU_ONLY:+--only $GPU_ONLY} \
    > "$OUT/gpu.log" 2>&1
echo "gpu.sh exit $?"
wait $SWEEP
tail -60 "$OUT/sweep.log"
cat "$OUT/gpu/summary.txt" | head -150
