#!/bin/bash
# test_slurm.sh — end to end on a real one-node Slurm cluster that this test
# starts and stops (trap): 21 points as job arrays split by MaxArraySize=8,
# a %2 throttle, one failing point, one point preempted (checkpoint hook +
# requeue + resume), tasks writing only their shards, merged idempotently
# into a complete main database.
# usage: test_slurm.sh SQUEEZE_EXE
SQ=$1
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
CL=$TMP/cluster
env_line=$("$HERE/slurm_cluster.sh" start "$CL" 8); rc=$?
[ $rc = 77 ] && skip "slurm-wlm / munge not installed (see tests/harness/packages.txt)"
CLEANUP_HOOKS+=("'$HERE/slurm_cluster.sh' stop '$CL'")
[ $rc = 0 ] || { bad "the test cluster starts" "$env_line"; finish; }
eval "$env_line"
ok "a one-node cluster is up (SLURM_CONF=$SLURM_CONF)"
cd "$TMP"
R=$TMP/results

out=$("$SQ" submit "$HERE/exp_slurm.lua" --slurm --throttle 2 --time 10 --results "$R" 2>&1); rc=$?
echo "$out" | sed 's/^/    /'
check_eq "submit exits 0" "$rc" 0
check_contains "21 points split into 3 arrays (MaxArraySize 8)" "$out" "submitted 21 point(s) as 3 array job(s)"
check_eq "3 arrays recorded, none over 8 tasks" "$(sql "$R" "select count(*) || '/' || max(n_tasks) from slurm_arrays")" "3/8"
check_eq "every point queued with its array task" "$(sql "$R" "select count(*) from runs where status='queued' and slurm_task_id between 0 and 7")" 21
sbatch0=$(cat "$R"/sweeps/slurmtest/sub-1/array-0.sbatch)
check_contains "the batch script has the throttle" "$sbatch0" "#SBATCH --array=0-7%2"
check_contains "the batch script asks for the preemption signal" "$sbatch0" "#SBATCH --signal=B:USR1@90"
check_contains "later arrays wait for the previous one (global throttle)" \
  "$(scontrol show job "$(sql "$R" "select job_id from slurm_arrays where chunk=1")" 2>/dev/null)" "afterany"
main_before=$(sha256sum "$R/squeeze.db" | cut -d' ' -f1)

# run the cluster until every task ended; release a requeued task after
# 2 s (Slurm holds it ~120 s otherwise; released at once, slurmd may still
# remember the killed job and refuse to launch it)
maxrun=0; mid_status=""
declare -A held
for i in $(seq 1 600); do
  for t in $(squeue -h -r -t PD -o "%i %r" 2>/dev/null | awk '$2=="BeginTime"{print $1}'); do
    held[$t]=$(( ${held[$t]:-0} + 1 ))
    [ "${held[$t]}" -ge 10 ] && scontrol update JobId="$t" StartTime=now >/dev/null 2>&1
  done
  n=$(squeue -h -r -t R -n sq-slurmtest 2>/dev/null | wc -l)
  [ "$n" -gt "$maxrun" ] && maxrun=$n
  [ "$i" = 20 ] && mid_status=$("$SQ" status --results "$R" 2>&1)
  [ -z "$(squeue -h -r -n sq-slurmtest 2>/dev/null)" ] && break
  sleep 0.2
done
check "all tasks ended within 120 s" test "$i" -lt 600
check "the throttle held: at most 2 tasks ran at once (node has 4 CPUs)" test "$maxrun" -le 2 -a "$maxrun" -ge 1
check_contains "squeeze status works while tasks run" "$mid_status" "[slurmtest] 21 point(s)"
check_eq "tasks never wrote the main database" "$(sha256sum "$R/squeeze.db" | cut -d' ' -f1)" "$main_before"
check_eq "every task wrote its own shard" "$(ls "$R"/sweeps/slurmtest/shards/*.db | wc -l)" 21
out=$("$SQ" status --results "$R" 2>&1)
check_contains "status sees ended but unmerged shards" "$out" "ended but not merged yet"

out=$("$SQ" merge --results "$R" 2>&1)
check_contains "merge folds all 21 shards" "$out" "[slurmtest] merged 21 shard(s); runs: 1 failed, 20 finished"
dump1=$(sql "$R" "select (select count(*) from attempts) || '/' || (select count(*) from metrics) || '/' || (select group_concat(status) from (select status from runs order by id))")
out=$("$SQ" merge --results "$R" 2>&1)
check_contains "merging again merges nothing" "$out" "merged 0 shard(s)"
dump2=$(sql "$R" "select (select count(*) from attempts) || '/' || (select count(*) from metrics) || '/' || (select group_concat(status) from (select status from runs order by id))")
check_eq "merge is idempotent" "$dump2" "$dump1"

P7=$(sql "$R" "select id from runs where idx = 7")
check_eq "the preempted point: attempt 1 preempted, attempt 2 finished" \
  "$(sql "$R" "select group_concat(status, ' ') from (select status from attempts where run_id = '$P7' order by attempt)")" "preempted finished"
check_contains "its checkpoint hook ran and it requeued" "$(sql "$R" "select error from attempts where run_id = '$P7' and attempt = 1")" "checkpointed, requeued"
check_eq "attempt 2 resumed from the checkpoint (step 2)" "$(sql "$R" "select value from tags where run_id = '$P7' and key = 'resumed_from'")" 2
check_eq "both attempts' steps are kept (0,1 then 2,3)" \
  "$(sql "$R" "select group_concat(attempt || ':' || step, ' ') from (select attempt, step from metrics where run_id = '$P7' order by attempt, step)")" "1:0 1:1 2:2 2:3"
check_contains "Slurm ran it twice" "$(scontrol show job -o "$(sql "$R" "select slurm_array_job_id || '_' || slurm_task_id from runs where id = '$P7'")")" "Restarts=1"
check_contains "the failing point is failed with its message" \
  "$(sql "$R" "select status || ': ' || error from runs where idx = 13")" "failed: "
check_contains "... the Lua error itself" "$(sql "$R" "select error from runs where idx = 13")" "planned failure at x=13"
check_eq "the final database is complete: 21 runs with params" "$(sql "$R" "select count(distinct run_id) from params where key = 'x'")" 21
check_eq "... 20 finished runs with 4 steps each" \
  "$(sql "$R" "select count(*) from runs r where status = 'finished' and (select count(*) from metrics m where m.run_id = r.id) = 4")" 20
check_eq "... Slurm ids on every attempt" "$(sql "$R" "select count(*) from attempts where slurm_array_job_id is null or slurm_task_id is null")" 0
check_eq "... final metrics in the flat view" "$(sql "$R" "select count(*) from flat where final = x * 3")" 20
check_eq "... integrity" "$(sql "$R" "pragma integrity_check")" "ok"
check "the jobcomp file recorded the tasks (and the requeue)" test "$(grep -c sq-slurmtest "$CL/jobcomp.txt")" -ge 22
out=$("$SQ" status --results "$R" 2>&1)
check_contains "status after merge" "$out" "[slurmtest] 21 point(s): 20 finished, 1 failed"
out=$("$SQ" submit "$HERE/exp_slurm.lua" --slurm --throttle 2 --results "$R" 2>&1)
check_contains "resubmitting skips finished and failed points" "$out" "nothing to submit: 20 finished, 1 failed"
finish
