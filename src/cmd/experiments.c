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
 * test split (RUN/splits) into RUN/eval/{per_image.csv,summary.json}; with
 * --refined also `kmseg eval --teacher` (refined inference) into
 * RUN/eval_refined/, tabled as "<method>+refined".
 * --preset paper|cpu names a protocol (k_presets below); it fills in only
 * what the command line leaves unset, and its values land in settings.txt
 * like any pass-through knob.
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
 *                    seeds ("mean (n=1)" with one seed, "-" for none).
 *   DIR/mining.md    the teacher's gain (pseudo-label vs the student's own
 *                    Dice on the same unlabelled images) and the cost per
 *                    epoch of each method (report/mining.h).
 * Choices made on the validation split only (issue 11 point 6):
 *   "<method>+start-competes" rows (tables.md, results.csv): per seed the
 *                    mining run if its best val loss (metrics.csv) is below
 *                    that of the supervised run it started from, else that
 *                    supervised run (epoch 0 competes);
 *   --pseudo-weights a,b,...: the requested methods' runs have the mine
 *                    setting's --pseudo-weight; every other weight adds one
 *                    run "<method>@w<weight>" per mining method and seed,
 *                    numbered after every other run (the indices of a grid
 *                    without the flag do not move); the rows of a method
 *                    show the weight with the highest mean best-epoch val
 *                    Dice over seeds (tables.md's last section);
 *   --knobs:         the teacher's gain per box rule on the val split of
 *                    every finished supervised run -> DIR/knobs/, knobs.md
 *                    (experiments_knobs.h). */
/* nftw (removing an interrupted run folder) is an X/Open extension */
#define _XOPEN_SOURCE 700
#include "cmd.h"
#include "experiments_knobs.h"

#include "../core/args.h"
#include "../mine/mine.h"
#include "../report/mining.h"
#include "../core/log.h"
#include "../eval/metrics.h"
#include "../io/json.h"
#include "../io/settings.h"
#include "../mine/refine.h"
#include "../models/teacher.h"
#include "../train/simclr.h"
#include "../train/train.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { MAXD = 8, MAXF = 16, MAXM = 16, MAXS = 32, MAXW = 8 };
enum { MAXMS = 64 }; /* method slots: requested methods, simclr variants, --pseudo-weights variants */

static const char *const k_methods[] = {"supervised", "onetime", "continuous", "points", "box", "points+box",
                                        "points+box+mask"};
enum { NMETHODS = 7 };

/* Pass-through flags: value forwarded verbatim when given, to the commands
 * in `to`: */
enum { TO_TRAIN = 1, TO_MINE = 2, TO_PRETRAIN = 4, TO_EVAL = 8, TO_REFINED = 16 /* eval --refine only */ };
/* They come from the settings tables (their KM_SET_PASS rows; KM_SET_NEUTRAL:
 * changes no result, so it may go with --resume and is not in settings.txt):
 * train's rows go to train and mine (mine takes every training knob but
 * --max-steps), pretrain's to pretrain, the refine fragment's (refine.h) to
 * mine and refined eval. What is in no table yet is listed here: */
typedef struct {
    const char *flag;
    int to;
    const char *help; /* NULL: the flag is already listed (a table's row) */
    int is_bool, neutral;
} passextra;
static const passextra k_pass_extra[] = {
    /* `kmseg eval` has no settings table: the training rows it takes */
    {"--size", TO_EVAL, NULL, 0, 0},
    {"--label", TO_EVAL | TO_PRETRAIN, NULL, 0, 0}, /* pretrain: accepted, no effect */
    {"--threads", TO_EVAL, NULL, 0, 1},
};

static km_passlist g_pass;

static void build_passlist(void) {
    memset(&g_pass, 0, sizeof g_pass);
    km_passlist_add(&g_pass, &km_train_settings, TO_TRAIN, NULL);
    km_passlist_add(&g_pass, &km_train_settings, TO_MINE, km_mine_train_skip);
    km_passlist_add(&g_pass, &km_mine_settings, TO_MINE, NULL);
    km_passlist_add(&g_pass, &km_simclr_settings, TO_PRETRAIN, NULL);
    km_passlist_add(&g_pass, &km_refine_settings, TO_REFINED, NULL);
    for (size_t k = 0; k < sizeof k_pass_extra / sizeof k_pass_extra[0]; k++) {
        const passextra *e = &k_pass_extra[k];
        int i = 0;
        while (i < g_pass.n && strcmp(g_pass.items[i].flag, e->flag)) i++;
        KM_ASSERT(i < g_pass.n || e->help); /* a NULL help names a table's row */
        if (i == g_pass.n) g_pass.items[g_pass.n++] = (km_passflag){e->flag, e->help, 0, e->is_bool, e->neutral, NULL};
        g_pass.items[i].to |= e->to;
    }
}

/* Named protocols (--preset). "paper" is method.md's protocol (every knob at
 * its command's default). "cpu" is sized so that the Kvasir-SEG grid
 * (supervised, one-time, continuous, each also with refined inference, at
 * 10/25/50 % labelled, 3 seeds) finishes in about 5 hours on 2 cores; why
 * each value: README "A protocol that fits a CPU". A preset only fills in
 * what the command line leaves unset. */
typedef struct {
    const char *name, *fractions, *methods, *seeds;
    int refined;
    const char *pass[16][2]; /* flag, value */
} preset;

static const preset k_presets[] = {
    {"paper", NULL, NULL, NULL, 0, {{0}}},
    {"cpu", "0.1,0.25,0.5", "supervised,onetime,continuous", "0,1,2", 1,
     {{"--size", "128"}, {"--resnet", "18"}, {"--epochs", "40"}, {"--mine-epochs", "8"},
      {"--early-stop", "6"}, {"--plateau-patience", "2"}, {"--lr", "3e-4"}, {0}}},
};

static km_status apply_preset(const char *name, const char **fractions, const char **methods,
                              const char **seeds, int *refined, const km_flag *flags) {
    const preset *p = NULL;
    for (size_t i = 0; i < sizeof k_presets / sizeof k_presets[0]; i++)
        if (!strcmp(name, k_presets[i].name)) p = &k_presets[i];
    if (!p) return km_err(KM_EARG, "--preset '%s': expected paper or cpu", name);
    int seen_f = 0, seen_m = 0, seen_s = 0, seen_r = 0;
    for (const km_flag *f = flags; f->name; f++) {
        seen_f |= f->seen && !strcmp(f->name, "--fractions");
        seen_m |= f->seen && !strcmp(f->name, "--methods");
        seen_s |= f->seen && !strcmp(f->name, "--seeds");
        seen_r |= f->seen && !strcmp(f->name, "--refined");
    }
    if (p->fractions && !seen_f) *fractions = p->fractions;
    if (p->methods && !seen_m) *methods = p->methods;
    if (p->seeds && !seen_s) *seeds = p->seeds;
    if (!seen_r) *refined |= p->refined;
    for (int k = 0; p->pass[k][0]; k++)
        for (int i = 0; i < g_pass.n; i++)
            if (!strcmp(g_pass.items[i].flag, p->pass[k][0]) && !g_pass.items[i].val)
                g_pass.items[i].val = (char *)p->pass[k][1];
    return KM_OK;
}

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

/* The passed flags for command mask `to`, but `skip` (NULL: none). */
static void arg_pass_but(argl *a, int to, const char *skip) {
    for (int i = 0; i < g_pass.n; i++) {
        const km_passflag *p = &g_pass.items[i];
        if (!(p->to & to) || !p->val || (skip && !strcmp(p->flag, skip))) continue;
        arg(a, "%s", p->flag);
        if (!p->is_bool) arg(a, "%s", p->val);
    }
}

static void arg_pass(argl *a, int to) { arg_pass_but(a, to, NULL); }

/* The passed flags for command mask `to` that change no result: all that
 * may go with --resume (the run's own settings come from its folder). */
static void arg_pass_neutral(argl *a, int to) {
    for (int i = 0; i < g_pass.n; i++) {
        const km_passflag *p = &g_pass.items[i];
        if ((p->to & to) && p->neutral && p->val) {
            arg(a, "%s", p->flag);
            if (!p->is_bool) arg(a, "%s", p->val);
        }
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
 * one with different settings is refused. Lines are matched by flag, in any
 * order (a file written before a knob existed lacks its line: its runs had
 * the default, and the file is not rewritten for it, so that binaries older
 * than the knob still read it). The grid lists may grow freely, so a line "(unused)" (no
 * mining method / no --simclr yet) on either side matches anything and is
 * filled in by the first invocation that uses it. */
static int current_settings(char **cur, const char *teacher, const char *pe, const char *pb) {
    int nl = 0;
    char line[4200];
    for (int i = 0; i < g_pass.n; i++)
        if (!g_pass.items[i].neutral) {
            snprintf(line, sizeof line, "%s %s", g_pass.items[i].flag, g_pass.items[i].val ? g_pass.items[i].val : "(default)");
            cur[nl++] = km_strdup(line);
        }
    snprintf(line, sizeof line, "--teacher %s", teacher ? teacher : "(unused)");
    cur[nl++] = km_strdup(line);
    snprintf(line, sizeof line, "--pretrain-epochs %s", pe ? pe : "(unused)");
    cur[nl++] = km_strdup(line);
    snprintf(line, sizeof line, "--pretrain-batch %s", pb ? pb : "(unused)");
    cur[nl++] = km_strdup(line);
    return nl;
}

static int ends_unused(const char *l) {
    size_t n = strlen(l), u = strlen(" (unused)");
    return n > u && !strcmp(l + n - u, " (unused)");
}

/* The line of settings.txt text `old` for the flag of line `cur`, NULL if none. */
static char *recorded_line(char *old, const char *cur, char *buf, size_t n) {
    size_t fl = strcspn(cur, " ");
    for (char *t = old; t && *t;) {
        char *nl = strchr(t, '\n');
        size_t len = nl ? (size_t)(nl - t) : strlen(t);
        if (len > fl && !strncmp(t, cur, fl) && t[fl] == ' ' && len < n) {
            memcpy(buf, t, len);
            buf[len] = 0;
            return buf;
        }
        t = nl ? nl + 1 : NULL;
    }
    return NULL;
}

/* Compares the current lines with settings.txt's text; *changed: the file
 * must be (re)written. */
static km_status compare_settings(const char *path, char *old, char **cur, int nl, int *changed) {
    char buf[4200];
    for (int i = 0; i < nl; i++) {
        const char *t = recorded_line(old, cur[i], buf, sizeof buf);
        int c_default = !strcmp(cur[i] + strcspn(cur[i], " "), " (default)");
        if (!t) { /* a knob newer than the file: fine at its default (no rewrite: the file stays as written) */
            if (c_default || ends_unused(cur[i])) continue;
            t = "(none: the default)";
        } else if (!strcmp(t, cur[i])) {
            continue;
        } else if (ends_unused(cur[i])) { /* keep the recorded value */
            km_free(cur[i]);
            cur[i] = km_strdup(t);
            continue;
        } else if (ends_unused(t)) {
            *changed = 1;
            continue;
        }
        return km_err(KM_EARG, "%s: this folder's runs were made with '%s', now '%s': finished runs would be "
                      "reused with other settings; use a new --out (or the old settings)", path, t, cur[i]);
    }
    return KM_OK;
}

static km_status check_settings(const char *out, const char *teacher, const char *pe, const char *pb) {
    char *cur[KM_CLI_MAX + 3];
    int nl = current_settings(cur, teacher, pe, pb);
    char path[4096];
    snprintf(path, sizeof path, "%s/settings.txt", out);
    km_status s = KM_OK;
    int changed = !file_exists(path);
    if (!changed) {
        uint8_t *old = NULL;
        size_t n = 0;
        s = km_read_file(path, 1 << 20, &old, &n);
        if (!s) {
            char *text = km_malloc(n + 1);
            memcpy(text, old, n);
            text[n] = 0;
            s = compare_settings(path, text, cur, nl, &changed);
            km_free(text);
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

typedef enum { JOB_PRETRAIN = 0, JOB_SUPERVISED = 1, JOB_MINE = 2 } job_stage;
static const char *const k_stage[] = {"pretrain", "supervised", "mining"};

typedef struct job {
    job_stage stage;
    int d, f, m, k; /* f, m unused for a pretraining */
    int tabled;     /* a requested run (not only a dependency) */
} job;


typedef struct {
    char *dname[MAXD], *dpath[MAXD];
    int nd;
    double frac[MAXF];
    char *fname[MAXF];
    int nf;
    /* method slots: the requested methods and their simclr variants (the
     * first nm0), then one "<method>@w<weight>" per mining method and other
     * --pseudo-weights weight; mbase: the requested method a slot varies
     * (itself for the first nm0), mweight: its pseudo-label weight */
    char *meth[MAXMS];
    int nm, nm0, mbase[MAXMS];
    double mweight[MAXMS];
    int seed[MAXS];
    int ns;
    const char *out, *teacher, *pretrain_epochs, *pretrain_batch;
    int simclr;
    /* results: [d][f][m][s] */
    double dice[MAXD][MAXF][MAXMS][MAXS], iou[MAXD][MAXF][MAXMS][MAXS];
    int ntest[MAXD][MAXF][MAXMS][MAXS], have[MAXD][MAXF][MAXMS][MAXS];
    /* refined inference (--refined): the same checkpoints, student -> prompts -> teacher */
    int refined;
    double rdice[MAXD][MAXF][MAXMS][MAXS], riou[MAXD][MAXF][MAXMS][MAXS];
    int rhave[MAXD][MAXF][MAXMS][MAXS];
    /* validation, per finished run: val loss and val Dice of its best epoch
     * (lowest val loss, metrics.csv) */
    double vloss[MAXD][MAXF][MAXMS][MAXS], vdice[MAXD][MAXF][MAXMS][MAXS];
    int vhave[MAXD][MAXF][MAXMS][MAXS];
    /* chosen on validation (load_results): pick, the slot whose runs the rows
     * of requested method m show (its pseudo-label weight); sc_slot, the run
     * a "+start-competes" row takes per seed (-1: none) */
    int pick[MAXD][MAXF][MAXMS], sc_slot[MAXD][MAXF][MAXMS][MAXS];
    job *jobs; /* every run of the grid, stage by stage (see "jobs" below) */
    int nj, capj;
    int ran, pretrained, deps; /* deps: untabled supervised runs made for mining */
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

/* SimCLR pretraining of dataset d, seed k (job j). Finished when its
 * pretrain.done marker exists (written here after kmseg pretrain returned;
 * encoder.safetensors alone is written after every epoch). A folder with a
 * config.json but no marker was interrupted and is resumed. */
/* ---- jobs: the grid as independent runs (--list-runs, --run-index, --shard) ----
 * Every run is one job; jobs are numbered stage by stage (SimCLR
 * pretrainings, then supervised runs, then mining runs; inside a stage by
 * dataset, fraction, seed, method), so each stage is one contiguous index
 * range: one Slurm job array per stage, chained with afterok dependencies.
 * A job waits for at most one other: a mining run for its supervised run, a
 * SimCLR-initialised supervised run for its pretraining. */

static int is_simclr(const char *method) { return !strncmp(method, "simclr+", 7); }
static const char *base_method(const char *method) { return is_simclr(method) ? method + 7 : method; }

static void job_id(const grid *g, const job *j, char *buf, size_t n) {
    if (j->stage == JOB_PRETRAIN) snprintf(buf, n, "%s/simclr/seed%d", g->dname[j->d], g->seed[j->k]);
    else snprintf(buf, n, "%s/%s/%s/seed%d", g->dname[j->d], g->fname[j->f], g->meth[j->m], g->seed[j->k]);
}

static void job_dir(const grid *g, const job *j, char *buf, size_t n) {
    char id[1024];
    job_id(g, j, id, sizeof id);
    snprintf(buf, n, "%s/%s", g->out, id);
}

static void job_file(const grid *g, const job *j, const char *name, char *buf, size_t n) {
    char dir[4096];
    job_dir(g, j, dir, sizeof dir);
    snprintf(buf, n, "%s/%s", dir, name);
}

static int job_finished(const grid *g, const job *j) {
    char a[4200], b[4200];
    if (j->stage == JOB_PRETRAIN) {
        job_file(g, j, "pretrain.done", a, sizeof a);
        job_file(g, j, "encoder.safetensors", b, sizeof b);
        return file_exists(a) && file_exists(b);
    }
    job_file(g, j, "eval/summary.json", a, sizeof a);
    job_file(g, j, "eval_refined/summary.json", b, sizeof b);
    return file_exists(a) && (!g->refined || !j->tabled || file_exists(b));
}

static int find_job(const grid *g, job_stage st, int d, int f, int m, int k) {
    for (int i = 0; i < g->nj; i++) {
        const job *j = &g->jobs[i];
        if (j->stage == st && j->d == d && j->k == k && (st == JOB_PRETRAIN || (j->f == f && j->m == m)))
            return i;
    }
    return -1;
}

/* The job j waits for, or -1. */
static int job_dep(const grid *g, const job *j) {
    if (j->stage == JOB_PRETRAIN) return -1;
    int simclr = is_simclr(g->meth[j->m]);
    if (j->stage == JOB_SUPERVISED) return simclr ? find_job(g, JOB_PRETRAIN, j->d, 0, 0, j->k) : -1;
    for (int m = 0; m < g->nm; m++)
        if (!strcmp(g->meth[m], simclr ? "simclr+supervised" : "supervised"))
            return find_job(g, JOB_SUPERVISED, j->d, j->f, m, j->k);
    return -1;
}

static void add_job(grid *g, job_stage st, int d, int f, int m, int k, int tabled) {
    if (g->nj == g->capj) {
        g->capj = g->capj ? 2 * g->capj : 64;
        job *nj = km_malloc(sizeof(job) * g->capj);
        if (g->nj) memcpy(nj, g->jobs, sizeof(job) * g->nj);
        km_free(g->jobs);
        g->jobs = nj;
    }
    g->jobs[g->nj++] = (job){st, d, f, m, k, tabled};
}

static void enumerate_jobs(grid *g, const int *tabled) {
    for (int d = 0; d < g->nd && g->simclr; d++)
        for (int k = 0; k < g->ns; k++) add_job(g, JOB_PRETRAIN, d, 0, 0, k, 0);
    for (int st = JOB_SUPERVISED; st <= JOB_MINE; st++)
        for (int d = 0; d < g->nd; d++)
            for (int f = 0; f < g->nf; f++)
                for (int k = 0; k < g->ns; k++)
                    for (int m = 0; m < g->nm0; m++) {
                        int sup = !strcmp(base_method(g->meth[m]), "supervised");
                        if (sup == (st == JOB_SUPERVISED)) add_job(g, st, d, f, m, k, tabled[m]);
                    }
    /* --pseudo-weights variants after every other run: indices do not move */
    for (int d = 0; d < g->nd; d++)
        for (int f = 0; f < g->nf; f++)
            for (int k = 0; k < g->ns; k++)
                for (int m = g->nm0; m < g->nm; m++) add_job(g, JOB_MINE, d, f, m, k, tabled[m]);
}

/* An exclusive lock on the job (fcntl record lock on OUT/.locks/<id>.lock):
 * the kernel drops it when the holder exits or dies, so a crashed job never
 * blocks the grid, and fcntl locks also work across machines on NFS. Waits
 * while another process holds it. *fd: close it to unlock. */
static km_status lock_job(const grid *g, const job *j, int *fd) {
    char id[1024], dir[4200], path[5300];
    job_id(g, j, id, sizeof id);
    for (char *c = id; *c; c++)
        if (*c == '/') *c = '%';
    snprintf(dir, sizeof dir, "%s/.locks", g->out);
    km_status s = km_mkdir_p(dir);
    if (s) return s;
    snprintf(path, sizeof path, "%s/%s.lock", dir, id);
    *fd = open(path, O_RDWR | O_CREAT, 0666);
    if (*fd < 0) return km_err(KM_EIO, "%s: cannot open the lock file: %s", path, strerror(errno));
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(*fd, F_SETLK, &fl) == 0) return KM_OK;
    printf("experiments: %s: another process runs it, waiting\n", id);
    fflush(stdout);
    while (fcntl(*fd, F_SETLKW, &fl))
        if (errno != EINTR) {
            close(*fd);
            return km_err(KM_EIO, "%s: cannot lock: %s", path, strerror(errno));
        }
    return KM_OK;
}

static km_status exec_pretrain(grid *g, const job *j) {
    char dir[4096], enc[4200], cfg[4200], done[4200];
    job_dir(g, j, dir, sizeof dir);
    job_file(g, j, "encoder.safetensors", enc, sizeof enc);
    job_file(g, j, "config.json", cfg, sizeof cfg);
    job_file(g, j, "pretrain.done", done, sizeof done);
    km_status st;
    const int resume = file_exists(cfg);
    if (resume) {
        printf("experiments: %s: interrupted SimCLR pretraining (no pretrain.done), resuming it\n", dir);
    } else if ((st = rm_rf(dir)) || (st = km_mkdir_p(dir))) {
        return st;
    }
    printf("experiments: %s seed%d: SimCLR pretraining -> %s\n", g->dname[j->d], g->seed[j->k], dir);
    fflush(stdout);
    double t0 = km_now();
    argl a = {0};
    arg(&a, "pretrain");
    if (resume) { /* settings from the folder's config.json; only result-neutral flags */
        arg(&a, "--resume");
        arg(&a, "%s", dir);
        arg_pass_neutral(&a, TO_PRETRAIN);
    } else {
        arg(&a, "--data");
        arg(&a, "%s", g->dpath[j->d]);
        arg(&a, "--out");
        arg(&a, "%s", dir);
        arg(&a, "--seed");
        arg(&a, "%d", g->seed[j->k]);
        if (g->pretrain_epochs) {
            arg(&a, "--epochs");
            arg(&a, "%s", g->pretrain_epochs);
        }
        if (g->pretrain_batch) {
            arg(&a, "--batch");
            arg(&a, "%s", g->pretrain_batch);
        }
        arg_pass(&a, TO_PRETRAIN);
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
    printf("experiments: %s seed%d: SimCLR pretraining done in %.1f s\n", g->dname[j->d], g->seed[j->k], km_now() - t0);
    return KM_OK;
}

/* Command arguments of a training or mining run (not resumed). */
static void run_args(const grid *g, const job *j, const char *dir, const char *enc, const char *sup_best,
                     argl *a) {
    const char *method = g->meth[g->mbase[j->m]], *base = base_method(method);
    int sup = j->stage == JOB_SUPERVISED;
    arg(a, sup ? "train" : "mine");
    arg(a, "--data");
    arg(a, "%s", g->dpath[j->d]);
    arg(a, "--out");
    arg(a, "%s", dir);
    arg(a, "--labelled-fraction");
    arg(a, "%.17g", g->frac[j->f]);
    arg(a, "--seed");
    arg(a, "%d", g->seed[j->k]);
    if (sup) {
        if (is_simclr(method)) {
            arg(a, "--encoder-weights");
            arg(a, "%s", enc);
        }
        arg_pass(a, TO_TRAIN);
        return;
    }
    int onetime = !strcmp(base, "onetime"), cont = !strcmp(base, "continuous");
    arg(a, "--teacher");
    arg(a, "%s", g->teacher);
    arg(a, "--init");
    arg(a, "%s", sup_best);
    arg(a, "--schedule");
    arg(a, onetime ? "onetime" : "continuous");
    arg(a, "--prompt-mode");
    arg(a, "%s", onetime || cont ? "auto" : base);
    if (j->m < g->nm0) {
        arg_pass(a, TO_MINE);
        return;
    }
    arg_pass_but(a, TO_MINE, "--pseudo-weight");
    arg(a, "--pseudo-weight");
    arg(a, "%.17g", g->mweight[j->m]);
}

/* `kmseg eval` of the run's best checkpoint on its test split into
 * RUN/<sub> (eval, or eval_refined with the teacher). */
static km_status eval_run(const grid *g, const char *dir, int d, int refined) {
    argl a = {0};
    arg(&a, "eval");
    arg(&a, "--weights");
    arg(&a, "%s/best.safetensors", dir);
    arg(&a, "--data");
    arg(&a, "%s", g->dpath[d]);
    arg(&a, "--split");
    arg(&a, "test");
    arg(&a, "--split-dir");
    arg(&a, "%s/splits", dir);
    arg(&a, "--out");
    arg(&a, "%s/%s", dir, refined ? "eval_refined" : "eval");
    if (refined) {
        arg(&a, "--teacher");
        arg(&a, "%s", g->teacher);
    }
    arg_pass(&a, refined ? TO_EVAL | TO_REFINED : TO_EVAL);
    km_status st = call(km_cmd_eval, &a);
    if (st) return km_err_prefix(st, "%s %s: ", refined ? "refined evaluation of" : "evaluating", dir);
    return KM_OK;
}

/* Trains (or mines) one run whose dependency has finished, then evaluates
 * it. An interrupted mining run (its mine_config.json exists) is resumed,
 * any other unfinished folder restarted from scratch. */
static km_status exec_run(grid *g, const job *j) {
    char dir[4096], evsum[4200], id[1024], enc[4200] = "", sup_best[4200] = "";
    job_dir(g, j, dir, sizeof dir);
    job_id(g, j, id, sizeof id);
    job_file(g, j, "eval/summary.json", evsum, sizeof evsum);
    int dep = job_dep(g, j);
    if (dep >= 0 && j->stage == JOB_SUPERVISED) job_file(g, &g->jobs[dep], "encoder.safetensors", enc, sizeof enc);
    if (dep >= 0 && j->stage == JOB_MINE) job_file(g, &g->jobs[dep], "best.safetensors", sup_best, sizeof sup_best);
    km_status st;
    double t0 = km_now(), t1 = t0;
    if (!file_exists(evsum)) {
        char mcfg[4200];
        job_file(g, j, "mine_config.json", mcfg, sizeof mcfg);
        int resume = j->stage == JOB_MINE && file_exists(mcfg);
        argl a = {0};
        if (resume) {
            printf("experiments: %s: interrupted mining run (no eval/summary.json), resuming it\n", dir);
            arg(&a, "mine");
            arg(&a, "--resume");
            arg(&a, "%s", dir);
            arg_pass_neutral(&a, TO_MINE); /* settings from the run's mine_config.json */
        } else {
            if (dir_exists(dir))
                printf("experiments: %s: interrupted run (no eval/summary.json), restarting it from scratch\n", dir);
            if ((st = rm_rf(dir)) || (st = km_mkdir_p(dir))) return st;
            run_args(g, j, dir, enc, sup_best, &a);
        }
        printf("%s %s: running -> %s\n", j->tabled ? "[run]" : "[dependency]", id, dir);
        fflush(stdout);
        arg(&a, "--quiet");
        st = call(j->stage == JOB_SUPERVISED ? km_cmd_train : km_cmd_mine, &a);
        if (st) return km_err_prefix(st, "run %s: ", dir);
        t1 = km_now();
        if ((st = eval_run(g, dir, j->d, 0))) return st;
    }
    double t2 = km_now();
    if (g->refined && j->tabled && (st = eval_run(g, dir, j->d, 1))) return st;
    printf("%s %s: done, training %.1f s, eval %.1f s%s\n", j->tabled ? "[run]" : "[dependency]", id, t1 - t0,
           t2 - t1, g->refined && j->tabled ? ", refined eval included" : "");
    fflush(stdout);
    if (j->tabled) g->ran++;
    else g->deps++;
    return KM_OK;
}

/* Makes job i finished: its dependency first (run here when run_deps, else
 * an error naming it), then the job itself under its lock (another process
 * may have finished it meanwhile). */
static km_status ensure_job(grid *g, int i, int run_deps) {
    const job *j = &g->jobs[i];
    char id[1024];
    job_id(g, j, id, sizeof id);
    if (job_finished(g, j)) return KM_OK;
    int dep = job_dep(g, j);
    if (dep >= 0 && !job_finished(g, &g->jobs[dep])) {
        char did[1024];
        job_id(g, &g->jobs[dep], did, sizeof did);
        if (!run_deps)
            return km_err(KM_EARG, "run %d (%s) waits for run %d (%s, stage %s), which has not finished: run that "
                          "stage first (sbatch --dependency=afterok:<its array job>)", i, id, dep, did,
                          k_stage[g->jobs[dep].stage]);
        km_status st = ensure_job(g, dep, 1);
        if (st) return st;
    }
    int fd;
    km_status st = lock_job(g, j, &fd);
    if (st) return st;
    if (!job_finished(g, j)) {
        if (j->stage == JOB_PRETRAIN) st = exec_pretrain(g, j);
        else st = exec_run(g, j);
    }
    close(fd);
    return st;
}

/* The slot of a requested mining method's supervised run (the one it starts
 * from), -1 when the grid has none. */
static int sup_slot(const grid *g, int m) {
    for (int c = 0; c < g->nm0; c++)
        if (!strcmp(g->meth[c], is_simclr(g->meth[m]) ? "simclr+supervised" : "supervised")) return c;
    return -1;
}

static int is_mining(const grid *g, int m) { return strcmp(base_method(g->meth[m]), "supervised") != 0; }

/* Mean best-epoch val Dice over the finished seeds of slot c; *n seeds. */
static void val_mean(const grid *g, int d, int f, int c, double *mean, double *std, int *n) {
    double x[MAXS];
    *n = 0;
    for (int k = 0; k < g->ns; k++)
        if (g->have[d][f][c][k] && g->vhave[d][f][c][k]) x[(*n)++] = g->vdice[d][f][c][k];
    km_mean_std(x, *n, mean, std);
}

/* pick: per requested mining method, the slot (its own runs or a
 * --pseudo-weights variant's) with the highest mean best-epoch val Dice over
 * its finished seeds (ties: the first; a slot without a finished seed is
 * passed over); sc_slot: per seed, the mining run of the chosen slot when its
 * best val loss is lower than its supervised run's, else the supervised run
 * (epoch 0 competes). Both decided on validation only. */
static int pick_weight(const grid *g, int d, int f, int m) {
    int pick = m;
    double best = -INFINITY, mean, std;
    for (int c = m; m < g->nm0 && c < g->nm; c++) {
        int n = 0;
        if (g->mbase[c] == m) val_mean(g, d, f, c, &mean, &std, &n);
        if (n && mean > best) {
            best = mean;
            pick = c;
        }
    }
    return pick;
}

static void choose_on_val(grid *g) {
    for (int d = 0; d < g->nd; d++)
        for (int f = 0; f < g->nf; f++)
            for (int m = 0; m < g->nm; m++) {
                int c = g->pick[d][f][m] = pick_weight(g, d, f, m), sp = sup_slot(g, m);
                for (int k = 0; k < g->ns; k++) {
                    int ok = m < g->nm0 && is_mining(g, m) && sp >= 0 && g->have[d][f][c][k] &&
                             g->have[d][f][sp][k] && g->vhave[d][f][c][k] && g->vhave[d][f][sp][k];
                    g->sc_slot[d][f][m][k] = !ok ? -1 : g->vloss[d][f][c][k] < g->vloss[d][f][sp][k] ? c : sp;
                }
            }
}

/* Reads the scores (test split) and the best epoch's validation numbers of
 * every finished run into the grid, then makes the choices on validation. */
static km_status load_results(grid *g) {
    for (int i = 0; i < g->nj; i++) {
        const job *j = &g->jobs[i];
        if (j->stage == JOB_PRETRAIN) continue;
        char a[4200], b[4200], dir[4096];
        job_dir(g, j, dir, sizeof dir);
        job_file(g, j, "eval/summary.json", a, sizeof a);
        job_file(g, j, "eval_refined/summary.json", b, sizeof b);
        int d = j->d, f = j->f, m = j->m, k = j->k;
        km_status st;
        if (file_exists(a)) {
            if ((st = read_summary(a, &g->dice[d][f][m][k], &g->iou[d][f][m][k], &g->ntest[d][f][m][k]))) return st;
            g->have[d][f][m][k] = 1;
            if ((st = km_best_val_epoch(dir, &g->vloss[d][f][m][k], &g->vdice[d][f][m][k], &g->vhave[d][f][m][k])))
                return st;
        }
        if (g->refined && j->tabled && file_exists(b)) {
            int n;
            if ((st = read_summary(b, &g->rdice[d][f][m][k], &g->riou[d][f][m][k], &n))) return st;
            g->rhave[d][f][m][k] = 1;
        }
    }
    choose_on_val(g);
    return KM_OK;
}

/* ---- tables ---- */

/* Rows per requested method m: r = 0 its test score, 1 in refined mode
 * (+refined), 2 start competes (+start-competes, mining methods). */
enum { NROWKINDS = 3 };

static int is_row(const grid *g, const int *tabled, int m, int r) {
    return tabled[m] && (r != 1 || g->refined) && (r != 2 || is_mining(g, m));
}

/* The slot whose run row (m, r) shows for seed k, -1: none. */
static int row_slot(const grid *g, int r, int d, int f, int m, int k) {
    return r == 2 ? g->sc_slot[d][f][m][k] : g->pick[d][f][m];
}

static int has_score(const grid *g, int r, int d, int f, int m, int k) {
    int c = row_slot(g, r, d, f, m, k);
    if (c < 0) return 0;
    return r == 1 ? g->rhave[d][f][c][k] : g->have[d][f][c][k];
}
static double score(const grid *g, int r, int iou, int d, int f, int m, int k) {
    int c = row_slot(g, r, d, f, m, k);
    if (r == 1) return iou ? g->riou[d][f][c][k] : g->rdice[d][f][c][k];
    return iou ? g->iou[d][f][c][k] : g->dice[d][f][c][k];
}

static void agg(const grid *g, int r, int d, int f, int m, int iou, double *mean, double *std, int *n) {
    double x[MAXS];
    *n = 0;
    for (int s = 0; s < g->ns; s++)
        if (has_score(g, r, d, f, m, s)) x[(*n)++] = score(g, r, iou, d, f, m, s);
    km_mean_std(x, *n, mean, std);
}

/* "continuous", "continuous+refined" or "continuous+start-competes" */
static const char *row_name(const grid *g, int m, int r, char *buf, size_t n) {
    snprintf(buf, n, "%s%s", g->meth[m], r == 1 ? "+refined" : r == 2 ? "+start-competes" : "");
    return buf;
}

/* One "run" row of results.csv per seed of row (m, r), then its "mean" row. */
static km_status csv_rows(km_csv *c, const grid *g, int d, int f, int m, int r) {
    char rn[96];
    row_name(g, m, r, rn, sizeof rn);
    km_status s = KM_OK;
    for (int k = 0; k < g->ns && !s; k++) {
        if (!has_score(g, r, d, f, m, k)) continue;
        int sl = row_slot(g, r, d, f, m, k);
        char dir[4096];
        run_dir(g, d, f, g->meth[sl], k, dir, sizeof dir);
        km_csv_str(c, "run");
        km_csv_str(c, g->dname[d]);
        km_csv_str(c, g->fname[f]);
        km_csv_str(c, rn);
        km_csv_int(c, g->seed[k]);
        km_csv_int(c, 1);
        km_csv_int(c, g->ntest[d][f][sl][k]);
        km_csv_num(c, score(g, r, 0, d, f, m, k));
        km_csv_str(c, "");
        km_csv_num(c, score(g, r, 1, d, f, m, k));
        km_csv_str(c, "");
        km_csv_str(c, dir);
        s = km_csv_end_row(c);
    }
    double md, sd, mu, su;
    int n;
    agg(g, r, d, f, m, 0, &md, &sd, &n);
    agg(g, r, d, f, m, 1, &mu, &su, &n);
    if (!n || s) return s;
    km_csv_str(c, "mean");
    km_csv_str(c, g->dname[d]);
    km_csv_str(c, g->fname[f]);
    km_csv_str(c, rn);
    km_csv_str(c, "");
    km_csv_int(c, n);
    km_csv_str(c, "");
    km_csv_num(c, md);
    if (n > 1) km_csv_num(c, sd);
    else km_csv_str(c, "");
    km_csv_num(c, mu);
    if (n > 1) km_csv_num(c, su);
    else km_csv_str(c, "");
    km_csv_str(c, "");
    return km_csv_end_row(c);
}

static km_status write_results_csv(const grid *g, const int *tabled) {
    char path[4096];
    static const char *const cols[] = {"kind", "dataset", "fraction", "method", "seed", "n_seeds",
                                       "n_test", "dice_mean", "dice_std", "iou_mean", "iou_std", "run_dir"};
    snprintf(path, sizeof path, "%s/results.csv", g->out);
    km_csv c;
    km_status s = km_csv_open(&c, path, cols, 12, 0);
    if (s) return s;
    for (int d = 0; d < g->nd && !s; d++)
        for (int f = 0; f < g->nf && !s; f++)
            for (int mr = 0; mr < NROWKINDS * g->nm0 && !s; mr++)
                if (is_row(g, tabled, mr / NROWKINDS, mr % NROWKINDS))
                    s = csv_rows(&c, g, d, f, mr / NROWKINDS, mr % NROWKINDS);
    km_status s2 = km_csv_close(&c);
    return s ? s : s2;
}

/* tables.md's section on the --pseudo-weights choice: per dataset x
 * fraction x mining method, each weight's mean best-epoch val Dice. */
static void weights_md(FILE *o, const grid *g) {
    fprintf(o, "\n## Pseudo-label weight, chosen on validation\n\nPer dataset x fraction x mining method, each "
               "weight's validation Dice (each run's best epoch = lowest val loss, metrics.csv), mean ± sample std "
               "over finished seeds; **chosen**: the highest mean, whose runs the tables above show. The test split "
               "played no part in the choice.\n\n| dataset | fraction | method | pseudo weight | seeds | val Dice | |\n"
               "|---|---|---|---|---|---|---|\n");
    for (int d = 0; d < g->nd; d++)
        for (int f = 0; f < g->nf; f++)
            for (int m = 0; m < g->nm0; m++)
                for (int c = m; is_mining(g, m) && c < g->nm; c++) {
                    if (g->mbase[c] != m) continue;
                    double mean, std;
                    int n;
                    val_mean(g, d, f, c, &mean, &std, &n);
                    fprintf(o, "| %s | %g%% | %s | %g | %d |", g->dname[d], 100 * g->frac[f], g->meth[m], g->mweight[c],
                            n);
                    if (!n) fprintf(o, " - |");
                    else if (n == 1) fprintf(o, " %.4f (n=1) |", mean);
                    else fprintf(o, " %.4f ± %.4f |", mean, std);
                    fprintf(o, " %s |\n", n && g->pick[d][f][m] == c ? "**chosen**" : "");
                }
}

static km_status write_tables_md(const grid *g, const int *tabled) {
    char *buf = NULL, path[4096];
    size_t len = 0;
    FILE *o = open_memstream(&buf, &len);
    if (!o) return km_err(KM_ENOMEM, "cannot build tables.md");
    fprintf(o, "# kmseg experiments\n\n");
    fprintf(o, "Test-split mean per-image score of each run's best checkpoint; cells: mean ± sample std (ddof 1) "
               "over seeds");
    fprintf(o, " (seeds:");
    for (int k = 0; k < g->ns; k++) fprintf(o, " %d", g->seed[k]);
    fprintf(o, "); \"(n=1)\": one seed, no std; \"-\": no finished run. Columns: labelled fraction. Rows "
               "\"+refined\": the same checkpoints in refined mode (student -> prompts -> teacher).");
    fprintf(o, " Rows \"+start-competes\": per seed, the mining run if its best validation loss is lower than that "
               "of the supervised run it started from, else that supervised run (chosen on validation: the "
               "supervised checkpoint competes as epoch 0).");
    if (g->nm > g->nm0)
        fprintf(o, " Mining rows show the pseudo-label weight chosen on the validation split (last section).");
    fprintf(o, "\n");
    for (int d = 0; d < g->nd; d++)
        for (int metric = 0; metric < 2; metric++) {
            fprintf(o, "\n## %s - %s\n\n| method |", g->dname[d], metric ? "IoU" : "Dice");
            for (int f = 0; f < g->nf; f++) fprintf(o, " %g%% |", 100 * g->frac[f]);
            fprintf(o, "\n|---|");
            for (int f = 0; f < g->nf; f++) fprintf(o, "---|");
            fprintf(o, "\n");
            for (int mr = 0; mr < NROWKINDS * g->nm0; mr++) {
                int m = mr / NROWKINDS, r = mr % NROWKINDS;
                char rn[96];
                if (!is_row(g, tabled, m, r)) continue;
                fprintf(o, "| %s |", row_name(g, m, r, rn, sizeof rn));
                for (int f = 0; f < g->nf; f++) {
                    double mean, std;
                    int n;
                    agg(g, r, d, f, m, metric, &mean, &std, &n);
                    if (!n) fprintf(o, " - |");
                    else if (n == 1) fprintf(o, " %.4f (n=1) |", mean);
                    else fprintf(o, " %.4f ± %.4f |", mean, std);
                }
                fprintf(o, "\n");
            }
        }
    if (g->nm > g->nm0) weights_md(o, g);
    fclose(o);
    snprintf(path, sizeof path, "%s/tables.md", g->out);
    km_status s = km_write_file_atomic(path, buf, len);
    free(buf); /* open_memstream buffer: plain malloc */
    return s;
}

static km_status write_outputs(const grid *g, const int *tabled) {
    km_status s = write_results_csv(g, tabled);
    return s ? s : write_tables_md(g, tabled);
}

/* DIR/mining.md: the teacher's gain and the cost per epoch (report/mining.h);
 * apart from tables.md because its timing columns differ from run to run. */
static km_status write_mining_md(const char *out) {
    km_mining_row *rows;
    int n, skipped;
    km_status s = km_mining_summary(out, &rows, &n, &skipped);
    char *buf = NULL, path[2048];
    size_t len = 0;
    FILE *o = s ? NULL : open_memstream(&buf, &len);
    if (!s && !o) s = km_err(KM_ENOMEM, "cannot build mining.md");
    if (o) {
        fprintf(o, "# kmseg experiments: mining\n\n");
        km_mining_md(o, rows, n);
        if (skipped) fprintf(o, "\n%d run(s) left out: metrics.csv not readable.\n", skipped);
        fclose(o);
        snprintf(path, sizeof path, "%s/mining.md", out);
        s = km_write_file_atomic(path, buf, len);
    }
    free(buf); /* open_memstream buffer: plain malloc */
    km_free(rows);
    return s;
}

/* ---- invocation modes ---- */

typedef struct {
    int list, collect, index; /* --list-runs, --collect, --run-index (-1: none) */
    int shard_i, shard_n;     /* --shard i/n (0/1: every run) */
    int knobs;                /* --knobs */
} grid_mode;

static km_status parse_mode(const char *run_index, const char *shard, int list, int collect, int knobs,
                            grid_mode *md) {
    *md = (grid_mode){list, collect, -1, 0, 1, knobs};
    if (list + collect + knobs + (run_index != NULL) + (shard != NULL) > 1)
        return km_err(KM_EARG, "--list-runs, --collect, --knobs, --run-index and --shard exclude each other");
    char *end = NULL;
    if (run_index) {
        long v = strtol(run_index, &end, 10);
        if (end == run_index || *end || v < 0 || v > 10000000)
            return km_err(KM_EARG, "--run-index '%s': expected a run index (see --list-runs)", run_index);
        md->index = (int)v;
    }
    if (shard) {
        int i, n, used = 0;
        if (sscanf(shard, "%d/%d%n", &i, &n, &used) != 2 || shard[used] || n < 1 || i < 0 || i >= n)
            return km_err(KM_EARG, "--shard '%s': expected i/n with 0 <= i < n (e.g. 3/8)", shard);
        md->shard_i = i;
        md->shard_n = n;
    }
    return KM_OK;
}

/* --list-runs: one line per run, then each stage's index range. */
static void list_jobs(const grid *g) {
    printf("index\tstage\trun\twaits_for\n");
    int first[3] = {-1, -1, -1}, last[3] = {-1, -1, -1};
    for (int i = 0; i < g->nj; i++) {
        const job *j = &g->jobs[i];
        char id[1024], did[1024] = "-";
        job_id(g, j, id, sizeof id);
        int dep = job_dep(g, j);
        if (dep >= 0) snprintf(did, sizeof did, "%d", dep);
        printf("%d\t%s\t%s\t%s%s\n", i, k_stage[j->stage], id, did, job_finished(g, j) ? "\tfinished" : "");
        if (first[j->stage] < 0) first[j->stage] = i;
        last[j->stage] = i;
    }
    for (int st = 0; st < 3; st++)
        if (first[st] >= 0) printf("# stage %s: --array=%d-%d\n", k_stage[st], first[st], last[st]);
}

/* Runs what the mode asks for; the serial grid and --collect then write the
 * tables from every finished run, also after a failure (partial grid). */
static km_status run_mode(grid *g, const int *tabled, const grid_mode *md) {
    double t0 = km_now();
    km_status s = KM_OK;
    if (md->index >= g->nj)
        return km_err(KM_EARG, "--run-index %d: the grid has %d runs (0..%d; see --list-runs)", md->index, g->nj,
                      g->nj - 1);
    int ntab = 0, skipped = 0;
    for (int i = 0; i < g->nj; i++) {
        const job *j = &g->jobs[i];
        if (!j->tabled) continue;
        ntab++;
        if (!job_finished(g, j)) continue;
        skipped++;
        if (md->index < 0 && !md->collect && i % md->shard_n == md->shard_i) {
            char id[1024];
            job_id(g, j, id, sizeof id);
            printf("[%d] %s: skipped (finished)\n", i, id);
        }
    }
    if (md->index >= 0) s = ensure_job(g, md->index, 0);
    else if (!md->collect) {
        printf("experiments: %d runs (%d with their dependencies) in %s%s\n", ntab, g->nj, g->out,
               md->shard_n > 1 ? ", this shard runs every n-th" : "");
        fflush(stdout);
        for (int i = md->shard_i; i < g->nj && !s; i += md->shard_n) s = ensure_job(g, i, 1);
    }
    if (md->index >= 0 || md->shard_n > 1) return s; /* tables: --collect */
    km_status s2 = load_results(g);
    if (!s2) s2 = write_outputs(g, tabled);
    if (!s2) s2 = write_mining_md(g->out);
    if (!s) s = s2;
    int unfinished = 0;
    for (int i = 0; i < g->nj; i++)
        if (!job_finished(g, &g->jobs[i])) {
            char id[1024];
            job_id(g, &g->jobs[i], id, sizeof id);
            if (md->collect) printf("not finished: run %d (%s, stage %s)\n", i, id, k_stage[g->jobs[i].stage]);
            unfinished++;
        }
    if (!s && md->collect)
        printf("experiments: collected %d finished run(s) of %d; %d not finished; tables in %s/tables.md, "
               "%s/results.csv\n", g->nj - unfinished, g->nj, unfinished, g->out, g->out);
    else if (!s)
        printf("experiments: %d runs: %d ran, %d skipped (finished earlier); %d supervised dependency run(s), "
               "%d SimCLR pretraining(s); %.1f s; tables in %s/tables.md, %s/results.csv\n",
               ntab, g->ran, skipped, g->deps, g->pretrained, km_now() - t0, g->out, g->out);
    return s;
}

/* The value given (or preset) for pass-through flag `flag`, else def. */
static const char *pass_val(const char *flag, const char *def) {
    for (int i = 0; i < g_pass.n; i++)
        if (!strcmp(g_pass.items[i].flag, flag) && g_pass.items[i].val) return g_pass.items[i].val;
    return def;
}

/* --knobs: the teacher's gain per box rule on the val split of every
 * finished supervised run (experiments_knobs.h), prompted as the grid's
 * onetime / continuous runs prompt it (prompt mode auto, the grid's points,
 * profile, cache). */
static km_status run_knobs(grid *g) {
    km_knobs_run *runs = km_calloc(sizeof *runs * (size_t)(g->nj + 1));
    char (*dirs)[4096] = km_calloc(sizeof *dirs * (size_t)(g->nj + 1));
    int n = 0, measured = 0;
    for (int i = 0; i < g->nj; i++) {
        const job *j = &g->jobs[i];
        if (j->stage != JOB_SUPERVISED || !job_finished(g, j)) continue;
        job_dir(g, j, dirs[n], sizeof dirs[n]);
        runs[n] = (km_knobs_run){g->dname[j->d], g->dpath[j->d], g->fname[j->f], g->meth[j->m], g->seed[j->k],
                                 dirs[n]};
        n++;
    }
    km_refine_config rc;
    char dbuf[4096];
    const char *rule = pass_val("--box-rule", "per-component");
    km_refine_config_default(&rc);
    km_status s = km_refine_config_from_flags(&rc, g->teacher, pass_val("--teacher-profile", "auto"), "auto", rule,
                                              atoi(pass_val("--points", "1")), pass_val("--cache-dir", NULL),
                                              pass_val("--no-cache", NULL) != NULL, dbuf, sizeof dbuf);
    if (!s) s = km_cmd_set_threads(atoi(pass_val("--threads", "2")));
    printf("experiments --knobs: %d finished supervised run(s) x 3 box rules, on their val splits\n", n);
    fflush(stdout);
    if (!s) s = km_knobs_measure(g->out, runs, n, &rc, atoi(pass_val("--size", "0")), stdout, &measured);
    km_status s2 = km_knobs_write_md(g->out, runs, n, rule);
    if (!s) s = s2;
    if (!s) printf("experiments --knobs: %d measured now, %d earlier; table in %s/knobs.md\n", measured,
                   n * KM_KNOBS_NRULES - measured, g->out);
    km_free(runs);
    km_free(dirs);
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

typedef struct {
    const char *out, *data, *teacher, *fractions, *methods, *seeds, *pe, *pb, *preset, *run_index, *shard, *weights;
    int simclr, refined, list, collect, knobs;
    grid_mode mode; /* from --list-runs, --collect, --run-index, --shard */
} ex_args;

/* --data name=path[,name=path] */
static km_status parse_datasets(grid *g, char *buf) {
    char *items[MAXS];
    int n = 0;
    km_status s = split_list("--data", buf, items, MAXD, &n);
    for (int i = 0; i < n && !s; i++) {
        char *eq = strchr(items[i], '=');
        if (!eq) return km_err(KM_EARG, "--data '%s': expected name=path (e.g. kvasir=/data/kvasir-seg)", items[i]);
        *eq = 0;
        if (!valid_name(items[i])) s = km_err(KM_EARG, "--data: dataset name '%s': expected letters, digits, _ or -", items[i]);
        else if (!dir_exists(eq + 1)) s = km_err(KM_EIO, "--data %s=%s: no such folder", items[i], eq + 1);
        for (int k = 0; k < g->nd && !s; k++)
            if (!strcmp(g->dname[k], items[i])) s = km_err(KM_EARG, "--data: dataset '%s' given twice", items[i]);
        g->dname[g->nd] = items[i];
        g->dpath[g->nd++] = eq + 1;
    }
    return s;
}

/* --fractions and --seeds */
static km_status parse_numbers(grid *g, char *fbuf, char *sbuf) {
    char *items[MAXS];
    int n = 0;
    km_status s = split_list("--fractions", fbuf, items, MAXF, &n);
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
    return s;
}

/* --methods (and their simclr+ variants); the supervised run is always in
 * the list (dependency of mining). *need_teacher |= a mining method. */
static km_status parse_methods(grid *g, char *buf, int simclr, int *tabled, int *need_teacher) {
    char *items[MAXS];
    int n = 0;
    km_status s = split_list("--methods", buf, items, MAXM - 1, &n);
    if (s) return s;
    g->meth[g->nm++] = km_strdup("supervised");
    for (int i = 0; i < n; i++) {
        int known = 0;
        for (int k = 0; k < NMETHODS; k++) known |= !strcmp(items[i], k_methods[k]);
        if (!known)
            return km_err(KM_EARG, "--methods: unknown method '%s'; expected supervised, onetime, continuous, points, "
                          "box, points+box or points+box+mask", items[i]);
        int dup = 0;
        for (int k = 1; k < g->nm; k++) dup |= !strcmp(g->meth[k], items[i]);
        if (dup && strcmp(items[i], "supervised")) return km_err(KM_EARG, "--methods: '%s' given twice", items[i]);
        if (!strcmp(items[i], "supervised")) tabled[0] = 1;
        else {
            *need_teacher = 1;
            tabled[g->nm] = 1;
            g->meth[g->nm++] = km_strdup(items[i]);
        }
    }
    for (int m = 0, nbase = g->nm; simclr && m < nbase; m++) {
        char b[64];
        snprintf(b, sizeof b, "simclr+%s", g->meth[m]);
        tabled[g->nm] = tabled[m];
        g->meth[g->nm++] = km_strdup(b);
    }
    return KM_OK;
}

/* --pseudo-weights: the requested methods' runs have the mine setting's
 * --pseudo-weight (default 0.5); every other listed weight adds a slot
 * "<method>@w<weight>" per mining method, whose runs are appended to the
 * grid. Call after parse_methods. */
static km_status parse_weights(grid *g, char *buf, int *tabled) {
    const char *bw = pass_val("--pseudo-weight", "0.5");
    char *end = NULL;
    double base = strtod(bw, &end), w[MAXW];
    g->nm0 = g->nm;
    for (int m = 0; m < g->nm; m++) g->mbase[m] = m, g->mweight[m] = base;
    if (!buf) return KM_OK;
    if (end == bw || *end) return km_err(KM_EARG, "--pseudo-weight '%s': expected a number", bw);
    char *items[MAXS];
    int n = 0;
    km_status s = split_list("--pseudo-weights", buf, items, MAXW, &n);
    for (int i = 0; i < n && !s; i++) {
        w[i] = strtod(items[i], &end);
        if (end == items[i] || *end || !(w[i] >= 0) || !isfinite(w[i]))
            s = km_err(KM_EARG, "--pseudo-weights: '%s': expected a number >= 0", items[i]);
        for (int k = 0; k < i && !s; k++)
            if (w[k] == w[i]) s = km_err(KM_EARG, "--pseudo-weights: %s given twice", items[i]);
    }
    for (int i = 0; i < n && !s; i++)
        for (int m = 0; m < g->nm0 && w[i] != base; m++) {
            if (!is_mining(g, m)) continue;
            if (g->nm == MAXMS) return km_err(KM_EARG, "--pseudo-weights: more than %d methods x weights", MAXMS);
            char b[96];
            snprintf(b, sizeof b, "%s@w%g", g->meth[m], w[i]);
            g->mbase[g->nm] = m;
            g->mweight[g->nm] = w[i];
            tabled[g->nm] = tabled[m];
            g->meth[g->nm++] = km_strdup(b);
        }
    return s;
}

/* The flags (the runner's own, then the pass-through list), the
 * preset's values for what was not given, and the invocation mode. */
static km_status ex_flags(int argc, char **argv, ex_args *a, int *help) {
    memset(a, 0, sizeof *a);
    a->fractions = "1,0.75,0.5";
    a->methods = "supervised,onetime,continuous";
    a->seeds = "0,1,2";
    a->preset = "paper";
    const km_flag own[] = {
        {"--out", KM_FLAG_STR, &a->out, "experiment folder (run folders, results.csv, tables.md)", 1, 0},
        {"--data", KM_FLAG_STR, &a->data, "datasets as name=path[,name=path] (e.g. kvasir=data/kvasir-seg)", 1, 0},
        KM_CMD_TEACHER_FLAG("--teacher", &a->teacher),
        {"--fractions", KM_FLAG_STR, &a->fractions, "labelled fractions of the train split", 0, 0},
        {"--methods", KM_FLAG_STR, &a->methods,
         "supervised, onetime, continuous, points, box, points+box, points+box+mask (the last four: continuous "
         "mining with that prompt mode)", 0, 0},
        {"--seeds", KM_FLAG_STR, &a->seeds, "seeds (split, init, shuffling, augmentation)", 0, 0},
        {"--simclr", KM_FLAG_BOOL, &a->simclr, "also the SimCLR-initialised variant of every method", 0, 0},
        {"--pretrain-epochs", KM_FLAG_STR, &a->pe, "SimCLR pretraining epochs (default: kmseg pretrain's)", 0, 0},
        {"--pretrain-batch", KM_FLAG_STR, &a->pb, "SimCLR images per step (default: kmseg pretrain's)", 0, 0},
        {"--preset", KM_FLAG_STR, &a->preset,
         "paper (method.md's protocol) or cpu (sized for 2 cores: 10/25/50 %, 128 px, ResNet18, short schedules, "
         "refined inference; fills only what is not given)", 0, 0},
        {"--list-runs", KM_FLAG_BOOL, &a->list,
         "print every run (index, stage, id, the run it waits for) and each stage's index range; runs nothing", 0, 0},
        {"--run-index", KM_FLAG_STR, &a->run_index,
         "run only run I (e.g. $SLURM_ARRAY_TASK_ID); fails if the run it waits for has not finished", 0, 0},
        {"--shard", KM_FLAG_STR, &a->shard,
         "i/n: run every n-th run from i (dependencies of other shards are run or waited for)", 0, 0},
        {"--collect", KM_FLAG_BOOL, &a->collect,
         "write tables.md and results.csv from the finished runs and list the others", 0, 0},
        {"--pseudo-weights", KM_FLAG_STR, &a->weights,
         "pseudo-label weights to choose from on the validation split (runs <method>@w<weight>, appended to the "
         "grid; default: only --pseudo-weight's)", 0, 0},
        {"--knobs", KM_FLAG_BOOL, &a->knobs,
         "the teacher's gain per box rule on the VALIDATION split of every finished supervised run -> "
         "DIR/knobs/, DIR/knobs.md; trains nothing", 0, 0},
        {"--refined", KM_FLAG_BOOL, &a->refined,
         "also score every run in refined mode (eval --refine: student -> prompts -> teacher); rows "
         "<method>+refined", 0, 0},
        {0}};
    build_passlist();
    int bools[KM_CLI_MAX] = {0};
    km_cli cli;
    km_cli_init(&cli);
    km_cli_add_flags(&cli, own);
    for (int i = 0; i < g_pass.n; i++) {
        km_passflag *p = &g_pass.items[i];
        km_cli_add(&cli, p->flag, p->is_bool ? KM_FLAG_BOOL : KM_FLAG_STR, p->is_bool ? (void *)&bools[i] : (void *)&p->val,
                   p->help);
    }
    km_status s = km_cli_parse(&cli, "experiments",
                               "--out DIR --data kvasir=PATH[,covid=PATH] --teacher CKPT [--fractions 1,0.75,0.5] "
                               "[--methods ...] [--seeds 0,1,2] [--simclr] [train/mine knobs]",
                               argc, argv, help);
    if (s || *help) return s;
    for (int i = 0; i < g_pass.n; i++)
        if (g_pass.items[i].is_bool && bools[i]) g_pass.items[i].val = "1";
    if ((s = apply_preset(a->preset, &a->fractions, &a->methods, &a->seeds, &a->refined, cli.flags))) return s;
    return parse_mode(a->run_index, a->shard, a->list, a->collect, a->knobs, &a->mode);
}

km_status km_cmd_experiments(int argc, char **argv) {
    ex_args a;
    int help = 0;
    km_status s = ex_flags(argc, argv, &a, &help);
    if (s || help) return s;
    grid *g = km_calloc(sizeof *g);
    char *dbuf = km_strdup(a.data), *fbuf = km_strdup(a.fractions), *mbuf = km_strdup(a.methods),
         *sbuf = km_strdup(a.seeds);
    char *wbuf = a.weights ? km_strdup(a.weights) : NULL;
    int tabled[MAXMS] = {0}, need_teacher = a.refined || a.knobs;
    g->out = a.out;
    g->teacher = a.teacher;
    g->simclr = a.simclr;
    g->refined = a.refined;
    g->pretrain_epochs = a.pe;
    g->pretrain_batch = a.pb;
    s = parse_datasets(g, dbuf);
    if (!s) s = parse_numbers(g, fbuf, sbuf);
    if (!s) s = parse_methods(g, mbuf, a.simclr, tabled, &need_teacher);
    if (!s) s = parse_weights(g, wbuf, tabled);
    char tbuf[4096];
    const char *teacher = a.teacher;
    if (!s && need_teacher && (s = km_teacher_resolve(teacher, tbuf, sizeof tbuf, &teacher)) == KM_OK)
        g->teacher = teacher;
    if (!s && need_teacher && !file_exists(teacher)) s = km_err(KM_EIO, "--teacher %s: no such file", teacher);
    if (!s && !a.mode.list) s = km_mkdir_p(a.out);
    if (!s && !a.mode.list)
        s = check_settings(a.out, need_teacher ? teacher : NULL, a.simclr ? a.pe : NULL, a.simclr ? a.pb : NULL);
    if (!s) enumerate_jobs(g, tabled);
    if (!s && a.mode.list) list_jobs(g);
    else if (!s && a.mode.knobs) s = run_knobs(g);
    else if (!s) s = run_mode(g, tabled, &a.mode);
    km_free(g->jobs);
    for (int m = 0; m < g->nm; m++) km_free(g->meth[m]);
    km_free(dbuf);
    km_free(fbuf);
    km_free(mbuf);
    km_free(sbuf);
    km_free(wbuf);
    km_free(g);
    return s;
}
