#!/usr/bin/env bash
# gpu_step.sh — one GPU training step, squeeze vs PyTorch eager, on the lent GPU
# machine (shared/gpu.md), in one call: builds squeeze with CUDA and runs the
# GPU tests (tests/cuda/gpu_check.sh, log in $OUT/gpu_check.log), then times
# the MLP, ResMLP-S12-shaped and tiny-GPT steps in fp32 and TF32 on both
# sides (experiments/bench/gpu_step{.lua,_torch.py}), alternating the two
# programs over two rounds, and writes the table to $OUT/gpu_step.md.
#
#   SQ_COMMIT=<short hash> experiments/bench/gpu_step.sh
# carry .device-deps (Lua and SQLite .debs; see tests/cuda/gpu_check.sh).
# Environment: OUT (default /tmp/gpu_step), BUILD (default /tmp/build),
# MODELS (default "mlp resmlp gpt"), STEPS (default 30), SKIP_TESTS=1,
# PROFILE=<models> (GPU time per kernel of one fp32 step of that model on both
# sides: torch.profiler and squeeze.cuda.profile; e.g. PROFILE=gpt),
# RUN_LIMIT (s per program run, default 100), BUDGET (s after which the
# second round is skipped, default 480).
set -uo pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:-/tmp/gpu_step}
export BUILD=${BUILD:-/tmp/build}
mkdir -p "$OUT"
MODELS=${MODELS:-mlp resmlp gpt}
STEPS=${STEPS:-30}
COMMIT=${SQ_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
raw=$OUT/gpu_step_raw.txt
: >"$raw"

t0=$(date +%s)
if [ "${SKIP_TESTS:-0}" != 1 ]; then
    tests/cuda/gpu_check.sh >/dev/null 2>&1
    echo "== tests (rc $?; full log in gpu_check.log)"
    grep -E "^(FAIL|SKIP)|passed, [0-9]+ failed|tests passed|tests failed|\(Failed\)|\(SEGFAULT\)|Not Run" "$OUT/gpu_check.log" | head -40
else
    tests/cuda/gpu_check.sh >/dev/null 2>&1 || true
fi
echo "== build + tests took $(( $(date +%s) - t0 )) s"
export LD_LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
SQ=$BUILD/squeeze
[ -x "$SQ" ] || { echo "gpu_step.sh: $SQ was not built (see $OUT/gpu_check.log)"; tail -30 "$OUT/gpu_check.log"; exit 2; }

# each program run is capped (RUN_LIMIT s); the second round only runs while
# the whole call stays inside BUDGET s (the lent machine's call limit is 600)
RUN_LIMIT=${RUN_LIMIT:-100}
BUDGET=${BUDGET:-480}
run_torch() { PYTHONUNBUFFERED=1 timeout "$RUN_LIMIT" python3 experiments/bench/gpu_step_torch.py --models "$1" \
                  --steps "$STEPS" ${PROFILE:+--profile "$PROFILE"} 2>&1 | tee -a "$raw"; }
run_squeeze() { timeout "$RUN_LIMIT" "$SQ" run experiments/bench/gpu_step.lua models="$1" steps="$STEPS" \
                  ${PROFILE:+profile="$PROFILE"} 2>&1 | tee -a "$raw"; }
for round in 1 2; do  # alternate the programs, and their order, so drift hits both
    for m in $MODELS; do
        if [ $round = 2 ] && [ $(( $(date +%s) - t0 )) -gt "$BUDGET" ]; then
            echo "# round 2 of $m skipped: $(( $(date +%s) - t0 )) s used of a $BUDGET s budget" | tee -a "$raw"
            continue
        fi
        if [ $round = 1 ]; then run_torch "$m"; run_squeeze "$m"; else run_squeeze "$m"; run_torch "$m"; fi
    done
done >"$OUT/gpu_step_runs.log"
grep -v "^RESULT" "$OUT/gpu_step_runs.log" | grep -v "^#" | head -60

gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
torchv=$(python3 -c 'import torch; print(torch.__version__)' 2>/dev/null)
python3 - "$raw" "$OUT/gpu_step.md" "$gpu" "$torchv" "$COMMIT" <<'PY'
import sys, datetime, collections
raw, out, gpu, torchv, commit = sys.argv[1:6]
runs = collections.defaultdict(list)
for line in open(raw):
    if not line.startswith("RESULT "):
        continue
    kv = dict(f.split("=", 1) for f in line.split()[1:])
    runs[(kv["model"], kv["precision"], kv["side"])].append(kv)
names = {"mlp": "MLP 784-1024-1024-10, batch 256",
         "resmlp": "ResMLP-S12 shape (196x768 in, dim 384, depth 12), batch 128",
         "gpt": "GPT 6 layers, dim 384, 6 heads, ctx 256, vocab 256, batch 64"}
def best(model, prec, side):
    r = runs.get((model, prec, side))
    return min(r, key=lambda kv: float(kv["step_ms"])) if r else None
L = []
L.append("# GPU training step: squeeze vs PyTorch eager")
L.append("")
L.append(f"Produced by `experiments/bench/gpu_step.sh` on {datetime.date.today().isoformat()}, "
         f"squeeze commit {commit}.  Device: {gpu}.  PyTorch {torchv}, eager.")
L.append("One step = zero_grad + forward + cross-entropy + backward + AdamW (lr 1e-3, wd 0.01), random "
         "inputs on the GPU.  CUDA events per phase; median of 30 steps after 5 warm-ups, each step waited "
         "for; each program run twice (alternating); the better median of each is kept.  Peak = GPU bytes "
         "allocated at the high-water mark of the timed steps (squeeze: the context's exact accounting of "
         "tensors and workspace; PyTorch: `max_memory_allocated`).  Ratio > 1: squeeze is faster / smaller.")
L.append("")
L.append("| model | precision | PyTorch ms | squeeze ms | speed ratio (PyTorch/squeeze) | PyTorch peak MiB | squeeze peak MiB | memory ratio |")
L.append("|---|---|---|---|---|---|---|---|")
for model in ["mlp", "resmlp", "gpt"]:
    for prec in ["fp32", "tf32"]:
        t, s = best(model, prec, "torch"), best(model, prec, "squeeze")
        if not t or not s:
            L.append(f"| {names[model]} | {prec} | {t and t['step_ms'] or 'n/a'} | {s and s['step_ms'] or 'n/a'} | n/a | | | |")
            continue
        tm, sm = float(t["step_ms"]), float(s["step_ms"])
        tp, sp = float(t["peak_mib"]), float(s["peak_mib"])
        L.append(f"| {names[model]} | {prec} | {tm:.2f} | {sm:.2f} | {tm/sm:.2f} | {tp:.0f} | {sp:.0f} | {tp/sp:.2f} |")
L.append("")
L.append("Where the time goes (ms, median per phase; pipelined = steps issued back to back, host ahead of the GPU):")
L.append("")
L.append("| model | precision | side | forward+loss | backward | AdamW | step | pipelined step | reserved MiB |")
L.append("|---|---|---|---|---|---|---|---|---|")
for model in ["mlp", "resmlp", "gpt"]:
    for prec in ["fp32", "tf32"]:
        for side in ["torch", "squeeze"]:
            r = best(model, prec, side)
            if r:
                L.append(f"| {model} | {prec} | {side} | {r['fwd_ms']} | {r['bwd_ms']} | {r['opt_ms']} | {r['step_ms']} | "
                         f"{r['pipelined_ms']} | {float(r['reserved_mib']):.0f} |")
L.append("")
L.append("Raw lines:")
L.append("```")
L.extend(l.rstrip() for l in open(raw) if l.startswith("RESULT") or l.startswith("#"))
L.append("```")
open(out, "w").write("\n".join(L) + "\n")
PY
cat "$OUT/gpu_step.md"
