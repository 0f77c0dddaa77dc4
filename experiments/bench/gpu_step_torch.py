"""gpu_step_torch.py — the PyTorch side of the GPU training-step benchmark (gpu_step.sh).

The same three models as experiments/bench/gpu_step.lua, written the way
squeeze.nn writes them (same layers, same order, same shapes; attention as
explicit matmuls with a causal mask, exact-erf GELU, ResMLP affines with a
bias), trained the same way: zero_grad + forward + cross-entropy + backward
+ AdamW(lr 1e-3, weight_decay 0.01; PyTorch's default foreach implementation
on CUDA), eager mode, random inputs already on the GPU.  Timing and memory
as on the squeeze side: CUDA events per phase, `warmup` steps, median of
`steps`, each step waited for; pipelined = `steps` steps back to back;
peak = torch.cuda.max_memory_allocated() over the timed steps.

    python3 experiments/bench/gpu_step_torch.py --models mlp,resmlp,gpt --precisions fp32,tf32
prints one "RESULT side=torch ..." line per (model, precision).
"""
import argparse
import math
import statistics

import torch
import torch.nn as nn
import torch.nn.functional as F


class Affine(nn.Module):
    def __init__(self, dim, init=1.0):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((dim,), init))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return x * self.alpha + self.beta


class ResMLPBlock(nn.Module):
    def __init__(self, patches, dim, hidden, ls=0.1):
        super().__init__()
        self.affine1 = Affine(dim)
        self.token_mix = nn.Linear(patches, patches)
        self.scale1 = Affine(dim, ls)
        self.affine2 = Affine(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.scale2 = Affine(dim, ls)

    def forward(self, x):  # x (N, P, D)
        y = self.affine1(x).transpose(1, 2)
        y = self.token_mix(y).transpose(1, 2)
        x = x + self.scale1(y)
        y = self.fc2(F.gelu(self.fc1(self.affine2(x))))
        return x + self.scale2(y)


class ResMLP(nn.Module):
    def __init__(self, image=224, patch=16, channels=3, dim=384, depth=12, classes=1000, expansion=4):
        super().__init__()
        self.c, self.p, self.g = channels, patch, image // patch
        self.patches = self.g * self.g
        self.patch_embed = nn.Linear(channels * patch * patch, dim)
        self.blocks = nn.ModuleList(ResMLPBlock(self.patches, dim, expansion * dim) for _ in range(depth))
        self.norm = Affine(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        n, c, p, g = x.shape[0], self.c, self.p, self.g
        x = x.reshape(n, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(n, self.patches, c * p * p)
        x = self.patch_embed(x)
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x).mean(1))


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.h = heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x):
        B, T, C = x.shape
        H, hd = self.h, C // self.h

        def heads(t):
            return t.reshape(B, T, H, hd).permute(0, 2, 1, 3).reshape(B * H, T, hd)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        att = (q @ k.transpose(1, 2)) * (1.0 / math.sqrt(hd))
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        y = (att @ v).reshape(B, H, T, hd).permute(0, 2, 1, 3).reshape(B, T, C)
        return self.out(y)


class GPTBlock(nn.Module):
    def __init__(self, dim, heads, ffn):
        super().__init__()
        self.ln1, self.attn, self.ln2 = nn.LayerNorm(dim), Attention(dim, heads), nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab=256, context=256, dim=384, heads=6, layers=6):
        super().__init__()
        self.tok_emb, self.pos_emb = nn.Embedding(vocab, dim), nn.Embedding(context, dim)
        self.blocks = nn.ModuleList(GPTBlock(dim, heads, 4 * dim) for _ in range(layers))
        self.ln_f, self.head = nn.LayerNorm(dim), nn.Linear(dim, vocab, bias=False)

    def forward(self, idx):
        T = idx.shape[1]
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


def build(which, dev):
    torch.manual_seed(0)
    if which == "mlp":
        m = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
        return m.to(dev), torch.randn(256, 784, device=dev), torch.randint(0, 10, (256,), device=dev)
    if which == "resmlp":
        return (ResMLP().to(dev), torch.randn(128, 3, 224, 224, device=dev),
                torch.randint(0, 1000, (128,), device=dev))
    if which == "gpt":
        return (GPT().to(dev), torch.randint(0, 256, (64, 256), device=dev),
                torch.randint(0, 256, (64, 256), device=dev))
    raise SystemExit(f"unknown model {which}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,resmlp,gpt")
    ap.add_argument("--precisions", default="fp32,tf32")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--profile", default="", help="models (comma-separated) to profile one fp32 step of with torch.profiler")
    a = ap.parse_args()
    dev = torch.device("cuda")
    print(f"# torch {torch.__version__} on {torch.cuda.get_device_name(0)}", flush=True)
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
    for which in a.models.split(","):
        for prec in a.precisions.split(","):
            tf32 = prec == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            torch.set_float32_matmul_precision("high" if tf32 else "highest")
            model, x, y = build(which, dev)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
            state = {}

            def step(timed):
                if timed:
                    ev[0].record()
                opt.zero_grad(set_to_none=True)
                out = model(x)
                loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
                if timed:
                    ev[1].record()
                loss.backward()
                if timed:
                    ev[2].record()
                opt.step()
                if timed:
                    ev[3].record()
                state["loss"] = loss

            for _ in range(a.warmup):
                step(False)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            tot, fwd, bwd, upd = [], [], [], []
            for _ in range(a.steps):
                step(True)
                ev[3].synchronize()
                tot.append(ev[0].elapsed_time(ev[3]))
                fwd.append(ev[0].elapsed_time(ev[1]))
                bwd.append(ev[1].elapsed_time(ev[2]))
                upd.append(ev[2].elapsed_time(ev[3]))
            peak = torch.cuda.max_memory_allocated() / 2**20
            reserved = torch.cuda.max_memory_reserved() / 2**20
            p0, p1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            p0.record()
            for _ in range(a.steps):
                step(False)
            p1.record()
            p1.synchronize()
            pipe = p0.elapsed_time(p1) / a.steps
            nparams = sum(p.numel() for p in model.parameters())
            med = statistics.median
            print(f"RESULT side=torch model={which} precision={prec} step_ms={med(tot):.3f} fwd_ms={med(fwd):.3f} "
                  f"bwd_ms={med(bwd):.3f} opt_ms={med(upd):.3f} pipelined_ms={pipe:.3f} peak_mib={peak:.1f} "
                  f"reserved_mib={reserved:.1f} params={nparams} loss={state['loss'].item():.4f}", flush=True)
            if which in a.profile.split(",") and prec == "fp32":
                from torch.profiler import ProfilerActivity, profile
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    step(False)
                    torch.cuda.synchronize()
                print(f"PROFILE side=torch model={which} precision={prec} (one step)", flush=True)
                print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=20), flush=True)
            del model, opt, x, y, state
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
