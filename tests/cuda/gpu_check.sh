#!/usr/bin/env bash
# tests/cuda/gpu_check.sh — build the CUDA backend and run its kernel tests on
# the lent GPU machine (see shared/gpu.md).  Run from the repository root there,
# with .device-deps/ carried along: it holds Debian's liblua5.4-0, liblua5.4-dev,
# libsqlite3-0 and libsqlite3-dev .debs (made here, once, with
#   mkdir -p .device-deps && cd .device-deps &&
#   apt-get download liblua5.4-0 liblua5.4-dev libsqlite3-0 libsqlite3-dev).
# The machine has CUDA, OpenBLAS, LAPACKE and HDF5 but no Lua and no SQLite
# headers; the .debs are unpacked under /tmp/deps, never into /.
#
# Environment: BUILD (default /tmp/build), ARCH (default "90a-real;90-virtual"), SQ_COMMIT, OUT (if set, the
# full log is written to $OUT/gpu_check.log).  Builds everything; runs the
# GPU tests (ctest label cuda: tests/cuda/ and lua/test_cuda*) verbosely, then the rest.
# Afterwards $BUILD/squeeze runs with LD_LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-/tmp/build}
ARCH=${ARCH:-"90a-real;90-virtual"}
LOG=${OUT:+$OUT/gpu_check.log}
LOG=${LOG:-/tmp/gpu_check.log}

main() {
    echo "== device"
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,temperature.gpu,clocks.sm,clocks.max.sm \
        --format=csv || echo "nvidia-smi failed"
    nvcc --version | tail -n 2
    # SQ_COMMIT: the commit the tree is at, when the tree was copied without
    # its current git metadata (the lent machine's copy carries a stale .git)
    if [ -n "${SQ_COMMIT:-}" ]; then echo "commit: $SQ_COMMIT (given)"
    else echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (+ local changes)')"; fi
    date -u +"date: %Y-%m-%dT%H:%M:%SZ"

    echo "== dependencies from .device-deps"
    ls .device-deps/*.deb >/dev/null 2>&1 || { echo "no .device-deps/*.deb: carry .device-deps"; exit 2; }
    D=/tmp/deps
    mkdir -p "$D"
    for f in .device-deps/*.deb; do dpkg -x "$f" "$D"; done
    # Point only these .pc files at $D (PKG_CONFIG_SYSROOT_DIR would also
    # rewrite the machine's own openblas/lapacke paths, which then do not exist).
    sed -i "s|^prefix=/usr\$|prefix=$D/usr|" "$D"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc
    export PKG_CONFIG_PATH=$D/usr/lib/x86_64-linux-gnu/pkgconfig
    export LD_LIBRARY_PATH=$D/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

    echo "== configure"
    cmake -S . -B "$BUILD" -DCMAKE_PREFIX_PATH="$D/usr" \
          -DCMAKE_C_FLAGS="-I$D/usr/include/x86_64-linux-gnu" \
          -DSQUEEZE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH"

    echo "== build"
    cmake --build "$BUILD" -j "$(nproc)"

    echo "== test"
    # every GPU check verbosely (their logs are committed), then the rest
    # (the harness's tests need a Slurm cluster and the host's tools: not here)
    local rc=0
    (cd "$BUILD" && ctest -L cuda -V --output-on-failure --timeout 300) || rc=1
    (cd "$BUILD" && ctest -LE cuda -E 'harness' -j "$(nproc)" --output-on-failure --timeout 300) || rc=1
    return $rc
}

main 2>&1 | tee "$LOG"
