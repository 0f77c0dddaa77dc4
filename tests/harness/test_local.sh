#!/bin/bash
# test_local.sh — the local runner: a sweep, a failing point recorded with
# its traceback, resume, --retry-failed, Ctrl-C, NaN/inf metrics, the
# every way a point can fail is recorded, and the other points go on
# (under AddressSanitizer: let SIGSEGV kill the worker, and let the 1 TiB
# allocation fail as it does without ASan)
out=$(ASAN_OPTIONS=handle_segv=0:allocator_may_return_null=1 \
      "$SQ" sweep "$HERE/exp_fail.lua" -j 2 --results "$R/f" 2>&1); rc=$?
check_eq "a sweep with failures exits 1" "$rc" 1
check_eq "the good point finished despite the others" "$(sql "$R/f" "select status from runs r join params p on p.run_id = r.id where p.key = 'mode' and p.value = 'ok'")" "finished"
err_of() { sql "$R/f" "select r.status || ' ' || r.error from runs r join params p on p.run_id = r.id where p.key = 'mode' and p.value = '$1'"; }
check_contains "a Lua error (non-string object) is failed with a message" "$(err_of error)" "failed (error object is a table value)"
check_contains "running out of memory is failed" "$(err_of oom)" "failed not enough memory"
check_contains "a crash is failed with its signal" "$(err_of segv)" "failed worker died: SIGSEGV"
check_contains "an abort is failed with its signal" "$(err_of abort)" "failed worker died: SIGABRT"
check_contains "a crashed worker's log tail is kept as its traceback" \
  "$(sql "$R/f" "select count(*) from attempts where error like 'worker died%' and traceback is not null")" "2"

# query commands (runs, query, table, plot) and run_once.
# usage: test_local.sh SQUEEZE_EXE
SQ=$1
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
cd "$TMP"
R=$TMP/results

out=$("$SQ" sweep "$HERE/exp_basic.lua" -j 3 --results "$R" fail_seed=2 2>&1); rc=$?
check_eq "a sweep with a failing point exits 1" "$rc" 1
check_eq "12 points recorded" "$(sql "$R" "select count(*) from runs where sweep='basic'")" 12
check_eq "8 finished, 4 failed" "$(sql "$R" "select group_concat(n, '/') from (select count(*) n from runs group by status order by status desc)")" "8/4"
check_contains "the failure is reported with its point" "$out" "(hidden=64 lr=0.001 seed=2) failed: "
check_contains "the failure message is stored" "$(sql "$R" "select error from runs where status='failed' limit 1")" "planned failure for seed 2"
check_contains "the traceback is stored" "$(sql "$R" "select traceback from attempts where status='failed' limit 1")" "stack traceback"
case "$out" in *$'\r'*) bad "no progress line when stderr is not a terminal" ;; *) ok "no progress line when stderr is not a terminal" ;; esac
check_contains "a rerun hint names the flag" "$out" "--retry-failed"

check_eq "NaN stored as special, value NULL" "$(sql "$R" "select count(*) from metrics where key='odd' and special='nan' and value is null")" 8
check_eq "+inf and -inf stored as specials" "$(sql "$R" "select count(*) from metrics where key='odd' and special in ('inf','-inf') and value is null")" 16
check_eq "metrics_decoded gives -inf back" "$(sql "$R" "select count(*) from metrics_decoded where key='odd' and value < -1e308")" 8
check_eq "provenance frozen at submit (git fields present when in a repo, host always)" \
  "$(sql "$R" "select count(*) from provenance p join submissions s on s.provenance = p.id where p.host is not null and p.cpu is not null and p.sqlite_version is not null and p.hdf5_version is not null")" 1
check_eq "seed recorded per run" "$(sql "$R" "select count(distinct seed) from runs")" 3
check_eq "typed params: integers stay integers" "$(sql "$R" "select distinct typeof(value) from params where key='hidden'")" "integer"
check_eq "typed params: floats stay reals" "$(sql "$R" "select distinct type from params where key='lr'")" "real"

out=$("$SQ" sweep "$HERE/exp_basic.lua" -j 3 --results "$R" fail_seed=2 2>&1); rc=$?
check_contains "resume skips finished and failed points" "$out" "8 already finished, 4 failed (skipped"
check_eq "resume runs nothing new" "$(sql "$R" "select count(*) from attempts")" 12

out=$("$SQ" sweep "$HERE/exp_basic.lua" -j 3 --results "$R" fail_seed=2 --retry-failed 2>&1); rc=$?
check_eq "--retry-failed reruns only the failed points" "$(sql "$R" "select count(*) from attempts where attempt = 2")" 4
check_eq "finished points are not rerun" "$(sql "$R" "select count(*) from attempts where status='finished' and attempt > 1")" 0

# without failures the whole sweep finishes and the exit status says so
"$SQ" sweep "$HERE/exp_basic.lua" -q --results "$R/b2" >/dev/null 2>&1
check_eq "a clean sweep exits 0 with every point finished" "$?:$(sql "$R/b2" "select count(*) from runs where status='finished'")" "0:12"

# Ctrl-C: running points killed, the rest pending, database consistent
"$SQ" sweep "$HERE/exp_slow.lua" -j 2 --results "$R/c" >"$TMP/cc.out" 2>&1 &
P=$!
for i in $(seq 1 100); do [ -n "$(ls "$R/c/sweeps/slow/shards/" 2>/dev/null | grep '\.hb$')" ] && break; sleep 0.05; done
sleep 0.2
kill -INT $P
wait $P; rc=$?
check_eq "Ctrl-C exits 130" "$rc" 130
check_eq "Ctrl-C marks the running points killed" "$(sql "$R/c" "select count(*) from runs where status='killed'")" 2
check_eq "no point is left running" "$(sql "$R/c" "select count(*) from runs where status='running'")" 0
check_eq "integrity after Ctrl-C" "$(sql "$R/c" "pragma integrity_check")" "ok"
"$SQ" sweep "$HERE/exp_slow.lua" -j 4 -q --results "$R/c" steps=5 dt=0.01 >/dev/null 2>&1
"$SQ" sweep "$HERE/exp_slow.lua" -j 4 -q --results "$R/c" >/dev/null 2>&1
check_eq "a rerun after Ctrl-C finishes every point" "$(sql "$R/c" "select count(*) from runs where sweep='slow' and status='finished' and config like '%\"steps\":20%'")" 8

# query commands
out=$("$SQ" runs --results "$R" --sweep basic --where "lr<=1e-3" --where "test_acc>0" --format csv)
check_eq "squeeze runs filters by param and metric" "$(printf '%s\n' "$out" | tail -n +2 | wc -l | tr -d ' ')" 4
check_eq "squeeze runs shows the params that vary and the final metrics" "$(printf '%s\n' "$out" | head -1)" "run_id,status,hidden,seed,loss,odd,test_acc"
out=$("$SQ" runs --results "$R" --status failed 2>&1)
check_contains "squeeze runs filters by status" "$out" "4 run(s)"
out=$("$SQ" query --results "$R" "delete from runs" 2>&1); rc=$?
check_eq "squeeze query refuses writes" "$rc:$(sql "$R" "select count(*) from runs where sweep='basic'")" "1:12"
check_contains "squeeze query says why" "$out" "read-only"
out=$("$SQ" table --results "$R/b2" --sweep basic --rows lr --cols hidden --metric test_acc --format markdown)
check_contains "table: markdown header" "$out" "| lr | hidden=64 | hidden=128 |"
check_contains "table: mean ± std over 3 seeds" "$out" "| 0.001 | 0.872 ± 0.003 | 0.936 ± 0.003 |"
check_contains "table: says what was aggregated" "$out" "mean ± std over seed; n = 3"
out=$("$SQ" table --results "$R/b2" --sweep basic --rows lr --cols hidden --metric test_acc --format latex)
check_contains "table: LaTeX" "$out" '0.001 & $0.872 \pm 0.003$ & $0.936 \pm 0.003$ \\'
out=$("$SQ" table --results "$R" --sweep basic --rows lr --cols hidden --metric test_acc --format csv)
check_contains "table: CSV" "$out" "lr,hidden=64 mean,hidden=64 std,hidden=64 n"
out=$("$SQ" table --results "$R" --sweep basic --rows lr --metric loss --agg min 2>&1)
check_contains "table: warns about params averaged over" "$out" "also average over hidden"
if command -v gnuplot >/dev/null; then
  "$SQ" plot --results "$R" --sweep basic --metric loss --group lr -o "$TMP/curves.png" 2>/dev/null
  check "plot: curves to PNG" test -s "$TMP/curves.png"
  "$SQ" plot --results "$R" --sweep basic --metric test_acc --x lr --group hidden --logx -o "$TMP/acc.svg" 2>/dev/null
  check "plot: metric vs param to SVG" grep -q "<svg" "$TMP/acc.svg"
  "$SQ" plot --results "$R" --sweep basic --metric test_acc --x hidden -o "$TMP/acc.pdf" 2>/dev/null
  check "plot: PDF" grep -q "%PDF" "$TMP/acc.pdf"
  check "plot: keeps its gnuplot script" test -s "$TMP/acc.gp"
else
  bad "gnuplot is installed (apt-get install gnuplot-nox; see tests/harness/packages.txt)"
fi

# run_once: the base config as a one-point sweep, in process
cat > "$TMP/once.lua" <<LUA
local experiment = require "squeeze.experiment"
local exp = dofile("$HERE/exp_basic.lua")
local status, id = experiment.run_once(exp, { "lr=0.05", "model.depth=3" }, { results = "$R/once" })
assert(status == "finished", status)
local ok, err = pcall(experiment.run_once, exp, { "lr=1,2" }, { results = "$R/once" })
assert(not ok and err:find("one point"), err)
-- a table of values, as squeeze run's argument parser gives
local st2 = experiment.run_once(exp, { lr = 0.25, model = { depth = 5 } }, { results = "$R/once" })
assert(st2 == "finished", st2)
print("run_once " .. status .. " " .. id)
LUA
out=$("$SQ" run "$TMP/once.lua" 2>&1)
check_contains "run_once records a finished one-point run" "$out" "run_once finished"
check_eq "run_once: its config holds the overrides" "$(sql "$R/once" "select count(*) from flat where lr = 0.05 and \"model.depth\" = 3 and status = 'finished'")" 1
check_eq "run_once: overrides as a table of values" "$(sql "$R/once" "select count(*) from flat where lr = 0.25 and \"model.depth\" = 5")" 1
finish
