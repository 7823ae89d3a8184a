#!/usr/bin/env bash
# Side-by-side benchmark of one prompt-to-mask decode: LiteMedSAM's real
# prompt encoder + mask decoder weights, one box prompt, single mask, on a
# fixed random image embedding; kmseg (bench/bench_decode.c) vs PyTorch
# (bench/ref_decode.py: segment_anything's PromptEncoder / MaskDecoder built
# with LiteMedSAM's shapes and loaded with the checkpoint's tensors), same
# thread count, same machine, one invocation. Prints both JSON lines, the
# max abs difference of the low-res logits, and the ratios kmseg/PyTorch
# (lower is better).
#   bash bench/run_decode.sh [--threads 2] [--repeats 200] [--warmup 10]
#                            [--rounds 3] [--checkpoint lite_medsam.pth]
# --rounds N alternates the two sides N times (kmseg, PyTorch, kmseg, ...) and
# reports every round's ratio and the median ratio: the machine is shared and
# its load changes within seconds.
# Both sides run with OMP_WAIT_POLICY=PASSIVE (what the kmseg binary sets for
# itself). OpenBLAS: kmseg dlopens libopenblas.so.0 (KMSEG_BLAS=path picks
# another), Debian's torch uses whatever libblas.so.3 resolves to; each side's
# GEMM backend is printed. If OpenBLAS is not installed system-wide, point
# BLAS_DIR at a directory holding libopenblas.so.0 and an OpenBLAS
# libblas.so.3 (e.g. a libopenblas0-pthread .deb unpacked with dpkg -x:
# .../usr/lib/x86_64-linux-gnu/openblas-pthread) to give both sides the same
# OpenBLAS without touching the system.
# PY=python picks the PyTorch interpreter (default .venv/bin/python); it needs
# torch and segment_anything.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=2 REPEATS=200 WARMUP=10 ROUNDS=3
CKPT=${KMSEG_LITEMEDSAM:-$HOME/.local/share/kmseg/teachers/lite_medsam.pth}
while (($#)); do
  case "$1" in
    --threads) THREADS=$2; shift 2;; --repeats) REPEATS=$2; shift 2;;
    --warmup) WARMUP=$2; shift 2;; --rounds) ROUNDS=$2; shift 2;;
    --checkpoint) CKPT=$2; shift 2;;
    *) echo "unknown flag $1" >&2; exit 2;;
  esac
done
[ -f "$CKPT" ] || { echo "run_decode.sh: $CKPT: no such checkpoint (LiteMedSAM lite_medsam.pth)" >&2; exit 1; }
make -s kmseg
mkdir -p bench/out
CFLAGS="-std=c11 -D_POSIX_C_SOURCE=200809L -O2 -march=native -fopenmp"
gcc $CFLAGS -o bench/out/bench_decode bench/bench_decode.c build/release/libkmseg.a -lpng -ljpeg -lm -ldl -lpthread
PY=${PY:-.venv/bin/python}
if [ -n "${BLAS_DIR:-}" ]; then
  export KMSEG_BLAS="$BLAS_DIR/libopenblas.so.0" LD_LIBRARY_PATH="$BLAS_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export OMP_WAIT_POLICY=PASSIVE
EMB=bench/out/decode_embedding.f32 LOW=bench/out/decode_lowres_kmseg.f32
echo "machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "checkpoint: $CKPT, box (60, 50, 180, 200) in the 256 input frame, $THREADS threads"
echo "torch BLAS: $("$PY" -c 'import torch, re; print(re.search(r"BLAS_INFO=\w+", torch.__config__.show()).group(0))' 2>/dev/null) ($(ldd "$("$PY" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))' 2>/dev/null)" 2>/dev/null | grep -o 'libblas.so.3 => [^ ]*' || echo 'libblas.so.3 not linked'))"
kms=() pts=()
for ((r = 1; r <= ROUNDS; r++)); do
  l0=$(cut -d' ' -f1 /proc/loadavg)
  km=$(OMP_NUM_THREADS=$THREADS bench/out/bench_decode --checkpoint "$CKPT" --embedding-out "$EMB" \
       --lowres-out "$LOW" --threads "$THREADS" --warmup "$WARMUP" --repeats "$REPEATS")
  pt=$("$PY" bench/ref_decode.py --checkpoint "$CKPT" --embedding "$EMB" --kmseg-lowres "$LOW" \
       --threads "$THREADS" --warmup "$WARMUP" --repeats "$REPEATS" 2>/dev/null)
  l1=$(cut -d' ' -f1 /proc/loadavg)
  echo "round $r (load $l0 -> $l1)"
  echo "  kmseg  : $km"
  echo "  pytorch: $pt"
  kms+=("$km") pts+=("$pt")
done
python3 - "$ROUNDS" "${kms[@]}" "${pts[@]}" <<'PY'
import json, statistics, sys
n = int(sys.argv[1])
ks = [json.loads(a) for a in sys.argv[2:2 + n]]
ps = [json.loads(a) for a in sys.argv[2 + n:2 + 2 * n]]
print("\n| round | kmseg decode ms (CPU) | PyTorch decode ms (CPU) | PyTorch incl. get_dense_pe ms | kmseg/PyTorch | vs incl. PE |")
print("|---|---|---|---|---|---|")
r1, r2 = [], []
for i, (k, p) in enumerate(zip(ks, ps), 1):
    r1.append(k["decode_s"] / p["decode_s"])
    r2.append(k["decode_s"] / p["decode_pe_s"])
    print("| %d | %.1f (%.1f) | %.1f (%.1f) | %.1f | %.2fx | %.2fx |" % (
        i, 1e3 * k["decode_s"], 1e3 * k["decode_cpu_s"], 1e3 * p["decode_s"], 1e3 * p["decode_cpu_s"],
        1e3 * p["decode_pe_s"], r1[-1], r2[-1]))
print("\nmedian ratio kmseg/PyTorch over %d rounds: %.2fx (PyTorch with get_dense_pe() per call as "
      "MedSAMLite.forward: %.2fx); goal <= 0.3x: %s" % (
          n, statistics.median(r1), statistics.median(r2),
          "met" if statistics.median(r1) <= 0.3 else "NOT met"))
print("low-res logits, max |kmseg - PyTorch| = %.3g (max |PyTorch| %.3g); IoU %.6f vs %.6f" % (
    ps[-1]["max_abs_diff_vs_kmseg"], ps[-1]["max_abs_ref"], ks[-1]["iou0"], ps[-1]["iou0"]))
print("kmseg GEMM: %s" % ks[-1]["gemm"])
PY
