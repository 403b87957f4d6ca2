"""Peer benchmark for `certlab bench --bounds`: certified-training steps/s of auto_LiRPA.

Fashion-MNIST, MLP 2x100 (and the Small convnet), batch 256, l_inf eps 0.1: one step is
the margin lower bound of the method, cross-entropy on -m, backward and an Adam step, the
same work certlab times. auto_LiRPA is not a certlab dependency; to run this:

    .venv/bin/pip install --target /tmp/lirpa numpy'<2' appdirs packaging tqdm graphviz pyyaml
    (copy auto_LiRPA/ from a checkout of Verified-Intelligence/auto_LiRPA into /tmp/lirpa)
    PYTHONPATH=/tmp/lirpa .venv/bin/python scripts/bench_autolirpa.py [BATCHES]
"""
import gzip
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from auto_LiRPA import BoundedModule, BoundedTensor
from auto_LiRPA.perturbations import PerturbationLpNorm

torch.set_num_threads(torch.get_num_threads())
ROOT = "/usr/share/datasets/fashion-mnist/"


def idx(path, offset):
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


x_all = torch.tensor(idx(ROOT + "train-images-idx3-ubyte.gz", 16), dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
y_all = torch.tensor(idx(ROOT + "train-labels-idx1-ubyte.gz", 8), dtype=torch.int64)


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10))


def small():
    return nn.Sequential(
        nn.Conv2d(1, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(), nn.Flatten(),
        nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))


def bench(arch, make, method, batches, batch=256, eps=0.1):
    torch.manual_seed(0)
    net = make()
    model = BoundedModule(net, torch.zeros(batch, 1, 28, 28))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    eye = torch.eye(10)
    perm = torch.randperm(x_all.shape[0])
    def step(b):
        idx_ = perm[b * batch:(b + 1) * batch]
        x, y = x_all[idx_], y_all[idx_]
        c = eye[y].unsqueeze(1) - eye.unsqueeze(0)
        keep = (y.unsqueeze(1) != torch.arange(10).unsqueeze(0))
        c = c[keep].view(x.shape[0], 9, 10)
        ptb = PerturbationLpNorm(norm=np.inf, eps=eps, x_L=(x - eps).clamp(0, 1), x_U=(x + eps).clamp(0, 1))
        xb = BoundedTensor(x, ptb)
        model(xb)
        lb, _ = model.compute_bounds(x=(xb,), C=c, method=method, bound_upper=False)
        lb = torch.cat([torch.zeros(x.shape[0], 1), lb], 1)
        loss = nn.functional.cross_entropy(-lb, torch.zeros(x.shape[0], dtype=torch.int64))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for b in range(3):
        step(b)
    t0 = time.time()
    for b in range(3, 3 + batches):
        step(b)
    secs = time.time() - t0
    print(f"auto_LiRPA {arch:<10} {method:<10} batch {batch}: {batches * batch / secs:8.0f} samples/s "
          f"({batches} steps in {secs:.2f} s, {torch.get_num_threads()} threads)", flush=True)


n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
for arch, make in [("mlp-2x100", mlp), ("small-conv", small)]:
    for method in ["IBP", "CROWN-IBP", "CROWN"]:
        if arch == "small-conv" and method == "CROWN":
            n_ = max(2, n // 10)
        else:
            n_ = n
        bench(arch, make, method, n_)
