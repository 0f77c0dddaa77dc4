#!/bin/sh
# lrd_report.sh — the tables and the figure of results/reports/lrd_cpu.md,
# straight from the results store of an `lrd` sweep (squeeze table / query / plot).
#
#   experiments/lrd_report.sh [RESULTS_DIR [SQUEEZE [FIGURE]]] > tables.md
#   defaults: /tmp/lrd-results, build-lrx/squeeze, results/reports/lrd_cpu_latency.png
set -eu
R=${1:-/tmp/lrd-results}
SQ=${2:-build-lrx/squeeze}
FIG=${3:-results/reports/lrd_cpu_latency.png}
T="$SQ table --results $R --sweep lrd --format markdown --precision 4"
Q="$SQ query --results $R --format markdown"

echo "### Runs"
echo
$Q "select json_extract(config, '$.model') as model, status, count(*) as runs from runs where sweep = 'lrd' group by 1, 2"
echo
echo "Dense models (test accuracy as evaluated in every run, mean over its runs; parameters, FLOPs of one sample):"
echo
$Q "select f.model, f.seed, round(avg(f.dense_acc), 4) as dense_acc, max(f.dense_params) as params, max(f.dense_flops) as flops, count(*) as runs from flat f where f.status = 'finished' group by 1, 2 order by 1, 2"
echo
for model in mlp resnet; do
  W="--where model=$model"
  echo "### $model"
  echo
  echo "**Test accuracy after fine-tuning** (final_acc), mean ± std over seeds, rows R,q, columns freezing:"
  echo
  $T --rows R,q --cols freezing --metric final_acc $W
  echo
  echo "**Test accuracy right after decomposition** (acc_after_decomp, before any fine-tuning; the same for every freezing mode, shown for freezing = none):"
  echo
  $T --rows R --cols q --metric acc_after_decomp $W --where freezing=none
  echo
  echo "**Accuracy drop after fine-tuning** (dense_acc − final_acc, percentage points / 100), rows R, columns freezing (mean over q and seeds):"
  echo
  $T --rows R --cols freezing --metric acc_drop $W 2>/dev/null
  echo
  echo "**Reached within 0.5 points of dense** (reached_dense: fraction of runs) and **epochs to get there** (epochs_to_dense, over the runs that reached it; 0 = right after decomposition), rows R, columns freezing (over q and seeds):"
  echo
  $T --rows R --cols freezing --metric reached_dense $W 2>/dev/null
  echo
  $T --rows R --cols freezing --metric epochs_to_dense $W 2>/dev/null
  echo
  echo "**Training throughput, decomposed / dense** (train_speedup: interleaved rounds in the same process, the decomposed model under its freezing schedule), rows R,q, columns freezing:"
  echo
  $T --rows R,q --cols freezing --metric train_speedup $W
  echo
  echo "**Inference throughput, decomposed / dense** at batch 1, 64, 256 (interleaved, median of rounds; freezing does not matter at inference, all five modes are pooled: n = 15), rows R, columns q:"
  echo
  for b in 1 64 256; do
    echo "batch $b:"
    echo
    $T --rows R --cols q --metric infer_speedup_b$b $W 2>/dev/null
    echo
  done
  echo "**Parameters and FLOPs, decomposed / dense** (param_ratio, flop_ratio; deterministic), rows R, columns q:"
  echo
  $T --rows R --cols q --metric param_ratio $W --where freezing=none --where seed=0
  echo
  $T --rows R --cols q --metric flop_ratio $W --where freezing=none --where seed=0
  echo
  echo "**Ranks per layer** (seed 0, freezing none; \`dense\` = left dense):"
  echo
  $Q "select json_extract(r.config, '$.R') as R, json_extract(r.config, '$.q') as q, t.value as ranks from runs r join tags t on t.run_id = r.id and t.key = 'ranks' where r.sweep = 'lrd' and json_extract(r.config, '$.model') = '$model' and json_extract(r.config, '$.seed') = 0 and json_extract(r.config, '$.freezing') = 'none' order by 1, 2"
  echo
done
echo "### Dense throughput (samples/s, mean over all runs of the model)"
echo
$Q "select model, round(avg(dense_train_sps)) as train, round(avg(dense_infer_sps_b1)) as infer_b1, round(avg(dense_infer_sps_b64)) as infer_b64, round(avg(dense_infer_sps_b256)) as infer_b256 from flat where status = 'finished' group by 1"
echo
echo "### Weight-gradient GEMMs per fine-tune step (MLP: 2 per decomposed layer when both factors train)"
echo
$T --rows model --cols freezing --metric wgrad_gemms_per_step --where R=4 --where q=8
echo
echo "### Where a point's time goes (seconds, mean over runs)"
echo
$Q "select model, round(avg(\"time_s.data\"),2) as data, round(avg(\"time_s.dense\"),2) as dense, round(avg(\"time_s.decompose\"),2) as decompose, round(avg(\"time_s.eval0\"),2) as eval0, round(avg(\"time_s.train_bench\"),2) as train_bench, round(avg(\"time_s.finetune\"),2) as finetune, round(avg(\"time_s.infer_bench\"),2) as infer_bench, round(avg(ended - started),2) as wall from flat where status = 'finished' group by 1"
echo
# the figure: latency of the first hidden layer of the MLP vs rank, one line per quantum (seed 0, R = 4)
$SQ plot --results "$R" --sweep lrd --metric latency_ms.layers.1 --group q --where model=mlp --where R=4 \
  --title "MLP layers.1 (784->512, batch 128): fwd+bwd latency vs rank, R=4, one CPU core" -o "$FIG" >/dev/null
echo "Figure: \`$FIG\`"
