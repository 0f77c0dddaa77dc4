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

echo "### Headline (q = 1 and q = 8; none = both factors train, alternate_epoch = sequential freezing; means over 3 seeds)"
echo
$Q "select model, R, q, freezing, round(100 * avg(dense_acc), 2) as dense_acc_pct, round(100 * avg(final_acc), 2) as final_acc_pct,
  round(avg(param_ratio), 3) as params, round(avg(train_speedup), 2) as train_x, round(avg(infer_speedup_b1), 2) as infer_x_b1,
  round(avg(infer_speedup_b64), 2) as infer_x_b64, round(avg(infer_speedup_b256), 2) as infer_x_b256, count(*) as runs
  from flat where sweep = 'lrd' and status = 'finished' and q in (1, 8) and freezing in ('none', 'alternate_epoch')
  group by 1, 2, 3, 4 order by 1, 3, 2, 4 desc"
echo
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
echo "### Latency vs rank (sweep lrd_latency: every rank, quantum 1; fastest of 15 repeats)"
echo
echo "Dense layer, same timing (ms):"
echo
$Q "select layer, round(dense_latency_min_ms, 3) as dense_min_ms, round(dense_latency_ms, 3) as dense_median_ms from flat where sweep = 'lrd_latency' and status = 'finished' order by 1"
echo
echo "A rank's latency against the mean of its two neighbours' (< 1: faster than its neighbours), by the largest power of two (up to 64) dividing the rank:"
echo
$Q "with l as (select f.layer, m.step as r, m.value as v from metrics m join flat f on f.run_id = m.run_id where f.sweep = 'lrd_latency' and m.key = 'latency_min_ms'),
  c as (select a.layer, a.r, a.v / ((b.v + d.v) / 2) as rel,
    case when a.r % 64 = 0 then '64' when a.r % 32 = 0 then '32' when a.r % 16 = 0 then '16' when a.r % 8 = 0 then '8'
         when a.r % 4 = 0 then '4' when a.r % 2 = 0 then '2' else 'odd' end as divisible_by
    from l a join l b on b.layer = a.layer and b.r = a.r - 1 join l d on d.layer = a.layer and d.r = a.r + 1)
  select layer, divisible_by, round(avg(rel), 3) as latency_vs_neighbours, round(min(rel), 3) as min, round(max(rel), 3) as max, count(*) as ranks
  from c group by 1, 2 order by 1, case divisible_by when 'odd' then 1 when '2' then 2 when '4' then 3 when '8' then 4 when '16' then 5 when '32' then 6 else 7 end"
echo
# the figure: fwd+bwd latency of the factored MLP layers against the rank
$SQ plot --results "$R" --sweep lrd_latency --metric latency_min_ms --group layer --where "layer!=resnet.blocks.3.conv2" \
  --title "fwd+bwd latency of the factored MLP layer vs rank (x), batch 128, one core (fastest of 15)" -o "$FIG" >/dev/null
echo "Figure: \`$FIG\`"
