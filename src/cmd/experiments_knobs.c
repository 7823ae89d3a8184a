/* experiments_knobs.c - the teacher's gain per box rule on the validation
 * split of every finished supervised run (experiments_knobs.h). */
#include "experiments_knobs.h"

#include "../core/log.h"
#include "../eval/metrics.h"
#include "../eval/teacher_quality.h"
#include "../report/table.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const km_box_rule k_rules[KM_KNOBS_NRULES] = {KM_BOX_ALL, KM_BOX_LARGEST, KM_BOX_PER_COMPONENT};

/* DIR/knobs/<dataset>/<fraction>/<method>/seed<k>/<rule><ext> */
static void knobs_path(const char *out, const km_knobs_run *r, km_box_rule rule, const char *ext, char *buf,
                       size_t n) {
    snprintf(buf, n, "%s/knobs/%s/%s/%s/seed%d/%s%s", out, r->dataset, r->fraction, r->method, r->seed,
             km_box_rule_name(rule), ext);
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

enum { C_N, C_TEACHER, C_STUDENT, C_GAIN, C_NOBOX, C_EMPTY, C_ORIG, C_SEC, NVAL };
static const char *const k_cols[5 + NVAL] = {"dataset", "fraction",     "method",       "seed",
                                             "box_rule", "n_val",       "teacher_dice", "student_dice",
                                             "gain",    "no_box",       "empty_teacher", "teacher_dice_orig",
                                             "seconds"};

/* The one-row CSV of a measured run x rule, atomically (the "done" mark). */
static km_status write_row(const char *path, const km_knobs_run *r, km_box_rule rule, const km_tq_result *q) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return km_err(KM_ENOMEM, "cannot build %s", path);
    for (int k = 0; k < 5 + NVAL; k++) fprintf(f, "%s%s", k ? "," : "", k_cols[k]);
    fprintf(f, "\n%s,%s,%s,%d,%s,%d,%.9g,%.9g,%.9g,%d,%d,%.9g,%.3f\n", r->dataset, r->fraction, r->method, r->seed,
            km_box_rule_name(rule), q->n, q->teacher_dice_crop, q->student_dice,
            q->teacher_dice_crop - q->student_dice, q->no_box, q->empty_teacher, q->mean_dice, q->seconds);
    fclose(f);
    km_status s = km_write_file_atomic(path, buf, len);
    free(buf); /* open_memstream buffer: plain malloc */
    return s;
}

static km_status measure_one(const char *out, const km_knobs_run *r, km_box_rule rule,
                             const km_refine_config *teacher, int size, km_tq_result *q) {
    char dir[4096], weights[4096], splits[4096], csv[4096];
    knobs_path(out, r, rule, "", dir, sizeof dir);
    knobs_path(out, r, rule, ".csv", csv, sizeof csv);
    snprintf(weights, sizeof weights, "%s/best.safetensors", r->run_dir);
    snprintf(splits, sizeof splits, "%s/splits", r->run_dir);
    km_tq_config c;
    memset(&c, 0, sizeof c);
    c.data = r->data_path;
    c.out = dir;
    c.split_dir = splits;
    c.split = 1; /* val: never the test split */
    c.prompts = KM_TQ_STUDENT;
    c.weights = weights;
    c.size = size;
    c.teacher = *teacher;
    c.teacher.box_rule = rule;
    km_status s = km_teacher_quality_run(&c, NULL, q);
    if (!s) s = write_row(csv, r, rule, q);
    if (s) return km_err_prefix(s, "knobs: %s, box rule %s: ", r->run_dir, km_box_rule_name(rule));
    return KM_OK;
}

km_status km_knobs_measure(const char *out, const km_knobs_run *runs, int n, const km_refine_config *teacher,
                           int size, FILE *log, int *measured) {
    *measured = 0;
    const int total = n * KM_KNOBS_NRULES;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < KM_KNOBS_NRULES; k++) {
            const km_knobs_run *r = &runs[i];
            char csv[4096];
            knobs_path(out, r, k_rules[k], ".csv", csv, sizeof csv);
            int at = i * KM_KNOBS_NRULES + k + 1;
            const char *rule = km_box_rule_name(k_rules[k]);
            if (exists(csv)) {
                if (log) fprintf(log, "[knobs %d/%d] %s/%s/%s/seed%d %s: skipped (measured earlier)\n", at, total,
                                 r->dataset, r->fraction, r->method, r->seed, rule);
                continue;
            }
            if (log) {
                fprintf(log, "[knobs %d/%d] %s/%s/%s/seed%d %s: measuring on the val split\n", at, total, r->dataset,
                        r->fraction, r->method, r->seed, rule);
                fflush(log);
            }
            km_tq_result q;
            km_status s = measure_one(out, r, k_rules[k], teacher, size, &q);
            if (s) return s;
            (*measured)++;
            if (log) {
                fprintf(log, "[knobs %d/%d] %s/%s/%s/seed%d %s: %d val images, teacher %.4f, student %.4f, gain "
                        "%+.4f, %d without a box, %.1f s\n", at, total, r->dataset, r->fraction, r->method, r->seed,
                        rule, q.n, q.teacher_dice_crop, q.student_dice, q.teacher_dice_crop - q.student_dice, q.no_box,
                        q.seconds);
                fflush(log);
            }
        }
    return KM_OK;
}

/* ---- knobs.md ---- */

/* The values of one CSV (NVAL numbers); 0 when it does not exist. */
static km_status read_row(const char *path, double v[NVAL], int *found) {
    *found = 0;
    if (!exists(path)) return KM_OK;
    km_table t;
    km_status s = km_table_load(path, &t);
    if (s) return s;
    if (t.nrows != 1) s = km_err(KM_EFORMAT, "%s: expected one row, found %d", path, t.nrows);
    for (int k = 0; k < NVAL && !s; k++) {
        int c = km_table_col(&t, k_cols[5 + k]);
        if (c < 0) s = km_err(KM_EFORMAT, "%s: no '%s' column", path, k_cols[5 + k]);
        else v[k] = km_table_num(&t, 0, c);
    }
    km_table_free(&t);
    *found = !s;
    return s;
}

/* Runs of the same dataset, fraction and method as runs[i]. */
static int same_group(const km_knobs_run *a, const km_knobs_run *b) {
    return !strcmp(a->dataset, b->dataset) && !strcmp(a->fraction, b->fraction) && !strcmp(a->method, b->method);
}

typedef struct {
    int n;
    double mean[NVAL], std[NVAL];
} rule_agg;

/* Mean and sample std over the group's seeds of each value, per rule. */
static km_status group_agg(const char *out, const km_knobs_run *runs, int n, int g, rule_agg agg[KM_KNOBS_NRULES],
                           int *missing) {
    double *x = km_malloc(sizeof(double) * NVAL * (size_t)(n + 1));
    km_status s = KM_OK;
    for (int k = 0; k < KM_KNOBS_NRULES && !s; k++) {
        agg[k].n = 0;
        for (int i = g; i < n && !s; i++) {
            if (!same_group(&runs[g], &runs[i])) continue;
            char p[4096];
            double v[NVAL];
            int found;
            knobs_path(out, &runs[i], k_rules[k], ".csv", p, sizeof p);
            s = read_row(p, v, &found);
            if (!found) (*missing)++;
            for (int c = 0; found && c < NVAL; c++) x[c * (n + 1) + agg[k].n] = v[c];
            agg[k].n += found;
        }
        for (int c = 0; c < NVAL; c++) km_mean_std(&x[c * (n + 1)], agg[k].n, &agg[k].mean[c], &agg[k].std[c]);
    }
    km_free(x);
    return s;
}

static void cell(FILE *f, const rule_agg *a, int c) {
    if (!a->n) {
        fprintf(f, " - |");
        return;
    }
    fprintf(f, c == C_GAIN ? " %+.4f" : " %.4f", a->mean[c]);
    if (a->n == 1) fprintf(f, " (n=1) |");
    else fprintf(f, " ± %.4f |", a->std[c]);
}

static void group_md(FILE *f, const km_knobs_run *r, const rule_agg agg[KM_KNOBS_NRULES]) {
    int best = -1;
    for (int k = 0; k < KM_KNOBS_NRULES; k++)
        if (agg[k].n && (best < 0 || agg[k].mean[C_GAIN] > agg[best].mean[C_GAIN])) best = k;
    fprintf(f, "\n## %s, %s labelled, %s\n\n", r->dataset, r->fraction, r->method);
    fprintf(f, "| box rule | seeds | val images | pseudo-label Dice | student's Dice | teacher's gain | no box | |\n"
               "|---|---|---|---|---|---|---|---|\n");
    for (int k = 0; k < KM_KNOBS_NRULES; k++) {
        const rule_agg *a = &agg[k];
        fprintf(f, "| %s | %d |", km_box_rule_name(k_rules[k]), a->n);
        if (a->n) fprintf(f, " %.0f |", a->mean[C_N]);
        else fprintf(f, " - |");
        cell(f, a, C_TEACHER);
        cell(f, a, C_STUDENT);
        cell(f, a, C_GAIN);
        if (a->n) fprintf(f, " %.1f |", a->mean[C_NOBOX]);
        else fprintf(f, " - |");
        fprintf(f, " %s |\n", k == best ? "**chosen**" : "");
    }
}

km_status km_knobs_write_md(const char *out, const km_knobs_run *runs, int n, const char *grid_rule) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return km_err(KM_ENOMEM, "cannot build knobs.md");
    fprintf(f, "# kmseg experiments: knobs chosen on validation\n\n"
               "The teacher's gain per box rule, on the labelled VALIDATION split of each finished supervised run "
               "(never the test split): the run's best checkpoint prompts the teacher as mining does; scores in the "
               "student's frame, mean per-image Dice. Teacher's gain = pseudo-label Dice - student's Dice on the same "
               "images. Cells: mean ± sample std (ddof 1) over seeds (\"(n=1)\": one seed); \"no box\": mean number "
               "of val images whose prediction gave no box. **chosen**: the highest mean gain. The grid's mining "
               "runs use the box rule %s.\n", grid_rule);
    km_status s = KM_OK;
    int missing = 0;
    for (int g = 0; g < n && !s; g++) {
        int first = 1;
        for (int i = 0; i < g; i++) first &= !same_group(&runs[i], &runs[g]);
        if (!first) continue;
        rule_agg agg[KM_KNOBS_NRULES];
        s = group_agg(out, runs, n, g, agg, &missing);
        if (!s) group_md(f, &runs[g], agg);
    }
    if (missing) fprintf(f, "\n%d run x rule measurement(s) not made yet (kmseg experiments --knobs).\n", missing);
    if (!n) fprintf(f, "\nNo finished supervised run yet.\n");
    fclose(f);
    char path[4096];
    snprintf(path, sizeof path, "%s/knobs.md", out);
    if (!s) s = km_write_file_atomic(path, buf, len);
    free(buf); /* open_memstream buffer: plain malloc */
    return s;
}

km_status km_best_val_epoch(const char *run_dir, double *loss, double *dice, int *found) {
    char p[4096];
    snprintf(p, sizeof p, "%s/metrics.csv", run_dir);
    *found = 0;
    *loss = *dice = NAN;
    if (!exists(p)) return KM_OK;
    km_table t;
    km_status s = km_table_load(p, &t);
    if (s) return s;
    int ce = km_table_col(&t, "epoch"), cl = km_table_col(&t, "val_loss"), cd = km_table_col(&t, "val_dice");
    if (ce < 0 || cl < 0 || cd < 0) s = km_err(KM_EFORMAT, "%s: expected epoch, val_loss and val_dice columns", p);
    for (int r = 0; r < t.nrows && !s; r++) {
        double l = km_table_num(&t, r, cl);
        if (km_table_num(&t, r, ce) >= 1 && isfinite(l) && (!*found || l < *loss)) {
            *loss = l;
            *dice = km_table_num(&t, r, cd);
            *found = 1;
        }
    }
    km_table_free(&t);
    return s;
}
