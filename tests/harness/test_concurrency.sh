#!/bin/bash
# test_concurrency.sh — 8 local workers (and a second sweep writing the
# same results folder at the same time) finish with no "database is
# locked" failure: workers write only their own shards; each parent is the
# only writer of its merges and waits on the main database's busy timeout.
# usage: test_concurrency.sh SQUEEZE_EXE
SQ=$1
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
cd "$TMP"
R=$TMP/results

"$SQ" sweep "$HERE/exp_many.lua" -j 8 --results "$R" >"$TMP/a.out" 2>&1 &
A=$!
"$SQ" sweep "$HERE/exp_basic.lua" -j 4 --results "$R" >"$TMP/b.out" 2>&1 &
B=$!
wait $A; ra=$?
wait $B; rb=$?
check_eq "the 8-worker sweep exits 0" "$ra" 0
check_eq "the concurrent second sweep exits 0" "$rb" 0
check_eq "48 + 12 points finished" "$(sql "$R" "select count(*) from runs where status='finished'")" 60
check_eq "no failed or killed attempt" "$(sql "$R" "select count(*) from attempts where status <> 'finished'")" 0
check_eq "every metric row arrived (48 points x 600)" "$(sql "$R" "select count(*) from metrics m join runs r on r.id = m.run_id where r.sweep='many'")" 28800
locked=$(grep -ril "database is locked" "$TMP/a.out" "$TMP/b.out" "$R/sweeps" 2>/dev/null | wc -l)
check_eq "no 'database is locked' anywhere (outputs, worker logs)" "$locked" 0
check_eq "tags merged" "$(sql "$R" "select count(*) from tags where key='kind' and value='stress'")" 48
check_eq "integrity" "$(sql "$R" "pragma integrity_check")" "ok"
check_eq "the main database stays in WAL mode" "$(sql "$R" "pragma journal_mode")" "wal"
finish
