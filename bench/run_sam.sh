#!/usr/bin/env bash
# Side-by-side benchmark of the teacher: Segment Anything ViT-B, kmseg vs
# PyTorch (segment_anything's SamPredictor on Debian's torch 1.13), same image,
# same prompts, same thread count, same machine, one invocation. Prints each
# side's JSON line and a table with the ratios kmseg/PyTorch (lower is better)
# for set_image (encoding), predict and peak RSS, plus the load average.
#   bash bench/run_sam.sh [--threads 2] [--repeats 3] [--predict-repeats 20]
#                         [--image KVASIR_ID] [--shared ../shared]
# Both sides use random weights (speed does not depend on them); kmseg's
# ViT-B-shaped checkpoint is written once to bench/out/sam_vit_b_random.safetensors
# (375 MB) by bench_sam --make-checkpoint and then loaded like a real one.
# PY=python (default .venv/bin/python, made by bench/setup_venv.sh) picks the
# PyTorch side's interpreter; it needs torch, numpy, PIL and segment_anything.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=2 REPEATS=3 PREPEATS=20 WARMUP=1
IMAGE=cju0qkwl35piu0993l0dewei2
SHARED=${KMSEG_SHARED:-../shared}
while (($#)); do
  case "$1" in
    --threads) THREADS=$2; shift 2;; --repeats) REPEATS=$2; shift 2;;
    --predict-repeats) PREPEATS=$2; shift 2;; --warmup) WARMUP=$2; shift 2;;
    --image) IMAGE=$2; shift 2;; --shared) SHARED=$2; shift 2;;
    *) echo "unknown flag $1" >&2; exit 2;;
  esac
done
make -s kmseg
mkdir -p bench/out
CFLAGS="-std=c11 -D_POSIX_C_SOURCE=200809L -O2 -march=native -fopenmp"
gcc $CFLAGS -o bench/out/bench_sam bench/bench_sam.c build/release/libkmseg.a -lpng -ljpeg -lm -ldl -lpthread
if [ -z "${PY:-}" ]; then
  [ -x .venv/bin/python ] || bash bench/setup_venv.sh
  PY=.venv/bin/python
fi
CK=bench/out/sam_vit_b_random.safetensors
[ -f "$CK" ] || bench/out/bench_sam --make-checkpoint "$CK" --tiny "$SHARED/fixtures/sam_tiny/sam_tiny.pth"
JPG="$SHARED/data/kvasir-seg/images/$IMAGE.jpg"
BOX=$(python3 -c 'import json,sys; b=json.load(open(sys.argv[1]))[sys.argv[2]]["bbox"][0]; print("%s,%s,%s,%s" % (b["xmin"], b["ymin"], b["xmax"], b["ymax"]))' \
      "$SHARED/data/kvasir-seg/kavsir_bboxes.json" "$IMAGE")
echo "machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "image: $IMAGE ($JPG), box $BOX, $THREADS threads"
load0=$(cut -d' ' -f1 /proc/loadavg)
km=$(OMP_NUM_THREADS=$THREADS bench/out/bench_sam --checkpoint "$CK" --image "$JPG" --box "$BOX" \
     --threads "$THREADS" --warmup "$WARMUP" --repeats "$REPEATS" --predict-repeats "$PREPEATS")
load1=$(cut -d' ' -f1 /proc/loadavg)
echo "kmseg  : $km"
pt=$("$PY" bench/ref_sam.py --threads "$THREADS" --warmup "$WARMUP" --repeats "$REPEATS" \
     --predict-repeats "$PREPEATS" --shared "$SHARED" --image "$IMAGE")
load2=$(cut -d' ' -f1 /proc/loadavg)
echo "pytorch: $pt"
python3 - "$km" "$pt" "$load0" "$load1" "$load2" <<'PY'
import json, sys
k, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
l0, l1, l2 = sys.argv[3:6]
print("\n| SAM ViT-B, %d threads, %dx%d image | kmseg | PyTorch %s | kmseg/PyTorch |" % (
    k["threads"], k["image_hw"][1], k["image_hw"][0], p["torch"]))
print("|---|---|---|---|")
def row(name, a, b, fmt):
    print(("| %s | " + fmt + " | " + fmt + " | %.2fx |") % (name, a, b, a / b))
row("set_image / encoding, median wall s", k["set_image_s"], p["set_image_s"], "%.2f")
row("set_image, min wall s", k["set_image_min_max_s"][0], p["set_image_min_max_s"][0], "%.2f")
row("set_image, median CPU s (all threads)", k["set_image_cpu_s"], p["set_image_cpu_s"], "%.2f")
row("predict, median wall ms", 1e3 * k["predict_s"], 1e3 * p["predict_s"], "%.1f")
row("predict, median CPU ms", 1e3 * k["predict_cpu_s"], 1e3 * p["predict_cpu_s"], "%.1f")
row("peak RSS, MB", k["peak_rss_mb"], p["peak_rss_mb"], "%.0f")
print("\nload average (1 min): %s before kmseg, %s after kmseg / before PyTorch, %s after PyTorch" % (l0, l1, l2))
print("goal (issue 4): encoding <= 0.5x PyTorch: %s; peak memory < 1.5 GB: %s" % (
    "met" if k["set_image_s"] <= 0.5 * p["set_image_s"] else "NOT met",
    "met" if k["peak_rss_mb"] < 1536 else "NOT met"))
PY
