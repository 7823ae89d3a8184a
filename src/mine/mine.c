/* mine.c - the knowledge-mining run; see mine.h for the protocol. */
#include "mine.h"

#include "refine.h"
#include "../core/log.h"
#include "../core/progress.h"
#include "../core/rng.h"
#include "../eval/metrics.h"
#include "../io/image.h"
#include "../io/json.h"
#include "../models/unetpp.h"
#include "../train/augment.h"
#include "../train/dataset.h"
#include "../train/sched.h"
#include "../train/splits.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define KM_MINE_RNG_SALT 0x6d696e696e670000ULL /* "mining" */

void km_mine_config_default(km_mine_config *c) {
    memset(c, 0, sizeof *c);
    km_train_config_default(&c->train);
    c->train.labelled_fraction = 0.5;
    c->profile = KM_SAM_PROFILE_AUTO;
    c->schedule = KM_MINE_CONTINUOUS;
    c->prompt_mode = KM_PROMPT_AUTO;
    c->box_rule = KM_BOX_PER_COMPONENT;
    c->points = 1;
    c->pseudo_weight = 0.5;
    c->mine_epochs = 100;
    c->cache_mem = 256;
    c->sample_pngs = 8;
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
    if (c->cache_mem < 0) return km_err(KM_EARG, "--cache-mem %d: expected >= 0", c->cache_mem);
    km_refine_config rc;
    teacher_config(c, &rc);
    km_status s = km_refine_config_check(&rc); /* --teacher, --points, MedSAM box prompts */
    if (s) return s;
    struct stat st;
    if (c->init && (stat(c->init, &st) || !S_ISREG(st.st_mode)))
        return km_err(KM_EIO, "--init %s: no such checkpoint file", c->init);
    if (c->schedule != KM_MINE_ONETIME && c->schedule != KM_MINE_CONTINUOUS)
        return km_err(KM_EARG, "--schedule: expected onetime or continuous");
    if (!(c->pseudo_weight >= 0) || isinf(c->pseudo_weight))
        return km_err(KM_EARG, "--pseudo-weight %g: expected a finite value >= 0", c->pseudo_weight);
    if (c->mine_epochs < 1) return km_err(KM_EARG, "--mine-epochs %d: expected >= 1", c->mine_epochs);
    if (c->sample_pngs < 0) return km_err(KM_EARG, "--sample-pngs %d: expected >= 0", c->sample_pngs);
    km_train_config t = c->train;
    if (!t.data) return km_err(KM_EARG, "--data: a dataset folder is required");
    t.out = NULL;
    return km_train_config_check(&t);
}

/* ------------------------------------------------------------------ helpers */

/* {0,1} mask [S, S] -> 0/255 grey PNG */
static km_status save_mask_png(const char *path, const uint8_t *m01, int S, uint8_t *tmp) {
    for (int i = 0; i < S * S; i++) tmp[i] = m01[i] ? 255 : 0;
    km_image img = {S, S, 1, tmp};
    return km_image_save_png(path, &img);
}

static double dice_u8(const uint8_t *p, const uint8_t *g, size_t n) {
    long inter = 0, sp = 0, sg = 0;
    for (size_t i = 0; i < n; i++) {
        inter += p[i] && g[i];
        sp += p[i] != 0;
        sg += g[i] != 0;
    }
    return sp + sg ? 2.0 * inter / (double)(sp + sg) : 1.0; /* both empty = 1 (method.md 7) */
}

/* JSON string (escaped) or null */
static void json_str(FILE *f, const char *v) {
    if (v) km_json_fput_str(f, v);
    else fputs("null", f);
}

/* <out>/mine_config.json: every resolved mining setting and the data /
 * optimisation settings the phase uses (the supervised phase writes its own
 * supervised/config.json). */
static km_status write_config(const km_mine_config *c, const char *path) {
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return km_err(KM_EIO, "%s: cannot build the configuration: %s", path, strerror(errno));
    const km_train_config *t = &c->train;
    fprintf(f, "{\n  \"kmseg_version\": ");
    json_str(f, KM_VERSION);
    fprintf(f, ",\n  \"data\": ");
    json_str(f, t->data);
    fprintf(f, ",\n  \"split_dir\": ");
    json_str(f, t->split_dir);
    fprintf(f, ",\n  \"label\": ");
    json_str(f, t->label);
    fprintf(f, ",\n  \"fold\": %d", t->fold);
    fprintf(f, ",\n  \"label\": ");
    json_str(f, t->label);
    fprintf(f, ",\n  \"fold\": %d", t->fold);
    fprintf(f, ",\n  \"encoder_weights\": ");
    json_str(f, t->encoder_weights);
    fprintf(f, ",\n  \"init_weights\": ");
    json_str(f, t->init_weights);
    fprintf(f, ",\n  \"teacher\": ");
    json_str(f, c->teacher);
    fprintf(f, ",\n  \"teacher_profile\": \"%s\"", km_sam_profile_name(c->profile));
    fprintf(f, ",\n  \"schedule\": \"%s\"", c->schedule == KM_MINE_ONETIME ? "onetime" : "continuous");
    fprintf(f, ",\n  \"init\": ");
    json_str(f, c->init);
    fprintf(f, ",\n  \"prompt_mode\": \"%s\"", km_prompt_mode_name(c->prompt_mode));
    fprintf(f, ",\n  \"box_rule\": \"%s\"", km_box_rule_name(c->box_rule));
    fprintf(f, ",\n  \"points\": %d,\n  \"pseudo_weight\": %.17g,\n  \"mine_epochs\": %d", c->points,
            c->pseudo_weight, c->mine_epochs);
    fprintf(f, ",\n  \"cache_dir\": ");
    json_str(f, c->cache_dir);
    fprintf(f, ",\n  \"cache_mem\": %d,\n  \"sample_pngs\": %d", c->cache_mem, c->sample_pngs);
    fprintf(f, ",\n  \"val_fraction\": %.17g,\n  \"test_fraction\": %.17g,\n  \"labelled_fraction\": %.17g",
            t->val_fraction, t->test_fraction, t->labelled_fraction);
    fprintf(f, ",\n  \"max_images\": %d,\n  \"size\": %d,\n  \"resnet\": %d,\n  \"batch\": %d,\n  \"epochs\": %d",
            t->max_images, t->size, t->resnet, t->batch, t->epochs);
    fprintf(f, ",\n  \"lr\": %.17g,\n  \"beta1\": %.17g,\n  \"beta2\": %.17g,\n  \"eps\": %.17g", t->lr, t->beta1,
            t->beta2, t->eps);
    fprintf(f, ",\n  \"weight_decay\": %.17g,\n  \"plateau_factor\": %.17g,\n  \"min_lr\": %.17g", t->weight_decay,
            t->plateau_factor, t->min_lr);
    fprintf(f, ",\n  \"plateau_patience\": %d,\n  \"early_stop\": %d,\n  \"bce_weight\": %.17g",
            t->plateau_patience, t->early_stop, t->bce_weight);
    fprintf(f, ",\n  \"max_steps\": %d,\n  \"eval_init\": %d", t->max_steps, t->eval_init);
    fprintf(f, ",\n  \"seed\": %llu,\n  \"threads\": %d,\n  \"eval_test\": %d\n}\n", (unsigned long long)t->seed,
            t->threads, t->eval_test);
    fclose(f);
    km_status s = km_write_file_atomic(path, buf, n);
    free(buf);
    return s;
}

void km_mine_config_free(km_mine_config *c) {
    km_train_config_free(&c->train);
    km_free(c->out);
    km_free(c->teacher);
    km_free(c->init);
    km_free(c->cache_dir);
    c->out = c->teacher = c->init = c->cache_dir = NULL;
}

km_status km_mine_config_load(const char *dir, km_mine_config *c) {
    km_mine_config_default(c);
    char *path = km_path_join(dir, "mine_config.json");
    km_json j;
    km_status s = km_json_load(path, "--resume %s: ", dir, &j);
    if (s) {
        km_free(path);
        return s;
    }
    /* settings an older mine_config.json did not record keep their defaults */
    static const char *const optional[] = {"out", "encoder_weights", "init_weights", "max_steps", "eval_init", NULL};
    char *profile = NULL, *schedule = NULL, *mode = NULL, *rule = NULL;
    s = km_train_config_from_json(&j, path, optional, &c->train);
    if (!s) s = km_json_setting_str(&j, path, "teacher", 0, &c->teacher);
    if (!s) s = km_json_setting_str(&j, path, "teacher_profile", 0, &profile);
    if (!s) s = km_json_setting_str(&j, path, "schedule", 0, &schedule);
    if (!s) s = km_json_setting_str(&j, path, "init", 1, &c->init);
    if (!s) s = km_json_setting_str(&j, path, "prompt_mode", 0, &mode);
    c->box_rule = KM_BOX_ALL; /* what a run made before the key existed used */
    if (!s && km_json_get(&j, "box_rule")) s = km_json_setting_str(&j, path, "box_rule", 0, &rule);
    if (!s) s = km_json_setting_int(&j, path, "points", &c->points);
    if (!s) s = km_json_setting_num(&j, path, "pseudo_weight", &c->pseudo_weight);
    if (!s) s = km_json_setting_int(&j, path, "mine_epochs", &c->mine_epochs);
    if (!s) s = km_json_setting_str(&j, path, "cache_dir", 1, &c->cache_dir);
    if (!s) s = km_json_setting_int(&j, path, "cache_mem", &c->cache_mem);
    if (!s) s = km_json_setting_int(&j, path, "sample_pngs", &c->sample_pngs);
    if (!s) {
        if (km_sam_profile_parse(profile, &c->profile))
            s = km_err(KM_EFORMAT, "%s: teacher_profile '%s': expected %s", path, profile, km_sam_profile_choices());
    }
    if (!s) {
        if (!strcmp(schedule, "onetime")) c->schedule = KM_MINE_ONETIME;
        else if (!strcmp(schedule, "continuous")) c->schedule = KM_MINE_CONTINUOUS;
        else s = km_err(KM_EFORMAT, "%s: schedule '%s': expected onetime or continuous", path, schedule);
    }
    if (!s && (s = km_prompt_mode_parse(mode, &c->prompt_mode))) s = km_err_prefix(s, "%s: ", path);
    if (!s && rule && (s = km_box_rule_parse(rule, &c->box_rule))) s = km_err_prefix(s, "%s: ", path);
    km_free(rule);
    km_free(profile);
    km_free(schedule);
    km_free(mode);
    km_json_free(&j);
    km_free(path);
    if (s) km_mine_config_free(c);
    else c->out = km_strdup(dir);
    return s;
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

/* The teacher's pseudo label [S, S] of pool image pi for prompts pr in its
 * un-augmented S frame: the teacher sees the original image file (read only
 * on an embedding-cache miss, checked against the hash the crop's load
 * recorded). */
static km_status teacher_label(km_refiner *R, const mine_data *d, int pi, int S, km_prompts *pr, const float *zmask,
                               uint8_t *mask) {
    char *path = km_dataset_image_path(&d->s.idx, d->pool.src[pi]);
    km_refine_image im;
    km_refine_image_file(&im, path, d->pool.orig_w[pi], d->pool.orig_h[pi], d->pool.orig_hash[pi]);
    km_status s = km_refine_teacher_mask(R, &im, S, pr, zmask, mask);
    km_free(path);
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

/* Eval-mode validation: size-weighted loss, per-image Dice/IoU at logit > 0. */
static km_status validate(km_unetpp *m, const km_dataset *va, int B, int S, double a, float *x, float *y,
                          float *z, float *dz, double *loss, double *dice, double *iou) {
    size_t P = (size_t)S * S;
    km_metric_acc acc;
    km_metric_acc_init(&acc);
    int *which = km_malloc(sizeof(int) * (size_t)B);
    double wsum = 0;
    km_status s = KM_OK;
    for (int b0 = 0; b0 < va->n && !s; b0 += B) {
        int bn = va->n - b0 < B ? va->n - b0 : B;
        for (int i = 0; i < bn; i++) which[i] = b0 + i;
        km_batch_fill(va, which, NULL, bn, x, y);
        s = km_unetpp_forward(m, x, bn, S, S, 0, z);
        if (s) break;
        wsum += km_seg_loss(z, y, P * bn, a, 1.0f, dz, NULL, NULL) * bn;
        for (int i = 0; i < bn; i++) km_metric_acc_add(&acc, km_conf_logits_f32(z + P * i, y + P * i, P), NULL, NULL);
    }
    km_free(which);
    *loss = wsum / va->n;
    *dice = km_metric_mean_dice(&acc);
    *iou = km_metric_mean_iou(&acc);
    return s;
}

/* ------------------------------------------------------------------ state */

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static void meta_put(km_tdict *d, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void meta_put(km_tdict *d, const char *key, const char *fmt, ...) {
    char b[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    km_tdict_set_meta(d, key, b);
}

static km_status meta_num(const km_tdict *d, const char *key, const char *file, double *v) {
    const char *t = km_tdict_get_meta(d, key);
    char *end;
    if (!t) return km_err(KM_EMISSING, "%s: missing metadata '%s' (not a kmseg mine last.safetensors?)", file, key);
    *v = strtod(t, &end);
    if (end == t || *end) return km_err(KM_EFORMAT, "%s: metadata '%s' = '%s' is not a number", file, key, t);
    return KM_OK;
}

/* What last.safetensors holds beyond the training-loop state (train.h's
 * km_train_checkpoint_*, prefix "mine"): the totals so far of teacher calls
 * and NO_BOX (no times, no cache counts: the file's bytes do not depend on
 * interruptions or on the embedding cache), the supervised epochs before the phase and, for the
 * one-time schedule, which unlabelled images have a frozen label (their PNGs
 * in pseudo/ are the labels) and those labels' mean Dice. */
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

static km_status save_state(const char *path, const km_mine_config *c, const km_unetpp *m, int epoch,
                            const km_rng *rng, const km_plateau *pl, const km_early_stop *es, const mine_state *st,
                            const uint8_t *has_frozen, int n_unl) {
    km_tdict x;
    km_tdict_init(&x);
    meta_put(&x, "mine.schedule", "%s", c->schedule == KM_MINE_ONETIME ? "onetime" : "continuous");
    for (int i = 0; i < NSTATE; i++) {
        const char *p = (const char *)st + k_state[i].off;
        if (k_state[i].is_num) meta_put(&x, k_state[i].key, "%.17g", *(const double *)p);
        else meta_put(&x, k_state[i].key, "%ld", *(const long *)p);
    }
    if (has_frozen) {
        char *b = km_malloc((size_t)n_unl + 1);
        for (int u = 0; u < n_unl; u++) b[u] = has_frozen[u] ? '1' : '0';
        b[n_unl] = 0;
        km_tdict_set_meta(&x, "mine.onetime.labelled", b);
        km_free(b);
    }
    km_status s = km_train_checkpoint_save(path, m, &c->train, "mine", epoch, rng, pl, es, &x);
    km_tdict_free(&x);
    return s;
}

static km_status load_state(const char *path, const km_mine_config *c, km_unetpp **m, int *epoch, km_rng *rng,
                            km_plateau *pl, km_early_stop *es, mine_state *st, uint8_t *has_frozen, int n_unl) {
    km_tdict x;
    km_tdict_init(&x);
    km_status s = km_train_checkpoint_load(path, "mine", m, epoch, rng, pl, es, &x);
    const char *sched = s ? NULL : km_tdict_get_meta(&x, "mine.schedule");
    const char *want = c->schedule == KM_MINE_ONETIME ? "onetime" : "continuous";
    if (!s && (!sched || strcmp(sched, want)))
        s = km_err(KM_EFORMAT, "%s: metadata 'mine.schedule' is '%s', but the run's schedule is %s", path,
                   sched ? sched : "(missing)", want);
    for (int i = 0; i < NSTATE && !s; i++) {
        char *p = (char *)st + k_state[i].off;
        long long v = 0;
        if (k_state[i].optional && !km_tdict_get_meta(&x, k_state[i].key)) *(double *)p = NAN;
        else if (k_state[i].is_num) s = meta_num(&x, k_state[i].key, path, (double *)p);
        else if (!(s = km_train_meta_int(&x, k_state[i].key, path, &v))) *(long *)p = (long)v;
    }
    if (!s && km_unetpp_resnet_depth(*m) != c->train.resnet)
        s = km_err(KM_EFORMAT, "%s: resnet%d weights, but the run's config says resnet%d", path,
                   km_unetpp_resnet_depth(*m), c->train.resnet);
    if (!s && has_frozen) {
        const char *b = km_tdict_get_meta(&x, "mine.onetime.labelled");
        if (!b || (int)strlen(b) != n_unl || strspn(b, "01") != (size_t)n_unl)
            s = km_err(KM_EFORMAT, "%s: metadata 'mine.onetime.labelled' missing or not %d digits 0/1 (one per "
                                   "unlabelled image)", path, n_unl);
        for (int u = 0; u < n_unl && !s; u++) has_frozen[u] = b[u] == '1';
    }
    km_tdict_free(&x);
    if (s && *m) {
        km_unetpp_free(*m);
        *m = NULL;
    }
    return s;
}

/* One-time labels frozen earlier in this run folder: pseudo/<id>.png, S x S
 * grey 0/255 -> {0,1}. */
static km_status load_frozen(const char *dir, const mine_data *d, int S, const uint8_t *has_frozen, uint8_t *frozen) {
    size_t P = (size_t)S * S;
    for (int u = 0; u < d->n_unl; u++) {
        if (!has_frozen[u]) continue;
        char *name = km_malloc(strlen(dir) + strlen(d->pool.ids[d->n_lab + u]) + 8);
        sprintf(name, "%s/%s.png", dir, d->pool.ids[d->n_lab + u]);
        km_image img;
        km_status s = km_image_load(name, &img, 0);
        if (s) {
            s = km_err_prefix(s, "--resume: one-time pseudo label: ");
            km_free(name);
            return s;
        }
        int ok = img.w == S && img.h == S && img.c == 1;
        for (size_t i = 0; ok && i < P; i++) {
            ok = img.data[i] == 0 || img.data[i] == 255;
            frozen[P * u + i] = img.data[i] != 0;
        }
        km_image_free(&img);
        if (!ok) s = km_err(KM_EFORMAT, "%s: not this run's one-time pseudo label (expected a %dx%d grey 0/255 PNG)",
                            name, S, S);
        km_free(name);
        if (s) return s;
    }
    return KM_OK;
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

km_status km_mine_run(const km_mine_config *c0, int resume, const km_train_hooks *hooks, km_mine_result *res) {
    static const km_train_hooks no_hooks = {0};
    if (!hooks) hooks = &no_hooks;
    FILE *log = hooks->log;
    memset(res, 0, sizeof *res);
    res->best_val_loss = res->last_val_dice = res->last_pseudo_dice = NAN;
    km_mine_config cc = *c0; /* shallow: "auto" settings resolved from the checkpoint */
    const km_mine_config *c = &cc;
    km_status s = km_mine_config_check(c);
    if (!s) s = km_mine_resolve_teacher(&cc);
    if (s) return s;
    char *p_cfg = km_path_join(c->out, "mine_config.json"), *p_sup = km_path_join(c->out, "supervised");
    char *p_best = km_path_join(c->out, "best.safetensors"), *p_last = km_path_join(c->out, "last.safetensors");
    char *p_pseudo = km_path_join(c->out, "pseudo"), *p_csv = km_path_join(c->out, "metrics.csv");
    char *p_jsonl = km_path_join(c->out, "metrics.jsonl"), *init = NULL;
    const km_train_config *tc = &c->train;
    int S = tc->size, B = tc->batch;
    size_t P = (size_t)S * S;
    mine_data d;
    memset(&d, 0, sizeof d);
    km_refiner R;
    memset(&R, 0, sizeof R);
    km_unetpp *m = NULL;
    km_csv csv;
    km_jsonl jl;
    memset(&csv, 0, sizeof csv);
    memset(&jl, 0, sizeof jl);
    float *x = NULL, *y = NULL, *z = NULL, *dz = NULL, *gz = NULL, *gy = NULL, *gd = NULL, *zo = NULL;
    uint8_t *frozen = NULL, *has_frozen = NULL, *lab_o = NULL, *lab_a = NULL, *png = NULL, *aug = NULL;
    int *order = NULL, *pool = NULL, *sel_l = NULL, *sel_u = NULL, *which = NULL;
    mine_state st;
    memset(&st, 0, sizeof st);
    st.onetime_dice = st.last_val_dice = NAN;
    int have_last = resume && file_exists(p_last);

    if (resume && !file_exists(p_cfg)) {
        s = km_err(KM_EIO, "--resume %s: %s: no such file (not a kmseg mine run folder)", c->out, p_cfg);
        goto out;
    }
    if (!resume) {
        s = km_mkdir_p(c->out);
        if (!s) s = write_config(c, p_cfg);
        if (s) goto out;
    }

    /* 1. supervised phase (or a given student); done when the mining phase
     * has a checkpoint */
    if (!have_last && c->init) {
        init = km_strdup(c->init);
    } else if (!have_last) {
        km_train_config sc = c->train;
        sc.out = p_sup;
        char *sup_last = km_path_join(p_sup, "last.safetensors");
        int sup_resume = resume && file_exists(sup_last);
        km_free(sup_last);
        km_train_result tr;
        if (log) fprintf(log, "supervised phase -> %s%s\n", p_sup, sup_resume ? " (resuming)" : "");
        s = km_train_run(&sc, sup_resume, hooks, &tr);
        if (s) {
            s = km_err_prefix(s, "supervised phase: ");
            goto out;
        }
        if (!tr.finished) { /* stopped by hooks->stop_after, as if killed */
            if (log) fprintf(log, "stopped in the supervised phase after epoch %d (continue with --resume)\n",
                             tr.epochs_done);
            goto out;
        }
        st.sup_epochs = tr.epochs_done;
        init = km_path_join(p_sup, "best.safetensors");
    }
    if (!have_last && hooks->stop_after && st.sup_epochs >= hooks->stop_after) goto out;
    km_set_threads(tc->threads);

    /* 2. the mining phase's data, teacher and student */
    km_refine_config rc;
    teacher_config(c, &rc);
    s = mine_data_load(tc, c->out, &d);
    if (s) goto out;
    res->n_labelled = d.n_lab;
    res->n_unlabelled = d.n_unl;
    km_rng rng;
    km_rng_seed(&rng, tc->seed ^ KM_MINE_RNG_SALT);
    km_plateau pl;
    km_plateau_init(&pl, tc->lr, tc->plateau_factor, tc->plateau_patience, tc->min_lr);
    km_early_stop es;
    km_early_stop_init(&es, tc->early_stop);
    int epoch = 0;
    if (c->schedule == KM_MINE_ONETIME) {
        frozen = km_malloc(P * (d.n_unl + 1));
        has_frozen = km_calloc((size_t)d.n_unl + 1);
    }
    if (have_last) {
        s = load_state(p_last, c, &m, &epoch, &rng, &pl, &es, &st, has_frozen, d.n_unl);
        if (!s && has_frozen) s = load_frozen(p_pseudo, &d, S, has_frozen, frozen);
        /* drop log rows written after the checkpoint (killed between the log
         * write and the checkpoint write) */
        if (!s) s = km_text_keep_lines(p_csv, epoch + 1);
        if (!s) s = km_text_keep_lines(p_jsonl, epoch);
        if (s) goto out;
        if (log) fprintf(log, "resuming %s after mining epoch %d%s\n", c->out, epoch,
                         st.done ? ": the run had already finished" : "");
    } else {
        s = km_unetpp_load(&m, init);
        if (!s && km_unetpp_resnet_depth(m) != tc->resnet)
            s = km_err(KM_EARG, "%s: resnet%d weights, but --resnet %d", init, km_unetpp_resnet_depth(m), tc->resnet);
        if (s) goto out;
        km_unetpp_adam_reset(m); /* fresh optimiser state (method.md 5) */
    }
    s = km_refiner_open(&R, &rc);
    if (s) goto out;
    res->no_box = st.no_box;
    res->last_pseudo_dice = st.onetime_dice;
    res->last_val_dice = st.last_val_dice;
    s = km_unetpp_reserve(m, B, S, S);
    if (!s) s = km_mkdir_p(p_pseudo);
    if (!s) s = km_csv_open(&csv, p_csv, (const char *const *)k_mine_cols, NMCOLS, have_last);
    if (!s) s = km_jsonl_open(&jl, p_jsonl, have_last);
    if (s) goto out;
    if (log)
        fprintf(log, "mining: %d labelled, %d unlabelled, %d val; teacher %s (%s), %s schedule, %s, box rule %s, "
                     "lambda %g\n",
                d.n_lab, d.n_unl, d.va.n, c->teacher, km_sam_profile_name(c->profile),
                c->schedule == KM_MINE_ONETIME ? "one-time" : "continuous", km_prompt_mode_name(c->prompt_mode),
                km_box_rule_name(c->box_rule), c->pseudo_weight);

    x = km_malloc(sizeof(float) * 3 * P * B);
    y = km_malloc(sizeof(float) * P * B);
    z = km_malloc(sizeof(float) * P * B);
    dz = km_malloc(sizeof(float) * P * B);
    gz = km_malloc(sizeof(float) * P * B);
    gy = km_malloc(sizeof(float) * P * B);
    gd = km_malloc(sizeof(float) * P * B);
    zo = km_malloc(sizeof(float) * P);
    lab_o = km_malloc(P);
    lab_a = km_malloc(P);
    png = km_malloc(P);
    sel_l = km_malloc(sizeof(int) * B);
    sel_u = km_malloc(sizeof(int) * B);
    which = km_malloc(sizeof(int) * B);
    pool = km_malloc(sizeof(int) * (size_t)(d.n_lab + d.n_unl + 1));
    int npool = 0;
    for (int i = 0; i < d.n_lab; i++) pool[npool++] = i;

    /* one-time pseudo labels, frozen; then a checkpoint (epoch 0) so that a
     * resumed run reads them back instead of labelling again */
    if (c->schedule == KM_MINE_ONETIME && !have_last) {
        long hits0 = km_refiner_cache_hits(&R);
        double pd = 0, sd = 0;
        int npd = 0;
        km_progress lp = {0};
        if (hooks->progress && log) km_progress_start(&lp, log, "teacher labels", d.n_unl, "img");
        for (int b0 = 0; b0 < d.n_unl && !s; b0 += B) {
            if (hooks->progress && log) km_progress_update(&lp, b0, NULL);
            int bn = d.n_unl - b0 < B ? d.n_unl - b0 : B;
            for (int i = 0; i < bn; i++) sel_u[i] = d.n_lab + b0 + i;
            km_batch_fill(&d.pool, sel_u, NULL, bn, x, NULL);
            s = km_unetpp_forward(m, x, bn, S, S, 0, z);
            for (int i = 0; i < bn && !s; i++) {
                int u = b0 + i, pi = d.n_lab + u;
                km_prompts pr;
                s = km_refine_prompts(&R, z + P * i, S, S, &rng, &pr);
                if (s) break;
                if (pr.outcome == KM_PROMPTS_NO_BOX) {
                    res->no_box++;
                    continue;
                }
                s = teacher_label(&R, &d, pi, S, &pr, z + P * i, frozen + P * u);
                if (s) break;
                has_frozen[u] = 1;
                pd += dice_u8(frozen + P * u, d.pool.masks + P * pi, P);
                sd += km_dice_score(km_conf_logits_u8(z + P * i, d.pool.masks + P * pi, P));
                npd++;
                char name[600];
                snprintf(name, sizeof name, "%s/%s.png", p_pseudo, d.pool.ids[pi]);
                s = save_mask_png(name, frozen + P * u, S, png);
            }
        }
        if (hooks->progress && log) km_progress_end(&lp, NULL);
        if (s) goto out;
        res->last_pseudo_dice = st.onetime_dice = npd ? pd / npd : NAN;
        res->last_student_unl_dice = st.onetime_student_dice = npd ? sd / npd : NAN;
        if (log)
            fprintf(log, "one-time pseudo labels: %d of %d unlabelled images (%ld NO_BOX), mean Dice vs ground truth "
                         "%.4f (the student's own on them %.4f), %ld encoder runs (%.1f s), %ld cache hits, decoder "
                         "%.1f s\n",
                    npd, d.n_unl, res->no_box, res->last_pseudo_dice, res->last_student_unl_dice, R.encoder_runs,
                    R.encoder_seconds,
                    km_refiner_cache_hits(&R) - hits0, R.decoder_seconds);
        st.no_box = res->no_box;
        st.teacher_calls = R.teacher_calls;
        s = save_state(p_last, c, m, 0, &rng, &pl, &es, &st, has_frozen, d.n_unl);
        if (s) goto out;
    }
    /* teacher calls before this process (resumed: the checkpoint's total) */
    long calls_before = have_last ? st.teacher_calls : 0;
    for (int u = 0; u < d.n_unl; u++)
        if (!has_frozen || has_frozen[u]) pool[npool++] = d.n_lab + u;

    /* 3. mining epochs */
    order = km_malloc(sizeof(int) * (size_t)(npool + 1));
    aug = km_malloc((size_t)npool + 1);
    while (!st.done && epoch < c->mine_epochs) {
        epoch++;
        double t0 = km_now();
        memcpy(order, pool, sizeof(int) * (size_t)npool);
        km_rng_shuffle(&rng, order, npool);
        for (int i = 0; i < npool; i++) aug[i] = km_aug_draw(&rng);
        long calls0 = R.teacher_calls, hits0 = km_refiner_cache_hits(&R), miss0 = R.cache.misses;
        long enc0 = R.encoder_runs, dec0 = R.decodes, nobox = 0, visits = 0;
        double tenc0 = R.encoder_seconds, tdec0 = R.decoder_seconds;
        double lsum = 0, lsup = 0, lpse = 0, pd = 0, sd = 0;
        int seen = 0, nsup = 0, npse = 0, npd = 0, nsample = 0;
        char sdir[600];
        snprintf(sdir, sizeof sdir, "%s/epoch_%03d", p_pseudo, epoch);
        if (c->schedule == KM_MINE_CONTINUOUS && c->sample_pngs > 0 && d.n_unl > 0 && (s = km_mkdir_p(sdir))) break;
        float lr = (float)pl.lr;
        double lr_ep = pl.lr;
        int nb = npool / B + (npool % B > 1 ? 1 : 0);
        km_progress pg;
        int show = hooks->progress && log;
        char label[48], extra[64];
        snprintf(label, sizeof label, "mine epoch %d/%d", epoch, c->mine_epochs);
        if (show) km_progress_start(&pg, log, label, (int64_t)nb * B > npool ? npool : (int64_t)nb * B, "img");
        for (int k = 0; k < nb && !s; k++) {
            int b0 = k * B, bn = npool - b0 < B ? npool - b0 : B;
            const uint8_t *ab = aug + b0;
            memcpy(which, order + b0, sizeof(int) * bn);
            km_batch_fill(&d.pool, which, ab, bn, x, y);
            int nl = 0, nu = 0;
            for (int i = 0; i < bn; i++) {
                if (which[i] < d.n_lab) {
                    sel_l[nl++] = i;
                } else if (c->schedule == KM_MINE_ONETIME) {
                    /* the frozen label, augmented like this visit's image */
                    km_aug_apply_u8(ab[i], S, 1, frozen + P * (which[i] - d.n_lab), lab_a);
                    for (size_t j = 0; j < P; j++) y[P * i + j] = lab_a[j];
                    sel_u[nu++] = i;
                    visits++;
                }
            }
            km_unetpp_zero_grad(m);
            s = km_unetpp_forward(m, x, bn, S, S, 1, z);
            if (s) break;
            if (c->schedule == KM_MINE_CONTINUOUS) {
                for (int i = 0; i < bn && !s; i++) {
                    int pi = which[i];
                    if (pi < d.n_lab) continue;
                    visits++;
                    km_prompts pr;
                    s = km_refine_prompts(&R, z + P * i, S, S, &rng, &pr);
                    if (s) break;
                    if (pr.outcome == KM_PROMPTS_NO_BOX) {
                        nobox++;
                        continue;
                    }
                    km_prompts_unaugment(&pr, ab[i], S);
                    if (c->prompt_mode & KM_PROMPT_USE_MASK) km_prompts_unaugment_map(ab[i], S, z + P * i, zo);
                    s = teacher_label(&R, &d, pi, S, &pr, zo, lab_o);
                    if (s) break;
                    pd += dice_u8(lab_o, d.pool.masks + P * pi, P);
                    /* the student's own (train-mode, augmented) prediction against the augmented truth */
                    km_aug_apply_u8(ab[i], S, 1, d.pool.masks + P * pi, lab_a);
                    sd += km_dice_score(km_conf_logits_u8(z + P * i, lab_a, P));
                    npd++;
                    if (nsample < c->sample_pngs) {
                        char name[1300];
                        snprintf(name, sizeof name, "%s/%s.png", sdir, d.pool.ids[pi]);
                        s = save_mask_png(name, lab_o, S, png);
                        nsample++;
                        if (s) break;
                    }
                    km_aug_apply_u8(ab[i], S, 1, lab_o, lab_a);
                    for (size_t j = 0; j < P; j++) y[P * i + j] = lab_a[j];
                    sel_u[nu++] = i;
                }
                if (s) break;
            }
            memset(dz, 0, sizeof(float) * P * bn);
            double ll = part_loss(z, y, sel_l, nl, P, tc->bce_weight, 1.0f, gz, gy, gd, dz);
            double lu = part_loss(z, y, sel_u, nu, P, tc->bce_weight, (float)c->pseudo_weight, gz, gy, gd, dz);
            double l = ll + c->pseudo_weight * lu;
            km_unetpp_backward(m, dz, NULL);
            km_unetpp_adam_step(m, lr, (float)tc->beta1, (float)tc->beta2, (float)tc->eps, (float)tc->weight_decay);
            lsum += l * bn;
            seen += bn;
            lsup += ll * nl;
            nsup += nl;
            lpse += lu * nu;
            npse += nu;
            if (show) {
                snprintf(extra, sizeof extra, "loss %.4f", lsum / seen);
                km_progress_update(&pg, seen, extra);
            }
        }
        if (show) km_progress_end(&pg, seen ? extra : NULL);
        if (s) break;
        if (c->schedule == KM_MINE_ONETIME) {
            pd = st.onetime_dice;
            sd = st.onetime_student_dice;
            npd = 1;
        }
        double vl, vd, vi, tl = NAN, td = NAN, ti = NAN;
        s = validate(m, &d.va, B, S, tc->bce_weight, x, y, z, dz, &vl, &vd, &vi);
        if (!s && d.te.n) s = validate(m, &d.te, B, S, tc->bce_weight, x, y, z, dz, &tl, &td, &ti);
        if (s) break;
        int improved = 0;
        int stop = km_early_stop_step(&es, vl, epoch, &improved);
        km_plateau_step(&pl, vl);
        if (improved) {
            km_tdict meta;
            km_tdict_init(&meta);
            meta_put(&meta, "size", "%d", S);
            meta_put(&meta, "mine.epoch", "%d", epoch);
            meta_put(&meta, "val_loss", "%.17g", vl);
            km_dataset_label_meta(&d.s.idx, &meta);
            s = km_unetpp_save(m, p_best, &meta);
            km_tdict_free(&meta);
            if (s) break;
        }
        double secs = km_now() - t0;
        res->last_sup_loss = nsup ? lsup / nsup : NAN;
        res->last_pseudo_loss = npse ? lpse / npse : NAN;
        res->last_pseudo_dice = npd ? pd / npd : NAN;
        res->last_student_unl_dice = npd ? sd / npd : NAN;
        res->last_teacher_calls = R.teacher_calls - calls0;
        res->last_no_box = c->schedule == KM_MINE_CONTINUOUS ? nobox : 0;
        res->last_unl_visits = visits;
        res->last_cache_hits = km_refiner_cache_hits(&R) - hits0;
        res->last_cache_misses = R.cache.misses - miss0;
        res->last_epoch_seconds = secs;
        res->no_box += res->last_no_box;
        double vals[NMCOLS] = {epoch, seen ? lsum / seen : NAN, res->last_sup_loss, res->last_pseudo_loss, vl, vd, vi,
                               td, ti, lr_ep, secs, (double)visits, (double)res->last_teacher_calls,
                               (double)res->last_no_box, (double)res->last_cache_hits,
                               (double)res->last_cache_misses, (double)(R.encoder_runs - enc0),
                               R.encoder_seconds - tenc0, R.decoder_seconds - tdec0, res->last_pseudo_dice,
                               res->last_student_unl_dice};
        km_csv_int(&csv, epoch);
        for (int i = 1; i < NMCOLS; i++) km_csv_num(&csv, vals[i]);
        s = km_csv_end_row(&csv);
        if (s) break;
        km_jsonl_int(&jl, "epoch", epoch);
        for (int i = 1; i < NMCOLS; i++) km_jsonl_num(&jl, k_mine_cols[i], vals[i]);
        s = km_jsonl_end(&jl);
        if (s) break;
        /* the checkpoint last: best -> log rows -> last.safetensors */
        res->last_val_dice = vd;
        st.done = stop || epoch >= c->mine_epochs;
        st.no_box = res->no_box;
        st.teacher_calls = calls_before + R.teacher_calls;
        st.last_val_dice = vd;
        s = save_state(p_last, c, m, epoch, &rng, &pl, &es, &st, has_frozen, d.n_unl);
        if (s) break;
        if (log) {
            fprintf(log, "mine epoch %d/%d  loss %.4f (sup %.4f, pseudo %.4f)  val_loss %.4f  val_dice %.4f  "
                         "teacher %ld (%ld decodes), cache %ld hit / %ld miss, NO_BOX %ld, pseudo Dice %.4f (student %.4f)  %.1f s\n",
                    epoch, c->mine_epochs, vals[1], vals[2], vals[3], vl, vd, res->last_teacher_calls, R.decodes - dec0,
                    res->last_cache_hits, res->last_cache_misses, res->last_no_box, res->last_pseudo_dice,
                    res->last_student_unl_dice, secs);
            if (stop) fprintf(log, "early stop: no val-loss improvement for %d epochs (best epoch %d)\n", es.num_bad,
                              es.best_epoch);
            fflush(log);
        }
        res->stopped_early = stop;
        if (hooks->stop_after && st.sup_epochs + epoch >= hooks->stop_after) break;
    }
    if (s) goto out;
    res->finished = st.done;
    res->epochs_done = epoch;
    res->best_epoch = es.best_epoch;
    res->best_val_loss = es.best;
    res->teacher_calls = calls_before + R.teacher_calls;
    /* this process's: the checkpoint holds no times nor cache counts */
    res->encoder_runs = R.encoder_runs;
    res->decodes = R.decodes;
    res->encoder_seconds = R.encoder_seconds;
    res->decoder_seconds = R.decoder_seconds;
    res->cache_hits = km_refiner_cache_hits(&R);
    res->cache_misses = R.cache.misses;
out:
    if (csv.f) {
        km_status s2 = km_csv_close(&csv);
        if (!s) s = s2;
    }
    if (jl.f) {
        km_status s2 = km_jsonl_close(&jl);
        if (!s) s = s2;
    }
    km_refiner_close(&R);
    mine_data_free(&d);
    if (m) km_unetpp_free(m);
    km_free(x); km_free(y); km_free(z); km_free(dz); km_free(gz); km_free(gy); km_free(gd); km_free(zo);
    km_free(frozen); km_free(has_frozen); km_free(lab_o); km_free(lab_a); km_free(png); km_free(aug);
    km_free(order); km_free(pool); km_free(sel_l); km_free(sel_u); km_free(which);
    km_free(p_cfg); km_free(p_sup); km_free(p_best); km_free(p_last); km_free(p_pseudo); km_free(p_csv);
    km_free(p_jsonl); km_free(init);
    return s;
}
