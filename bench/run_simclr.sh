#!/usr/bin/env bash
# SimCLR pretraining step, kmseg vs PyTorch, side by side (issue 6 point 5).
# kmseg: `kmseg pretrain` on real Kvasir-SEG images (view augmentations
# included); step time = (time of --max-steps K+1 run - time of --max-steps 1
# run) / K, which cancels start-up, decoding and checkpoint writing.
# PyTorch: bench/ref_simclr.py (torchvision ResNet, same head, NT-Xent, Adam)
# on random views, median step. Prints both and the ratio of images/s.
#   bash bench/run_simclr.sh [--threads 2] [--batch 8] [--size 224] [--steps 3]
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=2 BATCH=8 SIZE=224 STEPS=3
while (($#)); do
  case "$1" in
    --threads) THREADS=$2; shift 2;; --batch) BATCH=$2; shift 2;;
    --size) SIZE=$2; shift 2;; --steps) STEPS=$2; shift 2;;
    *) echo "unknown flag $1" >&2; exit 2;;
  esac
done
make -s kmseg
[ -x .venv/bin/python ] || bash bench/setup_venv.sh
DATA=${KMSEG_SHARED:-../shared}/data/kvasir-seg
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() { # steps -> seconds
  local t0 t1
  t0=$(date +%s.%N)
  ./kmseg pretrain --data "$DATA" --max-images $((8 * BATCH)) --out "$tmp/r$1" --max-steps "$1" \
    --batch "$BATCH" --size "$SIZE" --threads "$THREADS" --quiet
  t1=$(date +%s.%N)
  python3 -c "print($t1 - $t0)"
}
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
a=$(run 1); b=$(run $((STEPS + 1)))
k_step=$(python3 -c "print(($b - $a) / $STEPS)")
pt=$(OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS .venv/bin/python bench/ref_simclr.py \
     --threads "$THREADS" --batch "$BATCH" --size "$SIZE" --steps "$STEPS")
echo "pytorch: $pt"
python3 - "$k_step" "$pt" "$BATCH" <<'PY'
import json, sys
k, pt, B = float(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
print("kmseg  : %.3f s/step, %.2f img/s (batch %d = %d views)" % (k, B / k, B, 2 * B))
print("pytorch: %.3f s/step, %.2f img/s" % (pt["step_s"], pt["img_per_s"]))
print("ratio kmseg/PyTorch: step time %.2fx, images/s %.2fx" % (k / pt["step_s"], (B / k) / pt["img_per_s"]))
PY
