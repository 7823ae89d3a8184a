/* report.h - `kmseg report`: one static, self-contained HTML page (inline CSS,
 * inline SVG charts, PNG thumbnails as data: URIs; no JavaScript, no network)
 * from the files runs already write (docs: ../shared/docs/report.md).
 *
 * A run folder (kmseg train: config.json; kmseg mine: mine_config.json) gives
 * its settings, per-epoch curves from metrics.csv (a mining run's supervised
 * phase from its supervised/ folder or from the folder of its --init
 * checkpoint, before the mining epochs), the test score from eval/summary.json
 * and eval/per_image.csv when `kmseg eval` / `kmseg experiments` wrote them,
 * and a gallery computed here: best.safetensors (eval mode) on the run's test
 * split (dataset folder and crop size from the config, splits from RUN/splits),
 * rows best / median / worst / seeded random by per-image Dice, columns image |
 * ground truth | student | teacher-refined (with a teacher only) | error map;
 * a mining run adds its pseudo labels (RUN/pseudo) for a few unlabelled
 * training images against their hidden ground truth.
 * An experiments folder (results.csv) gives the tables of tables.md, Dice
 * against labelled fraction per method and learning curves over seeds, and
 * links each run's own report (written first, into RUN/report.html).
 *
 * Same inputs (files, options, thread count) give the same bytes: no
 * timestamps, fixed number formats, sorted listings, seeded random pick.
 * The teacher column takes image embeddings from the embedding cache when it
 * has them (those of the run's own refined eval): the encoder gives the same
 * bits at every thread count, so a cached page equals a recomputed one
 * (for entries written since the encoders split GEMMs into fixed blocks).
 * The page is written atomically. */
#ifndef KM_REPORT_H
#define KM_REPORT_H

#include "../core/km.h"

typedef struct {
    const char *out;             /* page path (NULL: DIR/report.html) */
    const char *data;            /* dataset folder (NULL: the run config's "data") */
    const char *teacher;         /* SAM / MedSAM checkpoint: teacher-refined gallery column (NULL: none) */
    const char *teacher_profile; /* "sam" or "medsam" */
    const char *cache_dir;       /* teacher embedding cache (NULL: the default folder, embcache.h) */
    int no_cache;                /* 1: embeddings in memory only (default 0: the run's refined eval
                                    cached the test images, so the gallery reuses them) */
    int gallery_random;          /* random gallery rows (default 1) */
    int pseudo_rows;             /* pseudo-label gallery rows (default 4) */
    uint64_t seed;               /* seed of the random pick (default 0) */
    int threads;                 /* compute threads for the gallery (default 2) */
    int run_reports;             /* experiments: write every run's report too (default 1) */
    FILE *log;                   /* warnings and progress (NULL: silent) */
} km_report_opts;

void km_report_opts_default(km_report_opts *o);
/* DIR is a run folder or an experiments folder (else KM_EFORMAT naming DIR
 * and what was looked for). */
km_status km_report_write(const char *dir, const km_report_opts *o);
km_status km_report_run(const char *dir, const char *out, const km_report_opts *o);
km_status km_report_grid(const char *dir, const char *out, const km_report_opts *o);

#endif
