#!/usr/bin/env python3
"""PyTorch reference timings for the student: smp U-Net++ / ResNet34.

Run with the benchmark venv (bench/setup_venv.sh):
    .venv/bin/python bench/ref_unetpp.py --threads 2

Measures, on random weights and random inputs (speed does not depend on them):
  eval_fwd_s    model.eval() forward under torch.no_grad(), batch B at SxS
  train_step_s  model.train(); forward, BCEWithLogits + smp DiceLoss(binary,
                from_logits), backward, Adam(lr 5e-5) step
Each is the median of --repeats timed runs after --warmup untimed ones; the
*_cpu_s fields are the process CPU time (all threads) of the same runs, which
a busy machine inflates much less than the wall time. Each
mode runs in its own subprocess so that the peak RSS (ru_maxrss) of one does
not hide the other. Prints one JSON line.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def thread_env(n):
    """Debian's torch reaches OpenBLAS through the generic libblas.so.3, so
    torch.set_num_threads does not reach OpenBLAS's own pthread pool: pin it
    (and OpenMP) with the environment of the worker process."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(n), OPENBLAS_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n))
    return env


def peak_rss_mb():
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_mode(args):
    import torch
    import segmentation_models_pytorch as smp

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = smp.UnetPlusPlus("resnet34", encoder_weights=None, in_channels=3, classes=1)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = (torch.rand(args.batch, 1, args.size, args.size) > 0.5).float()
    rss_model = peak_rss_mb()

    if args.mode == "eval":
        model.eval()

        def step():
            with torch.no_grad():
                model(x)
    else:
        model.train()
        bce = torch.nn.BCEWithLogitsLoss()
        dice = smp.losses.DiceLoss(smp.losses.BINARY_MODE, from_logits=True)
        opt = torch.optim.Adam(model.parameters(), lr=5e-5)

        def step():
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            loss = bce(logits, y) + dice(logits, y)
            loss.backward()
            opt.step()

    for _ in range(args.warmup):
        step()
    times, cpu = [], []
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    print(json.dumps({"mode": args.mode, "times_s": times, "cpu_s": cpu,
                      "peak_rss_mb": peak_rss_mb(),
                      "rss_mb_after_build": rss_model, "torch": torch.__version__,
                      "params": sum(p.numel() for p in model.parameters())}))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mode", choices=["both", "eval", "train"], default="both",
                    help="eval/train run one mode in this process (used internally)")
    args = ap.parse_args()
    if args.mode != "both":
        run_mode(args)
        return

    load_before = os.getloadavg()[0]
    res = {}
    for mode in ("eval", "train"):
        cmd = [sys.executable, os.path.abspath(__file__), "--mode", mode]
        for k in ("threads", "batch", "size", "warmup", "repeats"):
            cmd += ["--" + k, str(getattr(args, k))]
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True,
                         env=thread_env(args.threads)).stdout
        res[mode] = json.loads(out.strip().splitlines()[-1])
    ev, tr = res["eval"]["times_s"], res["train"]["times_s"]
    print(json.dumps({
        "impl": "pytorch",
        "model": "UnetPlusPlus(resnet34, classes=1)",
        "params": res["eval"]["params"],
        "batch": args.batch, "size": args.size,
        "eval_fwd_s": statistics.median(ev),
        "train_step_s": statistics.median(tr),
        "eval_fwd_min_max_s": [min(ev), max(ev)],
        "eval_fwd_cpu_s": statistics.median(res["eval"]["cpu_s"]),
        "train_step_cpu_s": statistics.median(res["train"]["cpu_s"]),
        "train_step_min_max_s": [min(tr), max(tr)],
        "peak_rss_mb_eval": round(res["eval"]["peak_rss_mb"], 1),
        "peak_rss_mb_train": round(res["train"]["peak_rss_mb"], 1),
        "rss_mb_after_build": round(res["eval"]["rss_mb_after_build"], 1),
        "torch": res["eval"]["torch"],
        "threads": args.threads,
        "warmup": args.warmup, "repeats": args.repeats,
        "load1_before": round(load_before, 2),
        "load1_after": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
