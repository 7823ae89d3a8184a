/* experiments.c - `kmseg experiments`: the paper's grid (issue 5 point 5,
 * issue 6 point 4) in one command.
 *
 *   kmseg experiments --out DIR --data kvasir=PATH[,covid=PATH] --teacher CKPT
 *       [--fractions 1,0.75,0.5] [--methods supervised,onetime,continuous,...]
 *       [--seeds 0,1,2] [--simclr] [pass-through knobs: --size --resnet ...]
 *
 * Every dataset x labelled fraction x method x seed is one run folder
 * DIR/<dataset>/<fraction>/<method>/seed<k>/, made by the existing commands
 * called in-process with built argument lists (so every knob means exactly
 * what it means for `kmseg train` / `mine` / `pretrain` / `eval`):
 *   supervised          kmseg train --labelled-fraction f --seed k
 *   onetime, continuous kmseg mine --schedule S (prompt mode points+box)
 *   points, box, points+box, points+box+mask
 *                       kmseg mine --schedule continuous --prompt-mode M
 * Mining runs start from the supervised run of the same dataset / fraction /
 * seed (mine --init its best.safetensors): km_mine_run recomputes the same
 * splits from the seed, and its own supervised phase would be that very
 * km_train_run, so it is trained once and shared (a mining run folder thus
 * has no supervised/ of its own; its mine_config.json names the init). The
 * supervised run is made
 * (as a dependency) even when "supervised" is not among --methods; it is then
 * left out of the tables.
 * --simclr adds "simclr+<method>" for every method: SimCLR pretraining once per
 * dataset x seed into DIR/<dataset>/simclr/seed<k>/ (kmseg pretrain, same seed
 * so it sees only that seed's train split), then the supervised run with
 * --encoder-weights <that>/encoder.safetensors, and the mining runs from it.
 *
 * After training, `kmseg eval` scores the run's best.safetensors on the run's
 * test split (RUN/splits) into RUN/eval/{per_image.csv,summary.json}.
 * A run is finished when RUN/eval/summary.json exists (written atomically,
 * last); restarting skips finished runs. A run folder without it was
 * interrupted: a mining run that got as far as writing its mine_config.json
 * is resumed (kmseg mine --resume: the same bytes as an uninterrupted run),
 * any other run folder is deleted and the run restarted from scratch.
 * A pretraining folder is finished when its pretrain.done marker exists
 * (written after kmseg pretrain returns); one with a config.json but no
 * marker is resumed (kmseg pretrain --resume), any other is restarted.
 *
 * Outputs (rewritten at the end of every invocation, from the finished runs
 * of that invocation's grid, also after a failed run):
 *   DIR/results.csv  kind,dataset,fraction,method,seed,n_seeds,n_test,
 *                    dice_mean,dice_std,iou_mean,iou_std,run_dir
 *                    kind "run": one test-set score per run (mean per-image
 *                    Dice/IoU; std empty); kind "mean": per dataset x fraction
 *                    x method, mean and sample std (ddof 1) over seeds.
 *   DIR/settings.txt the knobs the runs were made with; a later invocation
 *                    with other knobs is refused (finished runs are reused by
 *                    folder name, so they must mean the same thing)
 *   DIR/tables.md    per dataset, a Dice table and an IoU table: rows = method,
 *                    columns = labelled fraction, cells "mean ± std" over
 *                    seeds ("mean (n=1)" with one seed, "-" for none). */
/* nftw (removing an interrupted run folder) is an X/Open extension */
#define _XOPEN_SOURCE 700
#include "cmd.h"

#include "../core/args.h"
#include "../core/log.h"
#include "../eval/metrics.h"
#include "../io/json.h"

#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { MAXD = 8, MAXF = 16, MAXM = 16, MAXS = 32 };

static const char *const k_methods[] = {"supervised", "onetime", "continuous", "points", "box", "points+box",
                                        "points+box+mask"};
enum { NMETHODS = 7 };

/* Pass-through flags: value forwarded verbatim when given. to: 1 train,
 * 2 mine, 4 pretrain, 8 eval. */
typedef struct {
    const char *name;
    int to;
    const char *help;
    char *val;
    int is_bool;
    int no_result; /* does not change any result (threads: bit-level only; cache) */
} passflag;

static passflag g_pass[] = {
    {"--size", 15, "crop size, multiple of 32 (all steps)", 0, 0, 0},
    {"--label", 15, "label to segment, for every dataset (see kmseg train --help)", 0, 0, 0},
    {"--resnet", 7, "encoder depth: 34 or 18", 0, 0, 0},
    {"--threads", 15, "compute threads", 0, 0, 1},
    {"--max-images", 7, "random split over the first N ids only", 0, 0, 0},
    {"--val-fraction", 3, "random split: validation fraction", 0, 0, 0},
    {"--test-fraction", 3, "random split: test fraction", 0, 0, 0},
    {"--epochs", 3, "maximum supervised epochs", 0, 0, 0},
    {"--batch", 3, "batch size (train, mine)", 0, 0, 0},
    {"--lr", 3, "Adam learning rate (train, mine)", 0, 0, 0},
    {"--weight-decay", 3, "Adam weight decay (train, mine)", 0, 0, 0},
    {"--plateau-patience", 3, "ReduceLROnPlateau patience", 0, 0, 0},
    {"--plateau-factor", 3, "ReduceLROnPlateau factor", 0, 0, 0},
    {"--min-lr", 3, "ReduceLROnPlateau minimum lr", 0, 0, 0},
    {"--early-stop", 3, "early-stopping patience", 0, 0, 0},
    {"--bce-weight", 3, "a in a*BCE + (1-a)*Dice", 0, 0, 0},
    {"--max-steps", 1, "supervised: stop after this many optimiser steps", 0, 0, 0},
    {"--mine-epochs", 2, "maximum mining epochs", 0, 0, 0},
    {"--points", 2, "guiding points per image", 0, 0, 0},
    {"--pseudo-weight", 2, "lambda of the pseudo-label term", 0, 0, 0},
    {"--teacher-profile", 2, "sam or medsam", 0, 0, 0},
    {"--cache-dir", 2, "teacher embedding cache folder", 0, 0, 1},
    {"--cache-mem", 2, "teacher embeddings kept in memory", 0, 0, 1},
    {"--no-cache", 2, "teacher embeddings in memory only", 0, 1, 1},
};
enum { NPASS = sizeof g_pass / sizeof g_pass[0] };

/* ---- small helpers ---- */

typedef struct {
    char *v[96];
    int n;
} argl;

static void arg(argl *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void arg(argl *a, const char *fmt, ...) {
    KM_ASSERT(a->n < 95);
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    a->v[a->n++] = km_strdup(buf);
    a->v[a->n] = NULL;
}

static void arg_pass(argl *a, int to) {
    for (int i = 0; i < NPASS; i++) {
        if (!(g_pass[i].to & to)) continue;
        if (g_pass[i].is_bool) {
            if (g_pass[i].val) arg(a, "%s", g_pass[i].name);
        } else if (g_pass[i].val) {
            arg(a, "%s", g_pass[i].name);
            arg(a, "%s", g_pass[i].val);
        }
    }
}

/* The passed flags for command mask `to` that change no result: all that
 * may go with --resume (the run's own settings come from its folder). */
static void arg_pass_neutral(argl *a, int to) {
    for (int i = 0; i < NPASS; i++)
        if ((g_pass[i].to & to) && g_pass[i].no_result && g_pass[i].val) {
            arg(a, "%s", g_pass[i].name);
            if (!g_pass[i].is_bool) arg(a, "%s", g_pass[i].val);
        }
}

static void argl_free(argl *a) {
    for (int i = 0; i < a->n; i++) km_free(a->v[i]);
    a->n = 0;
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int dir_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static km_status rm_rf(const char *path) {
    if (!dir_exists(path)) return KM_OK;
    if (nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS))
        return km_err(KM_EIO, "%s: cannot remove the interrupted run folder: %s", path, strerror(errno));
    return KM_OK;
}

/* Splits a comma list into at most max items (strings point into buf). */
static km_status split_list(const char *flag, char *buf, char **items, int max, int *n) {
    *n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*n == max) return km_err(KM_EARG, "%s: more than %d items", flag, max);
        items[(*n)++] = t;
    }
    if (!*n) return km_err(KM_EARG, "%s: empty list", flag);
    return KM_OK;
}

/* Mean per-image Dice / IoU and image count of a finished run. */
static km_status read_summary(const char *path, double *dice, double *iou, int *n) {
    uint8_t *txt = NULL;
    size_t len = 0;
    km_status s = km_read_file(path, 1 << 20, &txt, &len);
    if (s) return s;
    km_json j;
    s = km_json_parse(path, (const char *)txt, len, &j);
    km_free(txt);
    if (s) return s;
    const km_json *d = km_json_get(&j, "mean_dice"), *u = km_json_get(&j, "mean_iou"), *c = km_json_get(&j, "n");
    if (!d || !u || !c || c->type != KM_JSON_NUM)
        s = km_err(KM_EFORMAT, "%s: expected mean_dice, mean_iou and n (written by kmseg eval)", path);
    else {
        *dice = d->type == KM_JSON_NUM ? d->num : NAN;
        *iou = u->type == KM_JSON_NUM ? u->num : NAN;
        *n = (int)c->num;
    }
    km_json_free(&j);
    return s;
}

/* The settings that shape every run's result (pass-through knobs, teacher,
 * pretraining), one "flag value" line each. A finished run is skipped on the
 * strength of its folder name alone, so an experiment folder is tied to these
 * settings: DIR/settings.txt is written by the first invocation and a later
 * one with different settings is refused. The grid lists may grow freely, so
 * a line "(unused)" (no mining method / no --simclr yet) on either side
 * matches anything and is filled in by the first invocation that uses it. */
static km_status check_settings(const char *out, const char *teacher, const char *pe, const char *pb) {
    enum { MAXL = NPASS + 3 };
    char *cur[MAXL];
    int nl = 0;
    char line[4200];
    for (int i = 0; i < NPASS; i++)
        if (!g_pass[i].no_result) {
            snprintf(line, sizeof line, "%s %s", g_pass[i].name, g_pass[i].val ? g_pass[i].val : "(default)");
            cur[nl++] = km_strdup(line);
        }
    snprintf(line, sizeof line, "--teacher %s", teacher ? teacher : "(unused)");
    cur[nl++] = km_strdup(line);
    snprintf(line, sizeof line, "--pretrain-epochs %s", pe ? pe : "(unused)");
    cur[nl++] = km_strdup(line);
    snprintf(line, sizeof line, "--pretrain-batch %s", pb ? pb : "(unused)");
    cur[nl++] = km_strdup(line);
    char path[4096];
    snprintf(path, sizeof path, "%s/settings.txt", out);
    km_status s = KM_OK;
    int changed = !file_exists(path);
    if (!changed) {
        uint8_t *old = NULL;
        size_t n = 0;
        s = km_read_file(path, 1 << 20, &old, &n);
        char *save = NULL, *t = s ? NULL : strtok_r((char *)old, "\n", &save);
        (void)n;
        for (int i = 0; i < nl && !s; i++, t = strtok_r(NULL, "\n", &save)) {
            const char *unused = " (unused)";
            size_t lu = strlen(unused), lt = t ? strlen(t) : 0, lc = strlen(cur[i]);
            int t_unused = t && lt > lu && !strcmp(t + lt - lu, unused);
            int c_unused = lc > lu && !strcmp(cur[i] + lc - lu, unused);
            if (t && (!strcmp(t, cur[i]) || t_unused || c_unused)) {
                if (c_unused && !t_unused) { /* keep the recorded value */
                    km_free(cur[i]);
                    cur[i] = km_strdup(t);
                } else if (t_unused && !c_unused)
                    changed = 1;
                continue;
            }
            s = km_err(KM_EARG, "%s: this folder's runs were made with '%s', now '%s': finished runs would be "
                       "reused with other settings; use a new --out (or the old settings)", path, t ? t : "", cur[i]);
        }
        km_free(old);
    }
    if (!s && changed) {
        size_t len = 0;
        for (int i = 0; i < nl; i++) len += strlen(cur[i]) + 1;
        char *buf = km_malloc(len + 1), *p = buf;
        for (int i = 0; i < nl; i++) p += sprintf(p, "%s\n", cur[i]);
        s = km_write_file_atomic(path, buf, len);
        km_free(buf);
    }
    for (int i = 0; i < nl; i++) km_free(cur[i]);
    return s;
}

/* ---- the grid ---- */

typedef struct {
    char *dname[MAXD], *dpath[MAXD];
    int nd;
    double frac[MAXF];
    char *fname[MAXF];
    int nf;
    char *meth[MAXM]; /* requested methods, simclr variants appended */
    int nm;
    int seed[MAXS];
    int ns;
    const char *out, *teacher, *pretrain_epochs, *pretrain_batch;
    int simclr;
    /* results: [d][f][m][s] */
    double dice[MAXD][MAXF][2 * MAXM][MAXS], iou[MAXD][MAXF][2 * MAXM][MAXS];
    int ntest[MAXD][MAXF][2 * MAXM][MAXS], have[MAXD][MAXF][2 * MAXM][MAXS];
    int ran, skipped, total, pretrained, deps; /* deps: untabled supervised runs made for mining */
} grid;

static void run_dir(const grid *g, int d, int f, const char *method, int s, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s/%s/%s/seed%d", g->out, g->dname[d], g->fname[f], method, g->seed[s]);
}

/* Runs a command in-process (the km_cmd_* entry points) and frees its args. */
static km_status call(km_cmd_fn fn, argl *a) {
    km_status s = fn(a->n, a->v);
    argl_free(a);
    return s;
}

/* SimCLR pretraining of dataset d, seed s (once). Finished when its
 * pretrain.done marker exists (written here after kmseg pretrain returned;
 * encoder.safetensors alone is written after every epoch). A folder with a
 * config.json but no marker was interrupted and is resumed. */
static km_status ensure_pretrain(grid *g, int d, int s, char *enc, size_t n) {
    char dir[4096], done[4200], cfg[4200];
    snprintf(dir, sizeof dir, "%s/%s/simclr/seed%d", g->out, g->dname[d], g->seed[s]);
    snprintf(enc, n, "%s/encoder.safetensors", dir);
    snprintf(done, sizeof done, "%s/pretrain.done", dir);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    if (file_exists(done) && file_exists(enc)) return KM_OK;
    km_status st;
    const int resume = file_exists(cfg);
    if (resume) {
        printf("experiments: %s: interrupted SimCLR pretraining (no pretrain.done), resuming it\n", dir);
    } else {
        st = rm_rf(dir);
        if (!st) st = km_mkdir_p(dir);
        if (st) return st;
    }
    printf("experiments: %s seed%d: SimCLR pretraining -> %s\n", g->dname[d], g->seed[s], dir);
    fflush(stdout);
    double t0 = km_now();
    argl a = {0};
    arg(&a, "pretrain");
    if (resume) {
        /* settings from the folder's config.json; only result-neutral flags */
        arg(&a, "--resume");
        arg(&a, "%s", dir);
        arg_pass_neutral(&a, 4);
    } else {
        arg(&a, "--data");
        arg(&a, "%s", g->dpath[d]);
        arg(&a, "--out");
        arg(&a, "%s", dir);
        arg(&a, "--seed");
        arg(&a, "%d", g->seed[s]);
        if (g->pretrain_epochs) {
            arg(&a, "--epochs");
            arg(&a, "%s", g->pretrain_epochs);
        }
        if (g->pretrain_batch) {
            arg(&a, "--batch");
            arg(&a, "%s", g->pretrain_batch);
        }
        arg_pass(&a, 4);
    }
    arg(&a, "--quiet");
    st = call(km_cmd_pretrain, &a);
    if (st) return km_err_prefix(st, "SimCLR pretraining %s: ", dir);
    if (!file_exists(enc)) return km_err(KM_EINTERNAL, "%s: pretraining wrote no encoder", enc);
    km_atomic_file af;
    st = km_atomic_open(&af, done);
    if (!st) st = km_atomic_commit(&af);
    if (st) return st;
    g->pretrained++;
    printf("experiments: %s seed%d: SimCLR pretraining done in %.1f s\n", g->dname[d], g->seed[s], km_now() - t0);
    return KM_OK;
}

/* One run (dataset d, fraction f, method name, seed s): skipped when finished,
 * else trained (or mined) and evaluated. Results stored at [d][f][mi][s]. */
static km_status do_run(grid *g, int d, int f, int mi, int s, int tabled) {
    const char *method = g->meth[mi];
    int simclr = !strncmp(method, "simclr+", 7);
    const char *base = simclr ? method + 7 : method;
    char dir[4096], summ[4200], best[4200], splits[4200], evd[4200];
    run_dir(g, d, f, method, s, dir, sizeof dir);
    snprintf(summ, sizeof summ, "%s/eval/summary.json", dir);
    snprintf(best, sizeof best, "%s/best.safetensors", dir);
    snprintf(splits, sizeof splits, "%s/splits", dir);
    snprintf(evd, sizeof evd, "%s/eval", dir);
    if (g->have[d][f][mi][s]) return KM_OK; /* done earlier in this invocation */
    km_status st = KM_OK;
    char tag[32];
    if (tabled) snprintf(tag, sizeof tag, "[%d]", ++g->total);
    else snprintf(tag, sizeof tag, "[dependency]");
    if (file_exists(summ)) {
        if (tabled) g->skipped++;
        if (tabled) printf("%s %s %s %s seed%d: skipped (finished)\n", tag, g->dname[d], g->fname[f], method, g->seed[s]);
    } else {
        /* dependencies first: the supervised run (and its SimCLR encoder) */
        char enc[4200] = "", sup_best[4200] = "";
        int sup = !strcmp(base, "supervised");
        if (!sup) {
            int smi = -1;
            for (int m = 0; m < g->nm; m++)
                if (!strcmp(g->meth[m], simclr ? "simclr+supervised" : "supervised")) smi = m;
            KM_ASSERT(smi >= 0);
            if ((st = do_run(g, d, f, smi, s, 0))) return st;
            char sd[4096];
            run_dir(g, d, f, g->meth[smi], s, sd, sizeof sd);
            snprintf(sup_best, sizeof sup_best, "%s/best.safetensors", sd);
        } else if (simclr && (st = ensure_pretrain(g, d, s, enc, sizeof enc)))
            return st;
        char mcfg[4200];
        snprintf(mcfg, sizeof mcfg, "%s/mine_config.json", dir);
        int resume = !sup && file_exists(mcfg);
        if (resume) {
            printf("experiments: %s: interrupted mining run (no eval/summary.json), resuming it\n", dir);
        } else {
            if (dir_exists(dir))
                printf("experiments: %s: interrupted run (no eval/summary.json), restarting it from scratch\n", dir);
            if ((st = rm_rf(dir)) || (st = km_mkdir_p(dir))) return st;
        }
        printf("%s %s %s %s seed%d: running -> %s\n", tag, g->dname[d], g->fname[f], method, g->seed[s], dir);
        fflush(stdout);
        double t0 = km_now();
        argl a = {0};
        if (resume) {
            /* the settings come from the run's mine_config.json; only the
             * flags that change no result pass */
            arg(&a, "mine");
            arg(&a, "--resume");
            arg(&a, "%s", dir);
            arg_pass_neutral(&a, 2);
        } else {
            arg(&a, sup ? "train" : "mine");
            arg(&a, "--data");
            arg(&a, "%s", g->dpath[d]);
            arg(&a, "--out");
            arg(&a, "%s", dir);
            arg(&a, "--labelled-fraction");
            arg(&a, "%.17g", g->frac[f]);
            arg(&a, "--seed");
            arg(&a, "%d", g->seed[s]);
            if (sup) {
                if (simclr) {
                    arg(&a, "--encoder-weights");
                    arg(&a, "%s", enc);
                }
                arg_pass(&a, 1);
            } else {
                int onetime = !strcmp(base, "onetime"), cont = !strcmp(base, "continuous");
                arg(&a, "--teacher");
                arg(&a, "%s", g->teacher);
                arg(&a, "--init");
                arg(&a, "%s", sup_best);
                arg(&a, "--schedule");
                arg(&a, onetime ? "onetime" : "continuous");
                arg(&a, "--prompt-mode");
                arg(&a, "%s", onetime || cont ? "points+box" : base);
                arg_pass(&a, 2);
            }
        }
        arg(&a, "--quiet");
        st = call(sup ? km_cmd_train : km_cmd_mine, &a);
        if (st) return km_err_prefix(st, "run %s: ", dir);
        double t1 = km_now();
        arg(&a, "eval");
        arg(&a, "--weights");
        arg(&a, "%s", best);
        arg(&a, "--data");
        arg(&a, "%s", g->dpath[d]);
        arg(&a, "--split");
        arg(&a, "test");
        arg(&a, "--split-dir");
        arg(&a, "%s", splits);
        arg(&a, "--out");
        arg(&a, "%s", evd);
        arg_pass(&a, 8);
        st = call(km_cmd_eval, &a);
        if (st) return km_err_prefix(st, "evaluating %s: ", dir);
        if (tabled) g->ran++;
        else g->deps++;
        printf("%s %s %s %s seed%d: done, training %.1f s, eval %.1f s\n", tag, g->dname[d], g->fname[f], method,
               g->seed[s], t1 - t0, km_now() - t1);
    }
    st = read_summary(summ, &g->dice[d][f][mi][s], &g->iou[d][f][mi][s], &g->ntest[d][f][mi][s]);
    if (st) return st;
    g->have[d][f][mi][s] = 1;
    if (tabled) printf("      test Dice %.4f  IoU %.4f  (%d images)\n", g->dice[d][f][mi][s], g->iou[d][f][mi][s],
                       g->ntest[d][f][mi][s]);
    fflush(stdout);
    return KM_OK;
}

/* ---- tables ---- */

static void agg(const grid *g, int d, int f, int m, int iou, double *mean, double *std, int *n) {
    double x[MAXS];
    *n = 0;
    for (int s = 0; s < g->ns; s++)
        if (g->have[d][f][m][s]) x[(*n)++] = iou ? g->iou[d][f][m][s] : g->dice[d][f][m][s];
    km_mean_std(x, *n, mean, std);
}

static km_status write_outputs(const grid *g, const int *tabled) {
    char path[4096];
    static const char *const cols[] = {"kind", "dataset", "fraction", "method", "seed", "n_seeds",
                                       "n_test", "dice_mean", "dice_std", "iou_mean", "iou_std", "run_dir"};
    snprintf(path, sizeof path, "%s/results.csv", g->out);
    km_csv c;
    km_status s = km_csv_open(&c, path, cols, 12, 0);
    if (s) return s;
    for (int d = 0; d < g->nd && !s; d++)
        for (int f = 0; f < g->nf && !s; f++)
            for (int m = 0; m < g->nm && !s; m++) {
                if (!tabled[m]) continue;
                for (int k = 0; k < g->ns && !s; k++) {
                    if (!g->have[d][f][m][k]) continue;
                    char dir[4096];
                    run_dir(g, d, f, g->meth[m], k, dir, sizeof dir);
                    km_csv_str(&c, "run");
                    km_csv_str(&c, g->dname[d]);
                    km_csv_str(&c, g->fname[f]);
                    km_csv_str(&c, g->meth[m]);
                    km_csv_int(&c, g->seed[k]);
                    km_csv_int(&c, 1);
                    km_csv_int(&c, g->ntest[d][f][m][k]);
                    km_csv_num(&c, g->dice[d][f][m][k]);
                    km_csv_str(&c, "");
                    km_csv_num(&c, g->iou[d][f][m][k]);
                    km_csv_str(&c, "");
                    km_csv_str(&c, dir);
                    s = km_csv_end_row(&c);
                }
                double md, sd, mu, su;
                int n;
                agg(g, d, f, m, 0, &md, &sd, &n);
                agg(g, d, f, m, 1, &mu, &su, &n);
                if (!n || s) continue;
                km_csv_str(&c, "mean");
                km_csv_str(&c, g->dname[d]);
                km_csv_str(&c, g->fname[f]);
                km_csv_str(&c, g->meth[m]);
                km_csv_str(&c, "");
                km_csv_int(&c, n);
                km_csv_str(&c, "");
                km_csv_num(&c, md);
                if (n > 1) km_csv_num(&c, sd);
                else km_csv_str(&c, "");
                km_csv_num(&c, mu);
                if (n > 1) km_csv_num(&c, su);
                else km_csv_str(&c, "");
                km_csv_str(&c, "");
                s = km_csv_end_row(&c);
            }
    km_status s2 = km_csv_close(&c);
    if (s) return s;
    if (s2) return s2;

    char *buf = NULL;
    size_t len = 0;
    FILE *o = open_memstream(&buf, &len);
    if (!o) return km_err(KM_ENOMEM, "cannot build tables.md");
    fprintf(o, "# kmseg experiments\n\n");
    fprintf(o, "Test-split mean per-image score of each run's best checkpoint; cells: mean ± sample std (ddof 1) "
               "over seeds");
    fprintf(o, " (seeds:");
    for (int k = 0; k < g->ns; k++) fprintf(o, " %d", g->seed[k]);
    fprintf(o, "); \"(n=1)\": one seed, no std; \"-\": no finished run. Columns: labelled fraction.\n");
    for (int d = 0; d < g->nd; d++)
        for (int metric = 0; metric < 2; metric++) {
            fprintf(o, "\n## %s - %s\n\n| method |", g->dname[d], metric ? "IoU" : "Dice");
            for (int f = 0; f < g->nf; f++) fprintf(o, " %g%% |", 100 * g->frac[f]);
            fprintf(o, "\n|---|");
            for (int f = 0; f < g->nf; f++) fprintf(o, "---|");
            fprintf(o, "\n");
            for (int m = 0; m < g->nm; m++) {
                if (!tabled[m]) continue;
                fprintf(o, "| %s |", g->meth[m]);
                for (int f = 0; f < g->nf; f++) {
                    double mean, std;
                    int n;
                    agg(g, d, f, m, metric, &mean, &std, &n);
                    if (!n) fprintf(o, " - |");
                    else if (n == 1) fprintf(o, " %.4f (n=1) |", mean);
                    else fprintf(o, " %.4f ± %.4f |", mean, std);
                }
                fprintf(o, "\n");
            }
        }
    fclose(o);
    snprintf(path, sizeof path, "%s/tables.md", g->out);
    s = km_write_file_atomic(path, buf, len);
    free(buf); /* open_memstream buffer: plain malloc */
    return s;
}

static int valid_name(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == '-'))
            return 0;
    return 1;
}

km_status km_cmd_experiments(int argc, char **argv) {
    const char *out = NULL, *data = NULL, *teacher = NULL, *fractions = "1,0.75,0.5",
               *methods = "supervised,onetime,continuous", *seeds = "0,1,2", *pe = NULL, *pb = NULL;
    int simclr = 0;
    km_flag flags[16 + NPASS];
    km_flag head[] = {
        {"--out", KM_FLAG_STR, &out, "experiment folder (run folders, results.csv, tables.md)", 1, 0},
        {"--data", KM_FLAG_STR, &data, "datasets as name=path[,name=path] (e.g. kvasir=data/kvasir-seg)", 1, 0},
        {"--teacher", KM_FLAG_STR, &teacher, "SAM / MedSAM checkpoint (needed by the mining methods)", 0, 0},
        {"--fractions", KM_FLAG_STR, &fractions, "labelled fractions of the train split", 0, 0},
        {"--methods", KM_FLAG_STR, &methods,
         "supervised, onetime, continuous, points, box, points+box, points+box+mask (the last four: continuous "
         "mining with that prompt mode)", 0, 0},
        {"--seeds", KM_FLAG_STR, &seeds, "seeds (split, init, shuffling, augmentation)", 0, 0},
        {"--simclr", KM_FLAG_BOOL, &simclr, "also the SimCLR-initialised variant of every method", 0, 0},
        {"--pretrain-epochs", KM_FLAG_STR, &pe, "SimCLR pretraining epochs (default: kmseg pretrain's)", 0, 0},
    };
    int nf = 0;
    for (size_t i = 0; i < sizeof head / sizeof head[0]; i++) flags[nf++] = head[i];
    flags[nf++] = (km_flag){"--pretrain-batch", KM_FLAG_STR, &pb, "SimCLR images per step (default: kmseg pretrain's)", 0, 0};
    int bools[NPASS];
    for (int i = 0; i < NPASS; i++) {
        g_pass[i].val = NULL;
        bools[i] = 0;
        flags[nf++] = (km_flag){g_pass[i].name, g_pass[i].is_bool ? KM_FLAG_BOOL : KM_FLAG_STR,
                                g_pass[i].is_bool ? (void *)&bools[i] : (void *)&g_pass[i].val,
                                g_pass[i].help, 0, 0};
    }
    flags[nf] = (km_flag){0};
    KM_ASSERT(nf < (int)(sizeof flags / sizeof flags[0]));
    int help = 0;
    km_status s = km_parse_flags("experiments",
                                 "--out DIR --data kvasir=PATH[,covid=PATH] --teacher CKPT [--fractions 1,0.75,0.5] "
                                 "[--methods ...] [--seeds 0,1,2] [--simclr] [train/mine knobs]",
                                 flags, argc, argv, &help);
    if (s || help) return s;
    for (int i = 0; i < NPASS; i++)
        if (g_pass[i].is_bool && bools[i]) g_pass[i].val = "1";

    grid *g = km_calloc(sizeof *g);
    char *dbuf = km_strdup(data), *fbuf = km_strdup(fractions), *mbuf = km_strdup(methods), *sbuf = km_strdup(seeds);
    int tabled[2 * MAXM] = {0};
    g->out = out;
    g->teacher = teacher;
    g->simclr = simclr;
    g->pretrain_epochs = pe;
    g->pretrain_batch = pb;
    char *items[MAXS];
    int n = 0;
    /* datasets */
    s = split_list("--data", dbuf, items, MAXD, &n);
    for (int i = 0; i < n && !s; i++) {
        char *eq = strchr(items[i], '=');
        if (!eq) {
            s = km_err(KM_EARG, "--data '%s': expected name=path (e.g. kvasir=/data/kvasir-seg)", items[i]);
            break;
        }
        *eq = 0;
        if (!valid_name(items[i])) s = km_err(KM_EARG, "--data: dataset name '%s': expected letters, digits, _ or -", items[i]);
        else if (!dir_exists(eq + 1)) s = km_err(KM_EIO, "--data %s=%s: no such folder", items[i], eq + 1);
        for (int k = 0; k < g->nd && !s; k++)
            if (!strcmp(g->dname[k], items[i])) s = km_err(KM_EARG, "--data: dataset '%s' given twice", items[i]);
        g->dname[g->nd] = items[i];
        g->dpath[g->nd++] = eq + 1;
    }
    /* fractions */
    if (!s) s = split_list("--fractions", fbuf, items, MAXF, &n);
    for (int i = 0; i < n && !s; i++) {
        char *end = NULL;
        double v = strtod(items[i], &end);
        if (end == items[i] || *end || !(v > 0 && v <= 1))
            s = km_err(KM_EARG, "--fractions: '%s': expected a number in (0, 1]", items[i]);
        for (int k = 0; k < g->nf && !s; k++)
            if (g->frac[k] == v) s = km_err(KM_EARG, "--fractions: %s given twice", items[i]);
        g->frac[g->nf] = v;
        g->fname[g->nf++] = items[i];
    }
    /* seeds */
    if (!s) s = split_list("--seeds", sbuf, items, MAXS, &n);
    for (int i = 0; i < n && !s; i++) {
        char *end = NULL;
        long v = strtol(items[i], &end, 10);
        if (end == items[i] || *end || v < 0 || v > 1000000000)
            s = km_err(KM_EARG, "--seeds: '%s': expected a non-negative integer", items[i]);
        for (int k = 0; k < g->ns && !s; k++)
            if (g->seed[k] == v) s = km_err(KM_EARG, "--seeds: %ld given twice", v);
        g->seed[g->ns++] = (int)v;
    }
    /* methods; the supervised run is always in the list (dependency of mining) */
    int need_teacher = 0;
    if (!s) s = split_list("--methods", mbuf, items, MAXM - 1, &n);
    if (!s) {
        g->meth[g->nm++] = km_strdup("supervised");
        for (int i = 0; i < n && !s; i++) {
            int known = 0;
            for (int k = 0; k < NMETHODS; k++) known |= !strcmp(items[i], k_methods[k]);
            if (!known) {
                s = km_err(KM_EARG, "--methods: unknown method '%s'; expected supervised, onetime, continuous, points, "
                           "box, points+box or points+box+mask", items[i]);
                break;
            }
            int dup = 0;
            for (int k = 1; k < g->nm; k++) dup |= !strcmp(g->meth[k], items[i]);
            if (dup && strcmp(items[i], "supervised")) {
                s = km_err(KM_EARG, "--methods: '%s' given twice", items[i]);
                break;
            }
            if (!strcmp(items[i], "supervised")) tabled[0] = 1;
            else {
                need_teacher = 1;
                tabled[g->nm] = 1;
                g->meth[g->nm++] = km_strdup(items[i]);
            }
        }
        if (simclr && !s) {
            int nbase = g->nm;
            for (int m = 0; m < nbase; m++) {
                char b[64];
                snprintf(b, sizeof b, "simclr+%s", g->meth[m]);
                tabled[g->nm] = tabled[m];
                g->meth[g->nm++] = km_strdup(b);
            }
        }
    }
    if (!s && need_teacher && !teacher)
        s = km_err(KM_EARG, "--teacher: required by the mining methods (onetime, continuous, prompt ablations)");
    if (!s && need_teacher && !file_exists(teacher)) s = km_err(KM_EIO, "--teacher %s: no such file", teacher);
    if (!s) s = km_mkdir_p(out);
    if (!s) s = check_settings(out, need_teacher ? teacher : NULL, simclr ? pe : NULL, simclr ? pb : NULL);

    double t0 = km_now();
    int started = !s;
    if (!s) {
        int planned = 0;
        for (int m = 0; m < g->nm; m++) planned += tabled[m];
        planned *= g->nd * g->nf * g->ns;
        printf("experiments: %d dataset(s) x %d fraction(s) x %d method(s) x %d seed(s) = %d runs in %s\n", g->nd,
               g->nf, g->nm - (tabled[0] ? 0 : 1 + (simclr ? 1 : 0)), g->ns, planned, out);
        fflush(stdout);
    }
    for (int d = 0; d < g->nd && !s; d++)
        for (int f = 0; f < g->nf && !s; f++)
            for (int k = 0; k < g->ns && !s; k++)
                for (int m = 0; m < g->nm && !s; m++)
                    if (tabled[m]) s = do_run(g, d, f, m, k, 1);
    /* tables from every finished run, also after a failure (partial grid) */
    if (started) {
        km_status s2 = write_outputs(g, tabled);
        if (!s) s = s2;
    }
    if (!s)
        printf("experiments: %d runs: %d ran, %d skipped (finished earlier); %d supervised dependency run(s), "
               "%d SimCLR pretraining(s); %.1f s; tables in %s/tables.md, %s/results.csv\n",
               g->total, g->ran, g->skipped, g->deps, g->pretrained, km_now() - t0, out, out);
    for (int m = 0; m < g->nm; m++) km_free(g->meth[m]);
    km_free(dbuf);
    km_free(fbuf);
    km_free(mbuf);
    km_free(sbuf);
    km_free(g);
    return s;
}
