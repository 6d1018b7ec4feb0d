#!/usr/bin/env bash
# Every GPU measurement of issue 16 and `pytest -m gpu`, in under 8 minutes on one H100 (bf16, random
# Llama weights built from configs on the device, nothing downloaded).
#
#   bash benchmarks/gpu.sh [--out DIR] [--budget S] [--stage-timeout S] [--only STAGE,...] [--wheels DIR]
#                          [--dry-run] [--print]
#
#   --out DIR       where the ONE tarball (gpu_results.tar.gz: every JSON and log) and the ONE summary text
#                   (summary.txt) go; default benchmarks/gpu_results/
#   --budget S      wall seconds for all stages together (default 470); every stage has its own timeout as
#                   well, cut to what is left, so a slow stage cannot eat the rest; a stage that would get
#                   under 15 s is skipped and says so in the summary
#   --stage-timeout S  cap every stage's own timeout at S seconds
#   --only LIST     run only these stages (comma-separated names below)
#   --wheels DIR    install lm-eval from the wheels in DIR when it is not importable (the GPU machine has no
#                   package index); default $LM_INTERP_WHEELS or benchmarks/wheels. Prepare it on a machine
#                   with the same Python and an index, then carry the folder along:
#                       pip download "lm-eval==0.4.13" accelerate scipy matplotlib -d benchmarks/wheels
#                   (sqlitedict, word2number and rouge-score are sdists: `pip wheel --no-deps` them first
#                   and add `--find-links` that folder; on 2026-11-26 the H100 image lacked lm-eval, datasets,
#                   evaluate, dill, multiprocess, more_itertools, pytablewriter and its helpers (dataproperty,
#                   mbstrdecoder, pathvalidate, tabledata, tcolorpy, typepy, chardet, pytz), rouge-score, nltk,
#                   sqlitedict, word2number, and an fsspec old enough for datasets)
#                   (add --python-version/--platform when the machines differ; only what the GPU machine
#                   lacks is installed from it: torch and transformers are normally there already)
#   --dry-run       every stage at toy size on the CPU (what CI runs: tests/test_benchmarks.py)
#   --print         print each stage's command line (NAME SCRIPT ARGS...) and run nothing (DRY_RUN=1 too)
#
# Stages, in priority order (timeout s):
#   env                  nvidia-smi, torch/transformers/lm-eval versions                           (30)
#   deps                 lm-eval and the plugin's other dependencies; what is missing comes from
#                        --wheels; then the plugin itself, editable (`pip install --no-deps -e .`), when
#                        lm_interp_plugin.tasks is not importable (the task folder is that package only
#                        through pyproject's package-dir)                                           (120)
#   llama1b_p512         1B (h2048, 16 L, 8 KV heads, vocab 128256), P=512, N=8,32,128, SDPA: paper and
#                        frozen loops, engine, engine without the LM-head shortcut, the whole pass  (110)
#   llama7b_p4096_n256   7B (h4096, 32 L, vocab 32000), P=4096, N=256, SDPA: frozen loop, engine, whole
#                        pass, peak memory (the "fits one 80 GB GPU" check)                          (200)
#   precision_1b         1B, P=512, N=128: float32-TF32 / bf16 / fp16 against float32 without TF32:
#                        max-entry, Frobenius, instruction_importance; picks the default            (80)
#   precision_demo       the same on the shipped demo pair's tuned model and its 54 held-out prompts:
#                        real prompts, where instruction_importance is not 0 (random ids leave it
#                        at 0, so precision_1b cannot choose)                                        (45)
#   profile_1b           1B, P=512, N=128 engine under torch.profiler: top kernels, and the ops whose batched
#                        backward loops per derivative (legacy vmap fallback) with their time share (60)
#   overhead_1b          lm-eval multiple choice, interp-hf vs hf, 1B config in bf16               (120)
#   pytest_gpu           python -m pytest -m gpu tests/test_gpu.py                                  (90)
#   explain_7b           explain-heads + explain-ffn on all 32 layers of the 7B config              (60)
#   llama7b_p512         7B, P=512, N=32,128: loops, engine, no-shortcut engine, whole pass        (90)
#   llama1b_p512_eager   the 1B N=128 cell under eager attention (the former pass's route); optional:
#                        only with --only llama1b_p512_eager (measured 2026-11-26, RESULTS.md G)     (60)
#
# On an H100 on 2026-11-26 these stages took about 500 s together (precision_demo estimated, llama1b_p512
# then with 2 repeats, now 1): at the edge of the 470 s budget, which may cut the last one (llama7b_p512,
# the least needed) and says so in the summary.
set -uo pipefail

cd "$(dirname "$0")/.."
REPO="$PWD"
ARGS="$*"
OUT="benchmarks/gpu_results"
BUDGET=470
CAP=0
ONLY=""
WHEELS="${LM_INTERP_WHEELS:-benchmarks/wheels}"
DRY=0
PRINT=0
[[ "${DRY_RUN:-0}" == 1 ]] && PRINT=1
while [[ $# -gt 0 ]]; do
    case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --stage-timeout) CAP="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --wheels) WHEELS="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --print) PRINT=1; shift ;;
    all) shift ;;  # the former positional stage argument
    *) echo "gpu.sh: unknown argument $1 (see the header of benchmarks/gpu.sh)" >&2; exit 2 ;;
    esac
done
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false

STAGES=(env deps shift_1b llama1b_p512 llama7b_p4096_n256 precision_1b precision_demo profile_1b overhead_1b
    pytest_gpu explain_7b llama7b_p512)
OPTIONAL=(llama1b_p512_eager)  # run only when --only names them
COMMON=(--device cuda --dtype bfloat16 --attn sdpa --max-memory --modes auto)
LLAMA_1B=(--hidden 2048 --layers 16 --heads 32 --kv-heads 8 --intermediate 8192 --vocab 128256)
LLAMA_7B=(--hidden 4096 --layers 32 --heads 32 --kv-heads 32 --intermediate 11008 --vocab 32000)
# toy sizes for --dry-run (appended: the last flag wins)
TOY_ATTR=(--device cpu --dtype float32 --hidden 32 --layers 1 --heads 4 --kv-heads 2 --intermediate 64
    --vocab 97 --prompt 12 --targets 3,16 --threads 1)
TOY_PREC=(--device cpu --hidden 32 --layers 1 --heads 4 --kv-heads 2 --intermediate 64 --vocab 97 --prompt 12
    --targets 3 --repeats 1 --threads 1)

# stage_command NAME: sets TIMEOUT and CMD (an argv) for the stage; JSON goes to "$WORK/NAME.json"
stage_command() {
    local name="$1" json="$WORK/$1.json"
    CMD=()
    case "$name" in
    env) TIMEOUT=30
        CMD=(bash -c "nvidia-smi || echo 'nvidia-smi: not available'; python -c \"import torch, transformers, \
sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() \
else None); import importlib.util as u; print('lm_eval importable:', u.find_spec('lm_eval') is not None)\"") ;;
    deps) TIMEOUT=120
        # the plugin's dependencies that the machine lacks (pip names), installed from the wheels folder
        local missing="python -c \"import importlib.util as u; print(' '.join(p for m, p in [('lm_eval', \
'lm-eval==0.4.13'), ('accelerate', 'accelerate'), ('scipy', 'scipy'), ('matplotlib', 'matplotlib'), \
('yaml', 'pyyaml'), ('tqdm', 'tqdm'), ('tokenizers', 'tokenizers')] if u.find_spec(m) is None))\""
        if [[ $DRY == 1 ]]; then
            CMD=(bash -c "echo \"missing: \$($missing)\"; python -c 'import lm_eval; print(\"lm_eval\", lm_eval.__version__)'")
        else
            CMD=(bash -c "need=\$($missing); if [[ -z \"\$need\" ]]; then echo 'dependencies present'; \
elif [[ -d '$WHEELS' ]]; then pip install --no-index --find-links '$WHEELS' \$need; \
else echo 'no wheels folder $WHEELS: trying the package index'; pip install \$need; fi; \
python -c 'import lm_interp_plugin.tasks' 2>/dev/null || pip install -q --no-deps --no-build-isolation --no-index -e .; \
python -c 'import lm_eval, lm_interp_plugin.tasks; print(\"lm_eval\", lm_eval.__version__)'")
        fi ;;
    shift_1b) TIMEOUT=150  # issue 23: the reference forward, logit lens and contrastive row against the pass
        CMD=(python benchmarks/shift_signals.py --device cuda --hidden 2048 --layers 16 --vocab 128256
            --prompt 512 --targets 1,3,16 --repeats 5 --json "$json") ;;
    llama1b_p512) TIMEOUT=110
        CMD=(python benchmarks/attribution.py "${COMMON[@]}" "${LLAMA_1B[@]}" --prompt 512 --targets 8,32,128
            --repeats 1 --skip prefix --levers --pass --json "$json") ;;
    llama7b_p4096_n256) TIMEOUT=200
        CMD=(python benchmarks/attribution.py "${COMMON[@]}" "${LLAMA_7B[@]}" --prompt 4096 --targets 256
            --repeats 1 --warmup 0 --skip paper,prefix --pass --json "$json") ;;
    precision_1b) TIMEOUT=80
        CMD=(python benchmarks/precision.py "${LLAMA_1B[@]}" --prompt 512 --targets 128 --repeats 1
            --device cuda --json "$json") ;;
    precision_demo) TIMEOUT=45
        CMD=(python benchmarks/precision.py --model-dir lm_interp_plugin/data/demo_pair/tuned
            --items lm_interp_plugin/data/demo_pair/heldout_instruct.jsonl --n-items 54 --repeats 1
            --device cuda --json "$json") ;;
    profile_1b) TIMEOUT=60
        CMD=(python benchmarks/profile_engine.py "${LLAMA_1B[@]}" --prompt 512 --targets 128 --device cuda
            --dtype bfloat16 --json "$json") ;;
    overhead_1b) TIMEOUT=120
        CMD=(python benchmarks/overhead.py --task interp_instruct_mc --limit 10 --hidden 2048 --layers 16
            --heads 32 --kv-heads 8 --intermediate 8192 --device cuda --dtype bfloat16 --repeats 1 --warmup 1
            --no-noattn --json "$json") ;;
    pytest_gpu) TIMEOUT=90
        CMD=(python -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py --junitxml "$WORK/pytest_gpu.xml") ;;
    llama7b_p512) TIMEOUT=90
        CMD=(python benchmarks/attribution.py "${COMMON[@]}" "${LLAMA_7B[@]}" --prompt 512 --targets 32,128
            --repeats 1 --skip prefix --levers --pass --json "$json") ;;
    explain_7b) TIMEOUT=60
        CMD=(python benchmarks/explain.py --hidden 4096 --intermediate 11008 --heads 32 --kv-heads 32
            --vocab 32000 --layers 32 --device cuda --dtype bfloat16 --json "$json") ;;
    llama1b_p512_eager) TIMEOUT=60
        CMD=(python benchmarks/attribution.py --device cuda --dtype bfloat16 --attn eager --max-memory --modes auto
            "${LLAMA_1B[@]}" --prompt 512 --targets 128 --repeats 1 --skip prefix --pass --json "$json") ;;
    *) echo "unknown stage $name" >&2; return 2 ;;
    esac
    if [[ $DRY == 1 ]]; then
        case "$name" in
        llama*) CMD+=("${TOY_ATTR[@]}") ;;
        precision_1b) CMD+=("${TOY_PREC[@]}") ;;
        precision_demo) CMD+=(--device cpu --n-items 2 --threads 1) ;;
        profile_1b) CMD+=(--device cpu --dtype float32 --hidden 32 --layers 1 --heads 4 --kv-heads 2
            --intermediate 64 --vocab 97 --prompt 12 --targets 6 --threads 1) ;;
        overhead_1b) CMD+=(--device cpu --dtype float32 --hidden 32 --layers 1 --heads 2 --kv-heads 2
            --intermediate 64 --limit 1 --warmup 0 --threads 1) ;;
        shift_1b) CMD+=(--device cpu --hidden 32 --layers 1 --vocab 97 --prompt 12 --targets 1,3 --repeats 1
            --threads 1) ;;
        explain_7b) CMD+=(--hidden 64 --intermediate 128 --heads 4 --kv-heads 2 --vocab 900 --words 300
            --layers 1 --k 3 --device cpu --dtype float32) ;;
        esac
    fi
}

optional() { [[ " ${OPTIONAL[*]} " == *" $1 "* ]]; }
selected() { if [[ -z "$ONLY" ]]; then ! optional "$1"; else [[ ",$ONLY," == *",$1,"* ]]; fi; }

if [[ $PRINT == 1 ]]; then
    WORK='$WORK'
    for name in "${STAGES[@]}" "${OPTIONAL[@]}"; do
        selected "$name" || continue
        stage_command "$name"
        [[ "${CMD[0]}" == python && "${CMD[1]}" == benchmarks/* ]] && echo "$name ${CMD[*]:1}"
    done
    exit 0
fi

mkdir -p "$OUT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/lm_interp_gpu.XXXXXX")"
STATUS="$WORK/stages.tsv"
printf 'stage\tstatus\tseconds\ttimeout\n' > "$STATUS"
START=$(date +%s)
DEADLINE=$((START + BUDGET))
failed=0
for name in "${STAGES[@]}" "${OPTIONAL[@]}"; do
    selected "$name" || continue
    stage_command "$name"
    left=$((DEADLINE - $(date +%s)))
    limit=$((TIMEOUT < left ? TIMEOUT : left))
    ((CAP > 0 && CAP < limit)) && limit=$CAP
    if ((left < 15)); then
        printf '%s\tskipped (budget: %ss left)\t0\t%s\n' "$name" "$left" "$TIMEOUT" >> "$STATUS"
        continue
    fi
    echo "== $name (timeout ${limit}s): ${CMD[*]}" | tee "$WORK/$name.log"
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "${CMD[@]}" >> "$WORK/$name.log" 2>&1
    rc=$?
    took=$(($(date +%s) - t0))
    case $rc in
    0) state=ok ;;
    124 | 137) state="timed out"; failed=1 ;;
    *) state="failed (exit $rc)"; failed=1 ;;
    esac
    printf '%s\t%s\t%s\t%s\n' "$name" "$state" "$took" "$limit" >> "$STATUS"
    echo "   $name: $state in ${took}s"
done
python benchmarks/gpu_summary.py "$WORK" --command "bash benchmarks/gpu.sh $ARGS" --dry-run "$DRY" \
    > "$WORK/summary.txt" 2> "$WORK/summary.log" || echo "summary failed: see summary.log in the tarball" \
    >> "$WORK/summary.txt"
cp "$WORK/summary.txt" "$OUT/summary.txt"
tar -czf "$OUT/gpu_results.tar.gz" -C "$WORK" .
rm -rf "$WORK"
echo "results: $OUT/gpu_results.tar.gz and $OUT/summary.txt (total $(($(date +%s) - START)) s)"
cat "$OUT/summary.txt"
exit "$failed"
