#!/usr/bin/env bash
# experiments/bench/actprune_dw.sh — issue 5's kernel-level measurement in one
# call on the lent GPU machine (shared/gpu.md): build the CUDA backend, run
# tests/cuda/test_cuda_actprune (GPU kernels vs CPU references), then time
# squeeze's fused prune-and-pack and BSR dW against cuBLAS
# (actprune_dw_bench.cu) and PyTorch's stock BSR matmul on the same x̂
# (actprune_dw_torch.py), and write the markdown table.
#
# Run from the repository root there with .device-deps/ carried (Lua and
# SQLite headers; see tests/cuda/gpu_check.sh).  Environment:
#   OUT    where logs, CSVs and actprune_dw.md go (default /tmp/actprune_out)
#   BUILD  build folder (default /tmp/build); DATA  scratch for x, dy, masks
#   REPS   timed repeats per measurement (default 15); ARCH (default "90a-real;90-virtual")
#   COMMIT the commit measured (default: git rev-parse, else "unknown")
#   AP_SHAPES, AP_BLOCKS, AP_KEEPS, AP_DIAG  a subset (actprune_dw_bench.cu)
#   AP_TORCH=0  skip PyTorch and the table (for tuning runs)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/actprune_out}
BUILD=${BUILD:-/tmp/build}
DATA=${DATA:-/tmp/actprune_data}
REPS=${REPS:-15}
ARCH=${ARCH:-"90a-real;90-virtual"}
COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
mkdir -p "$OUT" "$DATA"
LOG=$OUT/run.log
exec > >(tee "$LOG") 2>&1

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv || true
DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)
DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "commit $COMMIT, date $DATE"

echo "== dependencies from .device-deps"
D=/tmp/deps
mkdir -p "$D"
for f in .device-deps/*.deb; do dpkg -x "$f" "$D"; done
sed -i "s|^prefix=/usr\$|prefix=$D/usr|" "$D"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc
export PKG_CONFIG_PATH=$D/usr/lib/x86_64-linux-gnu/pkgconfig
export LD_LIBRARY_PATH=$D/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

echo "== build"
t0=$(date +%s)
cmake -S . -B "$BUILD" -DCMAKE_PREFIX_PATH="$D/usr" -DCMAKE_C_FLAGS="-I$D/usr/include/x86_64-linux-gnu" \
      -DSQUEEZE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" > "$OUT/build.log" 2>&1 &&
cmake --build "$BUILD" -j "$(nproc)" --target test_cuda_actprune >> "$OUT/build.log" 2>&1 \
    || { tail -n 40 "$OUT/build.log"; echo "BUILD FAILED"; exit 1; }
# the bench driver: compiled like the library, linked with the test's link line
# (the two static libraries in a group: they refer to each other)
(cd "$BUILD/tests/cuda" &&
 nvcc -O3 -std=c++17 -arch=sm_${ARCH%%[-;]*} -Xcompiler=-fno-exceptions,-fno-rtti,-fno-threadsafe-statics \
      -I"$OLDPWD/engine" -I"$OLDPWD/kernels" -I"$OLDPWD/kernels/cuda" \
      -c "$OLDPWD/experiments/bench/actprune_dw_bench.cu" -o actprune_dw_bench.o &&
 link=$(sed -e 's|CMakeFiles/test_cuda_actprune.dir/test_cuda_actprune.c.o|actprune_dw_bench.o|' \
            -e 's|-o test_cuda_actprune|-o actprune_dw_bench|' CMakeFiles/test_cuda_actprune.dir/link.txt |
       sed -e 's|actprune_dw_bench.o|actprune_dw_bench.o -Wl,--start-group ../../libsqueeze_core.a ../../kernels/cuda/libsqueeze_cuda.a -Wl,--end-group|') &&
 eval "$link -lstdc++") >> "$OUT/build.log" 2>&1 || { tail -n 40 "$OUT/build.log"; echo "BENCH BUILD FAILED"; exit 1; }
echo "built in $(( $(date +%s) - t0 )) s"

echo "== test_cuda_actprune"
timeout 150 "$BUILD/tests/cuda/test_cuda_actprune" > "$OUT/test_actprune.log" 2>&1
rc=$?
echo "exit $rc: $(grep -c '^ok' "$OUT/test_actprune.log") ok, $(grep -c '^FAIL' "$OUT/test_actprune.log") FAIL"
grep -A1 '^FAIL' "$OUT/test_actprune.log" | head -n 30
tail -n 2 "$OUT/test_actprune.log"

echo "== squeeze vs cuBLAS"
DARG=$DATA; [ "${AP_TORCH:-1}" = 0 ] && DARG=-
timeout 200 "$BUILD/tests/cuda/actprune_dw_bench" "$DARG" "$OUT/squeeze.csv" "$REPS"
echo "bench exit $?"

[ "${AP_TORCH:-1}" = 0 ] && { rm -rf "$DATA"; exit 0; }
echo "== PyTorch"
PY=python3
$PY -c "import torch" 2>/dev/null || PY=/opt/torch/.venv/bin/python
PYTHONUNBUFFERED=1 timeout 170 $PY experiments/bench/actprune_dw_torch.py bench "$DATA" "$OUT/torch.csv" "$REPS"
echo "torch exit $?"
rm -rf "$DATA"

echo "== table"
$PY experiments/bench/actprune_dw_torch.py report "$OUT/squeeze.csv" "$OUT/torch.csv" \
    "$OUT/actprune_dw.md" "$DEVICE" "$DATE" "$COMMIT" > /dev/null
cat "$OUT/actprune_dw.md"
