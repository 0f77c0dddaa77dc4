#!/bin/bash
# test_crash.sh — crash safety: kill -9 a local worker in the middle of a
# run, then the whole sweep (parent and workers) at once; resume; every
# point ends finished exactly once, PRAGMA integrity_check is ok, and no
# half-written HDF5 file is indexed.
# usage: test_crash.sh SQUEEZE_EXE
SQ=$1
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
cd "$TMP"
R=$TMP/results
SH=$R/sweeps/slow/shards

wait_running() {   # wait until N workers of pid $1 exist and have written metrics
  for i in $(seq 1 200); do
    local n
    n=$(pgrep -P "$1" | wc -l)
    [ "$n" -ge "$2" ] && [ -n "$(ls "$SH" 2>/dev/null | grep '\.hb$')" ] && return 0
    sleep 0.02
  done
  return 1
}

# 1. kill -9 one worker mid-run; the parent records it failed and goes on
"$SQ" sweep "$HERE/exp_slow.lua" -j 4 --results "$R" >"$TMP/s1.out" 2>&1 &
P=$!
wait_running $P 4 || bad "workers started"
sleep 0.3
W=$(pgrep -P $P | head -1)
kill -9 "$W"
wait $P; rc=$?
check_eq "the sweep reports the killed worker (exit 1)" "$rc" 1
check_contains "the killed worker's point is failed with its signal" "$(cat "$TMP/s1.out")" "worker died: SIGKILL"
check_eq "one failed, the other points finished" \
  "$(sql "$R" "select sum(status='failed') || '/' || sum(status='finished') from runs")" "1/7"
check_eq "integrity after kill -9 of a worker" "$(sql "$R" "pragma integrity_check")" "ok"
"$SQ" sweep "$HERE/exp_slow.lua" -j 4 -q --results "$R" --retry-failed >/dev/null 2>&1
check_eq "--retry-failed completes the sweep" "$?" 0

# 2. kill -9 the parent and all its workers at once (a machine crash, an OOM
#    kill of the whole job): runs stay 'running'; the next sweep finds their
#    processes gone, marks them killed and reruns them
R2=$TMP/r2
SH=$R2/sweeps/slow/shards
"$SQ" sweep "$HERE/exp_slow.lua" -j 3 --results "$R2" >/dev/null 2>&1 &
P=$!
wait_running $P 3 || bad "workers started (2)"
sleep 0.3
kill -9 $P $(pgrep -P $P)
wait $P 2>/dev/null
sleep 0.1
check_eq "after kill -9 of everything, runs are stuck running" "$(sql "$R2" "select count(*) from runs where status='running'")" 3
check_eq "integrity after kill -9 of everything" "$(sql "$R2" "pragma integrity_check")" "ok"
out=$("$SQ" sweep "$HERE/exp_slow.lua" -j 4 --results "$R2" 2>&1); rc=$?
check_eq "plain resume completes the sweep" "$rc" 0
check_eq "the lost attempts are recorded as killed" \
  "$(sql "$R2" "select count(*) from attempts where status='killed' and error like 'worker lost%'")" 3

for r in "$R" "$R2"; do
  n=$(basename "$r")
  check_eq "$n: every point finished" "$(sql "$r" "select count(*) from runs where status='finished'")" 8
  check_eq "$n: exactly one finished attempt per point" \
    "$(sql "$r" "select count(*) from (select run_id from attempts where status='finished' group by run_id having count(*) = 1)")" 8
  check_eq "$n: no point finished twice" \
    "$(sql "$r" "select count(*) from (select run_id from attempts where status='finished' group by run_id having count(*) > 1)")" 0
  check_eq "$n: each run's metrics are those of its finished attempt" \
    "$(sql "$r" "select count(*) from runs r where (select count(*) from metrics m where m.run_id = r.id and m.attempt = r.attempt) = 20")" 8
  check_eq "$n: PRAGMA integrity_check" "$(sql "$r" "pragma integrity_check")" "ok"
  out=$("$SQ" run "$HERE/check_h5.lua" "$r" 2>&1)
  check_contains "$n: every indexed HDF5 file is whole" "$out" "h5 ok"
  check_eq "$n: only finished, whole files are indexed (2 artifacts per finished attempt)" \
    "$(sql "$r" "select count(*) from artifacts a join attempts t on t.run_id = a.run_id and t.attempt = a.attempt where t.status = 'finished'")" 16
done
finish
