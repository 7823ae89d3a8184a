/* experiments_knobs.h - `kmseg experiments --knobs`: the teacher's gain per
 * box rule, measured on the labelled VALIDATION split only (issue 11 point 6).
 *
 * For every finished supervised run of a grid and every box rule (all,
 * largest, per-component), the run's best.safetensors prompts the teacher on
 * the run's val split (RUN/splits/val.txt), as mining prompts it (the grid's
 * mine settings: prompt mode, points, teacher profile), through the
 * teacher-quality library (eval/teacher_quality.h). Scored in the student's
 * S x S frame, as mining scores its pseudo labels:
 *   teacher_dice  the teacher's pseudo label against the ground truth
 *   student_dice  the student's own prediction, same images, same pixels
 *   gain          teacher_dice - student_dice
 *   no_box        val images whose student prediction gave no box
 * Files (resumable: a run x rule whose CSV exists is skipped):
 *   DIR/knobs/<dataset>/<fraction>/<method>/seed<k>/<rule>/  per_image.csv,
 *                 summary.json (teacher-quality's own outputs)
 *   DIR/knobs/<dataset>/<fraction>/<method>/seed<k>/<rule>.csv  one header
 *                 line and one row (written atomically, last):
 *                 dataset,fraction,method,seed,box_rule,n_val,teacher_dice,
 *                 student_dice,gain,no_box,empty_teacher,teacher_dice_orig,
 *                 seconds (teacher_dice_orig: the teacher at the original
 *                 resolution)
 *   DIR/knobs.md  per dataset x fraction x method, per rule: mean ± sample
 *                 std (ddof 1) over seeds of teacher_dice, student_dice and
 *                 gain, mean no_box; the rule with the highest mean gain is
 *                 marked "chosen" (ties: the first of all, largest,
 *                 per-component). Test data is never read. */
#ifndef KM_EXPERIMENTS_KNOBS_H
#define KM_EXPERIMENTS_KNOBS_H

#include "../core/km.h"
#include "../mine/refine.h"

#include <stdio.h>

/* One finished supervised run of the grid. */
typedef struct {
    const char *dataset, *data_path, *fraction, *method;
    int seed;
    const char *run_dir; /* holds best.safetensors and splits/ */
} km_knobs_run;

enum { KM_KNOBS_NRULES = 3 };

/* Measures every run x rule whose CSV is missing; teacher: the mine
 * settings' teacher config (its box_rule is overridden per rule); size: the
 * student's crop (0: the checkpoint's). Progress lines on `log` (NULL:
 * silent). *measured: run x rule pairs measured now (the rest were there). */
km_status km_knobs_measure(const char *out, const km_knobs_run *runs, int n, const km_refine_config *teacher,
                           int size, FILE *log, int *measured);

/* Writes DIR/knobs.md from the CSVs of `runs` that exist (missing ones are
 * counted in the file, not an error); grid_rule: the box rule the grid's
 * mining runs use, named in the text. */
km_status km_knobs_write_md(const char *out, const km_knobs_run *runs, int n, const char *grid_rule);

/* The best epoch of a finished run (RUN/metrics.csv; rows with epoch >= 1:
 * a mining run's are its mining epochs): the first epoch with the lowest
 * val_loss, as early stopping keeps best.safetensors (strictly lower
 * improves; NaN never does). *loss, *dice: its val_loss and val_dice; *found
 * 0 when the run has no metrics.csv or no finite val_loss. A metrics.csv
 * without those columns is KM_EFORMAT. */
km_status km_best_val_epoch(const char *run_dir, double *loss, double *dice, int *found);

#endif
