#!/usr/bin/env bash
# actprune_gpu.sh — a handful of full-size points of experiments/actprune.lua
# on the lent GPU (shared/gpu.md), in one call: builds squeeze with CUDA and
# runs every GPU test (tests/cuda/gpu_check.sh, log in $OUT/gpu_check.log),
# then `squeeze sweep experiments/actprune.lua size=full` restricted on the
# command line to criterion=l2 block=$BLOCK keep=$KEEPS seed=0, and prints
# the tables (accuracy, saved bytes, peak memory, step-time split, dW error)
# into $OUT/actprune_gpu_tables.md; the results database is copied to
# $OUT/actprune_gpu.db.  NOT the full sweep: a handful of points.
#
#   SQ_COMMIT=<short hash> experiments/bench/actprune_gpu.sh     (carry .device-deps, .device-data)
#
# Environment: OUT (default /tmp/actprune_gpu), BUILD (default /tmp/build),
# BLOCK (32; lists like 32,64 work), KEEPS (1,0.5,0.1), CRITERIA (l2), SEEDS (0),
# DENSE=1 (first a dense baseline: criterion dense, same seeds), EPOCHS (1; see below), SIZE (full),
# SKIP_TESTS=1, BUDGET (s for the whole script, default 400: the sweep gets
# what the build and tests left, less 20 s for the tables), RESULTS (the
# results folder, default /tmp/actprune_gpu_results).
#
# The experiment takes `epochs=` (default here 1: 10 epochs x 3 points do not
# fit a call, about 35 s an epoch at fp32); its clock waits for the GPU,
# dw_errors works on the device and the test pass is batched (fixes once
# applied here by sed, now in experiments/actprune.lua and
# lua/squeeze/actprune.lua, commit b3953f6).
# Fashion-MNIST: read from /usr/share/datasets/fashion-mnist; when the
# machine lacks it, copied there from .device-data/fashion-mnist (carried).
set -uo pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:-/tmp/actprune_gpu}
export BUILD=${BUILD:-/tmp/build}
mkdir -p "$OUT"
BLOCK=${BLOCK:-32}
CRITERIA=${CRITERIA:-l2}
SEEDS=${SEEDS:-0}
DENSE=${DENSE:-0}
KEEPS=${KEEPS:-1,0.5,0.1}
EPOCHS=${EPOCHS:-1}
SIZE=${SIZE:-full}
BUDGET=${BUDGET:-400}
COMMIT=${SQ_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}

t0=$(date +%s)
if [ "${SKIP_TESTS:-0}" != 1 ]; then
    tests/cuda/gpu_check.sh >/dev/null 2>&1
    echo "== build + tests: rc $?, $(( $(date +%s) - t0 )) s (full log in gpu_check.log)"
    grep -E "^(FAIL|SKIP)|passed, [0-9]+ failed|[0-9]+ passed|tests passed|tests failed|\(Failed\)|\(SEGFAULT\)|Not Run|Test +#" \
        "$OUT/gpu_check.log" | head -60
fi
export LD_LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
SQ=$BUILD/squeeze
[ -x "$SQ" ] || { echo "actprune_gpu.sh: $SQ was not built (see $OUT/gpu_check.log)"; exit 2; }

FM=/usr/share/datasets/fashion-mnist
if [ ! -f $FM/train-images-idx3-ubyte.gz ] && [ -f .device-data/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    mkdir -p $FM && cp .device-data/fashion-mnist/*.gz $FM/
fi

R=${RESULTS:-/tmp/actprune_gpu_results}
SWEEP_LIMIT=$(( BUDGET - ($(date +%s) - t0) - 20 ))
CMD="squeeze sweep experiments/actprune.lua size=$SIZE epochs=$EPOCHS criterion=$CRITERIA block=$BLOCK keep=$KEEPS seed=$SEEDS -j 1 --results $R"
t1=$(date +%s)
if [ "$DENSE" = 1 ]; then  # the dense baseline (nn.Linear, no pruning) first, same seeds
    DCMD="squeeze sweep experiments/actprune.lua size=$SIZE epochs=$EPOCHS criterion=dense block=0 keep=1 seed=$SEEDS -j 1 --results $R"
    echo "== $DCMD"
    timeout "$SWEEP_LIMIT" "$SQ" ${DCMD#squeeze } >"$OUT/sweep_dense.log" 2>&1
    echo "dense rc $?, $(( $(date +%s) - t1 )) s"
    CMD="$DCMD; $CMD"
fi
echo "== $CMD   (epochs $EPOCHS; limit $SWEEP_LIMIT s in all)"
LEFT=$(( SWEEP_LIMIT - ($(date +%s) - t1) ))
if [ "$LEFT" -ge 1 ]; then   # (timeout 0 would mean no limit)
    timeout "$LEFT" "$SQ" ${CMD##*squeeze } >"$OUT/sweep.log" 2>&1
    echo "sweep rc $?, $(( $(date +%s) - t1 )) s"
else
    echo "no time left for the pruned sweep after the dense one"
fi
cat "$R"/sweeps/actprune/logs/*.log >"$OUT/runs.log" 2>/dev/null
grep -E "^actprune:|^epoch" "$OUT/runs.log"

T="$SQ table --results $R --sweep actprune --rows criterion,block --cols keep --status finished"
{
    echo "Device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1); date: $(date -u +%Y-%m-%dT%H:%M:%SZ); commit: $COMMIT."
    echo "Command: \`$CMD\`."
    echo
    echo "**All metrics, one row per run** (times: ms per training step, mean over the epoch; bytes: one probe step at batch 128)"
    echo
    "$SQ" query --results "$R" --format markdown "select criterion, block, keep, seed, status,
        round(test_acc, 4) as test_acc, round(train_loss, 4) as train_loss,
        saved_bytes, dense_saved_bytes, round(saved_reduction, 4) as saved_red,
        peak_saved_bytes, dense_peak_saved_bytes, round(peak_saved_reduction, 4) as peak_saved_red,
        peak_bytes, dense_peak_bytes, round(mem_reduction, 4) as mem_red,
        counted_saved_bytes, counted_dense_bytes, round(kept_fraction, 4) as kept,
        round(t_forward_ms, 2) as fwd_ms, round(t_compress_ms, 2) as compress_ms,
        round(t_backward_ms, 2) as bwd_ms, round(t_optim_ms, 2) as optim_ms, round(t_step_ms, 2) as step_ms,
        round(\"dw_err.mean\", 4) as dw_err, round(\"dw_err.token_mix\", 4) as dw_err_tm,
        round(\"dw_err.fc1\", 4) as dw_err_fc1, round(\"dw_err.fc2\", 4) as dw_err_fc2,
        round(train_seconds, 1) as train_s
        from flat where sweep = 'actprune' order by criterion = 'dense' desc, block, keep desc, seed" 2>&1
    for m in test_acc:4 saved_bytes:0 saved_reduction:4 mem_reduction:4 t_forward_ms:2 t_compress_ms:2 \
             t_backward_ms:2 t_optim_ms:2 t_step_ms:2 dw_err.mean:4; do
        echo; echo "\`squeeze table ... --metric ${m%%:*}\`"; echo
        $T --metric "${m%%:*}" --precision "${m##*:}" 2>&1
    done
} >"$OUT/actprune_gpu_tables.md"
cat "$OUT/actprune_gpu_tables.md"
cp "$R/squeeze.db" "$OUT/actprune_gpu.db"
echo "== total $(( $(date +%s) - t0 )) s"
