#!/bin/bash
# test_python.sh — pandas and h5py (Debian's python3-pandas, python3-h5py)
# read the results: the flat view in one pandas.read_sql line, a run's
# HDF5 file (a saved tensor and a logged curve, NaN/inf included).
# usage: test_python.sh SQUEEZE_EXE
SQ=$1
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
"$PY" -c "import pandas, h5py" 2>/dev/null || skip "$PY lacks pandas or h5py (apt-get install python3-pandas python3-h5py)"
cd "$TMP"
R=$TMP/results
"$SQ" sweep "$HERE/exp_basic.lua" -j 2 -q --results "$R" >/dev/null 2>&1
check_eq "sweep for the readers" "$?" 0
out=$("$PY" - "$R" <<'PY' 2>&1
import sqlite3, sys, math
import pandas as pd, h5py, numpy as np
R = sys.argv[1]
con = sqlite3.connect(R + "/squeeze.db")
df = pd.read_sql("select * from flat", con)                      # the one line
print("rows", len(df))
print("cols_ok", all(c in df.columns for c in ["run_id", "sweep", "status", "lr", "hidden", "seed", "model.depth", "test_acc", "loss", "odd"]))
print("dtypes_ok", str(df["hidden"].dtype).startswith("int"), str(df["lr"].dtype).startswith("float"))
print("final_odd", sorted(set(str(x) for x in df["odd"])))      # the last 'odd' value logged is -inf
g = df.groupby(["lr", "hidden"])["test_acc"].agg(["mean", "std", "count"]).reset_index()
print("groups", len(g), int(g["count"].min()))
m = pd.read_sql("select * from metrics_decoded where key = 'odd' order by run_id, step", con)
print("decoded", [str(v) for v in m["value"][:3]])
a = pd.read_sql("select a.file, a.dataset, a.kind from artifacts a join runs r on r.id = a.run_id and r.attempt = a.attempt where r.status = 'finished' order by a.run_id, a.name limit 3", con)
f = h5py.File(R + "/" + a["file"][0], "r")
mask = f["mask/fc1"][()]
loss = f["curves/loss"][()]
odd = f["curves/odd"][()]
print("mask", mask.shape, mask.dtype, float(mask.sum()))
print("loss", loss.shape, loss[0].tolist())
print("odd", [str(v) for v in odd[:, 1]])
print("attrs", f.attrs["sweep"], "config" in f.attrs)
PY
)
echo "$out" | sed 's/^/    /'
check_contains "pandas.read_sql('select * from flat') loads every run" "$out" "rows 12"
check_contains "flat has run columns, params (nested dotted) and final metrics" "$out" "cols_ok True"
check_contains "integer and float params keep their types" "$out" "dtypes_ok True True"
check_contains "non-finite final metrics come back as -inf" "$out" "final_odd ['-inf']"
check_contains "a groupby over seeds works" "$out" "groups 4 3"
check_contains "metrics_decoded: nan, inf, -inf" "$out" "decoded ['nan', 'inf', '-inf']"
check_contains "h5py reads a saved tensor" "$out" "mask (4, 3) float32 12.0"
check_contains "h5py reads a logged curve as (step, value) rows" "$out" "loss (5, 2) [0.0, "
check_contains "non-finite curve values survive in HDF5" "$out" "odd ['nan', 'inf', '-inf']"
check_contains "run metadata in HDF5 attributes" "$out" "attrs basic True"
finish
