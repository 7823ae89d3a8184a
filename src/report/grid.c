/* grid.c - the page of an experiments folder (kmseg experiments); see
 * report.h. Everything comes from results.csv (and each run's
 * metrics.csv for the learning curves). */
#include "mining.h"
#include "page.h"
#include "svg.h"
#include "table.h"

#include <math.h>
#include <string.h>

enum { C_KIND, C_DATA, C_FRAC, C_METH, C_SEED, C_NSEEDS, C_NTEST, C_DM, C_DS, C_IM, C_IS, C_DIR, NCOL };
static const char *const k_cols[NCOL] = {"kind", "dataset", "fraction", "method", "seed", "n_seeds",
                                         "n_test", "dice_mean", "dice_std", "iou_mean", "iou_std", "run_dir"};

typedef struct {
    const char *dir, *out;
    km_table t;
    int col[NCOL];
    const char *ds[16], *fr[16], *me[16]; /* distinct values, in order of first appearance */
    int nds, nfr, nme, max_seeds;
} grid;

static int add_unique(const char **v, int *n, const char *s) {
    for (int i = 0; i < *n; i++)
        if (!strcmp(v[i], s)) return i;
    if (*n >= 16) return -1;
    v[*n] = s;
    return (*n)++;
}

static const char *cell(const grid *g, int row, int c) { return km_table_str(&g->t, row, g->col[c]); }
static double num(const grid *g, int row, int c) { return km_table_num(&g->t, row, g->col[c]); }
static int is_run(const grid *g, int row) { return !strcmp(cell(g, row, C_KIND), "run"); }

static km_status load_grid(grid *g) {
    char *p = km_path_join(g->dir, "results.csv");
    km_status s = km_table_load(p, &g->t);
    for (int c = 0; c < NCOL && !s; c++)
        if ((g->col[c] = km_table_col(&g->t, k_cols[c])) < 0)
            s = km_err(KM_EFORMAT, "%s: no '%s' column", p, k_cols[c]);
    for (int i = 0; i < g->t.nrows && !s; i++) {
        if (strcmp(cell(g, i, C_KIND), "run") && strcmp(cell(g, i, C_KIND), "mean"))
            s = km_err(KM_EFORMAT, "%s: row %d: kind '%s', expected run or mean", p, i + 2, cell(g, i, C_KIND));
        else if (add_unique(g->ds, &g->nds, cell(g, i, C_DATA)) < 0 || add_unique(g->fr, &g->nfr, cell(g, i, C_FRAC)) < 0 ||
                 add_unique(g->me, &g->nme, cell(g, i, C_METH)) < 0)
            s = km_err(KM_EFORMAT, "%s: more than 16 datasets, fractions or methods", p);
        else if (!is_run(g, i) && num(g, i, C_NSEEDS) > g->max_seeds)
            g->max_seeds = (int)num(g, i, C_NSEEDS);
    }
    km_free(p);
    return s;
}

/* Row of kind `kind` for dataset d, fraction f, method m (and seed text for
 * runs, NULL for means); -1 if none. */
static int find(const grid *g, const char *kind, int d, int f, int m, const char *seed) {
    for (int i = 0; i < g->t.nrows; i++)
        if (!strcmp(cell(g, i, C_KIND), kind) && !strcmp(cell(g, i, C_DATA), g->ds[d]) &&
            !strcmp(cell(g, i, C_FRAC), g->fr[f]) && !strcmp(cell(g, i, C_METH), g->me[m]) &&
            (!seed || !strcmp(cell(g, i, C_SEED), seed)))
            return i;
    return -1;
}

static void score_table(km_html *h, const grid *g, int d, int metric) {
    int cm = metric ? C_IM : C_DM, cs = metric ? C_IS : C_DS;
    km_html_raw(h, "<table class=\"scores\"><caption>");
    km_html_text(h, g->ds[d]);
    km_html_raw(h, metric ? " - IoU" : " - Dice");
    km_html_raw(h, " (test split, mean ± sample std over seeds; bold and * = best in the column)</caption>\n"
                   "<tr><th scope=\"col\">method</th>");
    for (int f = 0; f < g->nfr; f++) {
        km_html_raw(h, "<th scope=\"col\">");
        km_html_num(h, 100 * strtod(g->fr[f], NULL), 0, "?");
        km_html_raw(h, "% labelled</th>");
    }
    km_html_raw(h, "</tr>\n");
    for (int m = 0; m < g->nme; m++) {
        km_html_raw(h, "<tr><th scope=\"row\">");
        km_html_text(h, g->me[m]);
        km_html_raw(h, "</th>");
        for (int f = 0; f < g->nfr; f++) {
            int r = find(g, "mean", d, f, m, NULL), best = 1;
            for (int m2 = 0; m2 < g->nme && r >= 0; m2++) {
                int r2 = find(g, "mean", d, f, m2, NULL);
                if (r2 >= 0 && num(g, r2, cm) > num(g, r, cm)) best = 0;
            }
            km_html_raw(h, "<td class=\"num\">");
            if (r < 0) {
                km_html_raw(h, "- (no finished run)</td>");
                continue;
            }
            km_html_raw(h, best ? "<strong class=\"best\">" : "");
            km_html_num(h, num(g, r, cm), 4, "-");
            int n = (int)num(g, r, C_NSEEDS);
            if (n > 1) {
                km_html_raw(h, " ± ");
                km_html_num(h, num(g, r, cs), 4, "-");
            } else {
                km_html_raw(h, " (n=1)");
            }
            km_html_raw(h, best ? "</strong> *" : "");
            if (n < g->max_seeds) km_html_printf(h, " (%d of %d seeds: runs missing)", n, g->max_seeds);
            km_html_raw(h, "</td>");
        }
        km_html_raw(h, "</tr>\n");
    }
    km_html_raw(h, "</table>\n");
}

static void fraction_chart(km_html *h, const grid *g, int d) {
    km_series s[32];
    int ns = 0, cap = g->t.nrows + 1;
    double *buf = km_malloc(sizeof(double) * 6 * (size_t)cap * 16); /* per method: mean x, y, lo, hi; dots x, y */
    for (int m = 0; m < g->nme && ns + 2 <= 32; m++) {
        km_series *mean = &s[ns], *dots = &s[ns + 1];
        double *mx = buf + (size_t)6 * cap * m, *my = mx + cap, *lo = my + cap, *hi = lo + cap, *dx = hi + cap,
               *dy = dx + cap;
        int nm = 0, nd = 0;
        for (int i = 0; i < g->t.nrows; i++) {
            if (strcmp(cell(g, i, C_DATA), g->ds[d]) || strcmp(cell(g, i, C_METH), g->me[m])) continue;
            double x = 100 * num(g, i, C_FRAC), y = num(g, i, C_DM), sd = num(g, i, C_DS);
            if (is_run(g, i)) dx[nd] = x, dy[nd++] = y;
            else mx[nm] = x, my[nm] = y, lo[nm] = y - sd, hi[nm++] = y + sd;
        }
        *mean = (km_series){g->me[m], nm, mx, my, lo, hi, KM_SERIES_LINE, 0, m};
        *dots = (km_series){NULL, nd, dx, dy, NULL, NULL, KM_SERIES_DOTS, 0, m};
        ns += 2;
    }
    char names[32][160];
    for (int k = 1; k < ns; k += 2) {
        snprintf(names[k], sizeof names[k], "%s, one dot per seed", s[k - 1].name);
        s[k].name = names[k];
    }
    km_rule base[1];
    int nb = 0;
    for (int f = 0; f < g->nfr; f++)
        for (int m = 0; m < g->nme; m++) {
            int r = find(g, "mean", d, f, m, NULL);
            if (r >= 0 && !strcmp(g->me[m], "supervised") && num(g, r, C_FRAC) == 1)
                base[0] = (km_rule){num(g, r, C_DM), "supervised @100%"}, nb = 1;
        }
    char id[64], title[512];
    snprintf(id, sizeof id, "frac-%d", d);
    snprintf(title, sizeof title, "%s: test Dice against labelled fraction", g->ds[d]);
    km_chart c = {id, title,
                  nb ? "Per method: mean over seeds with error bars of one sample std, and one dot per seed; "
                       "the dashed black line is the fully supervised run's mean at 100 % labels."
                     : "Per method: mean over seeds with error bars of one sample std, and one dot per seed "
                       "(no supervised run at 100 % labels in this grid).",
                  "labelled fraction (%)", "test Dice", 0, 0, 340, s, ns, NULL, 0, base, nb, 0, 4, 0};
    km_svg_chart(h, &c);
    km_free(buf);
}

/* The folder of run row i: DIR/<dataset>/<fraction>/<method>/seed<k> when it
 * exists (the experiments folder may have moved), else its run_dir. */
static char *run_dir(const grid *g, int i) {
    return km_page_run_folder(g->dir, cell(g, i, C_DATA), cell(g, i, C_FRAC), cell(g, i, C_METH), cell(g, i, C_SEED),
                              cell(g, i, C_DIR));
}

/* val_dice per epoch (epoch e at [e - 1], NaN when missing) of a run; the
 * number of epochs, 0 when its metrics.csv is not readable. */
static int val_curve(const char *rd, double *y, int cap) {
    char *p = km_path_join(rd, "metrics.csv");
    km_table t;
    int n = 0;
    if (km_page_exists(p) && km_table_load(p, &t) == KM_OK) {
        int ce = km_table_col(&t, "epoch"), cv = km_table_col(&t, "val_dice");
        for (int i = 0; i < cap; i++) y[i] = NAN;
        for (int r = 0; r < t.nrows; r++) {
            double e = km_table_num(&t, r, ce);
            if (isfinite(e) && e >= 1 && e <= cap) {
                y[(int)e - 1] = km_table_num(&t, r, cv);
                if ((int)e > n) n = (int)e;
            }
        }
        km_table_free(&t);
    }
    km_err_clear();
    km_free(p);
    return n;
}

enum { MAXE = 512 };

static void learning_chart(km_html *h, const grid *g, int d, int f) {
    km_series s[16];
    static double xs[MAXE], buf[16][3][MAXE], y[MAXE];
    int ns = 0;
    for (int e = 0; e < MAXE; e++) xs[e] = e + 1;
    for (int m = 0; m < g->nme && ns < 16; m++) {
        if (km_page_derived_method(g->me[m])) continue; /* rows over the same runs' curves */
        double *mean = buf[ns][0], *lo = buf[ns][1], *hi = buf[ns][2];
        int cnt[MAXE] = {0}, ne = 0;
        for (int e = 0; e < MAXE; e++) mean[e] = 0, lo[e] = INFINITY, hi[e] = -INFINITY;
        for (int i = 0; i < g->t.nrows; i++) {
            if (!is_run(g, i) || strcmp(cell(g, i, C_DATA), g->ds[d]) || strcmp(cell(g, i, C_FRAC), g->fr[f]) ||
                strcmp(cell(g, i, C_METH), g->me[m]))
                continue;
            char *rd = run_dir(g, i);
            int n = val_curve(rd, y, MAXE);
            km_free(rd);
            if (n > ne) ne = n;
            for (int e = 0; e < n; e++) {
                if (!isfinite(y[e])) continue;
                mean[e] += y[e];
                cnt[e]++;
                if (y[e] < lo[e]) lo[e] = y[e];
                if (y[e] > hi[e]) hi[e] = y[e];
            }
        }
        if (!ne) continue;
        for (int e = 0; e < ne; e++)
            if (cnt[e]) mean[e] /= cnt[e];
            else mean[e] = lo[e] = hi[e] = NAN;
        s[ns] = (km_series){g->me[m], ne, xs, mean, lo, hi, KM_SERIES_LINE, 1, m};
        ns++;
    }
    char id[64], title[512];
    snprintf(id, sizeof id, "learn-%d-%d", d, f);
    char pct[64];
    snprintf(pct, sizeof pct, "%g", 100 * strtod(g->fr[f], NULL));
    snprintf(title, sizeof title, "%s, %s%% labelled: validation Dice per epoch", g->ds[d], pct);
    km_chart c = {id, title, "Mean over seeds (line) with the min-max range over seeds (band), per method that trains "
                  "(+refined and +start-competes rows reuse those runs). Epochs of each run's "
                  "own phase: mining runs count mining epochs, starting from the supervised run's best checkpoint.",
                  "epoch", "val Dice", 0, 0, 0, s, ns, NULL, 0, NULL, 0, 0, 4, 1};
    km_svg_chart(h, &c);
}

static void deltas(km_html *h, const grid *g, int d) {
    int sup = -1;
    for (int m = 0; m < g->nme; m++)
        if (!strcmp(g->me[m], "supervised")) sup = m;
    if (sup < 0 || g->nme < 2) return;
    km_html_raw(h, "<table><caption>");
    km_html_text(h, g->ds[d]);
    km_html_raw(h, ": per-seed test Dice difference, method - supervised (same fraction, same seed)</caption>\n"
                   "<tr><th scope=\"col\">fraction</th><th scope=\"col\">method</th><th scope=\"col\">seed</th>"
                   "<th scope=\"col\">Dice - supervised Dice</th></tr>\n");
    for (int f = 0; f < g->nfr; f++)
        for (int m = 0; m < g->nme; m++) {
            if (m == sup) continue;
            for (int i = 0; i < g->t.nrows; i++) {
                if (!is_run(g, i) || strcmp(cell(g, i, C_DATA), g->ds[d]) || strcmp(cell(g, i, C_FRAC), g->fr[f]) ||
                    strcmp(cell(g, i, C_METH), g->me[m]))
                    continue;
                int r = find(g, "run", d, f, sup, cell(g, i, C_SEED));
                km_html_raw(h, "<tr><td>");
                km_html_text(h, g->fr[f]);
                km_html_raw(h, "</td><td>");
                km_html_text(h, g->me[m]);
                km_html_raw(h, "</td><td>");
                km_html_text(h, cell(g, i, C_SEED));
                km_html_raw(h, "</td><td class=\"num\">");
                km_html_num(h, r < 0 ? NAN : num(g, i, C_DM) - num(g, r, C_DM), 4, "- (no supervised run)");
                km_html_raw(h, "</td></tr>\n");
            }
        }
    km_html_raw(h, "</table>\n");
}

/* Sum of the seconds column of a run's own metrics.csv (NaN if unreadable). */
static double run_seconds(const char *rd) {
    char *p = km_path_join(rd, "metrics.csv");
    km_table t;
    double sum = NAN;
    if (km_page_exists(p) && km_table_load(p, &t) == KM_OK) {
        int c = km_table_col(&t, "seconds");
        sum = 0;
        for (int r = 0; r < t.nrows; r++) {
            double v = km_table_num(&t, r, c);
            if (isfinite(v)) sum += v;
        }
        km_table_free(&t);
    }
    km_err_clear();
    km_free(p);
    return sum;
}

/* Every run: scores as results.csv has them, time, status and its report. */
static void inventory(km_html *h, const grid *g) {
    km_html_raw(h, "<h2>Runs</h2>\n<table><caption>Every run of results.csv (scores exactly as written there)"
                   "</caption>\n<tr><th scope=\"col\">dataset</th><th scope=\"col\">fraction</th><th scope=\"col\">"
                   "method</th><th scope=\"col\">seed</th><th scope=\"col\">test images</th><th scope=\"col\">Dice</th>"
                   "<th scope=\"col\">IoU</th><th scope=\"col\">epochs' time (s)</th><th scope=\"col\">status</th>"
                   "<th scope=\"col\">report</th></tr>\n");
    for (int i = 0; i < g->t.nrows; i++) {
        if (!is_run(g, i)) continue;
        static const int cols[] = {C_DATA, C_FRAC, C_METH, C_SEED, C_NTEST, C_DM, C_IM};
        km_html_raw(h, "<tr class=\"run\">");
        for (int k = 0; k < 7; k++) {
            km_html_raw(h, k >= 4 ? "<td class=\"num\">" : "<td>");
            km_html_text(h, cell(g, i, cols[k]));
            km_html_raw(h, "</td>");
        }
        char *rd = run_dir(g, i), *sj = km_path_join(rd, "eval/summary.json"), *rp = km_path_join(rd, "report.html");
        km_html_raw(h, "<td class=\"num\">");
        km_html_num(h, run_seconds(rd), 1, "-");
        km_html_raw(h, "</td>");
        km_html_raw(h, km_page_exists(sj) ? "<td>finished</td><td>" : "<td>no eval/summary.json</td><td>");
        if (km_page_exists(rp)) {
            char *rel = km_page_relpath(g->out, rp);
            km_html_raw(h, "<a href=\"");
            km_page_href(h, rel);
            km_html_raw(h, "\">run report</a>");
            km_free(rel);
        } else {
            km_html_raw(h, "-");
        }
        km_html_raw(h, "</td></tr>\n");
        km_free(rd);
        km_free(sj);
        km_free(rp);
    }
    km_html_raw(h, "</table>\n");
}

/* The teacher's gain and the cost per epoch (mining.h); nothing when no run
 * can be read. */
static void mining_section(km_html *h, const grid *g) {
    km_mining_row *rows;
    int n, skipped;
    if (km_mining_summary(g->dir, &rows, &n, &skipped) == KM_OK && n) {
        km_html_raw(h, "<h2>Mining: the teacher's gain and the cost</h2>\n");
        km_mining_html(h, rows, n);
        if (skipped) km_html_printf(h, "<p>%d run(s) left out: metrics.csv not readable.</p>\n", skipped);
    }
    km_err_clear();
    km_free(rows);
}

static km_status run_reports(const grid *g, const km_report_opts *o) {
    km_status s = KM_OK;
    for (int i = 0; i < g->t.nrows && !s; i++) {
        if (!is_run(g, i)) continue;
        char *rd = run_dir(g, i), *rp = km_path_join(rd, "report.html");
        if (!km_page_exists(rd)) {
            if (o->log) fprintf(o->log, "report: warning: run folder %s not found, no report for it\n", rd);
        } else {
            if (o->log) fprintf(o->log, "report: run %s\n", rd);
            s = km_report_run(rd, rp, o);
        }
        if (s) km_err_prefix(s, "run report of %s: ", rd);
        km_free(rd);
        km_free(rp);
    }
    return s;
}

km_status km_report_grid(const char *dir, const char *out, const km_report_opts *o) {
    grid g;
    memset(&g, 0, sizeof g);
    g.dir = dir;
    char *def = out ? NULL : km_path_join(dir, "report.html");
    g.out = out ? out : def;
    km_status s = load_grid(&g);
    if (!s && o->run_reports) s = run_reports(&g, o);
    km_html h;
    km_html_init(&h);
    if (!s) {
        char title[1024];
        snprintf(title, sizeof title, "kmseg experiments: %s", dir);
        km_page_begin(&h, title);
        km_html_printf(&h, "<p>%d dataset(s), %d labelled fraction(s), %d method(s), up to %d seed(s); from "
                           "results.csv (test-split mean per-image scores of each run's best checkpoint).</p>\n",
                       g.nds, g.nfr, g.nme, g.max_seeds);
        for (int d = 0; d < g.nds; d++) {
            km_html_raw(&h, "<h2>");
            km_html_text(&h, g.ds[d]);
            km_html_raw(&h, "</h2>\n<h3>Tables</h3>\n");
            score_table(&h, &g, d, 0);
            score_table(&h, &g, d, 1);
            km_html_raw(&h, "<h3>Dice against labelled fraction</h3>\n");
            fraction_chart(&h, &g, d);
            km_html_raw(&h, "<h3>Learning curves</h3>\n");
            for (int f = 0; f < g.nfr; f++) learning_chart(&h, &g, d, f);
            km_html_raw(&h, "<h3>Per-seed differences</h3>\n");
            deltas(&h, &g, d);
        }
        mining_section(&h, &g);
        inventory(&h, &g);
        km_page_end(&h);
        s = km_page_save(&h, g.out, o->log);
    }
    km_html_free(&h);
    km_table_free(&g.t);
    km_free(def);
    return s;
}
