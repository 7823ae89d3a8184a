/* mine.c - the knowledge-mining run; see mine.h for the protocol. */
#include "mine.h"

#include "mine_dist.h"
#include "refine.h"
#include "../core/dist.h"
#include "../core/log.h"
#include "../core/progress.h"
#include "../core/rng.h"
#include "../eval/metrics.h"
#include "../io/image.h"
#include "../io/json.h"
#include "../io/settings.h"
#include "../models/unetpp.h"
#include "../train/augment.h"
#include "../train/dataset.h"
#include "../train/microbatch.h"
#include "../train/runfolder.h"
#include "../train/sched.h"
#include "../train/splits.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define KM_MINE_RNG_SALT 0x6d696e696e670000ULL /* "mining" */

/* ------------------------------------------------------------------ config */

/* The names of the ENUM rows (settings.h), as the flags and mine_config.json
 * spell them; "one-time" is a second spelling of onetime (written "onetime"). */
static const char *const k_profiles[] = {"auto", "sam", "medsam", "litemedsam", "mobilesam", NULL};
static const int k_profile_ids[] = {(int)KM_SAM_PROFILE_AUTO, KM_SAM_PROFILE_SAM, KM_SAM_PROFILE_MEDSAM,
                                    KM_SAM_PROFILE_LITEMEDSAM, KM_SAM_PROFILE_MOBILESAM};
static const char *const k_schedules[] = {"onetime", "continuous", "one-time", NULL};
static const int k_schedule_ids[] = {KM_MINE_ONETIME, KM_MINE_CONTINUOUS, KM_MINE_ONETIME};
static const char *const k_modes[] = {"auto", "points", "box", "points+box", "points+box+mask", NULL};
static const int k_mode_ids[] = {KM_PROMPT_AUTO, KM_PROMPT_POINTS, KM_PROMPT_BOX, KM_PROMPT_POINTS_BOX,
                                 KM_PROMPT_POINTS_BOX_MASK};
static const char *const k_rules[] = {"all", "largest", "per-component", NULL};

/* The mining settings (the train part: km_train_settings over c->train).
 * Row order = mine_config.json order (after the train rows) = --help order. */
#define O(f) offsetof(km_mine_config, f)
#define P_ KM_SET_PASS
#define N_ KM_SET_NEUTRAL
static const km_setting k_rows[] = {
    {NULL, "--out", KM_SET_STR, O(out), 0, 0, 0, 0, 0, NULL, 0,
     "run folder (supervised/, pseudo/, metrics, best/last checkpoints)", NULL, NULL},
    {"teacher", "--teacher", KM_SET_STR, O(teacher), 0, 0, 0, 0, 0, NULL, KM_SET_REQUIRED,
     "teacher checkpoint (.pth or safetensors; default: the installed LiteMedSAM, $KMSEG_TEACHER)", NULL, NULL},
    {"teacher_profile", "--teacher-profile", KM_SET_ENUM, O(profile), (double)(int)KM_SAM_PROFILE_AUTO, 0, 0, 0, 0,
     NULL, P_, "teacher profile: auto (from the checkpoint), sam, medsam (box only), litemedsam or mobilesam",
     k_profiles, k_profile_ids},
    {"schedule", "--schedule", KM_SET_ENUM, O(schedule), KM_MINE_CONTINUOUS, 0, 0, 0, 0, NULL, 0,
     "pseudo labels: onetime (frozen after the supervised phase) or continuous", k_schedules, k_schedule_ids},
    {"init", "--init", KM_SET_STR, O(init), 0, 0, 0, 0, 0, NULL, 0,
     "student checkpoint to mine from (skips the supervised phase)", NULL, NULL},
    {"prompt_mode", "--prompt-mode", KM_SET_ENUM, O(prompt_mode), KM_PROMPT_AUTO, 0, 0, 0, 0, NULL, 0,
     "auto (the teacher's: box for MedSAM / LiteMedSAM, else points+box), points, box, points+box or "
     "points+box+mask", k_modes, k_mode_ids},
    /* absent from files written before the rule existed: `all` (km_mine_config_load) */
    {"box_rule", "--box-rule", KM_SET_ENUM, O(box_rule), KM_BOX_PER_COMPONENT, 0, 0, 0, 0, NULL, KM_SET_OPTIONAL | P_,
     "boxes from the student's mask: all, largest or per-component (one decode per 8-connected component of >= "
     "10 % of the largest, masks united)", k_rules, NULL},
    {"points", "--points", KM_SET_INT, O(points), 1, 0, 0, 0, 0, NULL, P_,
     "guiding points per image (highest student probability)", NULL, NULL},
    {"pseudo_weight", "--pseudo-weight", KM_SET_DBL, O(pseudo_weight), 0.5, 0, KM_SET_GE, 0, 0, NULL, P_,
     "lambda in L = L_labelled + lambda * L_pseudo", NULL, NULL},
    {"mine_epochs", "--mine-epochs", KM_SET_INT, O(mine_epochs), 100, 0, KM_SET_GE, 1, 0, NULL, P_,
     "maximum mining epochs", NULL, NULL},
    {"cache_dir", "--cache-dir", KM_SET_STR, O(cache_dir), 0, 0, 0, 0, 0, NULL, P_ | N_,
     "teacher embedding cache (default: $KMSEG_CACHE, $XDG_CACHE_HOME/kmseg or ~/.cache/kmseg)", NULL, NULL},
    {NULL, "--no-cache", KM_SET_BOOL, O(no_cache), 0, 0, 0, 0, 0, NULL, P_ | N_,
     "keep teacher embeddings in memory only", NULL, NULL},
    {"cache_mem", "--cache-mem", KM_SET_INT, O(cache_mem), 256, 0, KM_SET_GE, 0, 0, NULL, P_ | N_,
     "teacher embeddings kept in memory (4 MB each)", NULL, NULL},
    {"sample_pngs", "--sample-pngs", KM_SET_INT, O(sample_pngs), 8, 0, KM_SET_GE, 0, 0, NULL, 0,
     "continuous: pseudo labels written per epoch", NULL, NULL},
};
#undef N_
#undef P_
#undef O
const km_settings km_mine_settings = {"mine", k_rows, (int)(sizeof k_rows / sizeof k_rows[0])};
/* --sync-bn: the mining steps keep BatchNorm per micro-batch (train and pretrain have it) */
const char *const km_mine_train_skip[] = {"--out", "--init", "--max-steps", "--eval-init", "--sync-bn", NULL};

void km_mine_config_default(km_mine_config *c) {
    memset(c, 0, sizeof *c);
    km_train_config_default(&c->train);
    c->train.labelled_fraction = 0.5;
    km_settings_default(&km_mine_settings, c);
}

/* The teacher's settings as refine.h takes them (the mining run labels with
 * km_refine_teacher_mask). */
static void teacher_config(const km_mine_config *c, km_refine_config *rc) {
    km_refine_config_default(rc);
    rc->teacher = c->teacher;
    rc->profile = c->profile;
    rc->mode = c->prompt_mode;
    rc->box_rule = c->box_rule;
    rc->points = c->points;
    rc->cache_dir = c->cache_dir;
    rc->cache_mem = c->cache_mem;
}

km_status km_mine_config_check(const km_mine_config *c) {
    if (!c->out || !c->out[0]) return km_err(KM_EARG, "--out: a run folder is required");
    km_status s = km_settings_check(&km_mine_settings, c); /* --pseudo-weight, --mine-epochs, --cache-mem... */
    if (s) return s;
    if (isinf(c->pseudo_weight))
        return km_err(KM_EARG, "--pseudo-weight %g: expected a finite value >= 0", c->pseudo_weight);
    km_refine_config rc;
    teacher_config(c, &rc);
    s = km_refine_config_check(&rc); /* --teacher, --points, MedSAM box prompts */
    if (s) return s;
    struct stat st;
    if (c->init && (stat(c->init, &st) || !S_ISREG(st.st_mode)))
        return km_err(KM_EIO, "--init %s: no such checkpoint file", c->init);
    if (c->schedule != KM_MINE_ONETIME && c->schedule != KM_MINE_CONTINUOUS)
        return km_err(KM_EARG, "--schedule: expected onetime or continuous");
    km_train_config t = c->train;
    if (!t.data) return km_err(KM_EARG, "--data: a dataset folder is required");
    t.out = NULL;
    return km_train_config_check(&t);
}

km_status km_mine_config_save(const km_mine_config *c, const char *path) {
    /* micro_batch 0 (off) is not written: a folder of an earlier version re-writes byte for byte */
    static const char *const skip[] = {"out", "micro_batch", NULL}, *const skip_out[] = {"out", NULL};
    km_jw w = {0};
    km_jw_str(&w, "kmseg_version", KM_VERSION);
    km_jw_settings(&w, &km_train_settings, &c->train, c->train.micro_batch ? skip_out : skip);
    km_jw_settings(&w, &km_mine_settings, c, NULL);
    return km_jw_write(&w, path);
}

void km_mine_config_free(km_mine_config *c) {
    km_train_config_free(&c->train);
    km_settings_free_strings(&km_mine_settings, c);
}

/* The settings of a parsed mine_config.json. A box rule that is not one
 * fails as the flag does (KM_EARG "... expected all, largest or
 * per-component"); an absent one is `all`. */
static km_status config_from_json(const km_json *j, const char *path, km_mine_config *c) {
    static const char *const optional[] = {"out", "encoder_weights", "init_weights", "max_steps", "eval_init", NULL};
    km_status s = km_train_config_from_json(j, path, optional, &c->train);
    const km_json *rule = km_json_get(j, "box_rule");
    if (!s && rule && rule->type == KM_JSON_STR && (s = km_box_rule_parse(rule->str, &c->box_rule)))
        return km_err_prefix(s, "%s: ", path);
    c->box_rule = KM_BOX_ALL; /* what a run made before the key existed used */
    return s ? s : km_settings_from_json(&km_mine_settings, j, path, NULL, c);
}

km_status km_mine_config_load(const char *dir, km_mine_config *c) {
    km_mine_config_default(c);
    char *path = km_path_join(dir, "mine_config.json");
    km_json j;
    km_status s = km_json_load(path, "--resume %s: ", dir, &j);
    if (!s) {
        s = config_from_json(&j, path, c);
        km_json_free(&j);
    }
    km_free(path);
    if (s) km_mine_config_free(c);
    else c->out = km_strdup(dir);
    return s;
}

/* ------------------------------------------------------------------ helpers */

/* {0,1} mask [S, S] -> 0/255 grey PNG */
static km_status save_mask_png(const char *path, const uint8_t *m01, int S, uint8_t *tmp) {
    for (int i = 0; i < S * S; i++) tmp[i] = m01[i] ? 255 : 0;
    km_image img = {S, S, 1, tmp};
    return km_image_save_png(path, &img);
}

/* "<dir>/<id>.png" (km_free it) */
static char *png_path(const char *dir, const char *id) {
    size_t n = strlen(dir) + strlen(id) + 6;
    char *p = km_malloc(n);
    snprintf(p, n, "%s/%s.png", dir, id);
    return p;
}

/* Dice of two {0,1} masks (both empty = 1, method.md 7). */
static double mask_dice(const uint8_t *p, const uint8_t *g, size_t n) {
    return km_dice_score(km_conf_masks_u8(p, g, n));
}

/* ------------------------------------------------------------------ data */

typedef struct {
    km_train_split s;
    km_dataset pool; /* labelled [0, n_lab) then unlabelled [n_lab, n_lab + n_unl), with masks */
    km_dataset va, te;
    int n_lab, n_unl;
} mine_data;

static void mine_data_free(mine_data *d) {
    km_dataset_free(&d->te);
    km_dataset_free(&d->va);
    km_dataset_free(&d->pool);
    km_train_split_free(&d->s);
}

/* The splits exactly as the supervised phase makes them (train.h), written
 * to <out>/splits/ (train, val, test, labelled, unlabelled .txt) so that
 * `kmseg eval --split-dir` can score the mined student. */
static km_status mine_data_load(const km_train_config *c, const char *out, mine_data *d) {
    km_train_split *t = &d->s;
    km_status s = km_train_split_make(c, 0, out, t);
    if (s) return s;
    d->n_lab = t->n_lab;
    d->n_unl = t->n_unl;
    int n = t->n_lab + t->n_unl;
    int *which = km_malloc(sizeof(int) * (size_t)(n + 1));
    memcpy(which, t->lab, sizeof(int) * (size_t)t->n_lab);
    if (t->n_unl) memcpy(which + t->n_lab, t->unl, sizeof(int) * (size_t)t->n_unl);
    s = km_dataset_load(&t->idx, which, n, c->size, 1, &d->pool, NULL);
    km_free(which);
    if (!s) s = km_dataset_load(&t->idx, t->sp.val, t->sp.n_val, c->size, 1, &d->va, NULL);
    if (!s && c->eval_test && t->sp.n_test)
        s = km_dataset_load(&t->idx, t->sp.test, t->sp.n_test, c->size, 1, &d->te, NULL);
    return s;
}

/* ------------------------------------------------------------------ loss */

/* Loss of the part `sel[0..n)` of a batch (positions), gathered into
 * contiguous buffers; dlogits of the part scattered back, scaled. */
static double part_loss(const float *logits, const float *y, const int *sel, int n, size_t P, double a, float scale,
                        float *gz, float *gy, float *gd, float *dlogits) {
    if (n == 0) return 0;
    for (int i = 0; i < n; i++) {
        memcpy(gz + P * i, logits + P * sel[i], sizeof(float) * P);
        memcpy(gy + P * i, y + P * sel[i], sizeof(float) * P);
    }
    double l = km_seg_loss(gz, gy, P * n, a, scale, gd, NULL, NULL);
    for (int i = 0; i < n; i++) memcpy(dlogits + P * sel[i], gd + P * i, sizeof(float) * P);
    return l;
}

static const char *const k_mine_cols[] = {
    "epoch", "train_loss", "sup_loss", "pseudo_loss", "val_loss", "val_dice", "val_iou",
    "test_dice", "test_iou", "lr", "seconds", "unl_visits", "teacher_calls", "no_box", "cache_hits",
    "cache_misses", "encoder_runs", "encoder_seconds", "decoder_seconds", "pseudo_dice", "student_unl_dice"};
#define NMCOLS ((int)(sizeof k_mine_cols / sizeof k_mine_cols[0]))

/* ------------------------------------------------------------------ state */

/* What last.safetensors holds beyond the training-loop state (train.h's
 * km_train_checkpoint_*, prefix "mine"): the totals so far of teacher calls
 * and NO_BOX (no times, no cache counts: the file's bytes do not depend on
 * interruptions or on the embedding cache), the supervised epochs before the
 * phase and, for the one-time schedule, which unlabelled images have a frozen
 * label (their PNGs in pseudo/ are the labels) and those labels' mean Dice. */
typedef struct {
    long done, sup_epochs, teacher_calls, no_box;
    double onetime_dice, last_val_dice;
    double onetime_student_dice; /* the student's own Dice on the same images (0 in older checkpoints) */
} mine_state;

static const struct {
    const char *key;
    size_t off;
    int is_num;   /* double, else long */
    int optional; /* absent in checkpoints of older versions: NaN */
} k_state[] = {
    {"mine.done", offsetof(mine_state, done), 0, 0},
    {"mine.sup_epochs", offsetof(mine_state, sup_epochs), 0, 0},
    {"mine.teacher_calls", offsetof(mine_state, teacher_calls), 0, 0},
    {"mine.no_box", offsetof(mine_state, no_box), 0, 0},
    {"mine.onetime.pseudo_dice", offsetof(mine_state, onetime_dice), 1, 0},
    {"mine.last_val_dice", offsetof(mine_state, last_val_dice), 1, 0},
    {"mine.onetime.student_dice", offsetof(mine_state, onetime_student_dice), 1, 1},
};
#define NSTATE ((int)(sizeof k_state / sizeof k_state[0]))

/* Sums of a labelling pass or an epoch: pseudo labels' Dice against the
 * ground truth, the student's own Dice on the same images, their count. */
typedef struct {
    double pd, sd;
    int npd;
} dice_sums;

/* One epoch's counts: the refiner's counters when it began, the visits,
 * NO_BOX and sums of losses (images seen, labelled and pseudo parts). */
typedef struct {
    double t0;
    long calls0, hits0, miss0, enc0, dec0;
    double tenc0, tdec0;
    long nobox, visits;
    double lsum, lsup, lpse;
    int seen, nsup, npse, nsample;
    dice_sums ds;
    char *sdir; /* continuous: pseudo/epoch_NNN (sample PNGs) */
} epoch_acc;

/* One continuous visit's outcome, on the rank that labelled it (micro-
 * batches: gathered, then counted by every rank in batch order). */
enum { VISIT_NONE = 0, VISIT_NOBOX = 1, VISIT_LABEL = 2 };
typedef struct {
    double pd, sd; /* VISIT_LABEL: the pseudo label's Dice vs the truth, the student's own */
    int32_t kind, pad;
} visit_rec;

/* One micro-batch's loss parts (gathered; summed in micro-batch order). */
typedef struct {
    double ll, lu;
    int32_t nl, nu;
} micro_rec;

/* Everything one mining run holds: zeroed by miner_open, released by
 * miner_close on every path (the one cleanup of the run, as train.c's). */
typedef struct {
    km_mine_config c;         /* the caller's, "auto" settings resolved (shallow copy) */
    const km_train_hooks *h;
    FILE *log;
    km_mine_result *res;
    km_run run;
    int resume, have_last;    /* resumed; with a mining checkpoint (last.safetensors) */
    char *init;               /* the student a fresh mining phase starts from */
    mine_data d;
    km_refiner R;
    km_unetpp *m;
    km_rng rng;               /* shuffling, augmentation, prompt ties */
    km_plateau pl;
    km_early_stop es;
    mine_state st;
    int epoch;
    long calls_before;        /* teacher calls before this process (resumed: the checkpoint's total) */
    int S, B;
    size_t P;
    float *x, *y, *z, *dz;    /* batch images, targets, logits, their gradient */
    float *gz, *gy, *gd, *zo; /* one part of the batch gathered (part_loss); un-augmented logits */
    uint8_t *frozen, *has_frozen; /* one-time labels [n_unl][P] and which images have one */
    uint8_t *lab_o, *lab_a, *png; /* a label in the original / augmented frame; PNG scratch */
    int *pool, npool;         /* the mining set: labelled + (one-time: labelled-by-the-teacher) unlabelled */
    int *order, *which, *sel_l, *sel_u;
    uint8_t *aug;
    km_micro mb;              /* --micro-batch (microbatch.h); mb.M = 0: off */
    uint8_t *rec, *rec_all;   /* micro-batches: this rank's records of a step (micro_rec, visit_rec), everyone's */
    size_t rec_bytes;
    uint8_t *labs, *labs_all; /* micro-batches, continuous: this rank's visits' labels (un-augmented), everyone's */
    km_mine_counts cnt;       /* the refiner's counters as last summed over ranks */
    int steps;                /* optimiser steps of this process (the test fault hook) */
    /* A stop request (SIGTERM/SIGUSR1) in mid-epoch ends the run after step
     * part_steps of epoch M->epoch + 1: last.safetensors then holds the run
     * RNG as the epoch began (its order and codes are redrawn from it), the
     * RNG after that step (part_rng: the non-micro continuous visits draw
     * their prompts from it) and the epoch's accumulators (part, with the
     * refiner's counters and the time since the epoch began in place of the
     * values at its start: acc_flip). A resumed run continues from there. */
    km_rng ep_rng, part_rng;
    int part_steps;
    epoch_acc part;
    /* The one-time labelling pass: how many unlabelled images it has gone
     * through (n_unl once done) and their Dice sums. A stop request between
     * two of its batches ends the run there: last.safetensors then holds
     * lab_done < n_unl, lab_ds and the RNG after those images' prompts, the
     * labels so far are in pseudo/, and a resumed run continues the pass. */
    int lab_done;
    dice_sums lab_ds;
} miner;

/* An epoch's accumulators in a mid-epoch checkpoint ("mine.partial.*";
 * the first eight hold values since the epoch began, see acc_flip). */
#define A_(f) offsetof(epoch_acc, f)
static const struct {
    const char *key;
    size_t off;
    char type; /* 'd' double, 'l' long, 'i' int */
} k_part[] = {
    {"mine.partial.seconds", A_(t0), 'd'},
    {"mine.partial.teacher_calls", A_(calls0), 'l'},
    {"mine.partial.cache_hits", A_(hits0), 'l'},
    {"mine.partial.cache_misses", A_(miss0), 'l'},
    {"mine.partial.encoder_runs", A_(enc0), 'l'},
    {"mine.partial.decodes", A_(dec0), 'l'},
    {"mine.partial.encoder_seconds", A_(tenc0), 'd'},
    {"mine.partial.decoder_seconds", A_(tdec0), 'd'},
    {"mine.partial.no_box", A_(nobox), 'l'},
    {"mine.partial.visits", A_(visits), 'l'},
    {"mine.partial.loss_sum", A_(lsum), 'd'},
    {"mine.partial.sup_loss_sum", A_(lsup), 'd'},
    {"mine.partial.pseudo_loss_sum", A_(lpse), 'd'},
    {"mine.partial.seen", A_(seen), 'i'},
    {"mine.partial.sup_images", A_(nsup), 'i'},
    {"mine.partial.pseudo_images", A_(npse), 'i'},
    {"mine.partial.sample_pngs", A_(nsample), 'i'},
    {"mine.partial.pseudo_dice_sum", A_(ds.pd), 'd'},
    {"mine.partial.student_dice_sum", A_(ds.sd), 'd'},
    {"mine.partial.dice_count", A_(ds.npd), 'i'},
};
#undef A_
#define NPART ((int)(sizeof k_part / sizeof k_part[0]))

/* The refiner's counters and the clock at the epoch's start <-> their
 * amounts since then (x0 -> now - x0, its own inverse): a mid-epoch
 * checkpoint holds the amounts, a resumed epoch turns them back into starts
 * so that its log row counts both processes' work. */
static void acc_flip(epoch_acc *a, const km_refiner *R) {
    a->t0 = km_now() - a->t0;
    a->calls0 = R->teacher_calls - a->calls0;
    a->hits0 = km_refiner_cache_hits(R) - a->hits0;
    a->miss0 = R->cache.misses - a->miss0;
    a->enc0 = R->encoder_runs - a->enc0;
    a->dec0 = R->decodes - a->dec0;
    a->tenc0 = R->encoder_seconds - a->tenc0;
    a->tdec0 = R->decoder_seconds - a->tdec0;
}

/* The partial epoch (M->part_steps steps, accumulators *a) into x. */
static void part_to_meta(miner *M, const epoch_acc *a, km_tdict *x) {
    epoch_acc p = *a;
    acc_flip(&p, &M->R);
    km_meta_set_int(x, "mine.partial.steps", M->part_steps);
    km_meta_set_rng(x, "mine.partial.rng", &M->rng);
    for (int i = 0; i < NPART; i++) {
        const char *v = (const char *)&p + k_part[i].off;
        if (k_part[i].type == 'd') km_meta_set_num(x, k_part[i].key, *(const double *)v);
        else km_meta_set_int(x, k_part[i].key, k_part[i].type == 'l' ? *(const long *)v : *(const int *)v);
    }
}

/* A checkpoint written in mid-epoch: M->part_steps, M->part_rng, M->part;
 * without "mine.partial.steps" (an epoch's end, older versions) nothing. */
static km_status part_from_meta(miner *M, const km_tdict *x, const char *path) {
    if (!km_tdict_get_meta(x, "mine.partial.steps")) return KM_OK;
    long long v = 0;
    km_status s = km_meta_get_int(x, "mine.partial.steps", path, &v);
    if (!s && v < 1) s = km_err(KM_EFORMAT, "%s: metadata 'mine.partial.steps' is %lld, expected >= 1", path, v);
    M->part_steps = (int)v;
    if (!s) s = km_meta_get_rng(x, "mine.partial.rng", path, &M->part_rng);
    for (int i = 0; i < NPART && !s; i++) {
        char *p = (char *)&M->part + k_part[i].off;
        if (k_part[i].type == 'd') {
            s = km_meta_get_num(x, k_part[i].key, path, (double *)p);
            continue;
        }
        s = km_meta_get_int(x, k_part[i].key, path, &v);
        if (k_part[i].type == 'l') *(long *)p = (long)v;
        else *(int *)p = (int)v;
    }
    return s;
}

/* An unfinished one-time labelling pass ("mine.onetime.pass.*"): the
 * images gone through and their Dice sums (in image order, so that the
 * resumed pass adds the rest in the order of an uninterrupted one). */
static void pass_to_meta(const miner *M, km_tdict *x) {
    km_meta_set_int(x, "mine.onetime.pass.images", M->lab_done);
    km_meta_set_num(x, "mine.onetime.pass.pseudo_dice_sum", M->lab_ds.pd);
    km_meta_set_num(x, "mine.onetime.pass.student_dice_sum", M->lab_ds.sd);
    km_meta_set_int(x, "mine.onetime.pass.count", M->lab_ds.npd);
}

/* M->lab_done and M->lab_ds from a checkpoint: without
 * "mine.onetime.pass.images" (a finished pass, older versions) n_unl. */
static km_status pass_from_meta(miner *M, const km_tdict *x, const char *path) {
    M->lab_done = M->d.n_unl;
    if (!km_tdict_get_meta(x, "mine.onetime.pass.images")) return KM_OK;
    long long done = 0, count = 0;
    km_status s = km_meta_get_int(x, "mine.onetime.pass.images", path, &done);
    if (!s) s = km_meta_get_int(x, "mine.onetime.pass.count", path, &count);
    if (!s) s = km_meta_get_num(x, "mine.onetime.pass.pseudo_dice_sum", path, &M->lab_ds.pd);
    if (!s) s = km_meta_get_num(x, "mine.onetime.pass.student_dice_sum", path, &M->lab_ds.sd);
    if (!s && (done < 1 || done >= M->d.n_unl || done % M->B || count < 0 || count > done))
        s = km_err(KM_EFORMAT, "%s: metadata 'mine.onetime.pass.images' %lld / 'mine.onetime.pass.count' %lld: "
                               "expected a multiple of the batch %d below the %d unlabelled images, and count <= "
                               "images", path, done, count, M->B, M->d.n_unl);
    M->lab_done = (int)done;
    M->lab_ds.npd = (int)count;
    return s;
}

/* last.safetensors (rank 0): the training-loop state and "mine.*"; part
 * (a stop in mid-epoch, else NULL): the run RNG as the epoch began and the
 * partial epoch. */
static km_status save_state(miner *M, const epoch_acc *part) {
    if (!M->run.dir) return KM_OK; /* a rank other than 0 */
    km_tdict x;
    km_tdict_init(&x);
    if (part) part_to_meta(M, part, &x);
    km_tdict_set_meta(&x, "mine.schedule", M->c.schedule == KM_MINE_ONETIME ? "onetime" : "continuous");
    for (int i = 0; i < NSTATE; i++) {
        const char *p = (const char *)&M->st + k_state[i].off;
        if (k_state[i].is_num) km_meta_set_num(&x, k_state[i].key, *(const double *)p);
        else km_meta_set_int(&x, k_state[i].key, *(const long *)p);
    }
    if (M->has_frozen && M->lab_done < M->d.n_unl) pass_to_meta(M, &x);
    if (M->has_frozen) {
        int n_unl = M->d.n_unl;
        char *b = km_malloc((size_t)n_unl + 1);
        for (int u = 0; u < n_unl; u++) b[u] = M->has_frozen[u] ? '1' : '0';
        b[n_unl] = 0;
        km_tdict_set_meta(&x, "mine.onetime.labelled", b);
        km_free(b);
    }
    char *path = km_run_path(&M->run, "last.safetensors");
    const km_rng *rng = part ? &M->ep_rng : &M->rng;
    km_status s = km_train_checkpoint_save(path, M->m, &M->c.train, "mine", M->epoch, rng, &M->pl, &M->es, &x);
    km_free(path);
    km_tdict_free(&x);
    return s;
}

/* The metadata "mine.*" of last.safetensors (read into d from `path`) into
 * M->st and, one-time, M->has_frozen. */
static km_status state_from_meta(miner *M, const km_tdict *x, const char *path) {
    const char *sched = km_tdict_get_meta(x, "mine.schedule");
    const char *want = M->c.schedule == KM_MINE_ONETIME ? "onetime" : "continuous";
    if (!sched || strcmp(sched, want))
        return km_err(KM_EFORMAT, "%s: metadata 'mine.schedule' is '%s', but the run's schedule is %s", path,
                      sched ? sched : "(missing)", want);
    km_status s = KM_OK;
    for (int i = 0; i < NSTATE && !s; i++) {
        char *p = (char *)&M->st + k_state[i].off;
        long long v = 0;
        if (k_state[i].optional && !km_tdict_get_meta(x, k_state[i].key)) *(double *)p = NAN;
        else if (k_state[i].is_num) s = km_meta_get_num(x, k_state[i].key, path, (double *)p);
        else if (!(s = km_meta_get_int(x, k_state[i].key, path, &v))) *(long *)p = (long)v;
    }
    if (!s && km_unetpp_resnet_depth(M->m) != M->c.train.resnet)
        s = km_err(KM_EFORMAT, "%s: resnet%d weights, but the run's config says resnet%d", path,
                   km_unetpp_resnet_depth(M->m), M->c.train.resnet);
    if (!s) s = km_unetpp_check_arch(M->m, M->c.train.encoder_depth, M->c.train.decoder_channels, path);
    int n_unl = M->d.n_unl;
    if (!s && M->has_frozen) {
        const char *b = km_tdict_get_meta(x, "mine.onetime.labelled");
        if (!b || (int)strlen(b) != n_unl || strspn(b, "01") != (size_t)n_unl)
            return km_err(KM_EFORMAT, "%s: metadata 'mine.onetime.labelled' missing or not %d digits 0/1 (one per "
                                      "unlabelled image)", path, n_unl);
        for (int u = 0; u < n_unl; u++) M->has_frozen[u] = b[u] == '1';
        s = pass_from_meta(M, x, path);
    }
    return s ? s : part_from_meta(M, x, path);
}

/* The mining state from last.safetensors: model, optimiser, RNG, schedule,
 * M->epoch and M->st. */
static km_status load_state(miner *M) {
    km_tdict x;
    km_tdict_init(&x);
    char *path = km_path_join(M->c.out, "last.safetensors"); /* every rank reads it */
    km_status s = km_train_checkpoint_load(path, "mine", &M->m, &M->epoch, &M->rng, &M->pl, &M->es, &x);
    if (!s) s = state_from_meta(M, &x, path);
    km_tdict_free(&x);
    km_free(path);
    if (s && M->m) {
        km_unetpp_free(M->m);
        M->m = NULL;
    }
    return s;
}

/* One-time labels frozen earlier in this run folder: pseudo/<id>.png, S x S
 * grey 0/255 -> {0,1}. */
static km_status load_frozen(miner *M) {
    const mine_data *d = &M->d;
    size_t P = M->P;
    char *dir = km_path_join(M->c.out, "pseudo"); /* every rank reads them */
    km_status s = KM_OK;
    for (int u = 0; u < d->n_unl && !s; u++) {
        if (!M->has_frozen[u]) continue;
        char *name = png_path(dir, d->pool.ids[d->n_lab + u]);
        km_image img;
        s = km_image_load(name, &img, 0);
        if (s) {
            s = km_err_prefix(s, "--resume: one-time pseudo label: ");
            km_free(name);
            break;
        }
        int ok = img.w == M->S && img.h == M->S && img.c == 1;
        for (size_t i = 0; ok && i < P; i++) {
            ok = img.data[i] == 0 || img.data[i] == 255;
            M->frozen[P * u + i] = img.data[i] != 0;
        }
        km_image_free(&img);
        if (!ok) s = km_err(KM_EFORMAT, "%s: not this run's one-time pseudo label (expected a %dx%d grey 0/255 PNG)",
                            name, M->S, M->S);
        km_free(name);
    }
    km_free(dir);
    return s;
}

/* best.safetensors: the weights of the best val-loss mining epoch. */
static km_status save_best(miner *M, double val_loss) {
    if (!M->run.dir) return KM_OK; /* a rank other than 0 */
    km_tdict meta;
    km_tdict_init(&meta);
    km_meta_set_int(&meta, "size", M->S);
    km_meta_set_int(&meta, "mine.epoch", M->epoch);
    km_meta_set_num(&meta, "val_loss", val_loss);
    km_dataset_label_meta(&M->d.s.idx, &meta);
    char *p = km_run_path(&M->run, "best.safetensors");
    km_status s = km_unetpp_save(M->m, p, &meta);
    km_free(p);
    km_tdict_free(&meta);
    return s;
}

/* Eval-mode validation: size-weighted loss, per-image Dice/IoU at logit > 0. */
static km_status validate(miner *M, const km_dataset *va, double *loss, double *dice, double *iou) {
    int B = M->B, S = M->S;
    size_t P = M->P;
    km_metric_acc acc;
    km_metric_acc_init(&acc);
    double wsum = 0;
    km_status s = KM_OK;
    for (int b0 = 0; b0 < va->n && !s; b0 += B) {
        int bn = va->n - b0 < B ? va->n - b0 : B;
        for (int i = 0; i < bn; i++) M->which[i] = b0 + i;
        km_batch_fill(va, M->which, NULL, bn, M->x, M->y);
        s = km_unetpp_forward(M->m, M->x, bn, S, S, 0, M->z);
        if (s) break;
        wsum += km_seg_loss(M->z, M->y, P * bn, M->c.train.bce_weight, 1.0f, M->dz, NULL, NULL) * bn;
        for (int i = 0; i < bn; i++)
            km_metric_acc_add(&acc, km_conf_logits_f32(M->z + P * i, M->y + P * i, P), NULL, NULL);
    }
    *loss = wsum / va->n;
    *dice = km_metric_mean_dice(&acc);
    *iou = km_metric_mean_iou(&acc);
    return s;
}

/* ------------------------------------------------------------------ run */

km_status km_mine_resolve_teacher(km_mine_config *c) {
    km_status s;
    if (c->profile == KM_SAM_PROFILE_AUTO && c->teacher &&
        (s = km_sam_probe_profile(c->teacher, &c->profile)))
        return km_err_prefix(s, "--teacher: ");
    if (c->profile != KM_SAM_PROFILE_AUTO) c->prompt_mode = km_prompt_mode_for(c->prompt_mode, c->profile);
    return KM_OK;
}

/* Phase 1: settings ("auto" resolved), the run folder and its
 * mine_config.json (a new run) or the check that it is one (resume). */
static km_status miner_open(miner *M, const km_mine_config *c, int resume, const km_train_hooks *hooks,
                            km_mine_result *res) {
    memset(M, 0, sizeof *M);
    M->c = *c;
    M->h = hooks;
    km_status s = km_dist_init();
    if (s) return s;
    M->log = km_dist_rank() ? NULL : hooks->log; /* rank 0 alone logs and writes files */
    M->res = res;
    M->resume = resume;
    M->st.onetime_dice = M->st.last_val_dice = NAN;
    M->S = c->train.size;
    M->B = c->train.batch;
    M->P = (size_t)M->S * M->S;
    s = km_mine_config_check(&M->c);
    if (!s) s = km_mine_dist_check(&M->c);
    if (!s) s = km_mine_resolve_teacher(&M->c);
    const char *wdir = km_dist_rank() ? NULL : M->c.out; /* NULL: this rank writes nothing */
    if (!s) s = km_run_open(&M->run, wdir, "mine_config.json", "mine", resume);
    if (!s && !resume && wdir) s = km_mine_config_save(&M->c, M->run.config);
    if (s) return s;
    M->have_last = resume && km_run_has(&M->run, "last.safetensors");
    km_dist_bcast(&M->have_last, sizeof M->have_last); /* rank 0's view of the folder */
    return KM_OK;
}

/* Phase 2: the student the mining phase starts from (M->init): --init, or
 * the best checkpoint of the supervised phase, run (or resumed) in
 * <out>/supervised. Nothing to do once the mining phase has a checkpoint.
 * *stopped: hooks->stop_after ended the run in or right after this phase. */
static km_status mine_supervised(miner *M, int *stopped) {
    *stopped = 0;
    if (M->have_last) return KM_OK;
    if (M->c.init) {
        M->init = km_strdup(M->c.init);
        return KM_OK;
    }
    km_train_config sc = M->c.train;
    sc.out = km_path_join(M->c.out, "supervised"); /* rank 0 writes it (train.c), every rank reads it */
    int sup_resume = M->resume && km_run_has(&M->run, "supervised/last.safetensors");
    km_dist_bcast(&sup_resume, sizeof sup_resume);
    km_train_result tr;
    if (M->log) fprintf(M->log, "supervised phase -> %s%s\n", sc.out, sup_resume ? " (resuming)" : "");
    km_status s = km_train_run(&sc, sup_resume, M->h, &tr);
    km_dist_barrier(); /* rank 0 has written best.safetensors before any rank reads it */
    if (s) {
        s = km_err_prefix(s, "supervised phase: ");
    } else if (!tr.finished) { /* stopped by hooks->stop_after, as if killed */
        if (M->log)
            fprintf(M->log, "stopped in the supervised phase after epoch %d (continue with --resume)\n", tr.epochs_done);
        *stopped = 1;
    } else {
        M->st.sup_epochs = tr.epochs_done;
        M->init = km_path_join(sc.out, "best.safetensors");
        *stopped = M->h->stop_after && M->st.sup_epochs >= M->h->stop_after;
    }
    km_free(sc.out);
    return s;
}

/* The student from M->init, with a fresh optimiser state (method.md 5). */
static km_status init_student(miner *M) {
    km_status s = km_unetpp_load(&M->m, M->init);
    if (!s && km_unetpp_resnet_depth(M->m) != M->c.train.resnet)
        s = km_err(KM_EARG, "%s: resnet%d weights, but --resnet %d", M->init, km_unetpp_resnet_depth(M->m),
                   M->c.train.resnet);
    if (!s) s = km_unetpp_check_arch(M->m, M->c.train.encoder_depth, M->c.train.decoder_channels, M->init);
    if (!s) km_unetpp_adam_reset(M->m);
    return s;
}

/* A resumed mining phase: the state of last.safetensors, the one-time labels
 * from pseudo/, and the resume recorded in the run folder (unless the run
 * had finished). */
static km_status resume_state(miner *M) {
    km_status s = load_state(M);
    if (!s && M->has_frozen) s = load_frozen(M);
    if (!s && !M->st.done) s = km_run_note_resume(&M->run, M->epoch);
    if (!s && M->log && M->has_frozen && M->lab_done < M->d.n_unl)
        fprintf(M->log, "resuming %s after %d of %d images of the one-time labelling pass\n", M->c.out, M->lab_done,
                M->d.n_unl);
    else if (!s && M->log && M->part_steps)
        fprintf(M->log, "resuming %s after step %d of mining epoch %d\n", M->c.out, M->part_steps, M->epoch + 1);
    else if (!s && M->log)
        fprintf(M->log, "resuming %s after mining epoch %d%s\n", M->c.out, M->epoch,
                M->st.done ? ": the run had already finished" : "");
    return s;
}

/* Several ranks: each read the same student (and, resumed, the same
 * checkpoint and one-time labels); check that they hash alike. */
static km_status miner_sync(miner *M) {
    if (km_dist_size() == 1) return KM_OK;
    uint64_t h = km_dist_hash(km_unetpp_state_hash(M->m), &M->rng, sizeof M->rng);
    h = km_dist_hash(h, &M->epoch, sizeof M->epoch);
    h = km_dist_hash(km_dist_hash(h, &M->part_steps, sizeof M->part_steps), &M->part_rng, sizeof M->part_rng);
    if (M->has_frozen) {
        h = km_dist_hash(h, M->has_frozen, (size_t)M->d.n_unl);
        if (M->have_last) h = km_dist_hash(h, M->frozen, M->P * (size_t)M->d.n_unl);
    }
    return km_dist_check_same(h, "the student, optimiser, RNG and one-time labels");
}

/* Phase 3: the data (the splits as the supervised phase made them), the
 * RNG, schedule and student (fresh or resumed), the teacher and the metric
 * files (a resumed run drops the rows after its checkpoint). */
static km_status miner_state(miner *M) {
    const km_mine_config *c = &M->c;
    const km_train_config *tc = &c->train;
    km_set_threads(tc->threads);
    km_status s = mine_data_load(tc, M->run.dir, &M->d);
    if (s) return s;
    int n_lab = M->d.n_lab, n_unl = M->d.n_unl;
    M->res->n_labelled = n_lab;
    M->res->n_unlabelled = n_unl;
    km_rng_seed(&M->rng, tc->seed ^ KM_MINE_RNG_SALT);
    km_plateau_init(&M->pl, tc->lr, tc->plateau_factor, tc->plateau_patience, tc->min_lr);
    km_early_stop_init(&M->es, tc->early_stop);
    if (c->schedule == KM_MINE_ONETIME) {
        M->frozen = km_malloc(M->P * (n_unl + 1));
        M->has_frozen = km_calloc((size_t)n_unl + 1);
    }
    s = M->have_last ? resume_state(M) : init_student(M);
    km_refine_config rc;
    teacher_config(c, &rc);
    if (!s) s = km_refiner_open(&M->R, &rc);
    if (!s) s = miner_sync(M);
    if (!s && tc->micro_batch) s = km_micro_open(&M->mb, M->B, tc->micro_batch, km_unetpp_num_params(M->m), M->m);
    if (!s) s = km_dist_watchdog_start(tc->step_timeout);
    if (s) return s;
    M->res->no_box = M->st.no_box;
    M->res->last_pseudo_dice = M->st.onetime_dice;
    M->res->last_val_dice = M->st.last_val_dice;
    s = km_unetpp_reserve(M->m, M->B, M->S, M->S);
    char *pseudo = km_run_path(&M->run, "pseudo");
    if (!s && pseudo) s = km_mkdir_p(pseudo);
    km_free(pseudo);
    if (!s) s = km_run_metrics_open(&M->run, k_mine_cols, NMCOLS, 1, 1, M->have_last ? M->epoch : -1);
    return s;
}

/* The batch buffers (B images of S x S) and the mining set's index. */
static void miner_buffers(miner *M) {
    size_t P = M->P, B = (size_t)M->B;
    M->x = km_malloc(sizeof(float) * 3 * P * B);
    M->y = km_malloc(sizeof(float) * P * B);
    M->z = km_malloc(sizeof(float) * P * B);
    M->dz = km_malloc(sizeof(float) * P * B);
    M->gz = km_malloc(sizeof(float) * P * B);
    M->gy = km_malloc(sizeof(float) * P * B);
    M->gd = km_malloc(sizeof(float) * P * B);
    M->zo = km_malloc(sizeof(float) * P);
    M->lab_o = km_malloc(P);
    M->lab_a = km_malloc(P);
    M->png = km_malloc(P);
    M->sel_l = km_malloc(sizeof(int) * B);
    M->sel_u = km_malloc(sizeof(int) * B);
    M->which = km_malloc(sizeof(int) * B);
    M->pool = km_malloc(sizeof(int) * (size_t)(M->d.n_lab + M->d.n_unl + 1));
    const km_micro *u = &M->mb;
    if (!u->M) return;
    size_t nv = (size_t)u->Kl * u->M;
    M->rec_bytes = sizeof(micro_rec) * (size_t)u->Kl + sizeof(visit_rec) * nv;
    M->rec = km_malloc(M->rec_bytes);
    M->rec_all = km_malloc(M->rec_bytes * (size_t)km_dist_size());
    M->labs = km_calloc(P * nv);
    M->labs_all = km_malloc(P * nv * (size_t)km_dist_size());
}

/* The teacher's pseudo label [S, S] of pool image pi for prompts pr in its
 * un-augmented S frame into `mask`. */
static km_status teacher_label(miner *M, int pi, km_prompts *pr, const float *zmask, uint8_t *mask) {
    const mine_data *d = &M->d;
    char *path = km_dataset_image_path(&d->s.idx, d->pool.src[pi]);
    km_refine_image im;
    km_refine_image_file(&im, path, d->pool.orig_w[pi], d->pool.orig_h[pi], d->pool.orig_hash[pi]);
    km_status s = km_refine_teacher_mask(&M->R, &im, M->S, pr, zmask, mask);
    km_free(path);
    return s;
}

/* ------------------------------------------------------- one-time labels */

/* Unlabelled image u of the one-time pass from its eval-mode logits z:
 * prompts (every rank draws them, so the run RNG stays as one process's),
 * then, on the rank that owns u (u mod N), the teacher's label frozen into
 * M->frozen with its Dice (pd[u]) and the student's (sd[u]) vs the truth. */
static km_status label_frozen(miner *M, int u, const float *z, double *pd, double *sd) {
    size_t P = M->P;
    int pi = M->d.n_lab + u;
    const uint8_t *gt = M->d.pool.masks + P * pi;
    km_prompts pr;
    km_status s = km_refine_prompts(&M->R, z, M->S, M->S, &M->rng, &pr);
    if (s) return s;
    if (pr.outcome == KM_PROMPTS_NO_BOX) {
        M->res->no_box++;
        return KM_OK;
    }
    M->has_frozen[u] = 1;
    if (u % km_dist_size() != km_dist_rank()) return KM_OK;
    uint8_t *lab = M->frozen + P * u;
    s = teacher_label(M, pi, &pr, z, lab);
    if (s) return s;
    pd[u] = mask_dice(lab, gt, P);
    sd[u] = km_dice_score(km_conf_logits_u8(z, gt, P));
    return KM_OK;
}

/* N ranks: every rank gets every frozen label with its two Dice numbers
 * (km_mine_share_frozen), and the teacher's counters become the sums over
 * ranks (km_mine_counts_sync); then every rank's labels and RNG are checked
 * to be the same. */
static km_status share_labels(miner *M, double *pd, double *sd) {
    int N = km_dist_size(), n = M->d.n_unl;
    if (N == 1) return KM_OK;
    size_t P = M->P;
    km_mine_share_frozen(M->frozen, M->has_frozen, n, P, pd, sd);
    long *enc = km_malloc(sizeof(long) * (size_t)N);
    km_mine_counts_sync(&M->R, &M->cnt, enc);
    if (M->log) {
        char list[512];
        km_mine_rank_list(enc, list, sizeof list);
        fprintf(M->log, "one-time labels shared by %d ranks; encoder runs per rank: %s\n", N, list);
    }
    km_free(enc);
    uint64_t h = km_dist_hash(1469598103934665603ULL, M->frozen, P * (size_t)n);
    h = km_dist_hash(h, M->has_frozen, (size_t)n);
    return km_dist_check_same(km_dist_hash(h, &M->rng, sizeof M->rng), "the one-time labels and the RNG");
}

/* The frozen labels of images from..to-1 to pseudo/<id>.png (rank 0),
 * their Dice added to *ds in image order (the same sums for every N). */
static km_status write_frozen(miner *M, int from, int to, const double *pd, const double *sd, dice_sums *ds) {
    km_status s = KM_OK;
    char *dir = km_run_path(&M->run, "pseudo");
    for (int u = from; u < to && !s; u++) {
        if (!M->has_frozen[u]) continue;
        ds->pd += pd[u];
        ds->sd += sd[u];
        ds->npd++;
        if (!dir) continue;
        char *name = png_path(dir, M->d.pool.ids[M->d.n_lab + u]);
        s = save_mask_png(name, M->frozen + M->P * u, M->S, M->png);
        km_free(name);
    }
    km_free(dir);
    return s;
}

/* A stop request (SIGTERM/SIGUSR1) after batch `batch` (1-based) of the
 * labelling pass, the same answer on every rank; KMSEG_TEST_FAULT=R:-B:KIND
 * fires here (dist.h). */
static int label_stop(int batch) {
    km_dist_test_fault(-batch);
    return km_dist_stop_requested();
}

/* The pass stopped after image M->lab_done: its checkpoint and log line. */
static km_status label_stopped(miner *M) {
    km_status s = save_state(M, NULL);
    if (!s && M->log) {
        fprintf(M->log, "stop requested (SIGTERM/SIGUSR1): checkpoint after %d of %d images of the one-time "
                        "labelling pass; continue with --resume %s\n", M->lab_done, M->d.n_unl, M->c.out);
        fflush(M->log);
    }
    return s;
}

/* The pass's log line, once every image has been gone through. */
static void label_log(miner *M, long hits0) {
    km_mine_result *res = M->res;
    const km_refiner *R = &M->R;
    if (!M->log) return;
    fprintf(M->log, "one-time pseudo labels: %d of %d unlabelled images (%ld NO_BOX), mean Dice vs ground truth "
                    "%.4f (the student's own on them %.4f), %ld encoder runs (%.1f s), %ld cache hits, decoder "
                    "%.1f s\n",
            M->lab_ds.npd, M->d.n_unl, res->no_box, res->last_pseudo_dice, res->last_student_unl_dice,
            R->encoder_runs, R->encoder_seconds, km_refiner_cache_hits(R) - hits0, R->decoder_seconds);
}

/* Phase 4 (one-time schedule, before the first mining epoch): every
 * unlabelled image predicted once in eval mode (un-augmented), prompted,
 * labelled by the teacher and frozen; then a checkpoint (epoch 0), so that a
 * resumed run reads the labels back instead of labelling again. Under N
 * ranks every rank predicts and prompts every image (cheap next to the
 * teacher), the teacher work of image u is done by rank u mod N, and the
 * labels are shared (share_labels): files and logs as one process's. The
 * pass starts at image M->lab_done (a resumed pass) and a stop request
 * between two batches ends it there (label_stopped). */
static km_status label_onetime(miner *M) {
    const mine_data *d = &M->d;
    km_refiner *R = &M->R;
    int B = M->B, show = M->h->progress && M->log, from = M->lab_done, to = d->n_unl;
    long hits0 = km_refiner_cache_hits(R);
    double *pd = km_calloc(sizeof(double) * (size_t)(2 * d->n_unl + 1)), *sd = pd + d->n_unl;
    km_progress lp = {0};
    if (show) km_progress_start(&lp, M->log, "teacher labels", d->n_unl, "img");
    km_status s = KM_OK;
    for (int b0 = from; b0 < to && !s; b0 += B) {
        if (show) km_progress_update(&lp, b0, NULL);
        int bn = d->n_unl - b0 < B ? d->n_unl - b0 : B;
        for (int i = 0; i < bn; i++) M->sel_u[i] = d->n_lab + b0 + i;
        km_batch_fill(&d->pool, M->sel_u, NULL, bn, M->x, NULL);
        s = km_unetpp_forward(M->m, M->x, bn, M->S, M->S, 0, M->z);
        for (int i = 0; i < bn && !s; i++) s = label_frozen(M, b0 + i, M->z + M->P * i, pd, sd);
        if (!s && b0 + bn < to && label_stop(b0 / B + 1)) to = b0 + bn;
    }
    if (show) km_progress_end(&lp, NULL);
    if (!s) s = share_labels(M, pd, sd);
    if (!s) s = write_frozen(M, from, to, pd, sd, &M->lab_ds);
    km_free(pd);
    if (s) return s;
    M->lab_done = to;
    M->st.no_box = M->res->no_box;
    M->st.teacher_calls = M->calls_before + R->teacher_calls;
    if (to < d->n_unl) return label_stopped(M);
    const dice_sums *ds = &M->lab_ds;
    km_mine_result *res = M->res;
    res->last_pseudo_dice = M->st.onetime_dice = ds->npd ? ds->pd / ds->npd : NAN;
    res->last_student_unl_dice = M->st.onetime_student_dice = ds->npd ? ds->sd / ds->npd : NAN;
    label_log(M, hits0);
    return save_state(M, NULL);
}

/* The mining set: every labelled image, then the unlabelled ones (one-time:
 * those with a frozen label). */
static void make_pool(miner *M) {
    M->npool = 0;
    for (int i = 0; i < M->d.n_lab; i++) M->pool[M->npool++] = i;
    for (int u = 0; u < M->d.n_unl; u++)
        if (!M->has_frozen || M->has_frozen[u]) M->pool[M->npool++] = M->d.n_lab + u;
    M->order = km_malloc(sizeof(int) * (size_t)(M->npool + 1));
    M->aug = km_malloc((size_t)M->npool + 1);
}

/* --------------------------------------------------------- mining epochs */

/* Continuous schedule, one unlabelled visit of pool image pi with train-mode
 * logits z (augmented with `code`): prompts (rng) mapped back, the teacher's
 * label on the original image into lab (un-augmented frame) and *v. */
static km_status visit_label(miner *M, int pi, const float *z, int code, km_rng *rng, uint8_t *lab, visit_rec *v) {
    size_t P = M->P;
    int S = M->S;
    const uint8_t *gt = M->d.pool.masks + P * pi;
    memset(v, 0, sizeof *v);
    km_prompts pr;
    km_status s = km_refine_prompts(&M->R, z, S, S, rng, &pr);
    if (s) return s;
    if (pr.outcome == KM_PROMPTS_NO_BOX) {
        v->kind = VISIT_NOBOX;
        return KM_OK;
    }
    km_prompts_unaugment(&pr, code, S);
    if (M->c.prompt_mode & KM_PROMPT_USE_MASK) km_prompts_unaugment_map(code, S, z, M->zo);
    s = teacher_label(M, pi, &pr, M->zo, lab);
    if (s) return s;
    v->kind = VISIT_LABEL;
    v->pd = mask_dice(lab, gt, P);
    /* the student's own (train-mode, augmented) prediction against the augmented truth */
    km_aug_apply_u8(code, S, 1, gt, M->lab_a);
    v->sd = km_dice_score(km_conf_logits_u8(z, M->lab_a, P));
    return KM_OK;
}

/* A continuous visit into the epoch's counts, in batch order: NO_BOX, the
 * Dice sums and, while the epoch has fewer than sample_pngs, its label
 * (lab) as pseudo/epoch_NNN/<id>.png (rank 0: a->sdir). */
static km_status visit_count(miner *M, epoch_acc *a, const visit_rec *v, const uint8_t *lab, int pi) {
    a->visits++;
    if (v->kind == VISIT_NOBOX) a->nobox++;
    if (v->kind != VISIT_LABEL) return KM_OK;
    a->ds.pd += v->pd;
    a->ds.sd += v->sd;
    a->ds.npd++;
    if (a->nsample >= M->c.sample_pngs) return KM_OK;
    a->nsample++;
    if (!a->sdir) return KM_OK;
    char *name = png_path(a->sdir, M->d.pool.ids[pi]);
    km_status s = save_mask_png(name, lab, M->S, M->png);
    km_free(name);
    return s;
}

/* Label `lab` (un-augmented) augmented with `code` as the target y [P]. */
static void set_target(miner *M, const uint8_t *lab, int code, float *y) {
    km_aug_apply_u8(code, M->S, 1, lab, M->lab_a);
    for (size_t j = 0; j < M->P; j++) y[j] = M->lab_a[j];
}

/* Continuous schedule, visit i of the whole batch (augmentation `code`):
 * the teacher's label (prompts from the run RNG) counted and, unless
 * NO_BOX, augmented as the visit's target in M->y; sel_u[*nu] = i then. */
static km_status label_visit(miner *M, int i, int code, epoch_acc *a, int *nu) {
    int pi = M->which[i];
    visit_rec v;
    km_status s = visit_label(M, pi, M->z + M->P * i, code, &M->rng, M->lab_o, &v);
    if (!s) s = visit_count(M, a, &v, M->lab_o, pi);
    if (s || v.kind != VISIT_LABEL) return s;
    set_target(M, M->lab_o, code, M->y + M->P * i);
    M->sel_u[(*nu)++] = i;
    return KM_OK;
}

/* The targets of n images (pool images w, codes ab, targets y): labelled
 * images keep their masks (sel_l); one-time visits get their frozen label
 * augmented like the image (sel_u). */
static void batch_targets(miner *M, const int *w, const uint8_t *ab, int n, float *y, int *nl, int *nu) {
    *nl = *nu = 0;
    for (int i = 0; i < n; i++) {
        if (w[i] < M->d.n_lab) {
            M->sel_l[(*nl)++] = i;
        } else if (M->c.schedule == KM_MINE_ONETIME) {
            set_target(M, M->frozen + M->P * (w[i] - M->d.n_lab), ab[i], y + M->P * i);
            M->sel_u[(*nu)++] = i;
        }
    }
}

/* L = L_sup(labelled part) + lambda * L_sup(pseudo part) of n logits z vs
 * targets y (sel_l, sel_u), gradient (scaled by `share`) into M->dz. */
static double step_loss(miner *M, const float *z, const float *y, int n, int nl, int nu, double share, double *ll,
                        double *lu) {
    const km_train_config *tc = &M->c.train;
    float sl = (float)share, su = (float)(M->c.pseudo_weight * share);
    memset(M->dz, 0, sizeof(float) * M->P * n);
    *ll = part_loss(z, y, M->sel_l, nl, M->P, tc->bce_weight, sl, M->gz, M->gy, M->gd, M->dz);
    *lu = part_loss(z, y, M->sel_u, nu, M->P, tc->bce_weight, su, M->gz, M->gy, M->gd, M->dz);
    return *ll + M->c.pseudo_weight * *lu;
}

static void adam_step(miner *M, float lr) {
    const km_train_config *tc = &M->c.train;
    km_unetpp_adam_step(M->m, lr, (float)tc->beta1, (float)tc->beta2, (float)tc->eps, (float)tc->weight_decay);
}

/* One optimiser step on batch k of the epoch's order: one train-mode forward
 * over the whole batch, L = L_sup(labelled) + lambda * L_sup(pseudo). */
static km_status mine_step(miner *M, int k, float lr, epoch_acc *a) {
    int B = M->B, S = M->S, b0 = k * B, bn = M->npool - b0 < B ? M->npool - b0 : B;
    const uint8_t *ab = M->aug + b0;
    memcpy(M->which, M->order + b0, sizeof(int) * bn);
    km_batch_fill(&M->d.pool, M->which, ab, bn, M->x, M->y);
    int nl, nu;
    batch_targets(M, M->which, ab, bn, M->y, &nl, &nu);
    if (M->c.schedule == KM_MINE_ONETIME) a->visits += nu;
    km_unetpp_zero_grad(M->m);
    km_status s = km_unetpp_forward(M->m, M->x, bn, S, S, 1, M->z);
    for (int i = 0; i < bn && !s && M->c.schedule == KM_MINE_CONTINUOUS; i++)
        if (M->which[i] >= M->d.n_lab) s = label_visit(M, i, ab[i], a, &nu);
    if (s) return s;
    double ll, lu, l = step_loss(M, M->z, M->y, bn, nl, nu, 1.0, &ll, &lu);
    km_unetpp_backward(M->m, M->dz, NULL);
    adam_step(M, lr);
    a->lsum += l * bn;
    a->seen += bn;
    a->lsup += ll * nl;
    a->nsup += nl;
    a->lpse += lu * nu;
    a->npse += nu;
    return KM_OK;
}

/* ------------------------------------------- mining steps in micro-batches */

/* This rank's records of a step: Kl micro_rec, then Kl x M visit_rec. */
static micro_rec *rec_micro(const miner *M, uint8_t *base, int i) { return (micro_rec *)base + i; }
static visit_rec *rec_visit(const miner *M, uint8_t *base, int i) {
    return (visit_rec *)(base + sizeof(micro_rec) * (size_t)M->mb.Kl) + (size_t)i * M->mb.M;
}

/* Local micro-batch i = global j of batch k (nj images counting, `share` of
 * the batch): forward of its images (this rank's buffers from position
 * i M), targets, continuous visits labelled by this rank (prompts from each
 * visit's own stream, labels kept in M->labs), loss scaled by share,
 * backward. *l = its loss; records into M->rec. */
static km_status micro_part(miner *M, int k, int i, int nj, double share, double *l) {
    int Mm = M->mb.M, j = km_micro_global(&M->mb, i), p0 = k * M->B + j * Mm, S = M->S;
    size_t P = M->P, o = (size_t)i * Mm;
    const int *w = M->order + p0;
    const uint8_t *ab = M->aug + p0;
    float *y = M->y + P * o;
    micro_rec *mr = rec_micro(M, M->rec, i);
    visit_rec *vr = rec_visit(M, M->rec, i);
    int nl, nu;
    batch_targets(M, w, ab, nj, y, &nl, &nu);
    km_status s = km_unetpp_forward(M->m, M->x + 3 * P * o, nj, S, S, 1, M->z);
    for (int t = 0; t < nj && !s && M->c.schedule == KM_MINE_CONTINUOUS; t++) {
        if (w[t] < M->d.n_lab) continue;
        km_rng rng;
        km_mine_visit_rng(&rng, M->c.train.seed ^ KM_MINE_RNG_SALT, M->epoch, p0 + t);
        uint8_t *lab = M->labs + P * (o + t);
        s = visit_label(M, w[t], M->z + P * t, ab[t], &rng, lab, &vr[t]);
        if (!s && vr[t].kind == VISIT_LABEL) {
            set_target(M, lab, ab[t], y + P * t);
            M->sel_u[nu++] = t;
        }
    }
    if (s) return s;
    double ll, lu;
    *l = step_loss(M, M->z, y, nj, nl, nu, share, &ll, &lu);
    km_unetpp_backward(M->m, M->dz, NULL);
    *mr = (micro_rec){ll, lu, nl, nu};
    return KM_OK;
}

/* Every rank, after the step: the records of all micro-batches (and, while
 * sample PNGs are due, the visits' labels) gathered, then counted in
 * micro-batch order, so the sums are one process's for any N. */
static km_status micro_count(miner *M, int k, int bn, epoch_acc *a) {
    const km_micro *u = &M->mb;
    int cont = M->c.schedule == KM_MINE_CONTINUOUS, Mm = u->M;
    km_dist_allgather(M->rec, M->rec_all, M->rec_bytes);
    int due = cont && a->nsample < M->c.sample_pngs && M->c.sample_pngs > 0;
    if (due) km_dist_allgather(M->labs, M->labs_all, M->P * (size_t)u->Kl * Mm);
    km_status s = KM_OK;
    for (int j = 0; j < u->K && !s; j++) {
        int nj = km_micro_n(u, j, bn);
        if (!nj) continue;
        uint8_t *blk = M->rec_all + M->rec_bytes * (size_t)(j / u->Kl);
        const micro_rec *mr = rec_micro(M, blk, j % u->Kl);
        const visit_rec *vr = rec_visit(M, blk, j % u->Kl);
        a->lsup += mr->ll * mr->nl;
        a->nsup += mr->nl;
        a->lpse += mr->lu * mr->nu;
        a->npse += mr->nu;
        for (int t = 0; t < nj && !s; t++) {
            int pi = M->order[k * M->B + j * Mm + t];
            if (pi < M->d.n_lab) continue;
            if (!cont) a->visits++;
            else s = visit_count(M, a, &vr[t], due ? M->labs_all + M->P * ((size_t)j * Mm + t) : NULL, pi);
        }
    }
    return s;
}

/* One optimiser step on batch k in micro-batches (microbatch.h): this
 * rank's micro-batches (micro_part), the fixed-order gradient sum and
 * BatchNorm updates (km_micro_finish), Adam on every rank, the counts. */
static km_status mine_step_micro(miner *M, int k, float lr, epoch_acc *a) {
    km_micro *u = &M->mb;
    int B = M->B, b0 = k * B, bn = M->npool - b0 < B ? M->npool - b0 : B, lo, hi, total = 0;
    for (int j = 0; j < u->K; j++) total += km_micro_n(u, j, bn);
    km_micro_rank_images(u, bn, &lo, &hi);
    km_batch_fill(&M->d.pool, M->order + b0 + lo, M->aug + b0 + lo, hi - lo, M->x, M->y);
    memset(M->rec, 0, M->rec_bytes);
    float *g = km_unetpp_grads(M->m);
    for (int i = 0; i < u->Kl; i++) {
        int nj = km_micro_n(u, km_micro_global(u, i), bn);
        double l = 0;
        km_micro_begin(u, M->m, i);
        km_unetpp_zero_grad(M->m);
        km_status s = nj ? micro_part(M, k, i, nj, (double)nj / total, &l) : KM_OK;
        if (s) {
            km_unetpp_bn_capture(M->m, NULL);
            return s;
        }
        km_micro_end(u, M->m, i, l, g);
    }
    double l = km_micro_finish(u, M->m, bn, g);
    adam_step(M, lr);
    a->lsum += l * total;
    a->seen += total;
    return micro_count(M, k, bn, a);
}

/* The epoch's order and augmentation codes (run RNG), the refiner's counters
 * and, continuous, the folder of sample PNGs. */
static km_status epoch_begin(miner *M, epoch_acc *a) {
    memset(a, 0, sizeof *a);
    M->ep_rng = M->rng;
    memcpy(M->order, M->pool, sizeof(int) * (size_t)M->npool);
    km_rng_shuffle(&M->rng, M->order, M->npool);
    for (int i = 0; i < M->npool; i++) M->aug[i] = km_aug_draw(&M->rng);
    if (M->part_steps) { /* resumed after a stop in this epoch: its state after step part_steps */
        *a = M->part;
        M->rng = M->part_rng;
    }
    acc_flip(a, &M->R); /* amounts so far (0: a new epoch) -> the counters and clock at the epoch's start */
    char name[32];
    snprintf(name, sizeof name, "pseudo/epoch_%03d", M->epoch);
    a->sdir = km_run_path(&M->run, name);
    if (a->sdir && M->c.schedule == KM_MINE_CONTINUOUS && M->c.sample_pngs > 0 && M->d.n_unl > 0)
        return km_mkdir_p(a->sdir); /* rank 0 */
    return KM_OK;
}

/* The epoch's optimiser steps (a trailing single-image batch dropped). */
static km_status mine_steps(miner *M, float lr, epoch_acc *a) {
    int B = M->B, n = M->npool, nb = n / B + (n % B > 1 ? 1 : 0);
    int show = M->h->progress && M->log;
    km_progress pg;
    char label[48], extra[64];
    snprintf(label, sizeof label, "mine epoch %d/%d", M->epoch, M->c.mine_epochs);
    if (show) km_progress_start(&pg, M->log, label, (int64_t)nb * B > n ? n : (int64_t)nb * B, "img");
    km_status s = KM_OK;
    int k0 = M->part_steps; /* > 0: resumed after a stop in this epoch */
    M->part_steps = 0;
    for (int k = k0; k < nb && !s; k++) {
        km_dist_step_begin(M->steps + 1);
        s = M->mb.M ? mine_step_micro(M, k, lr, a) : mine_step(M, k, lr, a);
        km_dist_step_end();
        if (!s) km_dist_test_fault(++M->steps);
        if (!s && show) {
            snprintf(extra, sizeof extra, "loss %.4f", a->lsum / a->seen);
            km_progress_update(&pg, a->seen, extra);
        }
        if (!s && k + 1 < nb && km_dist_stop_requested()) { /* every rank, after the same step */
            M->part_steps = k + 1;                           /* (the last step: after the epoch's checkpoint) */
            break;
        }
    }
    if (show) km_progress_end(&pg, a->seen ? extra : NULL);
    return s;
}

/* The epoch's results (M->res), its log row, then its checkpoint (best ->
 * log row -> last, the resume protocol) and the epoch line. */
static km_status epoch_end(miner *M, const epoch_acc *a, double lr_ep, const double v[3], const double t[2],
                           int stop) {
    km_mine_result *res = M->res;
    km_refiner *R = &M->R;
    int cont = M->c.schedule == KM_MINE_CONTINUOUS;
    double secs = km_now() - a->t0;
    res->last_sup_loss = a->nsup ? a->lsup / a->nsup : NAN;
    res->last_pseudo_loss = a->npse ? a->lpse / a->npse : NAN;
    res->last_pseudo_dice = a->ds.npd ? a->ds.pd / a->ds.npd : NAN;
    res->last_student_unl_dice = a->ds.npd ? a->ds.sd / a->ds.npd : NAN;
    res->last_teacher_calls = R->teacher_calls - a->calls0;
    res->last_no_box = cont ? a->nobox : 0;
    res->last_unl_visits = a->visits;
    res->last_cache_hits = km_refiner_cache_hits(R) - a->hits0;
    res->last_cache_misses = R->cache.misses - a->miss0;
    res->last_epoch_seconds = secs;
    res->no_box += res->last_no_box;
    double tl = a->seen ? a->lsum / a->seen : NAN;
    double vals[NMCOLS] = {M->epoch, tl, res->last_sup_loss, res->last_pseudo_loss, v[0], v[1], v[2], t[0], t[1],
                           lr_ep, secs, (double)a->visits, (double)res->last_teacher_calls, (double)res->last_no_box,
                           (double)res->last_cache_hits, (double)res->last_cache_misses,
                           (double)(R->encoder_runs - a->enc0), R->encoder_seconds - a->tenc0,
                           R->decoder_seconds - a->tdec0, res->last_pseudo_dice, res->last_student_unl_dice};
    km_status s = km_run_metrics_row(&M->run, vals);
    if (s) return s;
    res->last_val_dice = v[1];
    M->st.done = stop || M->epoch >= M->c.mine_epochs;
    M->st.no_box = res->no_box;
    M->st.teacher_calls = M->calls_before + R->teacher_calls;
    M->st.last_val_dice = v[1];
    s = save_state(M, NULL);
    if (s || !M->log) return s;
    fprintf(M->log, "mine epoch %d/%d  loss %.4f (sup %.4f, pseudo %.4f)  val_loss %.4f  val_dice %.4f  teacher %ld "
                    "(%ld decodes), cache %ld hit / %ld miss, NO_BOX %ld, pseudo Dice %.4f (student %.4f)  %.1f s\n",
            M->epoch, M->c.mine_epochs, tl, res->last_sup_loss, res->last_pseudo_loss, v[0], v[1],
            res->last_teacher_calls, R->decodes - a->dec0, res->last_cache_hits, res->last_cache_misses,
            res->last_no_box, res->last_pseudo_dice, res->last_student_unl_dice, secs);
    if (stop)
        fprintf(M->log, "early stop: no val-loss improvement for %d epochs (best epoch %d)\n", M->es.num_bad,
                M->es.best_epoch);
    fflush(M->log);
    return KM_OK;
}

/* A stop request in mid-epoch (M->part_steps steps done): the teacher's
 * counters summed over ranks, then last.safetensors with the partial epoch
 * (no validation, no log row; M->epoch = the epochs completed). */
static km_status stop_mid_epoch(miner *M, const epoch_acc *a) {
    if (km_dist_size() > 1) km_mine_counts_sync(&M->R, &M->cnt, NULL);
    M->epoch--;
    M->st.teacher_calls = M->calls_before + M->R.teacher_calls;
    km_status s = save_state(M, a);
    if (!s && M->log) {
        fprintf(M->log, "stop requested (SIGTERM/SIGUSR1): checkpoint after step %d of mining epoch %d; continue "
                        "with --resume %s\n", M->part_steps, M->epoch + 1, M->c.out);
        fflush(M->log);
    }
    return s;
}

/* Phase 5, one mining epoch: steps, validation (and test), schedule and
 * early stopping, best checkpoint, log row, last checkpoint; or, stopped in
 * mid-epoch (M->part_steps > 0 on return), its partial checkpoint.
 * *stop: early stop. */
static km_status mine_epoch(miner *M, int *stop) {
    M->epoch++;
    epoch_acc a;
    double lr_ep = M->pl.lr; /* torch keeps the lr as a double; Adam gets it as float */
    km_status s = epoch_begin(M, &a);
    if (!s) s = mine_steps(M, (float)lr_ep, &a);
    km_free(a.sdir);
    if (!s && M->part_steps) return stop_mid_epoch(M, &a);
    if (s) return s;
    if (km_dist_size() > 1) km_mine_counts_sync(&M->R, &M->cnt, NULL); /* the epoch's teacher work, all ranks */
    if (M->c.schedule == KM_MINE_ONETIME) a.ds = (dice_sums){M->st.onetime_dice, M->st.onetime_student_dice, 1};
    double v[3], t[3] = {NAN, NAN, NAN};
    s = validate(M, &M->d.va, &v[0], &v[1], &v[2]);
    if (!s && M->d.te.n) s = validate(M, &M->d.te, &t[2], &t[0], &t[1]);
    if (s) return s;
    int improved = 0;
    *stop = km_early_stop_step(&M->es, v[0], M->epoch, &improved);
    km_plateau_step(&M->pl, v[0]);
    if (improved && (s = save_best(M, v[0]))) return s;
    return epoch_end(M, &a, lr_ep, v, t, *stop);
}

/* Continuous mining about to run epochs in a data-parallel job (several
 * ranks, or micro-batches) with a disk cache: the embeddings are encoded
 * first, shared out by rank (km_mine_precompute). A one-time run needs no
 * such pass: its labelling pass encodes image u on rank u mod N already. */
static int precompute_due(const miner *M) {
    return M->c.schedule == KM_MINE_CONTINUOUS && M->c.cache_dir && !M->st.done && M->epoch < M->c.mine_epochs &&
           M->d.n_unl > 0 && (M->mb.M || km_dist_size() > 1);
}

/* The embedding precompute (km_mine_precompute); *stopped: a stop request
 * ended it (the run's last checkpoint, if any, stays the state to resume). */
static km_status precompute(miner *M, int *stopped) {
    km_status s = km_mine_precompute(&M->R, &M->d.s, &M->d.pool, M->d.n_lab, M->d.n_unl, &M->cnt, M->log, stopped);
    if (!s && *stopped && M->log) {
        fprintf(M->log, "stop requested (SIGTERM/SIGUSR1) in the embedding precompute (the embeddings made are "
                        "cached); continue with --resume %s\n", M->c.out);
        fflush(M->log);
    }
    return s;
}

/* The run's totals; cache counts and times are this process's (the
 * checkpoint holds no times nor cache counts). */
static void mine_totals(miner *M) {
    km_mine_result *res = M->res;
    km_refiner *R = &M->R;
    res->finished = (int)M->st.done;
    res->epochs_done = M->epoch;
    res->best_epoch = M->es.best_epoch;
    res->best_val_loss = M->es.best;
    res->teacher_calls = M->calls_before + R->teacher_calls;
    res->encoder_runs = R->encoder_runs;
    res->decodes = R->decodes;
    res->encoder_seconds = R->encoder_seconds;
    res->decoder_seconds = R->decoder_seconds;
    res->cache_hits = km_refiner_cache_hits(R);
    res->cache_misses = R->cache.misses;
}

static km_status miner_close(miner *M, km_status s) {
    km_dist_watchdog_stop();
    km_micro_close(&M->mb);
    s = km_run_close(&M->run, s);
    km_refiner_close(&M->R);
    mine_data_free(&M->d);
    if (M->m) km_unetpp_free(M->m);
    void *bufs[] = {M->x, M->y, M->z, M->dz, M->gz, M->gy, M->gd, M->zo, M->frozen, M->has_frozen, M->lab_o,
                    M->lab_a, M->png, M->aug, M->order, M->pool, M->sel_l, M->sel_u, M->which, M->init,
                    M->rec, M->rec_all, M->labs, M->labs_all};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) km_free(bufs[i]);
    return s;
}

km_status km_mine_run(const km_mine_config *c, int resume, const km_train_hooks *hooks, km_mine_result *res) {
    static const km_train_hooks no_hooks = {0};
    memset(res, 0, sizeof *res);
    res->best_val_loss = res->last_val_dice = res->last_pseudo_dice = NAN;
    miner M;
    int stopped = 0;
    km_status s = miner_open(&M, c, resume, hooks ? hooks : &no_hooks, res);
    if (s) return miner_close(&M, s); /* the same on every rank (refusals included) */
    s = mine_supervised(&M, &stopped);
    if (s || stopped) return miner_close(&M, s);
    s = miner_state(&M);
    if (!s && M.log)
        fprintf(M.log, "mining: %d labelled, %d unlabelled, %d val; teacher %s (%s), %s schedule, %s, box rule %s, "
                       "lambda %g\n", M.d.n_lab, M.d.n_unl, M.d.va.n, M.c.teacher, km_sam_profile_name(M.c.profile),
                M.c.schedule == KM_MINE_ONETIME ? "one-time" : "continuous", km_prompt_mode_name(M.c.prompt_mode),
                km_box_rule_name(M.c.box_rule), M.c.pseudo_weight);
    if (!s) miner_buffers(&M);
    M.calls_before = M.have_last ? M.st.teacher_calls : 0;
    int onetime = M.c.schedule == KM_MINE_ONETIME;
    if (!s && onetime && (!M.have_last || M.lab_done < M.d.n_unl)) s = label_onetime(&M);
    int halted = onetime && M.lab_done < M.d.n_unl; /* a stop request in the labelling pass (or, below, the precompute) */
    if (!s) make_pool(&M);
    if (!s && !halted && precompute_due(&M)) s = precompute(&M, &halted);
    while (!s && !halted && !M.st.done && M.epoch < M.c.mine_epochs) {
        int stop = 0;
        s = mine_epoch(&M, &stop);
        res->stopped_early = stop;
        if (M.part_steps) break; /* a stop request in mid-epoch: its checkpoint is written */
        if (M.h->stop_after && M.st.sup_epochs + M.epoch >= M.h->stop_after) break;
        if (!s && !M.st.done && km_dist_stop_requested()) { /* every rank, after the same epoch */
            if (M.log)
                fprintf(M.log, "stop requested (SIGTERM/SIGUSR1): checkpoint after mining epoch %d; continue with "
                        "--resume %s\n", M.epoch, M.c.out);
            break;
        }
    }
    if (!s) mine_totals(&M);
    s = miner_close(&M, s);
    return s ? km_dist_fail(s) : s; /* under mpirun a failed rank ends the job (the others would wait) */
}
