#!/bin/bash
# test_bad_input.sh — a typo in an axis name, an override of an unknown key,
# a malformed range, a missing script (and a few more) each give a clear
# message, exit non-zero and leave the results database untouched.
# usage: test_bad_input.sh SQUEEZE_EXE
SQ=$1
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
cd "$TMP"
R=$TMP/results
"$SQ" sweep "$HERE/exp_basic.lua" -q --results "$R" steps=2 >/dev/null 2>&1
check_eq "a first sweep creates the database" "$?" 0
snapshot() { (cd "$R" && find . -type f | sort | xargs sha256sum); }
before=$(snapshot)

cat > "$TMP/typo_axis.lua" <<'LUA'
local experiment = require "squeeze.experiment"
local sweep = require "squeeze.sweep"
return experiment { name = "basic", config = { lr = 1e-3, seed = 0 },
  sweep = sweep.grid { lr = { 1e-3, 1e-2 }, sede = { 0, 1 } }, run = function() end }
LUA
cat > "$TMP/bad_zip.lua" <<'LUA'
local experiment = require "squeeze.experiment"
local sweep = require "squeeze.sweep"
return experiment { name = "z", config = { lr = 1e-3, seed = 0 },
  sweep = sweep.zip { lr = { 1e-3, 1e-2 }, seed = { 0, 1, 2 } }, run = function() end }
LUA
cat > "$TMP/filter_all.lua" <<'LUA'
local experiment = require "squeeze.experiment"
return experiment { name = "f", config = { lr = 1e-3, seed = 0 }, sweep = { lr = { 1, 2 }, seed = { 0, 1 } },
  filter = function(c) if c.seed == 7 then error("seven") end return c.lr > 5 end, run = function() end }
LUA
cat > "$TMP/no_exp.lua" <<'LUA'
return { name = "x" }
LUA
cat > "$TMP/filter_why.lua" <<'LUA'
local experiment = require "squeeze.experiment"
return experiment { name = "w", config = { lr = 1e-3, seed = 0 }, sweep = { lr = { 1, 2 } },
  filter = function(c) return false, "lr must be tiny" end, run = function() end }
LUA

expect() {   # NAME NEEDLE ARGS...; the output stays in $last_out
  local name=$1 needle=$2; shift 2
  local out rc
  out=$("$SQ" "$@" 2>&1); rc=$?
  last_out=$out
  if [ $rc -ne 0 ]; then ok "$name: exits non-zero ($rc)"; else bad "$name: exits non-zero" "rc=0"; fi
  check_contains "$name: says so" "$out" "$needle"
}
expect "axis name typo" "sweep axis 'sede' is not a key of the base config (did you mean 'seed'?)" \
  sweep "$TMP/typo_axis.lua" --results "$R"
expect "unknown override key" "override 'lrr=0.1': 'lrr' is not a key of the base config (did you mean 'lr'?)" \
  sweep "$HERE/exp_basic.lua" --results "$R" lrr=0.1
expect "unknown nested override key" "'model.depht' is not a key of the base config (did you mean 'model.depth'?)" \
  sweep "$HERE/exp_basic.lua" --results "$R" model.depht=3
expect "malformed range" "malformed range in override 'lr=1e-3..': expected START..STOP" \
  sweep "$HERE/exp_basic.lua" --results "$R" lr=1e-3..
expect "empty range()" "malformed range in override 'seed=range(5,1)'" \
  sweep "$HERE/exp_basic.lua" --results "$R" "seed=range(5,1)"
expect "wrong value type" "override 'lr=fast': 'fast' is not a number" \
  sweep "$HERE/exp_basic.lua" --results "$R" lr=fast
expect "a fraction for an integer key" "override 'seed=0.5': 0.5 is not an integer, but seed is an integer" \
  sweep "$HERE/exp_basic.lua" --results "$R" seed=0.5
expect "a group overridden as a value" "'model' is a group of keys; set its keys" \
  sweep "$HERE/exp_basic.lua" --results "$R" model=3
expect "missing script" "script '$TMP/nope.lua' not found" \
  sweep "$TMP/nope.lua" --results "$R"
expect "a script that returns no experiment" "must return an experiment" \
  sweep "$TMP/no_exp.lua" --results "$R"
expect "zip of unequal lengths" "sweep.zip: axes must have equal lengths (lr=2, seed=3)" \
  sweep "$TMP/bad_zip.lua" --results "$R"
expect "unknown option" "unknown option '--jobz'" \
  sweep "$HERE/exp_basic.lua" --results "$R" --jobz 3
expect "a filter that drops every point" "the filter dropped all 4 point(s)" \
  sweep "$TMP/filter_all.lua" --results "$R"
expect "a filter that raises" "filter raised on the point" \
  sweep "$TMP/filter_all.lua" --results "$R" seed=7
expect "a filter's reason is quoted" "because: lr must be tiny" \
  sweep "$TMP/filter_why.lua" --results "$R"
# squeeze run: the same mistakes, without a Lua traceback; --results / --help
expect "run: unknown override key" "squeeze run: override 'lrr=1': 'lrr' is not a key of the base config" \
  run "$HERE/exp_basic.lua" --results "$R" lrr=1
case "$last_out" in *"stack traceback"*) bad "run: a command-line mistake prints no traceback" "$last_out" ;;
  *) ok "run: a command-line mistake prints no traceback" ;; esac
expect "run: several values for one point" "use \`squeeze sweep\`" \
  run "$HERE/exp_basic.lua" --results "$R" lr=1,2
expect "run: a filter's reason" "because: lr must be tiny" \
  run "$TMP/filter_why.lua" --results "$R"
expect "run: --results without a folder" "--results needs a folder" \
  run "$HERE/exp_basic.lua" --results
expect "submit: the same checks" "'lrr' is not a key of the base config" \
  submit "$HERE/exp_basic.lua" --slurm --results "$R" lrr=1
expect "submit: a bad --signal" "--signal 'USR1-90': expected SIG@SECONDS" \
  submit "$HERE/exp_basic.lua" --slurm --signal USR1-90 --results "$R"
after=$(snapshot)
check_eq "the results folder is byte-for-byte untouched" "$after" "$before"
out=$("$SQ" run --help 2>&1); rc=$?
check_eq "run --help exits 0" "$rc" 0
check_contains "run --help shows the usage" "$out" "usage: squeeze run SCRIPT"
"$SQ" run "$HERE/exp_basic.lua" --results "$TMP/once" steps=2 >/dev/null 2>&1
check_eq "run --results DIR records there" "$(sql "$TMP/once" "select count(*) from runs where status = 'finished'")" 1
"$SQ" run "$HERE/exp_basic.lua" "--results=$TMP/once2" steps=2 >/dev/null 2>&1
check "run --results=DIR too" test -s "$TMP/once2/squeeze.db"
out=$("$SQ" query --results "$TMP/none" "select 1" 2>&1)
check_contains "a missing database is named, not created" "$out" "no results database at $TMP/none/squeeze.db"
check "and nothing was created" test ! -e "$TMP/none"
finish
