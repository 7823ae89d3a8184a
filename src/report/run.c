/* run.c - the page of one run folder (kmseg train / kmseg mine); see
 * report.h. */
#include "gallery.h"
#include "page.h"
#include "svg.h"
#include "table.h"

#include "../eval/metrics.h"
#include "../io/json.h"

#include <math.h>
#include <string.h>

typedef struct {
    const char *dir;
    int mining;
    char *cfg_name;    /* config.json / mine_config.json */
    km_json cfg;
    km_table met;      /* metrics.csv (mining: the mining phase) */
    km_table sup;      /* mining: the supervised phase (nrows 0 when not found) */
    char *sup_from;    /* where sup came from (NULL: not found) */
    km_table per;      /* eval/per_image.csv (ncols 0 when absent) */
    km_json summ;      /* eval/summary.json */
    int has_summ;
    int K;             /* supervised epochs drawn before the mining epochs */
    int n;             /* points on the epoch axis: sup rows + met rows */
    double *x;         /* [n] epoch axis */
    int best;          /* row of met with the lowest val loss, -1 if none */
    km_json last;      /* last.safetensors' header (has_last) */
    int has_last;
    km_rule *resumes;  /* [nres] resumes (resumes.csv, runfolder.h) on the epoch axis: a dashed, labelled rule */
    char **res_utc;    /* [nres] when each resume happened */
    int nres;
} run_info;

static char *joinp(const char *a, const char *b) { return km_path_join(a, b); }

static const char *cfg_str(const run_info *r, const char *key) {
    const km_json *v = km_json_get(&r->cfg, key);
    return v && v->type == KM_JSON_STR ? v->str : NULL;
}

static double cfg_num(const run_info *r, const km_json *j, const char *key) {
    const km_json *v = km_json_get(j ? j : &r->cfg, key);
    return v && v->type == KM_JSON_NUM ? v->num : NAN;
}

/* The supervised phase of a mining run: RUN/supervised, else the folder of
 * its --init checkpoint when that is a run folder. */
static void load_supervised(run_info *r) {
    char *cand[2] = {joinp(r->dir, "supervised"), NULL};
    const char *init = cfg_str(r, "init");
    if (init) {
        cand[1] = km_strdup(init);
        char *sl = strrchr(cand[1], '/');
        if (sl) *sl = 0;
        else strcpy(cand[1], ".");
    }
    for (int k = 0; k < 2 && !r->sup_from; k++) {
        if (!cand[k]) continue;
        char *p = joinp(cand[k], "metrics.csv");
        if (km_page_exists(p) && km_table_load(p, &r->sup) == KM_OK) r->sup_from = km_strdup(cand[k]);
        km_err_clear();
        km_free(p);
    }
    km_free(cand[0]);
    km_free(cand[1]);
}

/* The JSON header of a safetensors file (the tensors are not read). */
static km_status st_header(const char *path, km_json *out) {
    FILE *f = fopen(path, "rb");
    if (!f) return km_err(KM_EIO, "%s: cannot open", path);
    uint8_t b[8];
    uint64_t n = 0;
    km_status s = fread(b, 1, 8, f) == 8 ? KM_OK : km_err(KM_EFORMAT, "%s: truncated safetensors header", path);
    for (int i = 7; i >= 0 && !s; i--) n = n << 8 | b[i];
    if (!s && (n < 2 || n > ((uint64_t)100 << 20))) s = km_err(KM_EFORMAT, "%s: header length %llu out of range", path, (unsigned long long)n);
    char *t = s ? NULL : km_malloc((size_t)n);
    if (!s && fread(t, 1, (size_t)n, f) != n) s = km_err(KM_EFORMAT, "%s: truncated safetensors header", path);
    if (!s) s = km_json_parse(path, t, (size_t)n, out);
    km_free(t);
    fclose(f);
    return s;
}

/* Metadata value `key` of last.safetensors as a number (NaN when absent). */
static double last_meta(const run_info *r, const char *key) {
    const km_json *m = r->has_last ? km_json_get(&r->last, "__metadata__") : NULL, *v = m ? km_json_get(m, key) : NULL;
    if (!v || v->type != KM_JSON_STR) return NAN;
    char *end;
    double x = strtod(v->str, &end);
    return *end ? NAN : x;
}

/* The resumes recorded in <dir>/resumes.csv (none without the file), each
 * drawn at x = x0 + the epoch it went on from. */
static km_status load_resumes(run_info *r, const char *dir, double x0, const char *what) {
    char *p = joinp(dir, "resumes.csv");
    km_table t;
    memset(&t, 0, sizeof t);
    km_status s = km_page_exists(p) ? km_table_load(p, &t) : KM_OK;
    int ce = km_table_col(&t, "resumed_after_epoch"), cu = km_table_col(&t, "utc");
    if (!s && t.nrows && (ce < 0 || cu < 0)) s = km_err(KM_EFORMAT, "%s: expected the columns resumed_after_epoch,utc", p);
    if (!s && t.nrows) { /* room for t's rows after the ones already read */
        km_rule *v = km_malloc(sizeof(km_rule) * (size_t)(r->nres + t.nrows));
        char **u = km_malloc(sizeof(char *) * (size_t)(r->nres + t.nrows));
        if (r->nres) {
            memcpy(v, r->resumes, sizeof(km_rule) * (size_t)r->nres);
            memcpy(u, r->res_utc, sizeof(char *) * (size_t)r->nres);
        }
        km_free(r->resumes);
        km_free(r->res_utc);
        r->resumes = v;
        r->res_utc = u;
    }
    for (int i = 0; i < t.nrows && !s; i++) {
        double e = km_table_num(&t, i, ce);
        if (!(e >= 0)) {
            s = km_err(KM_EFORMAT, "%s: line %d: '%s' is not an epoch", p, i + 2, km_table_str(&t, i, ce));
            break;
        }
        char label[96];
        snprintf(label, sizeof label, "resumed after %sepoch %.0f", what, e);
        r->resumes[r->nres] = (km_rule){x0 + e, km_strdup(label)};
        r->res_utc[r->nres++] = km_strdup(km_table_str(&t, i, cu));
    }
    km_table_free(&t);
    km_free(p);
    return s;
}

static km_status load_run(run_info *r) {
    char *p = joinp(r->dir, "mine_config.json");
    r->mining = km_page_exists(p);
    if (!r->mining) {
        km_free(p);
        p = joinp(r->dir, "config.json");
    }
    r->cfg_name = p;
    km_status s = km_json_load(p, "", "", &r->cfg);
    if (!s && r->cfg.type != KM_JSON_OBJ) s = km_err(KM_EFORMAT, "%s: expected a JSON object", p);
    char *m = joinp(r->dir, "metrics.csv");
    if (!s) s = km_table_load(m, &r->met);
    km_free(m);
    if (!s && km_table_col(&r->met, "epoch") < 0)
        s = km_err(KM_EFORMAT, "%s/metrics.csv: no 'epoch' column", r->dir);
    if (s) return s;
    if (r->mining) load_supervised(r);
    char *pi = joinp(r->dir, "eval/per_image.csv"), *sj = joinp(r->dir, "eval/summary.json");
    if (km_page_exists(pi)) s = km_table_load(pi, &r->per);
    if (!s && km_page_exists(sj)) {
        s = km_json_load(sj, "", "", &r->summ);
        r->has_summ = !s;
    }
    km_free(pi);
    km_free(sj);
    char *lp = joinp(r->dir, "last.safetensors");
    if (!s && km_page_exists(lp)) {
        s = st_header(lp, &r->last);
        r->has_last = !s;
    }
    km_free(lp);
    if (s) return s;
    r->K = r->sup.nrows;
    r->n = r->K + r->met.nrows;
    if (r->sup_from) s = load_resumes(r, r->sup_from, 0, "supervised ");
    if (!s) s = load_resumes(r, r->dir, r->K, r->mining ? "mining " : "");
    if (s) return s;
    r->x = km_malloc(sizeof(double) * (size_t)(r->n + 1));
    int ce = km_table_col(&r->met, "epoch"), cs = km_table_col(&r->sup, "epoch");
    for (int i = 0; i < r->K; i++) r->x[i] = km_table_num(&r->sup, i, cs);
    for (int i = 0; i < r->met.nrows; i++) r->x[r->K + i] = r->K + km_table_num(&r->met, i, ce);
    int cv = km_table_col(&r->met, "val_loss");
    r->best = -1;
    for (int i = 0; i < r->met.nrows; i++) {
        double v = km_table_num(&r->met, i, cv);
        if (isfinite(v) && (r->best < 0 || v < km_table_num(&r->met, r->best, cv))) r->best = i;
    }
    return KM_OK;
}

static void free_run(run_info *r) {
    km_free(r->cfg_name);
    if (r->cfg.type == KM_JSON_OBJ) km_json_free(&r->cfg);
    km_table_free(&r->met);
    km_table_free(&r->sup);
    km_table_free(&r->per);
    if (r->has_summ) km_json_free(&r->summ);
    if (r->has_last) km_json_free(&r->last);
    km_free(r->sup_from);
    km_free(r->x);
    for (int i = 0; i < r->nres; i++) {
        km_free((char *)r->resumes[i].label);
        km_free(r->res_utc[i]);
    }
    km_free(r->resumes);
    km_free(r->res_utc);
}

/* y values of column `col` along the epoch axis: supervised rows (column
 * `sup_col`, NULL: none) then mining rows; NaN where missing. */
static double *series_y(const run_info *r, const char *col, const char *sup_col) {
    double *y = km_malloc(sizeof(double) * (size_t)(r->n + 1));
    int cs = sup_col ? km_table_col(&r->sup, sup_col) : -1, cm = km_table_col(&r->met, col);
    for (int i = 0; i < r->K; i++) y[i] = km_table_num(&r->sup, i, cs);
    for (int i = 0; i < r->met.nrows; i++) y[r->K + i] = km_table_num(&r->met, i, cm);
    return y;
}

static double col_sum(const km_table *t, const char *col);

/* From last.safetensors' metadata ("<prefix>.done", early stopping) when
 * present, else from the log against the configured epochs. */
static const char *status_text(const run_info *r, char *b, size_t n) {
    int rows = r->met.nrows;
    int last = rows ? (int)km_table_num(&r->met, rows - 1, km_table_col(&r->met, "epoch")) : 0;
    const char *pre = r->mining ? "mine" : "train";
    char k[64];
    snprintf(k, sizeof k, "%s.done", pre);
    double done = last_meta(r, k);
    snprintf(k, sizeof k, "%s.early_stop.num_bad", pre);
    double bad = last_meta(r, k);
    snprintf(k, sizeof k, "%s.early_stop.patience", pre);
    double pat = last_meta(r, k);
    double maxe = cfg_num(r, NULL, r->mining ? "mine_epochs" : "epochs");
    if (done == 1 && bad >= pat)
        snprintf(b, n, "early-stopped after epoch %d (no val-loss improvement for %.0f epochs)", last, bad);
    else if (done == 1) snprintf(b, n, "finished after epoch %d", last);
    else if (done == 0) snprintf(b, n, "interrupted after epoch %d of %.0f (continue with --resume)", last, maxe);
    else snprintf(b, n, "%d epoch(s) logged (no last.safetensors)", last);
    return b;
}

/* Appends " --flag value" for one config member; keys that are no flag of
 * the command are left out. */
static void flag_of(km_html *c, const char *key, const km_json *v, int mining) {
    static const char *const skip[] = {"kmseg_version", "gemm_backend", NULL};
    static const char *const mine_skip[] = {"out", "max_steps", "eval_init", "init_weights", NULL}; /* no mine flags */
    for (int i = 0; skip[i]; i++)
        if (!strcmp(key, skip[i])) return;
    for (int i = 0; mining && mine_skip[i]; i++)
        if (!strcmp(key, mine_skip[i])) return;
    if (v->type == KM_JSON_NULL) return;
    int is_bool = !strcmp(key, "eval_test") || !strcmp(key, "eval_init");
    if (is_bool && !(v->type == KM_JSON_NUM && v->num != 0)) return;
    km_html_raw(c, " --");
    for (const char *k = !strcmp(key, "init_weights") ? "init" : key; *k; k++) km_html_rawn(c, *k == '_' ? "-" : k, 1);
    if (is_bool) return;
    if (v->type == KM_JSON_NUM) km_html_printf(c, " %.9g", v->num);
    else if (v->type == KM_JSON_STR) {
        int plain = strspn(v->str, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./=,+-") == strlen(v->str);
        km_html_raw(c, plain ? " " : " '");
        km_html_raw(c, v->str);
        if (!plain) km_html_raw(c, "'");
    }
}

/* "none", or each resume (resumes.csv) with when it happened; a resumed
 * run's rows equal an uninterrupted run's. */
static void resume_list(km_html *h, const run_info *r) {
    if (!r->nres) km_html_raw(h, "none recorded (no resumes.csv: never continued with --resume)");
    for (int i = 0; i < r->nres; i++) {
        km_html_raw(h, i ? "; " : "");
        km_html_text(h, r->resumes[i].label);
        km_html_raw(h, " (");
        km_html_text(h, r->res_utc[i]);
        km_html_raw(h, ")");
    }
    if (r->nres)
        km_html_raw(h, ". Marked on the curves; the resumed epochs equal an uninterrupted run's (README, Determinism).");
}

static void header(km_html *h, const run_info *r) {
    char b[512];
    km_html cmd;
    km_html_init(&cmd);
    km_html_raw(&cmd, r->mining ? "kmseg mine" : "kmseg train");
    for (int i = 0; i < r->cfg.n; i++) flag_of(&cmd, r->cfg.keys[i].str, &r->cfg.items[i], r->mining);
    if (r->mining) {
        km_html_raw(&cmd, " --out ");
        km_html_raw(&cmd, r->dir);
    }
    km_html_raw(h, "<h2>Run</h2>\n<table><caption>What ran</caption>\n<tr><th scope=\"row\">command (rebuilt from ");
    km_html_raw(h, r->mining ? "mine_config.json" : "config.json");
    km_html_raw(h, ")</th><td><code>");
    km_html_text(h, cmd.buf);
    km_html_raw(h, "</code>");
    km_html_free(&cmd);
    km_html_raw(h, "</td></tr>\n<tr><th scope=\"row\">folder</th><td>");
    km_html_text(h, r->dir);
    km_html_raw(h, "</td></tr>\n<tr><th scope=\"row\">version</th><td>");
    km_html_text(h, cfg_str(r, "kmseg_version"));
    km_html_printf(h, "</td></tr>\n<tr><th scope=\"row\">seed</th><td>%.0f</td></tr>\n"
                      "<tr><th scope=\"row\">threads</th><td>%.0f</td></tr>\n<tr><th scope=\"row\">status</th><td>",
                   cfg_num(r, NULL, "seed"), cfg_num(r, NULL, "threads"));
    km_html_text(h, status_text(r, b, sizeof b));
    km_html_raw(h, r->has_summ ? "; test split evaluated (eval/summary.json)" : "");
    double wall = col_sum(&r->met, "seconds") + (r->K ? col_sum(&r->sup, "seconds") : 0);
    km_html_raw(h, "</td></tr>\n<tr><th scope=\"row\">time</th><td>");
    km_html_num(h, wall, 1, "-");
    km_html_raw(h, " s in logged epochs (sum of metrics.csv seconds");
    km_html_raw(h, r->K ? ", both phases)" : ")");
    km_html_raw(h, "</td></tr>\n<tr><th scope=\"row\">resumes</th><td>");
    resume_list(h, r);
    km_html_raw(h, "</td></tr>\n</table>\n<details><summary>All settings</summary>\n");
    km_page_json_table(h, &r->cfg, r->mining ? "mine_config.json" : "config.json");
    km_html_raw(h, "</details>\n");
}

static double col_sum(const km_table *t, const char *col) {
    int c = km_table_col(t, col);
    double s = 0;
    for (int i = 0; i < t->nrows; i++) {
        double v = km_table_num(t, i, c);
        if (isfinite(v)) s += v;
    }
    return c < 0 ? NAN : s;
}

static void cards(km_html *h, const run_info *r, const double *dice, int nd) {
    char b[256];
    km_html_raw(h, "<h2>Summary</h2>\n<div class=\"cards\">\n");
    double md = NAN, sd = NAN;
    if (r->has_summ) {
        md = cfg_num(r, &r->summ, "mean_dice");
        sd = cfg_num(r, &r->summ, "std_dice");
        nd = (int)cfg_num(r, &r->summ, "n");
    } else if (nd) {
        km_mean_std(dice, nd, &md, &sd);
    }
    if (isfinite(md)) snprintf(b, sizeof b, "%.4f ± %s (n=%d)", md, isfinite(sd) ? "" : "-", nd);
    if (isfinite(md) && isfinite(sd)) snprintf(b, sizeof b, "%.4f ± %.4f (n=%d)", md, sd, nd);
    km_page_card(h, r->has_summ ? "test Dice (eval/summary.json)" : "test Dice (computed by this report)",
                 isfinite(md) ? b : "not available");
    if (r->has_summ) {
        snprintf(b, sizeof b, "%.4f ± %.4f", cfg_num(r, &r->summ, "mean_iou"), cfg_num(r, &r->summ, "std_iou"));
        km_page_card(h, "test IoU", b);
    }
    int ce = km_table_col(&r->met, "epoch");
    snprintf(b, sizeof b, "%d", r->best >= 0 ? (int)km_table_num(&r->met, r->best, ce) : 0);
    km_page_card(h, r->mining ? "best mining epoch (val loss)" : "best epoch (val loss)", r->best >= 0 ? b : "-");
    if (r->best >= 0) {
        snprintf(b, sizeof b, "%.4f", km_table_num(&r->met, r->best, km_table_col(&r->met, "val_dice")));
        km_page_card(h, "val Dice at best epoch", b);
    }
    if (r->mining && r->met.nrows) {
        double pd = km_table_num(&r->met, r->met.nrows - 1, km_table_col(&r->met, "pseudo_dice"));
        snprintf(b, sizeof b, "%.4f", pd);
        km_page_card(h, "last pseudo-label Dice", isfinite(pd) ? b : "-");
        double tc = last_meta(r, "mine.teacher_calls"), nb = last_meta(r, "mine.no_box");
        snprintf(b, sizeof b, "%.0f", isfinite(tc) ? tc : col_sum(&r->met, "teacher_calls"));
        km_page_card(h, isfinite(tc) ? "teacher calls (all, one-time labelling included)" : "teacher calls (mining epochs)", b);
        double hit = col_sum(&r->met, "cache_hits"), miss = col_sum(&r->met, "cache_misses");
        snprintf(b, sizeof b, "%.1f %% (%.0f of %.0f)", 100 * hit / (hit + miss), hit, hit + miss);
        km_page_card(h, "embedding cache hits", hit + miss > 0 ? b : "no lookups");
        snprintf(b, sizeof b, "%.0f", isfinite(nb) ? nb : col_sum(&r->met, "no_box"));
        km_page_card(h, "images without a box (NO_BOX)", b);
    }
    km_html_raw(h, "</div>\n");
}

typedef struct {
    const char *col, *sup_col, *name;
} colspec;

/* One chart over the epoch axis with one series per column that exists. */
static void epoch_chart(km_html *h, const run_info *r, const char *id, const char *title, const char *desc,
                        const char *ylabel, int logy, const colspec *cols, int nc) {
    km_series s[8];
    double *ys[8];
    int ns = 0;
    for (int k = 0; k < nc && ns < 8; k++) {
        if (km_table_col(&r->met, cols[k].col) < 0 && (!cols[k].sup_col || km_table_col(&r->sup, cols[k].sup_col) < 0))
            continue;
        ys[ns] = series_y(r, cols[k].col, cols[k].sup_col);
        s[ns] = (km_series){cols[k].name, r->n, r->x, ys[ns], NULL, NULL, KM_SERIES_LINE, 0, k};
        ns++;
    }
    km_rule *v = km_malloc(sizeof(km_rule) * (size_t)(r->nres + 2));
    int nv = 0;
    if (r->best >= 0) v[nv++] = (km_rule){r->x[r->K + r->best], "best epoch (lowest val loss)"};
    if (r->mining && r->K) v[nv++] = (km_rule){r->K + 0.5, "mining starts"};
    for (int i = 0; i < r->nres; i++) v[nv++] = r->resumes[i];
    km_chart c = {id, title, desc, r->K ? "epoch (supervised, then mining)" : "epoch", ylabel, logy, 0, 0, s, ns,
                  v, nv, NULL, 0, 0, 6, 1};
    km_svg_chart(h, &c);
    for (int k = 0; k < ns; k++) km_free(ys[k]);
    km_free(v);
}

static void curves(km_html *h, const run_info *r) {
    km_html_raw(h, "<h2>Curves per epoch</h2>\n");
    if (r->mining) {
        km_html_raw(h, "<p>");
        if (r->sup_from) {
            km_html_printf(h, "Epochs 1-%d: the supervised phase (from ", r->K);
            km_html_text(h, r->sup_from);
            km_html_printf(h, "); epochs from %d: mining.", r->K + 1);
        } else {
            km_html_raw(h, "The supervised phase's log was not found; mining epochs only.");
        }
        km_html_raw(h, "</p>\n");
    }
    static const colspec loss[] = {{"train_loss", "train_loss", "train loss (total)"},
                                   {"sup_loss", NULL, "labelled part"},
                                   {"pseudo_loss", NULL, "pseudo-label part"},
                                   {"val_loss", "val_loss", "val loss"}};
    epoch_chart(h, r, "c-loss", "Losses", "Training loss (0.5 BCE + 0.5 Dice, mean over the epoch's batches; mining: "
                "labelled part + weight x pseudo part) and validation loss (eval mode) per epoch.", "loss", 0, loss, 4);
    static const colspec dice[] = {{"val_dice", "val_dice", "val Dice"}, {"test_dice", "test_dice", "test Dice"}};
    epoch_chart(h, r, "c-dice", "Dice per epoch", "Mean per-image Dice on the validation split (and the test "
                "split when the run scored it each epoch; reported only, never used for decisions).", "Dice", 0, dice, 2);
    static const colspec lr[] = {{"lr", "lr", "learning rate"}};
    epoch_chart(h, r, "c-lr", "Learning rate", "Adam learning rate per epoch (ReduceLROnPlateau).", "learning rate",
                1, lr, 1);
    static const colspec sec[] = {{"seconds", "seconds", "seconds per epoch"}};
    epoch_chart(h, r, "c-sec", "Seconds per epoch", "Wall time per epoch; uneven times mean other jobs shared the "
                "machine.", "seconds", 0, sec, 1);
    if (!r->mining) return;
    static const colspec pd[] = {{"pseudo_dice", NULL, "pseudo-label Dice"}};
    epoch_chart(h, r, "c-pdice", "Pseudo-label Dice", "Mean Dice of the epoch's pseudo labels against the "
                "unlabelled images' hidden ground truth (reporting only).", "Dice", 0, pd, 1);
    static const colspec tc[] = {{"teacher_calls", NULL, "teacher calls"}, {"cache_hits", NULL, "cache hits"},
                                 {"cache_misses", NULL, "cache misses"}, {"no_box", NULL, "no box (NO_BOX)"}};
    epoch_chart(h, r, "c-teacher", "Teacher use per epoch", "Teacher decoder calls, embedding-cache hits and "
                "misses, and unlabelled visits whose prompts gave no box (NO_BOX).", "count", 0, tc, 4);
}

/* Per-image Dice: strip plot (sorted) and the 10 worst. */
static void per_image(km_html *h, char **ids, const double *dice, int n, const char *source) {
    km_html_raw(h, "<h2>Per-image Dice (test split)</h2>\n<p>Source: ");
    km_html_text(h, source);
    km_html_raw(h, ".</p>\n");
    int *o = km_malloc(sizeof(int) * (size_t)(n + 1));
    double *x = km_malloc(sizeof(double) * (size_t)(n + 1)), *y = km_malloc(sizeof(double) * (size_t)(n + 1));
    for (int i = 0; i < n; i++) o[i] = i;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && !(dice[o[j - 1]] <= dice[o[j]]); j--) {
            int t = o[j];
            o[j] = o[j - 1];
            o[j - 1] = t;
        }
    for (int i = 0; i < n; i++) {
        x[i] = i + 1;
        y[i] = dice[o[i]];
    }
    km_series s = {"test images", n, x, y, NULL, NULL, KM_SERIES_DOTS, 0, 0};
    km_chart c = {"c-perimg", "Per-image Dice, sorted", "One dot per test image, sorted from worst to best.",
                  "rank (worst first)", "Dice", 0, 0, 0, &s, 1, NULL, 0, NULL, 0, 0, 4, 1};
    km_svg_chart(h, &c);
    km_html_raw(h, "<table><caption>The 10 worst test images</caption>\n<tr><th scope=\"col\">image id</th>"
                   "<th scope=\"col\">Dice</th></tr>\n");
    for (int i = 0; i < n && i < 10; i++) {
        km_html_raw(h, "<tr><td>");
        km_html_text(h, ids[o[i]]);
        km_html_raw(h, "</td><td class=\"num\">");
        km_html_num(h, dice[o[i]], 4, "-");
        km_html_raw(h, "</td></tr>\n");
    }
    km_html_raw(h, "</table>\n");
    km_free(o);
    km_free(x);
    km_free(y);
}

static void data_links(km_html *h, const run_info *r, const char *out) {
    static const char *const files[] = {"metrics.csv", "metrics.jsonl", "config.json", "mine_config.json", "resumes.csv",
                                        "splits/train.txt", "splits/val.txt", "splits/test.txt", "splits/labelled.txt",
                                        "splits/unlabelled.txt", "eval/per_image.csv", "eval/summary.json"};
    km_html_raw(h, "<h2>Data</h2>\n<ul>\n");
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *p = joinp(r->dir, files[i]);
        if (km_page_exists(p)) {
            char *rel = km_page_relpath(out, p);
            km_html_raw(h, "<li><a href=\"");
            km_page_href(h, rel);
            km_html_raw(h, "\">");
            km_html_text(h, files[i]);
            km_html_raw(h, "</a></li>\n");
            km_free(rel);
        }
        km_free(p);
    }
    km_html_raw(h, "</ul>\n");
}

#include <dirent.h>

/* The folder of pseudo-label PNGs: RUN/pseudo (one-time), else its last
 * epoch_NNN folder (continuous); NULL when there is none. */
static char *pseudo_dir(const char *dir) {
    char *p = joinp(dir, "pseudo"), *last = NULL;
    DIR *d = opendir(p);
    int has_png = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t L = strlen(e->d_name);
        if (L > 4 && !strcmp(e->d_name + L - 4, ".png")) has_png = 1;
        if (!strncmp(e->d_name, "epoch_", 6) && (!last || strcmp(e->d_name, last) > 0)) {
            km_free(last);
            last = km_strdup(e->d_name);
        }
    }
    if (d) closedir(d);
    char *r = NULL;
    if (has_png) r = km_strdup(p);
    else if (last) r = joinp(p, last);
    km_free(p);
    km_free(last);
    return r;
}

static void note(km_html *h, FILE *log, const char *dir, const char *what, const char *why) {
    km_html_raw(h, "<p class=\"note\">");
    km_html_text(h, what);
    km_html_raw(h, " not computed: ");
    km_html_text(h, why);
    km_html_raw(h, "</p>\n");
    if (log) fprintf(log, "report: %s: %s not computed: %s\n", dir, what, why);
}

static void split_sizes(km_html *h, const char *dir) {
    static const char *const names[] = {"train", "labelled", "unlabelled", "val", "test"};
    km_html_raw(h, "<table><caption>Split sizes (RUN/splits)</caption>\n<tr>");
    for (int i = 0; i < 5; i++) km_html_printf(h, "<th scope=\"col\">%s</th>", names[i]);
    km_html_raw(h, "</tr>\n<tr>");
    for (int i = 0; i < 5; i++) {
        char f[64];
        snprintf(f, sizeof f, "splits/%s.txt", names[i]);
        char *p = joinp(dir, f);
        uint8_t *d = NULL;
        size_t n = 0;
        int lines = -1;
        if (km_page_exists(p) && km_read_file(p, (size_t)64 << 20, &d, &n) == KM_OK) {
            lines = 0;
            for (size_t k = 0; k < n; k++) lines += d[k] == '\n';
            if (n && d[n - 1] != '\n') lines++;
        }
        km_err_clear();
        if (lines >= 0) km_html_printf(h, "<td class=\"num\">%d</td>", lines);
        else km_html_raw(h, "<td>-</td>");
        km_free(d);
        km_free(p);
    }
    km_html_raw(h, "</tr>\n</table>\n");
}

/* Gallery + per-image section; the gallery is skipped with a note when the
 * dataset folder or best.safetensors is missing. */
static km_status pictures(km_html *h, const run_info *r, const char *out, const km_report_opts *o) {
    const char *data = o->data ? o->data : cfg_str(r, "data");
    char *w = joinp(r->dir, "best.safetensors"), *sd = joinp(r->dir, "splits");
    char *dm = data ? joinp(data, "images") : NULL;
    int size = (int)cfg_num(r, NULL, "size");
    km_gallery g;
    memset(&g, 0, sizeof g);
    km_status s = KM_OK;
    const char *why = !km_page_exists(w) ? "no best.safetensors in the run folder"
                      : !dm || !km_page_exists(dm) ? "the dataset folder (config \"data\", or --data) is not found"
                      : !km_page_exists(sd) ? "no splits/ folder" : NULL;
    if (!why) s = km_gallery_compute(w, data, sd, size, o, &g);
    if (!s && r->per.ncols) {
        int ci = km_table_col(&r->per, "id"), cd = km_table_col(&r->per, "dice");
        double *d = km_malloc(sizeof(double) * (size_t)(r->per.nrows + 1));
        char **ids = km_malloc(sizeof(char *) * (size_t)(r->per.nrows + 1));
        for (int i = 0; i < r->per.nrows; i++) {
            d[i] = km_table_num(&r->per, i, cd);
            ids[i] = (char *)km_table_str(&r->per, i, ci);
        }
        per_image(h, ids, d, r->per.nrows, "eval/per_image.csv");
        km_free(d);
        km_free(ids);
    } else if (!s && g.n) {
        per_image(h, g.ids, g.dice, g.n, "computed by this report from best.safetensors");
    }
    if (!s) km_html_raw(h, "<h2>Gallery: test images</h2>\n");
    if (!s && why) note(h, o->log, r->dir, "Gallery", why);
    else if (!s) s = km_gallery_html(h, &g, o);
    if (!s && !o->teacher && !why)
        km_html_raw(h, "<p class=\"note\">Teacher-refined masks were not computed: run kmseg report with "
                       "--teacher CKPT to add them.</p>\n");
    char *pd = r->mining ? pseudo_dir(r->dir) : NULL;
    if (!s && r->mining) {
        km_html_raw(h, "<h2>Gallery: pseudo labels</h2>\n");
        if (!pd) note(h, o->log, r->dir, "Pseudo-label gallery", "no pseudo/ PNGs in the run folder");
        else if (!dm || !km_page_exists(dm)) note(h, o->log, r->dir, "Pseudo-label gallery", "the dataset folder is not found");
        else s = km_gallery_pseudo_html(h, pd, data, size, o);
    }
    (void)out;
    km_gallery_free(&g);
    km_free(pd);
    km_free(w);
    km_free(sd);
    km_free(dm);
    return s;
}

km_status km_report_run(const char *dir, const char *out, const km_report_opts *o) {
    run_info r;
    memset(&r, 0, sizeof r);
    r.dir = dir;
    char *def = out ? NULL : joinp(dir, "report.html");
    if (!out) out = def;
    km_status s = load_run(&r);
    km_html h;
    km_html_init(&h);
    if (!s) {
        char title[1024];
        snprintf(title, sizeof title, "kmseg %s run: %s", r.mining ? "mining" : "training", dir);
        km_page_begin(&h, title);
        header(&h, &r);
        int nd = r.per.ncols ? r.per.nrows : 0;
        double *d = km_malloc(sizeof(double) * (size_t)(nd + 1));
        for (int i = 0; i < nd; i++) d[i] = km_table_num(&r.per, i, km_table_col(&r.per, "dice"));
        cards(&h, &r, d, nd);
        km_free(d);
        curves(&h, &r);
        s = pictures(&h, &r, out, o);
    }
    if (!s) {
        km_html_raw(&h, "<h2>Splits</h2>\n");
        split_sizes(&h, dir);
        data_links(&h, &r, out);
        km_page_end(&h);
        s = km_page_save(&h, out, o->log);
    }
    km_html_free(&h);
    free_run(&r);
    km_free(def);
    return s;
}

void km_report_opts_default(km_report_opts *o) {
    memset(o, 0, sizeof *o);
    o->teacher_profile = "auto";
    o->gallery_random = 1;
    o->pseudo_rows = 4;
    o->threads = 2;
    o->run_reports = 1;
}

km_status km_report_write(const char *dir, const km_report_opts *o) {
    char *a = joinp(dir, "results.csv"), *b = joinp(dir, "config.json"), *c = joinp(dir, "mine_config.json");
    int grid = km_page_exists(a), run = km_page_exists(b) || km_page_exists(c);
    km_free(a);
    km_free(b);
    km_free(c);
    if (!km_page_exists(dir)) return km_err(KM_EIO, "%s: no such folder", dir);
    if (grid) return km_report_grid(dir, o->out, o);
    if (run) return km_report_run(dir, o->out, o);
    return km_err(KM_EFORMAT, "%s: neither a run folder (config.json or mine_config.json) nor an experiments folder "
                  "(results.csv)", dir);
}
