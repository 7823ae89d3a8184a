/* mining.h - what mining added and what it cost, per experiments folder.
 *
 * For every dataset x labelled fraction x method of DIR/results.csv, over the
 * finished seeds (each run's own metrics.csv; a run counts once it has an
 * eval/summary.json), the mean and sample std (ddof 1) of per-run values:
 *   KM_MQ_PSEUDO   pseudo_dice: the teacher's pseudo labels against the hidden
 *                  ground truth of the unlabelled images they were made for,
 *                  averaged over the run's mining epochs
 *   KM_MQ_STUDENT  student_unl_dice: the student's own prediction (the one
 *                  that prompted the teacher) on the same images
 *   KM_MQ_GAIN     pseudo - student: the teacher's gain
 *   KM_MQ_NOBOX    images the student gave no box, per unlabelled visit (%),
 *                  over the epochs that called the teacher (one-time runs
 *                  label before their epochs: NaN, the pass logs its count)
 *   KM_MQ_SEC      seconds per epoch (mining epochs; supervised rows: their
 *                  supervised epochs)
 *   KM_MQ_TEACHER  teacher seconds (encoder + decoder) per mining epoch
 *   KM_MQ_EPOCHS   epochs the run made (mining runs: mining epochs)
 * Values a method does not have (supervised: the first four) are NaN.
 * Derived rows ("+refined", "+start-competes": the same runs again) are left out.
 * One-time runs label once: their pseudo and student Dice are that pass's,
 * repeated on every row. */
#ifndef KM_REPORT_MINING_H
#define KM_REPORT_MINING_H

#include "../core/km.h"
#include "html.h"

#include <stdio.h>

enum { KM_MQ_PSEUDO, KM_MQ_STUDENT, KM_MQ_GAIN, KM_MQ_NOBOX, KM_MQ_SEC, KM_MQ_TEACHER, KM_MQ_EPOCHS, KM_MQ_N };

typedef struct {
    char dataset[64], fraction[32], method[32];
    int n; /* finished runs (seeds) */
    double mean[KM_MQ_N], std[KM_MQ_N]; /* std NaN when n < 2 */
} km_mining_row;

/* Reads DIR/results.csv and the metrics.csv of each finished run it lists
 * (run folders as DIR/<dataset>/<fraction>/<method>/seed<k>, else the
 * run_dir column). Rows in results.csv order of first appearance. A run
 * whose metrics.csv is unreadable is left out (counted in *skipped). */
km_status km_mining_summary(const char *dir, km_mining_row **rows, int *n, int *skipped);
/* The rows as one Markdown table (a heading line first). */
void km_mining_md(FILE *f, const km_mining_row *rows, int n);
/* The same as an HTML table with a caption. */
void km_mining_html(km_html *h, const km_mining_row *rows, int n);

#endif
