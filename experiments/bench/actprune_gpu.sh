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
# BLOCK (32), KEEPS (1,0.5,0.1), EPOCHS (1; see below), SIZE (full),
# SKIP_TESTS=1, BUDGET (s for the whole script, default 400: the sweep gets
# what the build and tests left, less 20 s for the tables), RESULTS (the
# results folder, default /tmp/actprune_gpu_results).
#
# Four edits are made to the copy of the tree this runs on (the device's
# throw-away copy; never committed here; the edited lines are printed):
#   1. experiments/actprune.lua SIZES.full.epochs 10 -> $EPOCHS: the preset
#      has no epochs key to override and 10 epochs x 3 points do not fit a
#      call (about 35 s an epoch at fp32);
#   2. experiments/actprune.lua: its clock waits for the GPU (sq.cuda.synchronize)
#      before each reading when the device is cuda, so that forward / backward
#      / optim times are GPU times rather than the host's launch times;
#   3. lua/squeeze/actprune.lua: the zero tensor dw_errors adds to a layer's
#      output is made on that output's device (it was always made on the cpu,
#      so `y + z` failed for a GPU model);
#   4. experiments/actprune.lua accuracy(): batches of 250 instead of 1000
#      and a full Lua collection before each.  Without it the test-set pass
#      ran out of GPU memory at full size on the H100 (80 GB): under no_grad
#      there is no backward pass, so the Lua layer's device-pressure
#      collections are young ones only (lua/l_common.c), and temporaries that
#      outlive two of them pile up (79.7 GB held at the failure; one forward
#      at batch 1000 makes ~1.2 GB per GELU alone).  Accuracy does not depend
#      on the evaluation batch size.
# Fashion-MNIST: read from /usr/share/datasets/fashion-mnist; when the
# machine lacks it, copied there from .device-data/fashion-mnist (carried).
set -uo pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:-/tmp/actprune_gpu}
export BUILD=${BUILD:-/tmp/build}
mkdir -p "$OUT"
BLOCK=${BLOCK:-32}
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

echo "== edits to this copy of the tree (see the top of this script)"
sed -i "s/\(train_n = 60000, test_n = 10000, epochs = \)10,/\1$EPOCHS,/" experiments/actprune.lua
sed -i 's/^  local clock = sq.clock$/  local clock = dev == "cuda" and function() sq.cuda.synchronize(); return sq.clock() end or sq.clock/' \
    experiments/actprune.lua
sed -i 's/local z = core.zeros(y:shape(), y:dtype()):requires_grad(true)/local z = core.zeros(y:shape(), { dtype = y:dtype(), device = y:device() }):requires_grad(true)/' \
    lua/squeeze/actprune.lua
sed -i 's/^    for xb, yb in data.batches(ds, 1000, { device = dev }) do$/    for xb, yb in data.batches(ds, 250, { device = dev }) do collectgarbage()/' \
    experiments/actprune.lua
# (the device's copy has no .git: count the edited lines instead of diffing)
edited=$(grep -n -e "test_n = 10000, epochs = $EPOCHS," -e 'sq.cuda.synchronize(); return sq.clock()' \
              -e 'data.batches(ds, 250, { device = dev }) do collectgarbage()' experiments/actprune.lua;
         grep -n 'device = y:device()' lua/squeeze/actprune.lua)
echo "$edited"
n=$(printf '%s\n' "$edited" | grep -c .)
[ "$n" = 4 ] || { echo "actprune_gpu.sh: expected 4 edited lines, got $n: the scripts changed; fix the sed lines"; exit 2; }

R=${RESULTS:-/tmp/actprune_gpu_results}
SWEEP_LIMIT=$(( BUDGET - ($(date +%s) - t0) - 20 ))
CMD="squeeze sweep experiments/actprune.lua size=$SIZE criterion=l2 block=$BLOCK keep=$KEEPS seed=0 -j 1 --results $R"
echo "== $CMD   (epochs $EPOCHS; limit $SWEEP_LIMIT s)"
t1=$(date +%s)
timeout "$SWEEP_LIMIT" "$SQ" ${CMD#squeeze } >"$OUT/sweep.log" 2>&1
echo "sweep rc $?, $(( $(date +%s) - t1 )) s"
cat "$R"/sweeps/actprune/logs/*.log >"$OUT/runs.log" 2>/dev/null
grep -E "^actprune:|^epoch" "$OUT/runs.log"

T="$SQ table --results $R --sweep actprune --rows criterion,block --cols keep --status finished"
{
    echo "Device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1); date: $(date -u +%Y-%m-%dT%H:%M:%SZ); commit: $COMMIT."
    echo "Command: \`$CMD\` (SIZES.full.epochs = $EPOCHS, clock synchronised, dw_errors on the output's device, test pass in batches of 250 with a collection before each: see experiments/bench/actprune_gpu.sh)."
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
        from flat where sweep = 'actprune' order by keep desc" 2>&1
    for m in test_acc:4 saved_bytes:0 saved_reduction:4 mem_reduction:4 t_forward_ms:2 t_compress_ms:2 \
             t_backward_ms:2 t_optim_ms:2 t_step_ms:2 dw_err.mean:4; do
        echo; echo "\`squeeze table ... --metric ${m%%:*}\`"; echo
        $T --metric "${m%%:*}" --precision "${m##*:}" 2>&1
    done
} >"$OUT/actprune_gpu_tables.md"
cat "$OUT/actprune_gpu_tables.md"
cp "$R/squeeze.db" "$OUT/actprune_gpu.db"
echo "== total $(( $(date +%s) - t0 )) s"
