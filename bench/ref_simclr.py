"""ref_simclr.py - one SimCLR training step in PyTorch, the reference for
`kmseg pretrain`'s images/s (issue 6 point 5).

Same network as src/train/simclr.h: torchvision resnet34/18 without fc (the
smp encoder), global average pooling, Linear(512,512)-ReLU-Linear(512,128),
NT-Xent (F.normalize, cosine logits / T, diagonal removed, cross-entropy to
the positive), Adam. Inputs are random tensors: the views' augmentation is
not timed here (kmseg's rate includes it; it is a few percent of a step).
Prints one JSON line: median seconds per step after the warm-up steps and
images/s (images = batch, i.e. 2 views each).

    OMP_NUM_THREADS=1 /usr/bin/python3 bench/ref_simclr.py --threads 1 --batch 4 --size 224
"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F
import torchvision


def ntxent(p, T):
    B = p.shape[0]
    N = B // 2
    z = F.normalize(p, dim=1)
    logits = z @ z.t() / T
    eye = torch.eye(B, dtype=torch.bool)
    logits = logits[~eye].view(B, B - 1)
    pos = (torch.arange(B) + N) % B
    target = torch.where(pos > torch.arange(B), pos - 1, pos)  # column of the positive after removing the diagonal
    return F.cross_entropy(logits, target)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--resnet", type=int, default=34)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    enc = getattr(torchvision.models, f"resnet{a.resnet}")()
    enc.fc = torch.nn.Identity()  # avgpool + flatten stay: the GAP of the head
    head = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 128))
    params = list(enc.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=3e-4)
    enc.train()
    x = torch.randn(2 * a.batch, 3, a.size, a.size)
    times, losses = [], []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = ntxent(head(enc(x)), 0.1)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        losses.append(loss.item())
        if i >= a.warmup:
            times.append(dt)
    med = statistics.median(times)
    print(json.dumps({"torch": torch.__version__, "threads": a.threads, "batch": a.batch, "views": 2 * a.batch,
                      "size": a.size, "resnet": a.resnet, "step_s": med, "step_min_max_s": [min(times), max(times)],
                      "img_per_s": a.batch / med, "losses": losses, "load1": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
