#!/usr/bin/env bash
# GPU attribution benchmark (bf16, random Llama weights built from configs on CUDA, no downloads).
#
#   bash benchmarks/gpu.sh [1b|7b|7b-long|all]     (default: all; run one stage per call where a command is
#                                                   limited to 10 minutes: each stage is sized to fit)
#
# Stages (all eager attention, objective prob, every method's peak torch.cuda.max_memory_allocated reported):
#   1b       1B-class Llama (hidden 2048, 16 layers, 32 heads, 8 KV heads, intermediate 8192, vocab 128256),
#            prompt 512, targets 8,32,128,512
#   7b       7B-class Llama (hidden 4096, 32 layers, 32 heads, intermediate 11008, vocab 32000),
#            prompt 512, targets 8,32,128,512
#   7b-long  the 7B with a 4096-token prompt and 256 targets (the memory check); one timed call per method,
#            no warm-up call (each call takes about a minute; EXTRA="--skip prefix" if it runs out of time)
#
# Results: JSON and the printed log per stage in $OUT if set, else benchmarks/gpu_results/.
# Knobs (environment): REPEATS (default 3 for 1b, 2 for 7b), EXTRA (extra flags for attribution.py),
# DRY_RUN=1 (print each stage's command line, one per line, and run nothing).
set -uo pipefail

cd "$(dirname "$0")/.."
DEST="${OUT:-benchmarks/gpu_results}"
[[ "${DRY_RUN:-0}" == 1 ]] || mkdir -p "$DEST"
[[ "${DRY_RUN:-0}" == 1 ]] || { nvidia-smi || true; python -c "import torch, transformers; print('torch', torch.__version__, \
'cuda', torch.version.cuda, 'transformers', transformers.__version__)"; } > "$DEST/environment.txt" 2>&1

COMMON=(--device cuda --dtype bfloat16 --attn eager --max-memory --modes sensible)
LLAMA_1B=(--hidden 2048 --layers 16 --heads 32 --kv-heads 8 --intermediate 8192 --vocab 128256)
LLAMA_7B=(--hidden 4096 --layers 32 --heads 32 --kv-heads 32 --intermediate 11008 --vocab 32000)

run_stage() {
    local name="$1"
    shift
    if [[ "${DRY_RUN:-0}" == 1 ]]; then
        echo "$name $*"
        return 0
    fi
    echo "== $name: python benchmarks/attribution.py $*" | tee "$DEST/$name.log"
    python benchmarks/attribution.py "$@" --json "$DEST/$name.json" 2>&1 | tee -a "$DEST/$name.log"
    return "${PIPESTATUS[0]}"
}

stage() {
    case "$1" in
    1b) run_stage llama1b_p512 "${COMMON[@]}" "${LLAMA_1B[@]}" --prompt 512 --targets 8,32,128,512 \
            --repeats "${REPEATS:-3}" ${EXTRA:-} ;;
    7b) run_stage llama7b_p512 "${COMMON[@]}" "${LLAMA_7B[@]}" --prompt 512 --targets 8,32,128,512 \
            --repeats "${REPEATS:-2}" ${EXTRA:-} ;;
    7b-long) run_stage llama7b_p4096_n256 "${COMMON[@]}" "${LLAMA_7B[@]}" --prompt 4096 --targets 256 \
            --repeats 1 --warmup 0 ${EXTRA:-} ;;
    *) echo "unknown stage $1: use 1b, 7b, 7b-long or all" >&2; return 2 ;;
    esac
}

status=0
if [[ "${1:-all}" == all ]]; then
    for s in 1b 7b 7b-long; do stage "$s" || status=$?; done
else
    stage "$1" || status=$?
fi
[[ "${DRY_RUN:-0}" == 1 ]] || echo "results in $DEST (exit status $status)"
exit "$status"
