#!/usr/bin/env bash
# cpu_epoch.sh — one training epoch on Fashion-MNIST, squeeze vs PyTorch (Debian's
# python3-torch) on this machine, same shapes, batch 256, AdamW, side by side.
# Writes results/reports/cpu_epoch.md (device, date, commit, table of ratios).
#   experiments/bench/cpu_epoch.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${1:-build}
SQ=$B/squeeze
PY=${PYTHON:-/usr/bin/python3}   # Debian's interpreter: python3-torch is installed for it
[ -x "$SQ" ] || { echo "cpu_epoch.sh: $SQ not built (run .ci/bootstrap run first)" >&2; exit 2; }
$PY -c 'import torch' 2>/dev/null || { echo "cpu_epoch.sh: needs python3-torch (apt-get install python3-torch)" >&2; exit 2; }
blas=$(update-alternatives --query libblas.so.3-x86_64-linux-gnu 2>/dev/null | sed -n 's/^Value: //p')
case "$blas" in
*openblas*) ;;
*) echo "cpu_epoch.sh: libblas.so.3 points at '$blas', not OpenBLAS: PyTorch would run on the reference BLAS and the comparison would be meaningless (anchors.md)" >&2; exit 2 ;;
esac
out=results/reports/cpu_epoch.md
tmp=$(mktemp)
# (sizes, threads): the small MLP runs fastest on one thread; the wide one uses both cores.
rows=("784,256,256,10 1" "784,1024,1024,10 2")
for r in "${rows[@]}"; do
    set -- $r
    sizes=$1; th=$2
    for i in 1 2; do   # alternate the two programs so drift hits both
        OPENBLAS_NUM_THREADS=$th OMP_NUM_THREADS=$th $PY experiments/bench/cpu_epoch_torch.py --sizes "$sizes" --threads "$th" | tee -a "$tmp"
        OPENBLAS_NUM_THREADS=$th "$SQ" run experiments/bench/cpu_epoch.lua sizes="$sizes" threads="$th" | tee -a "$tmp"
    done
done
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- engine kernels lua || echo "+dirty")
cpu=$(sed -n 's/^model name\s*:\s*//p' /proc/cpuinfo | head -1)
{
    echo "# CPU training epoch: squeeze vs PyTorch"
    echo
    echo "Produced by \`experiments/bench/cpu_epoch.sh\` on $(date -u +%Y-%m-%d), commit $commit."
    echo "Device: $cpu, $(nproc) cores. PyTorch $($PY -c 'import torch;print(torch.__version__)') (Debian), libblas.so.3 -> $blas."
    echo "One epoch = 60 000 Fashion-MNIST samples, shuffled, batch 256, forward + cross-entropy + backward + AdamW."
    echo "Median of 3 epochs after 1 warm-up; each program run twice, alternating; the better run of each is kept."
    echo
    echo "| model | threads | PyTorch samples/s | squeeze samples/s | squeeze / PyTorch | squeeze GFLOP/s (model FLOPs) |"
    echo "|---|---|---|---|---|---|"
    for r in "${rows[@]}"; do
        set -- $r
        t=$(grep "^torch sizes=$1 threads=$2 " "$tmp" | sed 's/.*samples_per_s=\([0-9]*\).*/\1/' | sort -n | tail -1)
        s=$(grep "^squeeze sizes=$1 threads=$2 " "$tmp" | sed 's/.*samples_per_s=\([0-9]*\).*/\1/' | sort -n | tail -1)
        g=$(grep "^squeeze sizes=$1 threads=$2 " "$tmp" | sed 's/.*gflops=\([0-9.]*\).*/\1/' | sort -n | tail -1)
        echo "| MLP $1 | $2 | $t | $s | $(python3 -c "print(f'{$s/$t:.2f}')") | $g |"
    done
    echo
    echo "Raw lines:"
    echo '```'
    cat "$tmp"
    echo '```'
} >"$out"
rm -f "$tmp"
cat "$out"
