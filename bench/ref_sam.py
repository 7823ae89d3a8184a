#!/usr/bin/env python3
"""PyTorch reference timings for the teacher: Segment Anything ViT-B through
segment_anything's SamPredictor.

Run with the benchmark venv (bench/setup_venv.sh):
    .venv/bin/python bench/ref_sam.py --threads 2

Builds sam_model_registry["vit_b"](checkpoint=None) (the default random
initialisation: speed does not depend on the weights), then on one real
Kvasir-SEG image (SamPredictor resizes its longest side to 1024):
  set_image_s  SamPredictor.set_image: resize, normalise, pad, image encoder
  predict_s    one predict() with a positive point (the box centre) and the
               dataset's box, multimask_output=False
Medians of --repeats / --predict-repeats timed calls after --warmup untimed
ones (the *_cpu_s fields: process CPU time of the same calls, all threads,
which a busy machine inflates much less than wall time). The work runs in a subprocess so that its peak RSS (ru_maxrss) is its
own. Prints one JSON line.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SHARED = os.environ.get("KMSEG_SHARED", os.path.join(HERE, "..", "..", "shared"))


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


def run(args):
    import numpy as np
    import torch
    from PIL import Image
    from segment_anything import SamPredictor, sam_model_registry

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    kvasir = os.path.join(args.shared, "data", "kvasir-seg")
    image = np.asarray(Image.open(os.path.join(kvasir, "images", args.image + ".jpg")).convert("RGB"))
    with open(os.path.join(kvasir, "kavsir_bboxes.json")) as f:
        b = json.load(f)[args.image]["bbox"][0]
    box = np.array([b["xmin"], b["ymin"], b["xmax"], b["ymax"]], dtype=np.float32)
    point = np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]], dtype=np.float32)

    sam = sam_model_registry["vit_b"](checkpoint=None)
    sam.eval()
    predictor = SamPredictor(sam)
    rss_model = peak_rss_mb()

    def set_image():
        with torch.no_grad():
            predictor.set_image(image, image_format="RGB")

    def predict():
        return predictor.predict(point_coords=point, point_labels=np.array([1]), box=box,
                                 multimask_output=False)

    for _ in range(args.warmup):
        set_image()
    t_set, c_set = [], []
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        set_image()
        t_set.append(time.perf_counter() - t)
        c_set.append(time.process_time() - c)
    rss_set = peak_rss_mb()
    for _ in range(args.warmup):
        predict()
    t_pred, c_pred = [], []
    for _ in range(args.predict_repeats):
        t, c = time.perf_counter(), time.process_time()
        masks, scores, low_res = predict()
        t_pred.append(time.perf_counter() - t)
        c_pred.append(time.process_time() - c)
    print(json.dumps({
        "t_set": t_set, "t_pred": t_pred, "c_set": c_set, "c_pred": c_pred, "rss_model": rss_model, "rss_set": rss_set,
        "rss_all": peak_rss_mb(), "torch": torch.__version__,
        "params": sum(p.numel() for p in sam.parameters()),
        "image_hw": list(image.shape[:2]), "input_hw": list(predictor.input_size),
        "mask_shape": list(masks.shape), "low_res_shape": list(low_res.shape),
    }))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="timed set_image calls")
    ap.add_argument("--predict-repeats", type=int, default=20, help="timed predict calls")
    ap.add_argument("--shared", default=DEFAULT_SHARED, help="the shared/ folder (data/)")
    ap.add_argument("--image", default="cju0qkwl35piu0993l0dewei2",
                    help="Kvasir-SEG image id (its first box is the prompt)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        run(args)
        return

    load_before = os.getloadavg()[0]
    cmd = [sys.executable, os.path.abspath(__file__), "--worker",
           "--threads", str(args.threads), "--warmup", str(args.warmup),
           "--repeats", str(args.repeats), "--predict-repeats", str(args.predict_repeats),
           "--shared", args.shared, "--image", args.image]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True,
                         env=thread_env(args.threads)).stdout
    r = json.loads(out.strip().splitlines()[-1])
    print(json.dumps({
        "impl": "pytorch",
        "model": "sam_vit_b (random init)",
        "params": r["params"],
        "image": args.image, "image_hw": r["image_hw"], "input_hw": r["input_hw"],
        "set_image_s": statistics.median(r["t_set"]),
        "predict_s": statistics.median(r["t_pred"]),
        "set_image_min_max_s": [min(r["t_set"]), max(r["t_set"])],
        "predict_min_max_s": [min(r["t_pred"]), max(r["t_pred"])],
        "set_image_cpu_s": statistics.median(r["c_set"]),
        "predict_cpu_s": statistics.median(r["c_pred"]),
        "peak_rss_mb": round(r["rss_all"], 1),
        "rss_mb_after_build": round(r["rss_model"], 1),
        "rss_mb_after_set_image": round(r["rss_set"], 1),
        "torch": r["torch"],
        "threads": args.threads,
        "warmup": args.warmup, "repeats": args.repeats, "predict_repeats": args.predict_repeats,
        "load1_before": round(load_before, 2),
        "load1_after": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
