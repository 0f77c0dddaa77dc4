#!/usr/bin/env bash
# experiments/bench/actprune_dw_profile.sh — where the BSR dW kernel's time
# goes, on the lent GPU: builds like actprune_dw.sh, then runs one
# configuration of actprune_dw_bench under Nsight Compute and prints the
# issue-stall breakdown (stalls per issued instruction), tensor-pipe
# utilisation and instructions per MMA, plus the kernel's SASS opcode counts.
# This is how the numbers in results/reports/actprune_dw.md ("Nsight Compute
# showed ...") were found; it is a diagnosis tool, not a benchmark (ncu locks
# clocks, so its times are not comparable with actprune_dw.sh's).
#
#   OUT=... KERNEL=k_bsr_dw SHAPE=2 BLOCK=64 KEEP=1.0 experiments/bench/actprune_dw_profile.sh
#
# KERNEL: k_bsr_dw (mma.sync) or k_bsr_dw_wg (wgmma; profiled from the bench's
# diagnostics, so DIAG is switched on for it); SHAPE: 0 384x1536, 1 1536x384,
# 2 4096x4096.  Carry .device-deps as for actprune_dw.sh.
set -uo pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:-/tmp/actprune_profile}
KERNEL=${KERNEL:-k_bsr_dw}
mkdir -p "$OUT"
AP_SHAPES=${SHAPE:-2} AP_BLOCKS=${BLOCK:-64} AP_KEEPS=${KEEP:-1.0} AP_DIAG=0 AP_TORCH=0 \
    bash experiments/bench/actprune_dw.sh > "$OUT/build_and_bench.log" 2>&1 || { tail -20 "$OUT/build_and_bench.log"; exit 1; }
BUILD=${BUILD:-/tmp/build}
export LD_LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
M='smsp__inst_executed.sum,smsp__inst_executed_pipe_tensor.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,smsp__issue_active.avg.pct_of_peak_sustained_active,regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio'
DIAG=0; [ "$KERNEL" = k_bsr_dw_wg ] && DIAG=1
AP_SHAPES=${SHAPE:-2} AP_BLOCKS=${BLOCK:-64} AP_KEEPS=${KEEP:-1.0} AP_DIAG=$DIAG timeout 300 \
    "$NCU" --kernel-name "$KERNEL" --launch-count 1 --metrics "$M" \
    "$BUILD/tests/cuda/actprune_dw_bench" - "$OUT/profile.csv" 3 > "$OUT/ncu.txt" 2>&1
echo "== $KERNEL, shape $SHAPE b $BLOCK keep $KEEP (stalls per issued instruction; > 0.02 shown)"
grep -E "stalled|tensor|issue_active|inst_executed.sum " "$OUT/ncu.txt" | awk '{print $1, $NF}' | awk '$2+0 > 0.02'
O=$(find "$BUILD" -name "sq_cuda_actprune.cu.o" | head -1)
echo "== SASS opcodes of $KERNEL (static counts, every instantiation)"
/usr/local/cuda/bin/cuobjdump -sass "$O" 2>/dev/null |
    awk -v k="$KERNEL" '/Function : /{f = index($0, "_Z" length(k) k "I") > 0} f' |
    grep -oE "^ +/\*[0-9a-f]+\*/ +(@!?U?P[0-9T] +)?[A-Z][A-Z0-9]*" | awk '{print $NF}' | sort | uniq -c | sort -rn | head -15
