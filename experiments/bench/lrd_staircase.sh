#!/usr/bin/env bash
# experiments/bench/lrd_staircase.sh — issue 6's GPU measurement in one call on
# the lent GPU machine (shared/gpu.md): build squeeze with CUDA (the recipe of
# tests/cuda/gpu_check.sh, only the targets needed), run tests/cuda/test_cuda_svd
# (cuSOLVER SVD vs LAPACK), then time on the GPU with CUDA events, squeeze
# (lrd_staircase.lua) and PyTorch (lrd_staircase_torch.py) on the same shapes:
#   a  latency staircase of the decomposed linear 4096 -> r -> 4096, 32768 rows,
#      r = m-8..m+8 around m = 512, 1024 and every multiple of 64 in 256..2048,
#      fwd and fwd+bwd, fp32 and TF32, and the dense 4096x4096 layer;
#   b  fwd+bwd with the first factor frozen vs not;
#   c  training step (fwd+bwd+AdamW) at r = 1024 (2x compression) vs dense;
#   d  3x3 conv 256->256, 56x56, batch 32: dense vs Tucker-2 at 2x compression;
#   e  squeeze's lowrank.search on the GPU, ratio 2, q in {1, 8, 64};
#   and the 4096x4096 float32 SVD's time on the CPU and the GPU (test_cuda_svd
#   with SQ_SVD_TIME_N).  Writes the markdown table to $OUT/lrd_gpu.md.
#
#   SQ_COMMIT=<short hash> experiments/bench/lrd_staircase.sh      (carry .device-deps)
# Environment: OUT (default /tmp/lrd_out), BUILD (default /tmp/build), ARCH (90),
# BUDGET (s for the whole script, default 440: every program's time limit is cut
# from what is left, and the table is written from whatever finished), REPS (20),
# WARMUP (3), SECTIONS (a,b,c,d,e), PRECISIONS (fp32,tf32), RANKS (section a's ranks;
# default the list above), QS (1,8,64), SVD_N (4096; 0 skips the SVD timing).
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$(date +%s)
export OUT=${OUT:-/tmp/lrd_out}
BUILD=${BUILD:-/tmp/build}
ARCH=${ARCH:-"90a-real;90-virtual"}
BUDGET=${BUDGET:-440}
REPS=${REPS:-20}
WARMUP=${WARMUP:-3}
SECTIONS=${SECTIONS:-a,b,c,d,e}
PRECISIONS=${PRECISIONS:-fp32,tf32}
RANKS=${RANKS:-}
QS=${QS:-1,8,64}
SVD_N=${SVD_N:-4096}
COMMIT=${SQ_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
mkdir -p "$OUT"
raw=$OUT/lrd_raw.txt
: >"$raw"
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
# cap LIMIT by what is left minus RESERVE, the seconds the later steps need at
# BUDGET=440 (scaled with BUDGET: unscaled, a 200 s budget once left the SVD
# test 5 s and the squeeze side 18 s); at least 5
cap() { local l=$(( $(left) - $2 * BUDGET / 440 )); [ "$l" -gt "$1" ] && l=$1; [ "$l" -lt 5 ] && l=5; echo "$l"; }

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,temperature.gpu,clocks.sm,clocks.max.sm \
    --format=csv || echo "nvidia-smi failed"
DEVICE=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n1)
DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "commit $COMMIT, date $DATE"

echo "== build"
D=/tmp/deps
mkdir -p "$D"
for f in .device-deps/*.deb; do dpkg -x "$f" "$D"; done
sed -i "s|^prefix=/usr\$|prefix=$D/usr|" "$D"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc
export PKG_CONFIG_PATH=$D/usr/lib/x86_64-linux-gnu/pkgconfig
export LD_LIBRARY_PATH=$D/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
cmake -S . -B "$BUILD" -DCMAKE_PREFIX_PATH="$D/usr" -DCMAKE_C_FLAGS="-I$D/usr/include/x86_64-linux-gnu" \
      -DSQUEEZE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" >"$OUT/build.log" 2>&1 &&
timeout "$(cap 200 150)" cmake --build "$BUILD" -j "$(nproc)" --target squeeze test_cuda_svd >>"$OUT/build.log" 2>&1
brc=$?
echo "build rc $brc after $(( $(date +%s) - T0 )) s"
[ $brc = 0 ] || { tail -n 40 "$OUT/build.log"; echo "BUILD FAILED"; }
SQ=$BUILD/squeeze

echo "== test_cuda_svd"
if [ -x "$BUILD/tests/cuda/test_cuda_svd" ]; then
    OPENBLAS_NUM_THREADS=1 timeout "$(cap 90 200)" "$BUILD/tests/cuda/test_cuda_svd" >"$OUT/test_svd.log" 2>&1
    echo "test_cuda_svd rc $? after $(( $(date +%s) - T0 )) s"
    grep -E "^(FAIL|SKIP)|passed, [0-9]+ failed|^device" "$OUT/test_svd.log"
    grep -E "^ok" "$OUT/test_svd.log" | head -4
fi

echo "== squeeze (left $(left) s)"
if [ -x "$SQ" ]; then
    lim=$(cap 230 150)
    timeout "$lim" "$SQ" run experiments/bench/lrd_staircase.lua sections="$SECTIONS" reps="$REPS" warmup="$WARMUP" \
        precisions="$PRECISIONS" qs="$QS" ${RANKS:+ranks="$RANKS"} \
        limit=$(( lim * 45 / 100 )) climit=$(( lim * 12 / 100 )) elimit=$(( lim * 20 / 100 )) 2>&1 | tee -a "$raw" | grep -v "^RESULT" | tail -n 20
    echo "squeeze rc ${PIPESTATUS[0]} after $(( $(date +%s) - T0 )) s"
fi

echo "== torch (left $(left) s)"
tucker=$(grep "^RESULT side=squeeze sec=d prec=fp32 kind=tucker2" "$raw" |
         sed -E 's/.* q=([0-9]+) r_in=([0-9]+) r_out=([0-9]+).*/\1:\2:\3/' | paste -sd, -)
lim=$(cap 210 40)
PYTHONUNBUFFERED=1 timeout "$lim" python3 experiments/bench/lrd_staircase_torch.py \
    --sections "$(echo "$SECTIONS" | sed 's/,\?e//')" --reps "$REPS" --warmup "$WARMUP" \
    --precisions "$PRECISIONS" ${RANKS:+--ranks "$RANKS"} \
    --limit $(( lim * 50 / 100 )) --climit $(( lim * 10 / 100 )) --tucker "$tucker" 2>&1 |
    tee -a "$raw" | grep -v "^RESULT" | tail -n 20
echo "torch rc ${PIPESTATUS[0]} after $(( $(date +%s) - T0 )) s"

if [ "$SVD_N" != 0 ] && [ -x "$BUILD/tests/cuda/test_cuda_svd" ] && [ "$(left)" -gt 30 ]; then
    echo "== SVD ${SVD_N}x${SVD_N} timing (left $(left) s)"
    SQ_SVD_TIME_N=$SVD_N timeout "$(cap 120 12)" "$BUILD/tests/cuda/test_cuda_svd" 2>&1 | grep -E "^time|FAIL" | tee -a "$raw"
fi

torchv=$(python3 -c 'import torch; print(torch.__version__)' 2>/dev/null)
python3 - "$raw" "$OUT/lrd_gpu.md" "$DEVICE" "$DATE" "$COMMIT" "$torchv" "$OUT/test_svd.log" <<'PY'
import sys, math, collections
raw, out, device, date, commit, torchv, testlog = sys.argv[1:8]
R = []
for line in open(raw):
    if line.startswith("RESULT "):
        R.append(dict(f.split("=", 1) for f in line.split()[1:]))
def pick(**kw):
    return [r for r in R if all(r.get(k) == str(v) for k, v in kw.items())]
def one(**kw):
    r = pick(**kw)
    return r[0] if r else None
def f(v, d=2):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"
def num(r, k):
    return float(r[k]) if r and k in r else None
def ratio(a, b):
    return a / b if a is not None and b is not None and b > 0 else None
L = ["# Low-rank decomposition on the GPU: latency staircase, freezing, training step, Tucker-2, rank search", ""]
L.append(f"Produced by `experiments/bench/lrd_staircase.sh` (one call on the lent machine) on {date}, squeeze commit "
         f"{commit}.  Device: {device}.  PyTorch {torchv}, eager.")
L.append("")
L.append("Method: CUDA events around forward and backward of every iteration, 3 warm-up iterations, median of 20; "
         "iterations queued back to back (GPU time of the work).  The input requires a gradient (as inside a "
         "network: backward computes dx too); backward is `y:backward(dy)` with a fixed random dy (no loss "
         "kernel); gradients are released between iterations.  fp32 = exact float32 (TF32 off in cuBLAS and, "
         "on the PyTorch side, cuDNN); tf32 = TF32 tensor cores for float32 GEMMs/convs.  Decomposed linear: "
         "x (32768×4096) → first factor 4096→r (no bias) → second factor r→4096 (bias), as "
         "`lowrank.LowRankLinear`.  Ratios: *dense/x* > 1 means x is faster than the dense layer; "
         "*pt/sq* > 1 means squeeze is faster than PyTorch.")
L.append("")
# ---- a
L.append("## (a) Latency staircase, decomposed linear 4096 → r → 4096, 32 768 rows (ms)")
L.append("")
dense = {(p, s): one(sec="a", prec=p, kind="dense", side=s) for p in ("fp32", "tf32") for s in ("squeeze", "torch")}
L.append("| | fp32 sq fwd | fp32 pt fwd | fp32 sq f+b | fp32 pt f+b | tf32 sq fwd | tf32 pt fwd | tf32 sq f+b | tf32 pt f+b |")
L.append("|---|---|---|---|---|---|---|---|---|")
row = ["dense 4096×4096"]
for p in ("fp32", "tf32"):
    row += [f(num(dense[(p, "squeeze")], "fwd_ms")), f(num(dense[(p, "torch")], "fwd_ms")),
            f(num(dense[(p, "squeeze")], "fb_ms")), f(num(dense[(p, "torch")], "fb_ms"))]
L.append("| " + " | ".join(row) + " |")
L.append("")
ranks = sorted({int(r["r"]) for r in pick(sec="a", kind="lowrank")})
T = {}
for r in pick(sec="a", kind="lowrank"):
    T[(r["side"], r["prec"], int(r["r"]))] = (float(r["fwd_ms"]), float(r["fb_ms"]))
def t(side, p, r, i=1):
    v = T.get((side, p, r))
    return v[i] if v else None
def up8(side, p, r):
    """f+b at the smallest measured multiple of 8 >= r"""
    r8 = -(-r // 8) * 8
    return t(side, p, r8)
L.append("Per rank (sq = squeeze, pt = PyTorch; f+b = forward+backward; *÷r₈* = this rank's f+b over the f+b "
         "of the next multiple of 8 at or above it, the staircase penalty; *dense/sq* = dense f+b over this f+b):")
L.append("")
hdr = "| r |"
for p in ("fp32", "tf32"):
    hdr += f" {p} sq fwd | {p} pt fwd | {p} sq f+b | {p} pt f+b | {p} pt/sq f+b | {p} sq ÷r₈ | {p} pt ÷r₈ | {p} dense/sq | {p} dense/pt |"
L.append(hdr)
L.append("|" + "---|" * (1 + 2 * 9))
for r in ranks:
    cells = [str(r)]
    for p in ("fp32", "tf32"):
        sf, pf = t("squeeze", p, r, 0), t("torch", p, r, 0)
        sb, pb = t("squeeze", p, r), t("torch", p, r)
        cells += [f(sf), f(pf), f(sb), f(pb), f(ratio(pb, sb)), f(ratio(sb, up8("squeeze", p, r))),
                  f(ratio(pb, up8("torch", p, r))), f(ratio(num(dense[(p, "squeeze")], "fb_ms"), sb)),
                  f(ratio(num(dense[(p, "torch")], "fb_ms"), pb))]
    L.append("| " + " | ".join(cells) + " |")
L.append("")
# staircase summary
L.append("Staircase summary (worst f+b penalty of a rank against the next multiple of 8, in each ±8 window):")
L.append("")
L.append("| window | precision | side | f+b at m (ms) | worst r | worst ÷r₈ | ranks ≥ 1.25× r₈ |")
L.append("|---|---|---|---|---|---|---|")
for m in (512, 1024):
    for p in ("fp32", "tf32"):
        for s in ("squeeze", "torch"):
            pen = [(ratio(t(s, p, r), up8(s, p, r)), r) for r in range(m - 8, m + 9) if t(s, p, r) and up8(s, p, r)]
            if not pen:
                continue
            w = max(pen)
            slow = [str(r) for v, r in pen if v >= 1.25]
            L.append(f"| {m}±8 | {p} | {s} | {f(t(s, p, m))} | {w[1]} | {f(w[0])} | {len(slow)}/{len(pen)}: {' '.join(slow) or '–'} |")
L.append("")
# ---- b
L.append("## (b) Freezing the first factor (its dW GEMM skipped), forward+backward (ms)")
L.append("")
L.append("| r | precision | side | none: bwd | none: f+b | first frozen: bwd | first frozen: f+b | f+b saved |")
L.append("|---|---|---|---|---|---|---|---|")
for r in sorted({int(x["r"]) for x in pick(sec="b")}):
    for p in ("fp32", "tf32"):
        for s in ("squeeze", "torch"):
            a0, a1 = one(sec="b", prec=p, r=r, side=s, freeze="none"), one(sec="b", prec=p, r=r, side=s, freeze="first")
            if not a0 and not a1:
                continue
            sv = ratio(num(a0, "fb_ms") - num(a1, "fb_ms"), num(a0, "fb_ms")) if a0 and a1 else None
            L.append(f"| {r} | {p} | {s} | {f(num(a0,'bwd_ms'))} | {f(num(a0,'fb_ms'))} | {f(num(a1,'bwd_ms'))} | "
                     f"{f(num(a1,'fb_ms'))} | {f(sv*100 if sv is not None else None, 1)}% |")
L.append("")
# ---- c
L.append("## (c) Training step (zero_grad + fwd + bwd + AdamW) at 2× parameter compression (r = 1024) vs dense (ms)")
L.append("")
L.append("Goal (issue 6, the paper's \"up to 60% faster training\"): the decomposed layer's step ≥ 1.6× faster than dense.")
L.append("")
L.append("| precision | layer | params | sq fwd | sq bwd | sq AdamW | sq step | **dense/sq** | pt step | dense/pt | pt/sq | goal ≥ 1.6× (squeeze) |")
L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
for p in ("fp32", "tf32"):
    ds, dp = one(sec="c", prec=p, kind="dense", side="squeeze"), one(sec="c", prec=p, kind="dense", side="torch")
    for kind in ("dense", "lowrank", "lowrank_frozen_first"):
        s, q = one(sec="c", prec=p, kind=kind, side="squeeze"), one(sec="c", prec=p, kind=kind, side="torch")
        if not s and not q:
            continue
        sp = ratio(num(ds, "step_ms"), num(s, "step_ms"))
        goal = "" if kind == "dense" or sp is None else ("met" if sp >= 1.6 else "missed")
        name = {"dense": "dense 4096×4096", "lowrank": "r = 1024", "lowrank_frozen_first": "r = 1024, first factor frozen"}[kind]
        L.append(f"| {p} | {name} | {(s or q)['params']} | {f(num(s,'fwd_ms'))} | {f(num(s,'bwd_ms'))} | {f(num(s,'opt_ms'))} | "
                 f"{f(num(s,'step_ms'))} | **{f(sp)}** | {f(num(q,'step_ms'))} | {f(ratio(num(dp,'step_ms'), num(q,'step_ms')))} | "
                 f"{f(ratio(num(q,'step_ms'), num(s,'step_ms')))} | {goal} |")
L.append("")
# ---- d
L.append("## (d) 3×3 conv 256 → 256, 56×56, batch 32, stride 1, pad 1: dense vs Tucker-2 at 2× compression (ms)")
L.append("")
L.append("| precision | layer | params | sq fwd | sq f+b | pt fwd | pt f+b | dense/sq f+b | dense/pt f+b | pt/sq f+b |")
L.append("|---|---|---|---|---|---|---|---|---|---|")
for p in ("fp32", "tf32"):
    ds, dp = one(sec="d", prec=p, kind="dense", side="squeeze"), one(sec="d", prec=p, kind="dense", side="torch")
    keys = [("dense", "0")] + sorted({("tucker2", x["q"]) for x in pick(sec="d", kind="tucker2")})
    for kind, q in keys:
        s, tt = one(sec="d", prec=p, kind=kind, q=q, side="squeeze"), one(sec="d", prec=p, kind=kind, q=q, side="torch")
        if not s and not tt:
            continue
        x = s or tt
        name = "dense" if kind == "dense" else f"Tucker-2 r_in={x['r_in']} r_out={x['r_out']} (q={q})"
        L.append(f"| {p} | {name} | {x['params']} | {f(num(s,'fwd_ms'))} | {f(num(s,'fb_ms'))} | {f(num(tt,'fwd_ms'))} | "
                 f"{f(num(tt,'fb_ms'))} | {f(ratio(num(ds,'fb_ms'), num(s,'fb_ms')))} | {f(ratio(num(dp,'fb_ms'), num(tt,'fb_ms')))} | "
                 f"{f(ratio(num(tt,'fb_ms'), num(s,'fb_ms')))} |")
L.append("")
# ---- e
L.append("## (e) Rank search on the GPU (`lowrank.search`, 4096×4096, ratio 2 → r₀ = 1024, window 2, 32 768 rows, repeats 5)")
L.append("")
L.append("*search* = `lowrank.search` as shipped (host clock around each candidate's fwd+bwd); *synced* = the same "
         "candidates through `core.lowrank_search` with a run that waits for the GPU.  *best* = fastest within "
         "the budget (r ≤ 1024); *tol pick* = `decompose`'s rule (largest rank within 5% of the fastest).  "
         "*fast step?* = the pick's f+b in (a) is within 5% of the f+b of the next multiple of 8 (its rank is not "
         "on a slow step of the staircase).")
L.append("")
L.append("| precision | q | method | best | tol pick | candidates (rank:ms) | best on a fast step? | tol pick on a fast step? |")
L.append("|---|---|---|---|---|---|---|---|")
def fast(p, r):
    r = int(r)
    a, b = t("squeeze", p, r), up8("squeeze", p, r)
    if r % 8 == 0:
        return "yes (multiple of 8)"
    if a is None or b is None:
        return "not measured in (a)"
    v = a / b
    return f"{'yes' if v <= 1.05 else 'NO'} ({v:.2f}× r₈)"
for p in ("fp32", "tf32"):
    for x in pick(sec="e", prec=p):
        L.append(f"| {p} | {x['q']} | {x['method']} | {x['best']} | {x['tol_pick']} | {x['trials_ms'].replace(',', ', ')} | "
                 f"{fast(p, x['best'])} | {fast(p, x['tol_pick'])} |")
L.append("")
# ---- SVD
L.append("## SVD (cuSOLVER on the GPU vs LAPACK on the CPU)")
L.append("")
try:
    tl = [l.rstrip() for l in open(testlog)]
    summ = [l for l in tl if "passed," in l]
    fails = [l for l in tl if l.startswith("FAIL")]
    L.append(f"`tests/cuda/test_cuda_svd`: {summ[-1] if summ else 'no summary (see test_svd.log)'}"
             + (f"; failures: {len(fails)}" if fails else ""))
except OSError:
    L.append("`tests/cuda/test_cuda_svd`: not run")
L.append("")
L.append("```")
L.extend(l.rstrip() for l in open(raw) if l.startswith("time svd"))
L.append("```")
L.append("")
L.append("Notes from the runs (time limits, skips):")
L.append("```")
L.extend(l.rstrip() for l in open(raw) if l.startswith("#"))
L.append("```")
open(out, "w").write("\n".join(L) + "\n")
PY
cat "$OUT/lrd_gpu.md"
echo "== total $(( $(date +%s) - T0 )) s"
