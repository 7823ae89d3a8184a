#!/usr/bin/env bash
# Data parallel on this machine (issue 12 point 6): one process with 2
# threads against 2 processes with 1 thread each, for kmseg (mpirun, the
# fixed-order sum of src/core/dist.h) and PyTorch DistributedDataParallel
# (gloo, 2 processes), same workload: U-Net++/ResNet18, batch 8 at SIZE,
# Adam. kmseg trains on real Kvasir-SEG images (../shared/data) for STEPS
# steps; its step time is the mean over them (first step included), its
# communication the seconds rank 0 spent in the gradient sum's MPI calls
# (waiting for the other rank included); 1 process x 1 thread with the same
# micro-batches is run too (the weights of 2 x 1 must equal its bytes).
# PyTorch runs on random inputs
# (speed does not depend on them): median step, and the time of one gloo
# allreduce of all gradients on its own (DDP overlaps it with the backward).
#   bash bench/run_mpi.sh [--size 128] [--steps 6]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=128 STEPS=6
while (($#)); do
  case "$1" in
    --size) SIZE=$2; shift 2;; --steps) STEPS=$2; shift 2;;
    *) echo "unknown flag $1" >&2; exit 2;;
  esac
done
command -v mpirun > /dev/null || { echo "mpirun not found: run tools/install-deps.sh" >&2; exit 1; }
make -s kmseg
[ -x .venv/bin/python ] || bash bench/setup_venv.sh
DATA=${KMSEG_SHARED:-../shared}/data/kvasir-seg
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg)"
common=(train --data "$DATA" --max-images 60 --size "$SIZE" --resnet 18 --batch 8 --epochs 1 --max-steps "$STEPS")
# kmseg prints "... N steps, X train img/s" and, with micro-batches,
# "gradient sum: C s in MPI calls ... of S s in steps".
kmseg_run() { # name, launcher..., -- args...
  local name=$1; shift
  "$@" > "$OUT/$name.log" 2>&1 || { cat "$OUT/$name.log" >&2; exit 1; }
  python3 - "$OUT/$name.log" "$name" <<'PY'
import json, re, sys
t = open(sys.argv[1]).read()
ips = float(re.search(r"([0-9.]+) train img/s", t).group(1))
m = re.search(r"gradient sum: ([0-9.]+) s in MPI calls .* of ([0-9.]+) s in steps", t)
print(json.dumps({"name": sys.argv[2], "step_s": 8 / ips, "comm_s": float(m.group(1)) if m else 0.0,
                  "steps_s": float(m.group(2)) if m else None}))
PY
}
k1=$(kmseg_run k1x2 ./kmseg "${common[@]}" --threads 2 --out "$OUT/k1x2")
k1m=$(kmseg_run k1x2m ./kmseg "${common[@]}" --threads 2 --micro-batch 4 --out "$OUT/k1x2m")
k11=$(kmseg_run k1x1m ./kmseg "${common[@]}" --threads 1 --micro-batch 4 --out "$OUT/k1x1m")
k2=$(kmseg_run k2x1 mpirun --allow-run-as-root --oversubscribe -np 2 -x OMP_NUM_THREADS=1 \
     ./kmseg "${common[@]}" --threads 1 --micro-batch 4 --out "$OUT/k2x1")
p1=$(.venv/bin/python bench/ref_ddp.py --procs 1 --threads 2 --batch 8 --size "$SIZE" --repeats "$STEPS")
p2=$(.venv/bin/python bench/ref_ddp.py --procs 2 --threads 1 --batch 8 --size "$SIZE" --repeats "$STEPS")
# bit-identity holds per thread count: 2 ranks x 1 thread = 1 process x 1 thread
cmp -s "$OUT/k1x1m/last.safetensors" "$OUT/k2x1/last.safetensors" && same=yes || same=NO
for j in "$k1" "$k1m" "$k11" "$k2" "$p1" "$p2"; do echo "$j"; done
python3 - "$k1" "$k1m" "$k11" "$k2" "$p1" "$p2" "$SIZE" "$same" <<'PY'
import json, sys
k1, k1m, k11, k2, p1, p2 = (json.loads(a) for a in sys.argv[1:7])
size, same = sys.argv[7], sys.argv[8]
mb = p2["params"] * 4 / 1e6
print("\n| U-Net++/ResNet18, batch 8 at %s | kmseg step (s) | PyTorch step (s) | kmseg / PyTorch |" % size)
print("|---|---|---|---|")
print("| 1 process x 2 threads | %.2f | %.2f | %.2fx |" % (k1["step_s"], p1["step_s"], k1["step_s"] / p1["step_s"]))
print("| 1 process x 2 threads, 2 micro-batches of 4 | %.2f | - | - |" % k1m["step_s"])
print("| 1 process x 1 thread, 2 micro-batches of 4 | %.2f | - | - |" % k11["step_s"])
print("| 2 processes x 1 thread (mpirun / DDP gloo) | %.2f | %.2f | %.2fx |" % (k2["step_s"], p2["step_s"], k2["step_s"] / p2["step_s"]))
print("| 2x1 / 1x2 | %.2fx | %.2fx | |" % (k2["step_s"] / k1["step_s"], p2["step_s"] / p1["step_s"]))
print("\ncommunication: kmseg rank 0 spent %.2f s of %.2f s of steps (%.0f%%) in the gradient sum's MPI calls "
      "(Alltoallv + Allgatherv, waiting for the other rank included); one gloo allreduce of the %.1f MB of "
      "gradients takes %.3f s on its own (%.0f%% of a DDP step, which overlaps it with the backward)" % (
    k2["comm_s"], k2["steps_s"], 100 * k2["comm_s"] / k2["steps_s"], mb, p2["allreduce_s"],
    100 * p2["allreduce_s"] / p2["step_s"]))
print("kmseg 2 ranks x 1 thread gave the same weights as 1 process x 1 thread with the same micro-batches: %s" % same)
PY
