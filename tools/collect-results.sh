#!/usr/bin/env bash
# collect-results.sh GRID_DIR RESULTS_DIR - copies the small files of an experiments folder
# (settings, tables, mining.md, knobs.md and knobs/, results.csv, and per run (the grid page goes to runs/report.html, beside the runs it links): config, metrics, resumes, report page, eval summaries and per-image
# scores; no checkpoints) into a results/ folder for git. Safe to run again as the grid goes on.
set -euo pipefail
grid=$1 dest=$2
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
for f in settings.txt tables.md mining.md knobs.md results.csv; do [ -f "$grid/$f" ] && cp "$grid/$f" "$dest/"; done
cd "$grid"
[ -d knobs ] && { mkdir -p "$dest/knobs"; cp -r knobs/. "$dest/knobs/"; } # --knobs: per run and box rule, validation only
find . -path ./.locks -prune -o -type f \( -name config.json -o -name mine_config.json -o -name metrics.csv -o -name resumes.csv -o -name report.html \
    -o -path '*/eval/summary.json' -o -path '*/eval/per_image.csv' -o -path '*/eval_refined/summary.json' \
    -o -path '*/eval_refined/per_image.csv' \) -print | while read -r f; do
    mkdir -p "$dest/runs/$(dirname "$f")"
    cp "$f" "$dest/runs/$f"
done
