"""lrd_staircase_torch.py -- the PyTorch side of the low-rank GPU benchmark
(lrd_staircase.sh; squeeze side: lrd_staircase.lua, same shapes, same method).

Sections a-d as in lrd_staircase.lua (e, the rank search, is squeeze's alone):
  a  decomposed linear dim -> r -> dim (F.linear twice, bias on the second) over
     --ranks, forward and forward+backward, and the dense dim x dim layer;
  b  forward+backward with the first factor frozen (requires_grad False) vs none;
  c  training step (zero_grad + forward + backward + AdamW, PyTorch's default
     implementation) at r = --crank vs dense, also with the first factor frozen;
  d  3x3 conv dense vs Tucker-2 (1x1, 3x3 core, 1x1) at the ranks squeeze chose,
     forward+backward (cudnn.benchmark on: the peer at its best).
Every timed iteration: the input requires a gradient, y.backward(dy) with a fixed
random dy, gradients set to None between iterations.  CUDA events around
forward and backward of each iteration, --warmup untimed iterations, median of
--reps, iterations queued back to back.  fp32: TF32 off for matmul and cuDNN;
tf32: on for both.  Prints "RESULT side=torch sec=... k=v ..." lines.
"""
import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def set_prec(p):
    tf32 = p == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


def result(**kv):
    parts = ["RESULT side=torch"]
    for k, v in kv.items():
        parts.append(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}")
    print(" ".join(parts), flush=True)


class Bench:
    def __init__(self, reps, warmup):
        self.reps, self.warmup = reps, warmup
        self.pool = [[torch.cuda.Event(enable_timing=True) for _ in range(4)] for _ in range(reps)]

    def run(self, it, n):
        """it(marks or None) records marks 0..n-1; returns median ms of each span and the total."""
        for _ in range(self.warmup):
            it(None)
        torch.cuda.synchronize()
        for i in range(self.reps):
            it(self.pool[i])
        torch.cuda.synchronize()
        out = []
        for j in range(n - 1):
            out.append(statistics.median(self.pool[i][j].elapsed_time(self.pool[i][j + 1]) for i in range(self.reps)))
        total = statistics.median(self.pool[i][0].elapsed_time(self.pool[i][n - 1]) for i in range(self.reps))
        return out, total


def mark(m, j):
    if m is not None:
        m[j].record()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sections", default="a,b,c,d")
    ap.add_argument("--precisions", default="fp32,tf32")
    ap.add_argument("--rows", type=int, default=32768)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--ranks", default="")
    ap.add_argument("--franks", default="512,1024")
    ap.add_argument("--crank", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--limit", type=float, default=150)
    ap.add_argument("--climit", type=float, default=60)
    ap.add_argument("--cbatch", type=int, default=32)
    ap.add_argument("--cin", type=int, default=256)
    ap.add_argument("--cout", type=int, default=256)
    ap.add_argument("--chw", type=int, default=56)
    ap.add_argument("--tucker", default="", help="q:r_in:r_out,... (the ranks squeeze chose)")
    a = ap.parse_args()
    sections = set(a.sections.split(","))
    precs = a.precisions.split(",")
    if a.ranks:
        ranks = [int(v) for v in a.ranks.split(",")]
    else:
        ranks = sorted(set([m + d for m in (512, 1024) for d in range(-8, 9)] + list(range(256, 2049, 64))))
    franks = [int(v) for v in a.franks.split(",")]
    dev = torch.device("cuda")
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    print(f"# torch {torch.__version__} on {torch.cuda.get_device_name(0)}", flush=True)
    B = Bench(a.reps, a.warmup)
    R, D = a.rows, a.dim

    def randn(*shape, grad=False, std=1.0):
        return (torch.randn(*shape, device=dev) * std).requires_grad_(grad)

    x = dy = None
    if sections & {"a", "b", "c"}:
        x = randn(R, D, grad=True)
        dy = randn(R, D)

    def release(*ts):
        for t in ts:
            t.grad = None

    def lowrank_iter(Bf, Af, bias):
        def it(m):
            mark(m, 0)
            y = F.linear(F.linear(x, Bf), Af, bias)
            mark(m, 1)
            y.backward(dy)
            mark(m, 2)
            release(x, Bf, Af, bias)
        return it

    def factors(r, frozen_first=False):
        return randn(r, D, grad=not frozen_first, std=0.02), randn(D, r, grad=True, std=0.02), randn(D, grad=True, std=0.02)

    if "a" in sections:
        t0 = time.time()
        for p in precs:
            set_prec(p)
            W, bias = randn(D, D, grad=True, std=0.02), randn(D, grad=True, std=0.02)

            def dense_it(m):
                mark(m, 0)
                y = F.linear(x, W, bias)
                mark(m, 1)
                y.backward(dy)
                mark(m, 2)
                release(x, W, bias)
            s, tot = B.run(dense_it, 3)
            result(sec="a", prec=p, kind="dense", rows=R, dim=D, fwd_ms=s[0], fb_ms=tot)
            for r in ranks:
                if time.time() - t0 > a.limit:
                    print(f"# section a: {p} time limit ({a.limit:.0f} s) reached; ranks from {r} on skipped", flush=True)
                    break
                Bf, Af, bias = factors(r)
                s, tot = B.run(lowrank_iter(Bf, Af, bias), 3)
                result(sec="a", prec=p, kind="lowrank", r=r, fwd_ms=s[0], fb_ms=tot)

    if "b" in sections:
        t0 = time.time()
        done = False
        for p in precs:
            set_prec(p)
            for r in franks:
                for fz in ("none", "first"):
                    if time.time() - t0 > a.climit:
                        print("# section b: time limit reached", flush=True)
                        done = True
                        break
                    Bf, Af, bias = factors(r, fz == "first")
                    s, tot = B.run(lowrank_iter(Bf, Af, bias), 3)
                    result(sec="b", prec=p, r=r, freeze=fz, fwd_ms=s[0], bwd_ms=s[1], fb_ms=tot)
                if done:
                    break
            if done:
                break

    if "c" in sections:
        t0 = time.time()
        for p in precs:
            set_prec(p)
            for kind in ("dense", "lowrank", "lowrank_frozen_first"):
                if time.time() - t0 > a.climit:
                    print("# section c: time limit reached", flush=True)
                    break
                if kind == "dense":
                    W, bias = randn(D, D, grad=True, std=0.02), randn(D, grad=True, std=0.02)
                    params = [W, bias]
                    fwd = (lambda W=W, bias=bias: F.linear(x, W, bias))
                else:
                    Bf, Af, bias = factors(a.crank, kind == "lowrank_frozen_first")
                    params = [Bf, Af, bias]
                    fwd = (lambda Bf=Bf, Af=Af, bias=bias: F.linear(F.linear(x, Bf), Af, bias))
                opt = torch.optim.AdamW([q for q in params if q.requires_grad], lr=1e-4, weight_decay=0.01)

                def it(m, opt=opt, fwd=fwd):
                    mark(m, 0)
                    opt.zero_grad(set_to_none=True)
                    x.grad = None
                    y = fwd()
                    mark(m, 1)
                    y.backward(dy)
                    mark(m, 2)
                    opt.step()
                    mark(m, 3)
                s, tot = B.run(it, 4)
                result(sec="c", prec=p, kind=kind, r=0 if kind == "dense" else a.crank,
                       params=sum(q.numel() for q in params), fwd_ms=s[0], bwd_ms=s[1], opt_ms=s[2], step_ms=tot)

    if "d" in sections:
        x = dy = None
        torch.cuda.empty_cache()
        t0 = time.time()
        xc = randn(a.cbatch, a.cin, a.chw, a.chw, grad=True)
        dyc = randn(a.cbatch, a.cout, a.chw, a.chw)
        variants = [("dense", 0, a.cin, a.cout)]
        for spec in filter(None, a.tucker.split(",")):
            q, ri, ro = (int(v) for v in spec.split(":"))
            variants.append(("tucker2", q, ri, ro))
        for p in precs:
            set_prec(p)
            for kind, q, ri, ro in variants:
                if time.time() - t0 > a.climit:
                    print("# section d: time limit reached", flush=True)
                    break
                if kind == "dense":
                    w, b = randn(a.cout, a.cin, 3, 3, grad=True, std=0.02), randn(a.cout, grad=True, std=0.02)
                    np_ = w.numel()

                    def it(m, w=w, b=b):
                        mark(m, 0)
                        y = F.conv2d(xc, w, b, stride=1, padding=1)
                        mark(m, 1)
                        y.backward(dyc)
                        mark(m, 2)
                        release(xc, w, b)
                else:
                    f = randn(ri, a.cin, 1, 1, grad=True, std=0.02)
                    g = randn(ro, ri, 3, 3, grad=True, std=0.02)
                    l = randn(a.cout, ro, 1, 1, grad=True, std=0.02)
                    b = randn(a.cout, grad=True, std=0.02)
                    np_ = f.numel() + g.numel() + l.numel()

                    def it(m, f=f, g=g, l=l, b=b):
                        mark(m, 0)
                        y = F.conv2d(F.conv2d(F.conv2d(xc, f), g, stride=1, padding=1), l, b)
                        mark(m, 1)
                        y.backward(dyc)
                        mark(m, 2)
                        release(xc, f, g, l, b)
                s, tot = B.run(it, 3)
                result(sec="d", prec=p, kind=kind, q=q, r_in=ri, r_out=ro, params=np_, fwd_ms=s[0], fb_ms=tot)
    print("# done", flush=True)


if __name__ == "__main__":
    sys.exit(main())
