#!/bin/sh
# actprune_report.sh — regenerates the tables and plots of
# results/reports/actprune_cpu.md from a results folder of the actprune sweep.
#   experiments/actprune_report.sh [RESULTS=/tmp/actprune-results] [SQUEEZE=build-apx/squeeze] > tables.md
# Plots go to results/reports/actprune_cpu_*.png (with their .gp/.dat).
set -eu
R=${1:-/tmp/actprune-results}
SQ=${2:-build-apx/squeeze}
OUT=results/reports
T="$SQ table --results $R --sweep actprune --rows criterion,block --cols keep"
table() { # metric precision title [more squeeze-table options]
  m=$1 p=$2 title=$3; shift 3
  echo; echo "**$title** (\`$m\`)"; echo
  $T --metric "$m" --precision "$p" "$@" 2>&1
}
table test_acc 4 "Test accuracy after the last epoch"
table test_acc 4 "Test accuracy after epoch 1 (--agg min: epoch 1 is below epoch 2 in every run)" --agg min
table saved_bytes 0 "Saved activations when backward starts, bytes (allocator SAVED)"
table counted_saved_bytes 0 "Bytes of the pruned inputs as BSR (layer stats; dense size in counted_dense_bytes)"
table saved_reduction 3 "Saved-activation reduction vs the same step dense"
table peak_saved_reduction 3 "Reduction of the SAVED high-water mark"
table mem_reduction 3 "Peak memory reduction of a training step (everything but the dataset)"
table dw_err.mean 3 "Mean relative dW error over the 6 pruned layers"
table kept_fraction 3 "Kept fraction of blocks (entries for topk_unstructured)"
table t_compress_ms 3 "Compress (prune-and-pack) time per step, ms"
table t_step_ms 3 "Training step time, ms (forward + compress + backward + optim)"
echo; echo "**dW error per layer kind, l2** (\`dw_err.token_mix\`, \`dw_err.fc1\`, \`dw_err.fc2\`; rows block, cols keep)"
for k in token_mix fc1 fc2; do
  echo; echo "$k:"; echo
  $SQ table --results "$R" --sweep actprune --rows block --cols keep --metric "dw_err.$k" --precision 3 \
    --where criterion=l2 2>&1
done
echo; echo "**Step time split, l2** (rows block, cols keep; ms per step)"
for k in t_forward_ms t_compress_ms t_backward_ms; do
  echo; echo "$k:"; echo
  $SQ table --results "$R" --sweep actprune --rows block --cols keep --metric "$k" --precision 3 \
    --where criterion=l2 2>&1
done
$SQ plot --results "$R" --sweep actprune --metric test_acc --x mem_reduction --group block \
  --where criterion=l2 --title "actprune (l2): test accuracy vs peak memory reduction, mean +- std over 3 seeds" \
  -o "$OUT/actprune_cpu_acc_vs_mem_l2.png"
$SQ plot --results "$R" --sweep actprune --metric test_acc --x mem_reduction --group criterion \
  --where "block<=8" --title "actprune (block 8): test accuracy vs peak memory reduction by criterion" \
  -o "$OUT/actprune_cpu_acc_vs_mem_criteria.png"
