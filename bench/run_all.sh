#!/usr/bin/env bash
# Side-by-side benchmark of the student: kmseg vs PyTorch + smp 0.3.4, same
# workload (U-Net++/ResNet34, batch 8, 224x224, 2 threads), same machine, one
# run. Prints each side's JSON line and the ratios kmseg/PyTorch (lower is
# better), plus the conv layers' GFLOP/s as a fraction of the measured FMA peak.
#   bash bench/run_all.sh [--threads 2] [--repeats 5] [--batch 8] [--size 224]
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=2 REPEATS=5 BATCH=8 SIZE=224
while (($#)); do
  case "$1" in
    --threads) THREADS=$2; shift 2;; --repeats) REPEATS=$2; shift 2;;
    --batch) BATCH=$2; shift 2;; --size) SIZE=$2; shift 2;;
    *) echo "unknown flag $1" >&2; exit 2;;
  esac
done
make -s kmseg
mkdir -p bench/out
CFLAGS="-std=c11 -D_POSIX_C_SOURCE=200809L -O2 -march=native -fopenmp"
gcc $CFLAGS -o bench/out/bench_student bench/bench_student.c build/release/libkmseg.a -lpng -ljpeg -lm -ldl -lpthread
gcc $CFLAGS -o bench/out/fma_peak bench/fma_peak.c
[ -x .venv/bin/python ] || bash bench/setup_venv.sh
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg)"
peak=$(bench/out/fma_peak "$THREADS")
echo "fma peak: $peak"
common=(--threads "$THREADS" --batch "$BATCH" --size "$SIZE" --repeats "$REPEATS")
k_eval=$(bench/out/bench_student --mode eval "${common[@]}")
k_train=$(bench/out/bench_student --mode train "${common[@]}")
pt=$(.venv/bin/python bench/ref_unetpp.py "${common[@]}")
echo "kmseg eval : $k_eval"
echo "kmseg train: $k_train"
echo "pytorch    : $pt"
python3 - "$k_eval" "$k_train" "$pt" "$peak" <<'PY'
import json, sys
ke, kt, pt, pk = (json.loads(a) for a in sys.argv[1:5])
print("\n| student, batch %d at %d, %d threads | kmseg | PyTorch | ratio |" % (pt["batch"], pt["size"], pt["threads"]))
print("|---|---|---|---|")
print("| eval forward (median s) | %.2f | %.2f | %.2fx |" % (ke["median_s"], pt["eval_fwd_s"], ke["median_s"] / pt["eval_fwd_s"]))
print("| train step (median s) | %.2f | %.2f | %.2fx |" % (kt["median_s"], pt["train_step_s"], kt["median_s"] / pt["train_step_s"]))
print("| peak RSS eval (MB) | %.0f | %.0f | %.2fx |" % (ke["peak_rss_mb"], pt["peak_rss_mb_eval"], ke["peak_rss_mb"] / pt["peak_rss_mb_eval"]))
print("| peak RSS train (MB) | %.0f | %.0f | %.2fx |" % (kt["peak_rss_mb"], pt["peak_rss_mb_train"], kt["peak_rss_mb"] / pt["peak_rss_mb_train"]))
print("\nconv layers: %.0f GFLOP/s counted as direct convolutions (fwd %.0f, bwd %.0f; %.0f GFLOP per step); "
      "their GEMMs perform %.0f GFLOP per step (Winograd) at %.0f GFLOP/s = %.0f%% of the measured FMA peak %.0f GFLOP/s; "
      "convs take %.0f%% of the step" % (
    kt["conv_gflops"], kt["conv_fwd_gflops"], kt["conv_bwd_gflops"], kt["gflop_per_step"], kt["gemm_gflop_per_step"],
    kt["conv_gemm_gflops"], 100 * kt["conv_gemm_gflops"] / pk["fma_peak_gflops"], pk["fma_peak_gflops"],
    100 * kt["conv_time_frac"]))
PY
