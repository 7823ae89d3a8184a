#!/usr/bin/python3
"""Writes tests/data/ntxent/: PyTorch reference values for the SimCLR ops of
src/nn/simclr_ops.h, compared by tests/test_simclr_ops.c (which never needs torch).

Run with Debian's python3 (torch 1.13, numpy 1.24):  /usr/bin/python3 tools/make_ntxent_ref.py

1. NT-Xent on 2N = 8 projections of dim 128 (view i and view i+N are the two
   views of image i), temperatures 0.1 and 0.5:
     proj.npy           float32 [8,128]
     loss_t{T}.npy      float64 [2]: the float32 loss torch computes, and the loss
                        computed in float64 (the exact value, for context)
     grad_t{T}.npy      float32 [8,128]: d loss / d proj (float32 autograd)
2. The projection head GAP -> Linear(32,32) -> ReLU -> Linear(32,16) -> NT-Xent
   (T 0.5) on features [8,32,2,2]: head_*.npy inputs, head_loss.npy float64 [1],
   head_d*.npy gradients of the features and of all four parameters.

The loss is the common SimCLR implementation (sthalles/SimCLR info_nce_loss:
diagonal removed, positives first, F.cross_entropy with target 0, mean); the
script checks that it equals the masked form (diagonal -inf, target = i+N mod 2N).
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "ntxent")


def info_nce(features, n_views, temperature):
    """sthalles/SimCLR SimCLR.info_nce_loss followed by CrossEntropyLoss (mean)."""
    b = features.shape[0] // n_views
    labels = torch.cat([torch.arange(b) for _ in range(n_views)], dim=0)
    labels = (labels.unsqueeze(0) == labels.unsqueeze(1)).float()
    features = F.normalize(features, dim=1)
    sim = torch.matmul(features, features.T)
    mask = torch.eye(labels.shape[0], dtype=torch.bool)
    labels = labels[~mask].view(labels.shape[0], -1)
    sim = sim[~mask].view(sim.shape[0], -1)
    positives = sim[labels.bool()].view(labels.shape[0], -1)
    negatives = sim[~labels.bool()].view(sim.shape[0], -1)
    logits = torch.cat([positives, negatives], dim=1) / temperature
    target = torch.zeros(logits.shape[0], dtype=torch.long)
    return F.cross_entropy(logits, target)


def ntxent_masked(p, temperature):
    """The formula of simclr_ops.h: diagonal -inf, target = positive's column."""
    B = p.shape[0]
    z = F.normalize(p, dim=1)
    logits = (z @ z.T) / temperature
    logits = logits.masked_fill(torch.eye(B, dtype=torch.bool), float("-inf"))
    target = (torch.arange(B) + B // 2) % B
    return F.cross_entropy(logits, target)


def save(name, a):
    np.save(os.path.join(OUT, name), np.ascontiguousarray(a))


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(20240606)
    N, D = 4, 128
    # Two views of each image: correlated, so the positives stand out (as after
    # some training) and the softmax is neither uniform nor one-hot.
    base = torch.randn(N, D, generator=g)
    v1 = base + 1.5 * torch.randn(N, D, generator=g)
    v2 = base + 1.5 * torch.randn(N, D, generator=g)
    proj = torch.cat([v1, v2], 0) * 3.0
    save("proj.npy", proj.numpy().astype(np.float32))
    for T, tag in ((0.1, "0.1"), (0.5, "0.5")):
        p = proj.clone().requires_grad_(True)
        loss = info_nce(p, 2, T)
        loss.backward()
        pm = proj.clone().requires_grad_(True)
        lm = ntxent_masked(pm, T)
        lm.backward()
        assert abs(loss.item() - lm.item()) < 1e-5, (loss.item(), lm.item())
        assert torch.allclose(p.grad, pm.grad, atol=1e-6), (p.grad - pm.grad).abs().max()
        p64 = proj.double().requires_grad_(True)
        l64 = info_nce(p64, 2, T)
        l64.backward()
        print(f"T={tag}: loss f32 {loss.item():.9g} f64 {l64.item():.12g}; "
              f"grad f32 vs f64 max abs {(p.grad.double() - p64.grad).abs().max().item():.3g}, "
              f"max |grad| {p64.grad.abs().max().item():.3g}")
        save(f"loss_t{tag}.npy", np.array([loss.item(), l64.item()], dtype=np.float64))
        save(f"grad_t{tag}.npy", p.grad.numpy().astype(np.float32))

    # The projection head on a small encoder output.
    Nimg, C, H, W, Hid, Out, T = 4, 32, 2, 2, 32, 16, 0.5
    feats = torch.randn(2 * Nimg, C, H, W, generator=g).relu()
    l1 = torch.nn.Linear(C, Hid)
    l2 = torch.nn.Linear(Hid, Out)
    with torch.no_grad():
        for lin in (l1, l2):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) / lin.in_features ** 0.5)
            lin.bias.copy_(0.1 * torch.randn(lin.bias.shape, generator=g))
    x = feats.clone().requires_grad_(True)
    pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)
    proj = l2(F.relu(l1(pooled)))
    loss = info_nce(proj, 2, T)
    loss.backward()
    print(f"head: loss {loss.item():.9g}")
    save("head_feats.npy", feats.numpy())
    save("head_w1.npy", l1.weight.detach().numpy())
    save("head_b1.npy", l1.bias.detach().numpy())
    save("head_w2.npy", l2.weight.detach().numpy())
    save("head_b2.npy", l2.bias.detach().numpy())
    save("head_loss.npy", np.array([loss.item()], dtype=np.float64))
    save("head_dfeats.npy", x.grad.numpy())
    save("head_dw1.npy", l1.weight.grad.numpy())
    save("head_db1.npy", l1.bias.grad.numpy())
    save("head_dw2.npy", l2.weight.grad.numpy())
    save("head_db2.npy", l2.bias.grad.numpy())


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
