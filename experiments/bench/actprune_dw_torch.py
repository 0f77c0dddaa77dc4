#!/usr/bin/env python3
"""actprune_dw_torch.py — the PyTorch side of issue 5's kernel measurement,
and the report that puts both sides in one table.

  bench  DATA_DIR CSV [REPS]
      For the shapes, block sizes and keep ratios of actprune_dw_bench.cu,
      loads x, dy and squeeze's kept-block mask from DATA_DIR (written by
      that program in the same run, so x̂ is the very same matrix), builds
      x̂ᵀ with PyTorch's stock `to_sparse_bsr((b,b))` and times the stock
      BSR product dWᵀ = x̂ᵀ @ dy (float32; cuSPARSE underneath), plus
      PyTorch's own dense dyᵀ @ x in fp32 and TF32 as a cross-check of the
      cuBLAS baseline.  Checked first against dense fp32 on x̂ (rel <= 1e-4).
      CUDA events, 3 warm-ups, median of REPS (3 when one call takes > 0.2 s).

  report SQUEEZE_CSV TORCH_CSV OUT_MD DEVICE DATE COMMIT
      Writes the markdown table and the verdict on the issue's goals.
"""
import os
import statistics
import sys

SHAPES = [("384x1536", 384, 1536, 200704), ("1536x384", 1536, 384, 200704),
          ("4096x4096", 4096, 4096, 16384)]
BLOCKS = [16, 32, 64]
KEEPS = [0.75, 0.5, 0.3, 0.1]


def bench(data, out_csv, reps):
    import numpy as np
    import torch

    dev = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}", flush=True)

    def timed(fn, n):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        ev = []
        for _ in range(n):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            ev.append((s, e))
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) for s, e in ev)

    def nreps(fn):
        torch.cuda.synchronize()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        return 3 if s.elapsed_time(e) > 200 else reps

    rows = []
    with open(out_csv, "w") as f:
        f.write("shape,b,keep,torch_nnzb,torch_pack_ms,torch_bsr_ms,torch_dense_fp32_ms,"
                "torch_dense_tf32_ms,torch_err,note\n")
        for name, K, M, R in SHAPES:
            x = torch.from_numpy(np.fromfile(os.path.join(data, f"x_{name}.bin"),
                                             dtype=np.float32).reshape(R, K)).to(dev)
            dy = torch.from_numpy(np.fromfile(os.path.join(data, f"dy_{name}.bin"),
                                              dtype=np.float32).reshape(R, M)).to(dev)
            torch.backends.cuda.matmul.allow_tf32 = False
            t32 = timed(lambda: dy.t() @ x, min(reps, 7))
            torch.backends.cuda.matmul.allow_tf32 = True
            ttf = timed(lambda: dy.t() @ x, reps)
            torch.backends.cuda.matmul.allow_tf32 = False
            print(f"== {name}: torch dense dW fp32 {t32:.3f} ms, tf32 {ttf:.3f} ms", flush=True)
            for b in BLOCKS:
                nbr, nbc = R // b, K // b
                for keep in KEEPS:
                    note = ""
                    mask = torch.from_numpy(np.fromfile(
                        os.path.join(data, f"mask_{name}_b{b}_k{keep:.2f}.bin"),
                        dtype=np.uint8).reshape(nbr, nbc)).to(dev)
                    xhat = (x.view(nbr, b, nbc, b) * mask.view(nbr, 1, nbc, 1).float()).view(R, K)
                    xt = xhat.t().contiguous()  # (K, R): dWᵀ = x̂ᵀ · dy
                    ref = (xt @ dy)  # fp32 (allow_tf32 off)
                    tpack = tbsr = err = float("nan")
                    nnzb = -1
                    try:
                        bsr = xt.to_sparse_bsr((b, b))
                        nnzb = bsr.values().shape[0]
                        if nnzb != int(mask.sum()):
                            note = f"to_sparse_bsr kept {nnzb} blocks, squeeze {int(mask.sum())}"
                        got = bsr @ dy
                        err = float((got - ref).norm() / ref.norm())
                        if not err <= 1e-4:
                            note += f" CHECK FAILED rel {err:.2e}"
                        tpack = timed(lambda: xt.to_sparse_bsr((b, b)), nreps(lambda: xt.to_sparse_bsr((b, b))))
                        tbsr = timed(lambda: bsr @ dy, nreps(lambda: bsr @ dy))
                        del bsr, got
                    except Exception as ex:  # a stock path that refuses the shape is a result too
                        note = f"{type(ex).__name__}: {str(ex)[:80]}".replace(",", ";")
                    print(f"b {b:2d} keep {keep:.2f}: torch to_sparse_bsr {tpack:.3f} ms, BSR @ dense "
                          f"{tbsr:.3f} ms (dense fp32 {t32:.3f}), err {err:.1e} {note}", flush=True)
                    f.write(f"{name},{b},{keep:.2f},{nnzb},{tpack:.4f},{tbsr:.4f},{t32:.4f},{ttf:.4f},"
                            f"{err:.3e},{note}\n")
                    f.flush()
                    del xhat, xt, ref, mask
                    torch.cuda.empty_cache()
            del x, dy
            torch.cuda.empty_cache()
    return rows


def read_csv(path):
    import csv
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def fnum(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def report(sq_csv, th_csv, out_md, device, date, commit):
    sq = read_csv(sq_csv)
    th = {(r["shape"], r["b"], r["keep"]): r for r in read_csv(th_csv)}
    L = []
    L.append("# Activation pruning kernels: prune-and-pack and BSR dW (issue 5)\n")
    L.append(f"Device: {device}; date: {date}; commit: {commit}.  "
             "Produced by `experiments/bench/actprune_dw.sh` (one run: squeeze, cuBLAS and PyTorch "
             "on the same GPU, the same x, dy and the same x̂).\n")
    L.append("dW (out,in) = dyᵀ·x̂ with x (rows,in), dy (rows,out), uniform (-1,1) never 0; scope: "
             "whole tensor, criterion L2.  Times: median of CUDA-event timings after warm-up (ms).  "
             "*pack*: squeeze's fused score→select→pack (+ transposed index) from dense x.  "
             "*BSR tf32 / 3x*: squeeze BSR dW on tensor cores, TF32 or 3xTF32 (≈fp32 accuracy).  "
             "*dense*: cuBLAS dW on the unpruned x (SGEMM fp32 / TF32); *x̂ fp32/tf32*: cuBLAS on the "
             "densified x̂.  *torch BSR*: PyTorch `x̂ᵀ.to_sparse_bsr((b,b)) @ dy` (fp32; its Triton "
             "bsr_dense_addmm path); *torch to_sparse_bsr*: PyTorch packing the already-masked dense x̂ᵀ "
             "(no scoring, no selection).  "
             "Ratios are speed-ups (> 1: squeeze faster).  *err*: rel. Frobenius error of squeeze's "
             "TF32 / 3xTF32 dW against cuBLAS fp32 on x̂.\n")
    L.append("| shape in→out (rows) | b | keep | nnzb | pack | pack % dense fp32 | pack % dense tf32 "
             "| BSR tf32 | BSR 3x | dense fp32 | dense tf32 | x̂ fp32 | x̂ tf32 | torch BSR | torch to_sparse_bsr "
             "| dense tf32 / BSR tf32 | dense fp32 / BSR 3x | torch / BSR 3x | torch / BSR tf32 | err tf32 / 3x | check |")
    L.append("|" + "---|" * 21)
    g_pack32 = g_packtf = g_bsr = g_bsr3 = g_torch = 0
    n_pack = n_bsr = n_torch = 0
    miss_pack32, miss_packtf, miss_bsr, miss_bsr3, miss_torch = [], [], [], [], []
    for r in sq:
        t = th.get((r["shape"], r["b"], r["keep"]), {})
        pack, d32, dtf = fnum(r["pack_ms"]), fnum(r["dense_fp32_ms"]), fnum(r["dense_tf32_ms"])
        b_tf, b_3x = fnum(r["bsr_tf32_ms"]), fnum(r["bsr_3xtf32_ms"])
        tb = fnum(t.get("torch_bsr_ms"))
        b, keep = int(r["b"]), float(r["keep"])
        shape = f'{r["in"]}→{r["out"]} ({r["rows"]})'
        L.append(f'| {shape} | {b} | {keep:.2f} | {r["nnzb"]} | {pack:.3f} | {100 * pack / d32:.1f}% '
                 f'| {100 * pack / dtf:.0f}% | {b_tf:.3f} | {b_3x:.3f} | {d32:.3f} | {dtf:.3f} '
                 f'| {fnum(r["dense_xhat_fp32_ms"]):.3f} | {fnum(r["dense_xhat_tf32_ms"]):.3f} | {tb:.3f} '
                 f'| {fnum(t.get("torch_pack_ms")):.3f} '
                 f'| {dtf / b_tf:.2f} | {d32 / b_3x:.2f} | {tb / b_3x:.2f} | {tb / b_tf:.2f} '
                 f'| {fnum(r["err_tf32"]):.1e} / {fnum(r["err_3xtf32"]):.1e} | {r["check"]}'
                 f'{(" " + t.get("note", "")) if t.get("note") else ""} |')
        n_pack += 1
        g_pack32 += pack <= 0.1 * d32
        g_packtf += pack <= 0.1 * dtf
        if pack > 0.1 * d32:
            miss_pack32.append(f"{shape} b{b} k{keep}")
        if pack > 0.1 * dtf:
            miss_packtf.append(f"{shape} b{b} k{keep}")
        if keep <= 0.5 and b >= 32:
            n_bsr += 1
            ok = b_tf < dtf
            g_bsr += ok
            if not ok:
                miss_bsr.append(f"{shape} b{b} k{keep} ({dtf / b_tf:.2f}x)")
            ok3 = b_3x < d32
            g_bsr3 += ok3
            if not ok3:
                miss_bsr3.append(f"{shape} b{b} k{keep} ({d32 / b_3x:.2f}x)")
        if tb == tb:
            n_torch += 1
            ok = b_3x < tb
            g_torch += ok
            if not ok:
                miss_torch.append(f"{shape} b{b} k{keep}")
    L.append("")
    L.append("## Goals (computed from the table)\n")
    L.append(f"- prune-and-pack ≤ 10% of the dense dW: {g_pack32}/{n_pack} configurations against "
             f"SGEMM fp32, {g_packtf}/{n_pack} against cuBLAS TF32."
             + (f" Missed vs fp32: {', '.join(miss_pack32)}." if miss_pack32 else ""))
    L.append(f"- BSR dW (TF32) faster than dense cuBLAS TF32 at keep ≤ 0.5, b ≥ 32: {g_bsr}/{n_bsr}."
             + (f" Missed: {', '.join(miss_bsr)}." if miss_bsr else ""))
    L.append(f"- BSR dW (3xTF32, fp32-accurate) faster than dense SGEMM fp32 at keep ≤ 0.5, b ≥ 32: "
             f"{g_bsr3}/{n_bsr}." + (f" Missed: {', '.join(miss_bsr3)}." if miss_bsr3 else ""))
    L.append(f"- BSR dW (3xTF32, fp32-accurate) faster than PyTorch's BSR (fp32): {g_torch}/{n_torch}."
             + (f" Missed: {', '.join(miss_torch)}." if miss_torch else ""))
    with open(out_md, "w") as f:
        f.write("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "bench":
        bench(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 15)
    elif len(sys.argv) == 8 and sys.argv[1] == "report":
        report(*sys.argv[2:8])
    else:
        print(__doc__)
        sys.exit(2)
