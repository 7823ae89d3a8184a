#!/usr/bin/env python3
"""Writes tests/data/encoder_depth/: smp UnetPlusPlus at encoder_depth 3 and 4
(resnet18, classes=1), with every tensor of its state dict filled by an exact
integer formula, so that tests/test_unetpp_depth.c rebuilds the same weights in
C and no weight file is stored.

Run with the reference environment (smp 0.3.4, torch 1.13):
    /work/main/.venv/bin/python tools/make_encoder_depth_fixture.py

The formula. For element k (flat, C order) of the t-th tensor of the state
dict (t counts every entry in state_dict() order, num_batches_tracked and the
unused encoder layers included):
    u(t, k) = ((k * 2654435761 + t * 40503 + 12345) mod 2^32) / 2^32   (exact in float64)
and, computed in float64, then rounded to float32:
    conv / linear weight [O, I, ...]: (u - 0.5) * 2 * (1 / sqrt(I * prod(kernel)))
    BatchNorm weight (gamma):         1 + 0.1 * (u - 0.5)
    any other bias (BN beta, head):   (u - 0.5) * 2 * 0.1
    running_mean:                     (u - 0.5) * 0.2
    running_var:                      0.5 + u
    num_batches_tracked:              0
The input x [2, 3, 64, 64] is u(1000, k) mapped to (u - 0.5) * 4, the backward
seed R [2, 1, 64, 64] (loss = sum(logits * R)) is (u(2000, k) - 0.5) * 2.

Per depth D, d{D}.safetensors holds (float32):
    eval_logits      model.eval()(x), before any train-mode forward
    train_logits     model.train()(x) (batch statistics; running stats updated)
    grad.<name>      d loss / d p of every 1-D parameter (BatchNorm gamma/beta,
                     head bias) and of segmentation_head.0.weight
    grad64.<name>    the same computed by the float64 model (rounded to float32):
                     the gradients are sums with heavy cancellation (train-mode
                     BatchNorm backward), so torch's float32 values are only
                     good to ~1e-3 of their largest; the test measures both
    after.<name>     every running_mean / running_var after the train forward
and metadata: the smp parameter count, torch's own float32-vs-float64
distance for eval/train logits (max_abs_f64_*), the decoder channels.
d{D}_keys.txt lists smp's state dict, one "name dims" line each (dims comma-
separated, "-" for a scalar), in order.
"""
import json
import os
import struct

import numpy as np
import torch
import segmentation_models_pytorch as smp

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "encoder_depth")
CASES = {3: (16, 8, 8), 4: (16, 16, 8, 8)}


def u_of(t, n):
    k = np.arange(n, dtype=np.uint64)
    v = (k * np.uint64(2654435761) + np.uint64(t * 40503 + 12345)) % np.uint64(1 << 32)
    return v.astype(np.float64) / float(1 << 32)


def fill(name, t, ref):
    n = ref.numel()
    u = u_of(t, n)
    if name.endswith("num_batches_tracked"):
        return torch.zeros_like(ref)
    if name.endswith("running_mean"):
        v = (u - 0.5) * 0.2
    elif name.endswith("running_var"):
        v = 0.5 + u
    elif ref.dim() >= 2:
        fan_in = int(np.prod(ref.shape[1:]))
        v = (u - 0.5) * 2.0 * (1.0 / np.sqrt(float(fan_in)))
    elif name.endswith(".weight"):  # 1-D weight: BatchNorm gamma
        v = 1.0 + 0.1 * (u - 0.5)
    else:
        v = (u - 0.5) * 2.0 * 0.1
    return torch.from_numpy(v.astype(np.float32).reshape(ref.shape))


def build(D, dec, dtype):
    torch.manual_seed(0)
    m = smp.UnetPlusPlus("resnet18", encoder_weights=None, encoder_depth=D, decoder_channels=dec, classes=1)
    sd = m.state_dict()
    m.load_state_dict({k: fill(k, t, v) for t, (k, v) in enumerate(sd.items())})
    return m.to(dtype)


def save_safetensors(path, tensors, meta):
    header, blobs, off = {"__metadata__": meta}, [], 0
    for k, a in tensors.items():
        a = np.ascontiguousarray(a, dtype=np.float32)
        b = a.tobytes()
        header[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def run(m, x, r):
    m.eval()
    with torch.no_grad():
        ev = m(x)
    m.train()
    tr = m(x)
    (tr * r).sum().backward()
    return ev, tr


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    x32 = torch.from_numpy(((u_of(1000, 2 * 3 * 64 * 64) - 0.5) * 4.0).astype(np.float32).reshape(2, 3, 64, 64))
    r32 = torch.from_numpy(((u_of(2000, 2 * 64 * 64) - 0.5) * 2.0).astype(np.float32).reshape(2, 1, 64, 64))
    for D, dec in CASES.items():
        m = build(D, dec, torch.float32)
        keys = [(k, tuple(v.shape)) for k, v in m.state_dict().items()]
        nparam = sum(p.numel() for p in m.parameters())
        used = [k for k, _ in keys if not any(k.startswith("encoder.layer%d." % L) for L in range(D, 5))]
        nparam_used = sum(p.numel() for k, p in m.named_parameters() if k in used)
        ev, tr = run(m, x32, r32)
        m64 = build(D, dec, torch.float64)
        ev64, tr64 = run(m64, x32.double(), r32.double())
        out = {"eval_logits": ev.numpy(), "train_logits": tr.detach().numpy()}
        p64 = dict(m64.named_parameters())
        for k, p in m.named_parameters():
            if k in used and (p.dim() == 1 or k == "segmentation_head.0.weight"):
                out["grad." + k] = p.grad.numpy()
                out["grad64." + k] = p64[k].grad.numpy()
        for k, v in m.state_dict().items():
            if k in used and (k.endswith("running_mean") or k.endswith("running_var")):
                out["after." + k] = v.numpy()
        meta = {
            "encoder_depth": str(D),
            "decoder_channels": ",".join(map(str, dec)),
            "smp_version": smp.__version__,
            "torch_version": torch.__version__,
            "smp_num_params": str(nparam),
            "num_params_without_unused_layers": str(nparam_used),
            "max_abs_f64_eval": "%.3g" % (ev.double() - ev64).abs().max().item(),
            "max_abs_f64_train": "%.3g" % (tr.double() - tr64.detach()).abs().max().item(),
        }
        save_safetensors(os.path.join(OUT, "d%d.safetensors" % D), out, meta)
        with open(os.path.join(OUT, "d%d_keys.txt" % D), "w") as f:
            for k, s in keys:
                f.write("%s %s\n" % (k, ",".join(map(str, s)) if s else "-"))
        print("depth %d: %d state-dict entries, smp parameters %d, without the unused layers %d; "
              "eval logits max|.| %.3g, train %.3g; torch float32 vs float64: eval %s, train %s"
              % (D, len(keys), nparam, nparam_used, ev.abs().max().item(), tr.abs().max().item(),
                 meta["max_abs_f64_eval"], meta["max_abs_f64_train"]))


if __name__ == "__main__":
    main()
