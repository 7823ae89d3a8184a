/* mining.c - the teacher's gain and the cost of mining per experiments
 * folder; see mining.h. */
#include "mining.h"
#include "page.h"
#include "table.h"

#include <math.h>
#include <string.h>

/* Means over the epoch >= 1 rows of one run's metrics.csv into v (NaN where
 * the column is absent or has no finite value). */
static km_status run_values(const char *rd, double v[KM_MQ_N]) {
    char *p = km_path_join(rd, "metrics.csv");
    km_table t;
    km_status s = km_table_load(p, &t);
    km_free(p);
    if (s) return s;
    enum { PD, SD, NB, UV, SEC, ENC, DEC, EP, TC, NC };
    static const char *const names[NC] = {"pseudo_dice",     "student_unl_dice", "no_box", "unl_visits", "seconds",
                                          "encoder_seconds", "decoder_seconds",  "epoch",  "teacher_calls"};
    int c[NC];
    for (int k = 0; k < NC; k++) c[k] = km_table_col(&t, names[k]);
    double sum[KM_MQ_N] = {0};
    int cnt[KM_MQ_N] = {0}, epochs = 0;
    for (int r = 0; r < t.nrows; r++) {
        double x[NC];
        for (int k = 0; k < NC; k++) x[k] = km_table_num(&t, r, c[k]);
        if (!(x[EP] >= 1)) continue;
        epochs++;
        double got[KM_MQ_N] = {x[PD], x[SD], x[PD] - x[SD], x[UV] > 0 && x[TC] > 0 ? 100 * x[NB] / x[UV] : NAN, x[SEC],
                               x[ENC] + x[DEC], NAN};
        for (int k = 0; k < KM_MQ_EPOCHS; k++)
            if (isfinite(got[k])) sum[k] += got[k], cnt[k]++;
    }
    km_table_free(&t);
    for (int k = 0; k < KM_MQ_EPOCHS; k++) v[k] = cnt[k] ? sum[k] / cnt[k] : NAN;
    v[KM_MQ_EPOCHS] = epochs;
    return KM_OK;
}

/* Index of the row for (dataset, fraction, method), appended when new
 * (rows has room for one per results.csv row). */
static int row_for(km_mining_row *rows, int *n, const char *d, const char *f, const char *m) {
    for (int i = 0; i < *n; i++)
        if (!strcmp(rows[i].dataset, d) && !strcmp(rows[i].fraction, f) && !strcmp(rows[i].method, m)) return i;
    km_mining_row *r = &rows[*n];
    snprintf(r->dataset, sizeof r->dataset, "%s", d);
    snprintf(r->fraction, sizeof r->fraction, "%s", f);
    snprintf(r->method, sizeof r->method, "%s", m);
    return (*n)++;
}


/* Per-run values of every finished run, grouped: vals[row][seed][k]. */
typedef struct {
    double v[16][KM_MQ_N];
} seeds_vals;

static void finish(km_mining_row *r, const seeds_vals *sv) {
    for (int k = 0; k < KM_MQ_N; k++) {
        double s = 0, ss = 0;
        int m = 0;
        for (int j = 0; j < r->n; j++)
            if (isfinite(sv->v[j][k])) s += sv->v[j][k], m++;
        r->mean[k] = m ? s / m : NAN;
        for (int j = 0; j < r->n; j++)
            if (isfinite(sv->v[j][k])) ss += (sv->v[j][k] - r->mean[k]) * (sv->v[j][k] - r->mean[k]);
        r->std[k] = m > 1 ? sqrt(ss / (m - 1)) : NAN;
    }
}

km_status km_mining_summary(const char *dir, km_mining_row **rows, int *n, int *skipped) {
    *rows = NULL;
    *n = *skipped = 0;
    char *p = km_path_join(dir, "results.csv");
    km_table t;
    km_status s = km_table_load(p, &t);
    static const char *const cols[6] = {"kind", "dataset", "fraction", "method", "seed", "run_dir"};
    int c[6];
    for (int k = 0; k < 6 && !s; k++)
        if ((c[k] = km_table_col(&t, cols[k])) < 0) s = km_err(KM_EFORMAT, "%s: no '%s' column", p, cols[k]);
    seeds_vals *sv = s ? NULL : km_calloc(((size_t)t.nrows + 1) * sizeof *sv);
    if (!s) *rows = km_calloc(((size_t)t.nrows + 1) * sizeof **rows);
    for (int i = 0; !s && i < t.nrows; i++) {
        /* "+refined", "+start-competes" rows are the same runs again */
        if (strcmp(km_table_str(&t, i, c[0]), "run") || km_page_derived_method(km_table_str(&t, i, c[3]))) continue;
        int r = row_for(*rows, n, km_table_str(&t, i, c[1]), km_table_str(&t, i, c[2]), km_table_str(&t, i, c[3]));
        char *rd = km_page_run_folder(dir, km_table_str(&t, i, c[1]), km_table_str(&t, i, c[2]),
                                      km_table_str(&t, i, c[3]), km_table_str(&t, i, c[4]), km_table_str(&t, i, c[5]));
        double v[KM_MQ_N];
        if (run_values(rd, v) || (*rows)[r].n >= 16) {
            km_err_clear();
            (*skipped)++;
        } else {
            memcpy(sv[r].v[(*rows)[r].n++], v, sizeof v);
        }
        km_free(rd);
    }
    for (int r = 0; !s && r < *n; r++) finish(&(*rows)[r], &sv[r]);
    km_free(sv);
    km_table_free(&t);
    km_free(p);
    if (s) {
        km_free(*rows);
        *rows = NULL;
        *n = 0;
    }
    return s;
}

static const char *const k_head[KM_MQ_N] = {"pseudo-label Dice", "student's Dice, same images", "teacher's gain",
                                            "no box (% of visits)", "s / epoch", "teacher s / epoch", "epochs"};
static const int k_digits[KM_MQ_N] = {4, 4, 4, 1, 1, 1, 1};

static void md_cell(FILE *f, const km_mining_row *r, int k) {
    if (!isfinite(r->mean[k]))
        fprintf(f, " - |");
    else if (isfinite(r->std[k]))
        fprintf(f, " %.*f ± %.*f |", k_digits[k], r->mean[k], k_digits[k], r->std[k]);
    else
        fprintf(f, " %.*f |", k_digits[k], r->mean[k]);
}

void km_mining_md(FILE *f, const km_mining_row *rows, int n) {
    fprintf(f, "## Mining: the teacher's gain and the cost per epoch\n\nPer run, means over its mining epochs "
               "(supervised: its epochs); cells: mean ± sample std over the finished seeds. Pseudo-label and "
               "student Dice are on the unlabelled training images that got a pseudo label, against their "
               "hidden ground truth.\n\n| dataset | fraction | method | runs |");
    for (int k = 0; k < KM_MQ_N; k++) fprintf(f, " %s |", k_head[k]);
    fprintf(f, "\n|---|---|---|---|");
    for (int k = 0; k < KM_MQ_N; k++) fprintf(f, "---|");
    fprintf(f, "\n");
    for (int i = 0; i < n; i++) {
        fprintf(f, "| %s | %s | %s | %d |", rows[i].dataset, rows[i].fraction, rows[i].method, rows[i].n);
        for (int k = 0; k < KM_MQ_N; k++) md_cell(f, &rows[i], k);
        fprintf(f, "\n");
    }
}

void km_mining_html(km_html *h, const km_mining_row *rows, int n) {
    km_html_raw(h, "<table><caption>Mining: the teacher's gain and the cost per epoch (per run, means over its "
                   "mining epochs, supervised: its epochs; mean ± sample std over seeds)</caption>\n<tr>"
                   "<th scope=\"col\">dataset</th><th scope=\"col\">fraction</th><th scope=\"col\">method</th>"
                   "<th scope=\"col\">runs</th>");
    for (int k = 0; k < KM_MQ_N; k++) {
        km_html_raw(h, "<th scope=\"col\">");
        km_html_text(h, k_head[k]);
        km_html_raw(h, "</th>");
    }
    km_html_raw(h, "</tr>\n");
    for (int i = 0; i < n; i++) {
        const km_mining_row *r = &rows[i];
        km_html_raw(h, "<tr><td>");
        km_html_text(h, r->dataset);
        km_html_raw(h, "</td><td>");
        km_html_text(h, r->fraction);
        km_html_raw(h, "</td><td>");
        km_html_text(h, r->method);
        km_html_printf(h, "</td><td class=\"num\">%d</td>", r->n);
        for (int k = 0; k < KM_MQ_N; k++) {
            km_html_raw(h, "<td class=\"num\">");
            km_html_num(h, r->mean[k], k_digits[k], "-");
            if (isfinite(r->mean[k]) && isfinite(r->std[k])) {
                km_html_raw(h, " ± ");
                km_html_num(h, r->std[k], k_digits[k], "-");
            }
            km_html_raw(h, "</td>");
        }
        km_html_raw(h, "</tr>\n");
    }
    km_html_raw(h, "</table>\n");
}
