#!/usr/bin/env python3
"""cpu_epoch_torch.py — the PyTorch side of the CPU epoch benchmark.

Times one training epoch (forward + cross-entropy + backward + AdamW) of an
MLP on Fashion-MNIST (60 000 samples, shuffled, batch 256) with Debian's
python3-torch, the same shapes and schedule as experiments/bench/cpu_epoch.lua.
Prints one line: `torch <sizes> threads=<n> epoch_s=<s> samples_per_s=<r>`
(median of --repeat epochs after one warm-up epoch).
"""
import argparse
import gzip
import statistics
import struct
import time

import numpy as np
import torch


def load_fashion(path="/usr/share/datasets/fashion-mnist"):
    with gzip.open(f"{path}/train-images-idx3-ubyte.gz") as f:
        magic, n, r, c = struct.unpack(">IIII", f.read(16))
        assert magic == 0x803, "bad image magic"
        x = np.frombuffer(f.read(n * r * c), dtype=np.uint8).reshape(n, r * c)
    with gzip.open(f"{path}/train-labels-idx1-ubyte.gz") as f:
        magic, n2 = struct.unpack(">II", f.read(8))
        assert magic == 0x801 and n2 == n, "bad label file"
        y = np.frombuffer(f.read(n), dtype=np.uint8)
    return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="784,256,256,10")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    sizes = [int(s) for s in a.sizes.split(",")]
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    x, y = load_fashion()
    n = x.shape[0]
    times = []
    for ep in range(a.repeat + 1):
        perm = torch.randperm(n)
        t0 = time.perf_counter()
        for i in range(0, n, a.batch):
            idx = perm[i:i + a.batch]
            xb, yb = x[idx], y[idx]
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        dt = time.perf_counter() - t0
        if ep > 0:
            times.append(dt)
    med = statistics.median(times)
    print(f"torch sizes={a.sizes} threads={a.threads} epoch_s={med:.3f} samples_per_s={n / med:.0f} "
          f"torch={torch.__version__}")


if __name__ == "__main__":
    main()
