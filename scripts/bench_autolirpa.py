"""Peer benchmark for `certlab bench --bounds`: certified-training steps/s of auto_LiRPA.

Fashion-MNIST, MLP 2x100 (and the Small convnet), batch 256, l_inf eps 0.1: one step is
the margin lower bound of the method, cross-entropy on -m, backward and an Adam step, the
same work certlab times. auto_LiRPA is not a certlab dependency; to run this:

    .venv/bin/pip install --target /tmp/lirpa numpy'<2' appdirs packaging tqdm graphviz pyyaml
    (copy auto_LiRPA/ from a checkout of Verified-Intelligence/auto_LiRPA into /tmp/lirpa)
    PYTHONPATH=/tmp/lirpa .venv/bin/python scripts/bench_autolirpa.py [BATCHES] [--batch B]
        [--arch mlp|small-conv|all] [--methods IBP,CROWN-IBP,CROWN,CROWN-bound,CROWN-Optimized-bound]

The `*-bound` rows time the bound alone (evaluation: no backward, no step), as certlab's
`crown-bound` and `alpha-crown-bound` rows do; `CROWN-Optimized-bound` is alpha-CROWN with 20
iterations and the same Adam step (0.1) and decay (0.98) as certlab's alpha-CROWN.
"""
import argparse
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


def bench(arch, make, method, batches, batch=256, eps=0.1, warm=3):
    torch.manual_seed(0)
    net = make()
    label = method
    bound_only = method.endswith("-bound")
    method = method.removesuffix("-bound")
    opts = {"optimize_bound_args": {"iteration": 20, "lr_alpha": 0.1, "lr_decay": 0.98}}
    model = BoundedModule(net, torch.zeros(batch, 1, 28, 28), bound_opts=opts)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    eye = torch.eye(10)
    perm = torch.randperm(x_all.shape[0])
    def step(b):
        start = (b * batch) % (x_all.shape[0] - batch)  # wraps, as certlab's bench does
        idx_ = perm[start:start + batch]
        x, y = x_all[idx_], y_all[idx_]
        c = eye[y].unsqueeze(1) - eye.unsqueeze(0)
        keep = (y.unsqueeze(1) != torch.arange(10).unsqueeze(0))
        c = c[keep].view(x.shape[0], 9, 10)
        ptb = PerturbationLpNorm(norm=np.inf, eps=eps, x_L=(x - eps).clamp(0, 1), x_U=(x + eps).clamp(0, 1))
        xb = BoundedTensor(x, ptb)
        model(xb)
        if bound_only:
            if method == "CROWN-Optimized":
                lb, _ = model.compute_bounds(x=(xb,), C=c, method=method, bound_upper=False)
            else:
                with torch.no_grad():
                    lb, _ = model.compute_bounds(x=(xb,), C=c, method=method, bound_upper=False)
            lb.sum().item()
            return
        lb, _ = model.compute_bounds(x=(xb,), C=c, method=method, bound_upper=False)
        lb = torch.cat([torch.zeros(x.shape[0], 1), lb], 1)
        loss = nn.functional.cross_entropy(-lb, torch.zeros(x.shape[0], dtype=torch.int64))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for b in range(warm):
        step(b)
    # At least `batches` steps and at least a second, as certlab's bench measures.
    t0 = time.time()
    done = 0
    while done < batches or time.time() - t0 < 1.0:
        step(warm + done)
        done += 1
    batches = done
    secs = time.time() - t0
    print(f"auto_LiRPA {arch:<10} {label:<21} batch {batch}: {batches * batch / secs:8.0f} samples/s "
          f"({batches} steps in {secs:.2f} s, {torch.get_num_threads()} threads)", flush=True)


parser = argparse.ArgumentParser()
parser.add_argument("batches", nargs="?", type=int, default=20)
parser.add_argument("--batch", type=int, default=256)
parser.add_argument("--arch", default="all", choices=["mlp", "small-conv", "all"])
parser.add_argument("--methods", default="IBP,CROWN-IBP,CROWN")
args = parser.parse_args()
archs = [("mlp-2x100", mlp), ("small-conv", small)]
if args.arch != "all":
    archs = [a for a in archs if a[0].startswith(args.arch)]
for arch, make in archs:
    for method in args.methods.split(","):
        slow = method.startswith("CROWN-Optimized") or method.startswith("CROWN") and method != "CROWN-IBP"
        n_ = max(2, args.batches // 10) if arch == "small-conv" and slow else args.batches
        bench(arch, make, method, n_, batch=args.batch, warm=1 if slow else 3)
