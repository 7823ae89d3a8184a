#!/usr/bin/env python3
"""PyTorch DistributedDataParallel timings for bench/run_mpi.sh: smp U-Net++ /
ResNet18, train steps (forward, 0.5 BCEWithLogits + 0.5 smp DiceLoss(binary,
from_logits), backward, Adam lr 5e-5), random weights and inputs.

    .venv/bin/python bench/ref_ddp.py --procs 2 --threads 1 --batch 8 --size 128
    .venv/bin/python bench/ref_ddp.py --procs 1 --threads 2 --batch 8 --size 128

--procs P > 1: P processes (torch.multiprocessing), gloo backend over
localhost, each with batch/P images and --threads threads, DDP averaging the
gradients (its allreduce overlaps the backward). --procs 1: one process, no
DDP. Reports the median step time over --repeats steps after --warmup, and
for DDP the median time the gloo allreduce of one gradient-sized float tensor
takes on its own (the communication a step needs, measured apart since DDP
hides it in the backward). Prints one JSON line.
"""
import argparse
import json
import os
import statistics
import sys
import time


def thread_env(n):
    # Debian's torch reaches OpenBLAS through libblas.so.3: pin its pool too.
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = str(n)


def worker(rank, args, out):
    thread_env(args.threads)
    import torch
    import torch.distributed as dist
    import segmentation_models_pytorch as smp

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = smp.UnetPlusPlus("resnet18", encoder_weights=None, in_channels=3, classes=1)
    if args.procs > 1:
        dist.init_process_group("gloo", rank=rank, world_size=args.procs)
        model = torch.nn.parallel.DistributedDataParallel(model)
    b = args.batch // args.procs
    torch.manual_seed(1 + rank)
    x = torch.randn(b, 3, args.size, args.size)
    y = (torch.rand(b, 1, args.size, args.size) > 0.5).float()
    bce = torch.nn.BCEWithLogitsLoss()
    dice = smp.losses.DiceLoss("binary", from_logits=True)
    opt = torch.optim.Adam(model.parameters(), lr=5e-5)
    model.train()
    times = []
    for i in range(args.warmup + args.repeats):
        t0 = time.perf_counter()
        opt.zero_grad()
        z = model(x)
        loss = 0.5 * bce(z, y) + 0.5 * dice(z, y)
        loss.backward()
        opt.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    res = {"step_s": statistics.median(times)}
    if args.procs > 1:
        n = sum(p.numel() for p in model.parameters())
        g = torch.zeros(n)
        ct = []
        for i in range(3):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(g)
            ct.append(time.perf_counter() - t0)
        res["allreduce_s"] = statistics.median(ct)
        res["params"] = n
        dist.destroy_process_group()
    if rank == 0:
        out.put(res)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    import torch.multiprocessing as mp

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ps = [ctx.Process(target=worker, args=(r, args, q)) for r in range(args.procs)]
    for p in ps:
        p.start()
    res = q.get()
    for p in ps:
        p.join()
        if p.exitcode:
            sys.exit("ref_ddp: a worker exited with %d" % p.exitcode)
    res.update(procs=args.procs, threads=args.threads, batch=args.batch, size=args.size, repeats=args.repeats)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
