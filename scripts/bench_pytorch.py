"""The peer figure for `certlab bench`: a plain PyTorch loop, same model, data and batch.

Fashion-MNIST MLP 2x100, batch 256, Adam, standard cross-entropy, CPU, one epoch after a
20-batch warm-up; the loss is read back every step as certlab's loop does.
Usage: .venv/bin/python scripts/bench_pytorch.py [epochs]
"""
import gzip
import sys
import time

import torch
import torch.nn as nn

D = "/usr/share/datasets/fashion-mnist/"


def idx(name, offset):
    with gzip.open(D + name) as f:
        return torch.frombuffer(bytearray(f.read()[offset:]), dtype=torch.uint8)


x = idx("train-images-idx3-ubyte.gz", 16).float().div(255).view(-1, 1, 28, 28)
y = idx("train-labels-idx1-ubyte.gz", 8).long()
torch.manual_seed(0)
net = nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10))
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
n, bs = len(y), 256


def run(batches):
    perm = torch.randperm(n)
    seen = 0
    for b in range(batches):
        idx_b = perm[b * bs:(b + 1) * bs]
        if len(idx_b) == 0:
            break
        loss = nn.functional.cross_entropy(net(x[idx_b]), y[idx_b])
        opt.zero_grad()
        loss.backward()
        loss.item()
        opt.step()
        seen += len(idx_b)
    return seen


run(20)
epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
t0 = time.perf_counter()
seen = sum(run((n + bs - 1) // bs) for _ in range(epochs))
dt = time.perf_counter() - t0
print(f"pytorch {torch.__version__} ({torch.get_num_threads()} threads): {seen} samples in {dt:.3f} s = {seen / dt:.0f} samples/s")
