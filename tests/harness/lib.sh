# lib.sh — shared by the harness tests: checks, counting, a closing
# "N passed, N failed" line, a scratch folder removed on exit.
# Usage: . lib.sh; SQ=path/to/squeeze set by the caller (first argument).
set -u
PASS=0
FAIL=0
SQ=${SQ:?squeeze executable}
case "$SQ" in /*) ;; *) SQ="$PWD/$SQ" ;; esac
PY=${SQUEEZE_TEST_PYTHON:-/usr/bin/python3}
[ -x "$PY" ] || PY=$(command -v python3 || echo python3)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sq-harness.XXXXXX")
export OPENBLAS_NUM_THREADS=1
export SQUEEZE_HEARTBEAT_S=${SQUEEZE_HEARTBEAT_S:-1}
CLEANUP_HOOKS=()
cleanup() {
  for h in "${CLEANUP_HOOKS[@]}"; do eval "$h"; done
  if [ "$FAIL" = 0 ] && [ -z "${KEEP_TMP:-}" ]; then rm -rf "$TMP"; else echo "(scratch kept: $TMP)"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ok() { PASS=$((PASS + 1)); echo "ok   $1"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL $1"; shift; for l in "$@"; do echo "     $l"; done; }
# check NAME CONDITION-COMMAND...
check() { local name=$1; shift; if "$@"; then ok "$name"; else bad "$name" "command: $*"; fi; }
# check_eq NAME GOT WANT
check_eq() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "got:  $2" "want: $3"; fi; }
# check_contains NAME TEXT NEEDLE
check_contains() {
  case "$2" in *"$3"*) ok "$1" ;; *) bad "$1" "missing: $3" "in: $(printf '%s' "$2" | head -c 600)" ;; esac
}
finish() {
  echo "$PASS passed, $FAIL failed"
  [ "$FAIL" = 0 ]
  exit $?
}
skip() {
  echo "SKIP: $*"
  echo "0 passed, 0 failed (skipped)"
  exit 77
}
# sql DB QUERY — one value / rows through squeeze's own read-only query
sql() { "$SQ" query --results "$1" -f csv "$2" | tail -n +2; }
