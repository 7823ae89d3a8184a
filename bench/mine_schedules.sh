#!/bin/sh
# mine_schedules.sh - epoch time of the one-time vs continuous mining schedules
# (issue 5 point 3). One short supervised run gives the student both mining
# runs start from (--init), so the runs differ only in the schedule. Each
# mining run gets a fresh embedding cache folder (the encoder runs once per
# unlabelled image in both). Usage: bench/mine_schedules.sh [OUTDIR]
# Env: DATA (Kvasir-SEG folder), TEACHER (SAM checkpoint), N (images),
# SIZE, EPOCHS (mining epochs). /usr/bin/time -v logs: OUTDIR/<schedule>.time
set -e
OUT=${1:-/tmp/kmseg_mine_bench}
DATA=${DATA:-../shared/data/kvasir-seg}
TEACHER=${TEACHER:-../shared/fixtures/sam_tiny/sam_tiny.pth}
N=${N:-64}
SIZE=${SIZE:-64}
EPOCHS=${EPOCHS:-3}
COMMON="--data $DATA --max-images $N --labelled-fraction 0.5 --size $SIZE --resnet 18 --batch 8 --threads 1 --seed 0"
rm -rf "$OUT"
mkdir -p "$OUT"
./kmseg train $COMMON --out "$OUT/sup" --epochs 2 --quiet
for sched in onetime continuous; do
    /usr/bin/time -v -o "$OUT/$sched.time" ./kmseg mine $COMMON --out "$OUT/$sched" \
        --teacher "$TEACHER" --init "$OUT/sup/best.safetensors" --schedule $sched \
        --mine-epochs "$EPOCHS" --cache-dir "$OUT/cache_$sched" --quiet
done
for sched in onetime continuous; do
    echo "== $sched"
    cat "$OUT/$sched/metrics.csv"
    grep -E "User time|System time|Elapsed|Maximum resident" "$OUT/$sched.time"
done
