/* train.c - the supervised training loop; see train.h for the protocol. */
#include "train.h"

#include "augment.h"
#include "dataset.h"
#include "sched.h"
#include "splits.h"
#include "../core/log.h"
#include "../core/progress.h"
#include "../core/rng.h"
#include "../eval/metrics.h"
#include "../io/json.h"
#include "../io/load.h"
#include "../io/safetensors.h"
#include "../io/tensor.h"
#include "../models/unetpp.h"
#include "../nn/gemm.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>
#include <stdio.h>
#include <sys/stat.h>

/* Salt of the run's shuffle/augmentation stream, distinct from the split
 * streams (splits.h) and the weight initialisation (seed itself). */
#define KM_TRAIN_RNG_SALT 0x747261696e696e67ULL /* "training" */

/* ------------------------------------------------------------------ config */

void km_train_config_default(km_train_config *c) {
    memset(c, 0, sizeof *c);
    c->val_fraction = 0.1;
    c->test_fraction = 0.1;
    c->labelled_fraction = 1.0;
    c->size = 224;
    c->resnet = 34;
    c->batch = 8;
    c->epochs = 100;
    c->lr = 5e-5;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 1e-8;
    c->plateau_factor = 0.5;
    c->min_lr = 1e-7;
    c->plateau_patience = 3;
    c->early_stop = 10;
    c->bce_weight = 0.5;
    c->threads = 2;
}

typedef enum { F_STR, F_INT, F_DBL, F_U64 } field_type;
typedef struct {
    const char *key;
    field_type t;
    size_t off;
} field;

#define FLD(k, t) {#k, t, offsetof(km_train_config, k)}
static const field k_fields[] = {
    FLD(data, F_STR),           FLD(split_dir, F_STR),        FLD(val_fraction, F_DBL),
    FLD(test_fraction, F_DBL),  FLD(labelled_fraction, F_DBL), FLD(max_images, F_INT),
    FLD(size, F_INT),           FLD(resnet, F_INT),           FLD(encoder_weights, F_STR),
    FLD(init_weights, F_STR),   FLD(batch, F_INT),            FLD(epochs, F_INT),
    FLD(lr, F_DBL),             FLD(beta1, F_DBL),            FLD(beta2, F_DBL),
    FLD(eps, F_DBL),            FLD(weight_decay, F_DBL),     FLD(plateau_factor, F_DBL),
    FLD(min_lr, F_DBL),         FLD(plateau_patience, F_INT), FLD(early_stop, F_INT),
    FLD(bce_weight, F_DBL),     FLD(max_steps, F_INT),        FLD(seed, F_U64),
    FLD(threads, F_INT),        FLD(out, F_STR),              FLD(eval_test, F_INT),
    FLD(eval_init, F_INT),      FLD(label, F_STR),            FLD(fold, F_INT),
};
/* settings added after config.json files were first written: absent = default */
static const char *const k_later[] = {"label", "fold", NULL};
#undef FLD
#define NFIELDS ((int)(sizeof k_fields / sizeof k_fields[0]))

void km_train_config_free(km_train_config *c) {
    for (int i = 0; i < NFIELDS; i++)
        if (k_fields[i].t == F_STR) {
            char **p = (char **)((char *)c + k_fields[i].off);
            km_free(*p);
            *p = NULL;
        }
}

km_status km_train_config_check(const km_train_config *c) {
    if (!c->data || !c->data[0]) return km_err(KM_EARG, "--data: a dataset folder is required");
    if (c->size < 32 || c->size % 32)
        return km_err(KM_EARG, "--size %d: expected a positive multiple of 32 (U-Net++ downsamples 5 times)",
                      c->size);
    if (c->resnet != 18 && c->resnet != 34)
        return km_err(KM_EARG, "--resnet %d: expected 18 or 34", c->resnet);
    if (c->batch < 2) return km_err(KM_EARG, "--batch %d: expected >= 2 (BatchNorm batch statistics)", c->batch);
    if (c->epochs < 1) return km_err(KM_EARG, "--epochs %d: expected >= 1", c->epochs);
    if (!(c->lr > 0)) return km_err(KM_EARG, "--lr %g: expected > 0", c->lr);
    if (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1))
        return km_err(KM_EARG, "--beta1/--beta2 %g/%g: expected in [0, 1)", c->beta1, c->beta2);
    if (!(c->eps > 0)) return km_err(KM_EARG, "--eps %g: expected > 0", c->eps);
    if (!(c->weight_decay >= 0)) return km_err(KM_EARG, "--weight-decay %g: expected >= 0", c->weight_decay);
    if (!(c->plateau_factor > 0 && c->plateau_factor < 1))
        return km_err(KM_EARG, "--plateau-factor %g: expected in (0, 1)", c->plateau_factor);
    if (!(c->min_lr >= 0)) return km_err(KM_EARG, "--min-lr %g: expected >= 0", c->min_lr);
    if (c->plateau_patience < 0) return km_err(KM_EARG, "--plateau-patience %d: expected >= 0", c->plateau_patience);
    if (c->early_stop < 1) return km_err(KM_EARG, "--early-stop %d: expected >= 1", c->early_stop);
    if (!(c->bce_weight >= 0 && c->bce_weight <= 1))
        return km_err(KM_EARG, "--bce-weight %g: expected in [0, 1]", c->bce_weight);
    if (!(c->labelled_fraction > 0 && c->labelled_fraction <= 1))
        return km_err(KM_EARG, "--labelled-fraction %g: expected in (0, 1]", c->labelled_fraction);
    if (!(c->val_fraction > 0 && c->test_fraction >= 0 && c->val_fraction + c->test_fraction < 1))
        return km_err(KM_EARG, "--val-fraction %g / --test-fraction %g: expected val > 0, test >= 0, sum < 1",
                      c->val_fraction, c->test_fraction);
    if (c->max_images < 0) return km_err(KM_EARG, "--max-images %d: expected >= 0", c->max_images);
    if (c->max_steps < 0) return km_err(KM_EARG, "--max-steps %d: expected >= 0", c->max_steps);
    if (c->fold < 0) return km_err(KM_EARG, "--fold %d: expected >= 0", c->fold);
    if (c->threads < 1) return km_err(KM_EARG, "--threads %d: expected >= 1", c->threads);
    if (c->seed > (uint64_t)INT64_MAX) return km_err(KM_EARG, "--seed: expected < 2^63");
    return KM_OK;
}

static void buf_add(char **b, size_t *len, size_t *cap, const char *s) {
    size_t n = strlen(s);
    if (*len + n + 1 > *cap) {
        size_t nc = (*cap ? *cap * 2 : 1024) + n;
        char *nb = km_malloc(nc);
        if (*b) memcpy(nb, *b, *len);
        km_free(*b);
        *b = nb;
        *cap = nc;
    }
    memcpy(*b + *len, s, n + 1);
    *len += n;
}

static km_status config_write(const km_train_config *c, const char *path) {
    char *b = NULL, tmp[64];
    size_t len = 0, cap = 0;
    buf_add(&b, &len, &cap, "{\n  \"kmseg_version\": ");
    km_json_escape(&b, &len, &cap, KM_VERSION);
    buf_add(&b, &len, &cap, ",\n  \"gemm_backend\": ");
    km_json_escape(&b, &len, &cap, km_gemm_backend());
    for (int i = 0; i < NFIELDS; i++) {
        const field *f = &k_fields[i];
        const char *p = (const char *)c + f->off;
        buf_add(&b, &len, &cap, ",\n  ");
        km_json_escape(&b, &len, &cap, f->key);
        buf_add(&b, &len, &cap, ": ");
        switch (f->t) {
        case F_STR:
            if (*(char *const *)p) km_json_escape(&b, &len, &cap, *(char *const *)p);
            else buf_add(&b, &len, &cap, "null");
            break;
        case F_INT: snprintf(tmp, sizeof tmp, "%d", *(const int *)p); buf_add(&b, &len, &cap, tmp); break;
        case F_U64:
            snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)*(const uint64_t *)p);
            buf_add(&b, &len, &cap, tmp);
            break;
        case F_DBL: snprintf(tmp, sizeof tmp, "%.17g", *(const double *)p); buf_add(&b, &len, &cap, tmp); break;
        }
    }
    buf_add(&b, &len, &cap, "\n}\n");
    km_status s = km_write_file_atomic(path, b, len);
    km_free(b);
    return s;
}

static int key_in(const char *const *list, const char *key) {
    for (; list && *list; list++)
        if (!strcmp(*list, key)) return 1;
    return 0;
}

km_status km_train_config_from_json(const km_json *j, const char *path, const char *const *optional,
                                    km_train_config *c) {
    if (j->type != KM_JSON_OBJ) return km_err(KM_EFORMAT, "%s: expected a JSON object", path);
    km_status s = KM_OK;
    for (int i = 0; i < NFIELDS && !s; i++) {
        const field *f = &k_fields[i];
        char *p = (char *)c + f->off;
        const km_json *v = km_json_get(j, f->key);
        if (!v) {
            if (key_in(optional, f->key) || key_in(k_later, f->key)) continue;
            s = km_err(KM_EMISSING, "%s: missing setting '%s'", path, f->key);
            break;
        }
        if (f->t == F_STR) {
            if (v->type == KM_JSON_NULL) *(char **)p = NULL;
            else if (v->type == KM_JSON_STR) *(char **)p = km_strdup(v->str);
            else s = km_err(KM_EFORMAT, "%s: '%s' must be a string or null", path, f->key);
        } else if (v->type != KM_JSON_NUM || (f->t != F_DBL && !v->is_int)) {
            s = km_err(KM_EFORMAT, "%s: '%s' must be %s", path, f->key, f->t == F_DBL ? "a number" : "an integer");
        } else if (f->t == F_DBL) {
            *(double *)p = v->num;
        } else if (f->t == F_INT) {
            if (v->i < INT32_MIN || v->i > INT32_MAX) s = km_err(KM_EFORMAT, "%s: '%s' out of range", path, f->key);
            else *(int *)p = (int)v->i;
        } else {
            if (v->i < 0) s = km_err(KM_EFORMAT, "%s: '%s' must be >= 0", path, f->key);
            else *(uint64_t *)p = (uint64_t)v->i;
        }
    }
    return s;
}

km_status km_train_config_load(const char *dir, km_train_config *c) {
    km_train_config_default(c);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    km_json j;
    km_status s = km_json_load(path, "--resume %s: ", dir, &j);
    if (s) return s;
    s = km_train_config_from_json(&j, path, NULL, c);
    km_json_free(&j);
    if (s) km_train_config_free(c);
    return s;
}

/* --------------------------------------------------------------- prefetch */

/* One worker thread assembling the next batch while the main thread computes.
 * The main thread submits a job only after waiting for the previous one, so a
 * single job slot suffices. */
typedef struct {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int has_job, done, quit;
    const km_dataset *ds;
    const int *which;
    const uint8_t *aug;
    int B;
    float *x, *y;
} prefetch;

static void *prefetch_main(void *arg) {
    prefetch *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->has_job && !p->quit) pthread_cond_wait(&p->cv, &p->mu);
        if (p->quit) break;
        pthread_mutex_unlock(&p->mu);
        km_batch_fill(p->ds, p->which, p->aug, p->B, p->x, p->y);
        pthread_mutex_lock(&p->mu);
        p->has_job = 0;
        p->done = 1;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static km_status prefetch_start(prefetch *p) {
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    int e = pthread_create(&p->th, NULL, prefetch_main, p);
    if (e) return km_err(KM_EINTERNAL, "cannot start the batch thread: %s", strerror(e));
    return KM_OK;
}

static void prefetch_submit(prefetch *p, const km_dataset *ds, const int *which, const uint8_t *aug, int B,
                            float *x, float *y) {
    pthread_mutex_lock(&p->mu);
    KM_ASSERT(!p->has_job);
    p->ds = ds;
    p->which = which;
    p->aug = aug;
    p->B = B;
    p->x = x;
    p->y = y;
    p->done = 0;
    p->has_job = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void prefetch_wait(prefetch *p) {
    pthread_mutex_lock(&p->mu);
    while (!p->done) pthread_cond_wait(&p->cv, &p->mu);
    p->done = 0;
    pthread_mutex_unlock(&p->mu);
}

static void prefetch_stop(prefetch *p) {
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->th, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
}

/* ---------------------------------------------------------------- run state */

typedef struct {
    const km_train_config *c;
    const km_dataset_index *idx; /* for the label metadata */
    km_unetpp *m;
    prefetch pf;
    float *x[2], *y[2], *logits, *dlogits;
    int B, S;
} loop;

typedef struct {
    double loss, dice, iou, gdice, giou;
} eval_out;

/* Eval-mode pass over a whole cached set, in order, batches of B. */
static km_status evaluate(loop *L, const km_dataset *ds, const int *order, eval_out *o) {
    int n = ds->n, B = L->B;
    size_t P = (size_t)L->S * L->S;
    km_metric_acc acc;
    km_metric_acc_init(&acc);
    double wsum = 0;
    int nb = (n + B - 1) / B;
    if (nb > 0) prefetch_submit(&L->pf, ds, order, NULL, n < B ? n : B, L->x[0], L->y[0]);
    km_status s = KM_OK;
    for (int k = 0; k < nb; k++) {
        int b0 = k * B, bn = n - b0 < B ? n - b0 : B;
        prefetch_wait(&L->pf);
        if (k + 1 < nb) {
            int nb0 = b0 + B, nbn = n - nb0 < B ? n - nb0 : B;
            prefetch_submit(&L->pf, ds, order + nb0, NULL, nbn, L->x[(k + 1) & 1], L->y[(k + 1) & 1]);
        }
        const float *x = L->x[k & 1], *y = L->y[k & 1];
        if (!s) s = km_unetpp_forward(L->m, x, bn, L->S, L->S, 0, L->logits);
        if (s) continue; /* keep draining the worker */
        double l = km_seg_loss(L->logits, y, P * bn, L->c->bce_weight, 1.0f, L->dlogits, NULL, NULL);
        wsum += l * bn;
        for (int b = 0; b < bn; b++)
            km_metric_acc_add(&acc, km_conf_logits_f32(L->logits + P * b, y + P * b, P), NULL, NULL);
    }
    if (s) return s;
    o->loss = n ? wsum / n : NAN;
    o->dice = km_metric_mean_dice(&acc);
    o->iou = km_metric_mean_iou(&acc);
    o->gdice = km_metric_global_dice(&acc);
    o->giou = km_metric_global_iou(&acc);
    return KM_OK;
}

km_status km_train_meta_int(const km_tdict *d, const char *key, const char *file, long long *v) {
    const char *s = km_tdict_get_meta(d, key);
    char *end;
    if (!s) return km_err(KM_EMISSING, "%s: missing metadata '%s' (not a kmseg last.safetensors?)", file, key);
    errno = 0;
    *v = strtoll(s, &end, 10);
    if (errno || end == s || *end) return km_err(KM_EFORMAT, "%s: metadata '%s' = '%s' is not an integer", file, key, s);
    return KM_OK;
}

static void meta_set_int(km_tdict *d, const char *key, long long v) {
    char b[32];
    snprintf(b, sizeof b, "%lld", v);
    km_tdict_set_meta(d, key, b);
}

static void meta_set_num(km_tdict *d, const char *key, double v) {
    char b[40];
    snprintf(b, sizeof b, "%.17g", v);
    km_tdict_set_meta(d, key, b);
}

static void model_meta(const km_train_config *c, km_tdict *d, const char *prefix, int epoch) {
    char key[64];
    snprintf(key, sizeof key, "%s.epoch", prefix);
    meta_set_int(d, key, epoch);
    meta_set_int(d, "size", c->size);
    meta_set_int(d, "seed", (long long)c->seed);
}

km_status km_train_checkpoint_save(const char *path, const km_unetpp *m, const km_train_config *c, const char *prefix,
                                   int epoch, const km_rng *rng, const km_plateau *pl, const km_early_stop *es,
                                   const km_tdict *extra) {
    km_tdict d;
    km_tdict_init(&d);
    km_unetpp_to_tdict(m, &d);
    km_unetpp_optim_to_tdict(m, &d);
    km_tdict_set_meta(&d, "format", "pt");
    km_tdict_set_meta(&d, "kmseg_version", KM_VERSION);
    km_tdict_set_meta(&d, "arch", "UnetPlusPlus");
    km_tdict_set_meta(&d, "encoder_name", km_unetpp_resnet_depth(m) == 34 ? "resnet34" : "resnet18");
    model_meta(c, &d, prefix, epoch);
    if (extra)
        for (int i = 0; i < extra->nmeta; i++) km_tdict_set_meta(&d, extra->meta[i].key, extra->meta[i].value);
    char key[64], b[80];
    snprintf(key, sizeof key, "%s.rng", prefix);
    snprintf(b, sizeof b, "%016llx %016llx %016llx %016llx", (unsigned long long)rng->s[0],
             (unsigned long long)rng->s[1], (unsigned long long)rng->s[2], (unsigned long long)rng->s[3]);
    km_tdict_set_meta(&d, key, b);
    snprintf(key, sizeof key, "%s.plateau", prefix);
    km_plateau_to_meta(pl, &d, key);
    snprintf(key, sizeof key, "%s.early_stop", prefix);
    km_early_stop_to_meta(es, &d, key);
    km_status s = km_safetensors_save(path, &d);
    km_tdict_free(&d);
    return s;
}

km_status km_train_checkpoint_load(const char *path, const char *prefix, km_unetpp **m, int *epoch, km_rng *rng,
                                   km_plateau *pl, km_early_stop *es, km_tdict *meta) {
    *m = NULL;
    km_tdict d;
    km_tdict_init(&d);
    km_status s = km_safetensors_load(path, &d);
    if (s) return km_err_prefix(s, "--resume: ");
    long long e = 0;
    char key[64];
    snprintf(key, sizeof key, "%s.epoch", prefix);
    s = km_unetpp_from_tdict(m, &d, path);
    if (!s) s = km_unetpp_optim_from_tdict(*m, &d, path);
    if (!s) s = km_train_meta_int(&d, key, path, &e);
    snprintf(key, sizeof key, "%s.plateau", prefix);
    if (!s) s = km_plateau_from_meta(pl, &d, key, path);
    snprintf(key, sizeof key, "%s.early_stop", prefix);
    if (!s) s = km_early_stop_from_meta(es, &d, key, path);
    if (!s) {
        snprintf(key, sizeof key, "%s.rng", prefix);
        const char *r = km_tdict_get_meta(&d, key);
        unsigned long long v[4];
        if (!r || sscanf(r, "%16llx %16llx %16llx %16llx", &v[0], &v[1], &v[2], &v[3]) != 4)
            s = km_err(KM_EFORMAT, "%s: missing or malformed metadata '%s'", path, key);
        else
            for (int i = 0; i < 4; i++) rng->s[i] = v[i];
    }
    if (!s && meta)
        for (int i = 0; i < d.nmeta; i++) km_tdict_set_meta(meta, d.meta[i].key, d.meta[i].value);
    km_tdict_free(&d);
    *epoch = (int)e;
    if (s && *m) {
        km_unetpp_free(*m);
        *m = NULL;
    }
    return s;
}

/* --------------------------------------------------------------- the run */

static const char *const k_cols[] = {"epoch", "train_loss", "val_loss", "val_dice", "val_iou",
                                     "val_dice_global", "val_iou_global", "test_dice", "test_iou",
                                     "lr", "seconds", "train_img_per_s"};
#define NCOLS ((int)(sizeof k_cols / sizeof k_cols[0]))

static km_status log_row(km_csv *csv, km_jsonl *jl, int epoch, double tl, const eval_out *v,
                         const eval_out *t, double lr, double secs, double ips) {
    double vals[NCOLS] = {epoch, tl, v->loss, v->dice, v->iou, v->gdice, v->giou, t->dice, t->iou, lr, secs, ips};
    if (csv->f) {
        km_csv_int(csv, epoch);
        for (int i = 1; i < NCOLS; i++) km_csv_num(csv, vals[i]);
        km_status s = km_csv_end_row(csv);
        if (s) return s;
    }
    if (jl->f) {
        km_jsonl_int(jl, "epoch", epoch);
        for (int i = 1; i < NCOLS; i++) km_jsonl_num(jl, k_cols[i], vals[i]);
        return km_jsonl_end(jl);
    }
    return KM_OK;
}

void km_train_split_free(km_train_split *t) {
    km_free(t->lab);
    km_free(t->unl);
    km_split_free(&t->sp);
    km_dataset_index_free(&t->idx);
    memset(t, 0, sizeof *t);
}

km_status km_train_split_make(const km_train_config *c, int resume, const char *out, km_train_split *t) {
    memset(t, 0, sizeof *t);
    km_issues iss;
    km_issues_init(&iss);
    km_status s = km_dataset_scan(c->data, c->label, &t->idx, &iss);
    if (!s) s = km_issues_status(&iss, c->data);
    km_issues_free(&iss);
    if (s) return s;
    if (resume || c->split_dir) {
        char *sd = resume ? km_path_join(out, "splits") : km_strdup(c->split_dir);
        s = resume ? km_split_from_dir(&t->idx, sd, &t->sp, NULL) : km_split_from_path(&t->idx, sd, c->fold, &t->sp, NULL);
        if (!s && resume) {
            char *lp = km_path_join(sd, "labelled.txt");
            km_split ls;
            s = km_split_from_lists(&t->idx, lp, NULL, NULL, &ls, NULL);
            if (!s) {
                t->lab = ls.train;
                t->n_lab = ls.n_train;
                ls.train = NULL;
                km_split_free(&ls);
                t->unl = km_malloc(sizeof(int));
            }
            km_free(lp);
        }
        km_free(sd);
        if (s) return s;
    } else {
        int n = c->max_images && c->max_images < t->idx.n ? c->max_images : t->idx.n;
        km_split_random(n, c->seed, c->val_fraction, c->test_fraction, &t->sp);
    }
    if (!t->lab) km_split_labelled(&t->sp, c->labelled_fraction, c->seed, &t->lab, &t->n_lab, &t->unl, &t->n_unl);
    if (t->n_lab < 2)
        return km_err(KM_EARG, "%s: %d labelled training image%s; at least 2 are needed", c->data, t->n_lab,
                      t->n_lab == 1 ? "" : "s");
    if (t->sp.n_val < 1)
        return km_err(KM_EARG, "%s: the validation split is empty (it drives the schedule and early stopping)",
                      c->data);
    if (out && !resume) {
        char *sd = km_path_join(out, "splits");
        s = km_mkdir_p(sd);
        if (!s) s = km_split_write(&t->idx, &t->sp, sd);
        if (!s && t->sp.n_test == 0) {
            /* an empty list does not read back (splits.h); test.txt is optional */
            char *tp = km_path_join(sd, "test.txt");
            remove(tp);
            km_free(tp);
        }
        char *lp = km_path_join(sd, "labelled.txt"), *up = km_path_join(sd, "unlabelled.txt");
        if (!s) s = km_write_id_list(&t->idx, t->lab, t->n_lab, lp);
        if (!s) s = km_write_id_list(&t->idx, t->unl, t->n_unl, up);
        km_free(lp);
        km_free(up);
        km_free(sd);
    }
    return s;
}

typedef struct {
    km_train_split s;
    km_dataset tr, va, te;
} run_data;

static void run_data_free(run_data *d) {
    km_dataset_free(&d->te);
    km_dataset_free(&d->va);
    km_dataset_free(&d->tr);
    km_train_split_free(&d->s);
}

static km_status prepare_data(const km_train_config *c, int resume, run_data *d, FILE *log) {
    km_train_split *t = &d->s;
    km_status s = km_train_split_make(c, resume, c->out, t);
    if (s) return s;
    double t0 = km_now();
    s = km_dataset_load(&t->idx, t->lab, t->n_lab, c->size, 1, &d->tr, NULL);
    if (!s) s = km_dataset_load(&t->idx, t->sp.val, t->sp.n_val, c->size, 1, &d->va, NULL);
    if (!s && c->eval_test && t->sp.n_test)
        s = km_dataset_load(&t->idx, t->sp.test, t->sp.n_test, c->size, 1, &d->te, NULL);
    if (!s && t->idx.label >= 0 && !d->tr.n_with_label)
        s = km_err(KM_EFORMAT, "%s: %s is in none of the %d labelled training masks", t->idx.masks_dir,
                   km_dataset_label_desc(&t->idx), d->tr.n);
    if (!s && log)
        fprintf(log, "data: %s, %d train (%d labelled), %d val, %d test; decoded in %.1f s\n", c->data,
                t->sp.n_train, t->n_lab, t->sp.n_val, t->sp.n_test, km_now() - t0);
    return s;
}

static km_status save_last(loop *L, const char *path, int epoch, int steps, const km_rng *rng,
                           const km_plateau *pl, const km_early_stop *es, int done) {
    km_tdict extra;
    km_tdict_init(&extra);
    meta_set_int(&extra, "train.steps", steps);
    meta_set_int(&extra, "train.done", done);
    km_dataset_label_meta(L->idx, &extra);
    km_status s = km_train_checkpoint_save(path, L->m, L->c, "train", epoch, rng, pl, es, &extra);
    km_tdict_free(&extra);
    return s;
}

static km_status load_last(const char *path, km_unetpp **m, int *epoch, int *steps, int *done, km_rng *rng,
                           km_plateau *pl, km_early_stop *es) {
    km_tdict meta;
    km_tdict_init(&meta);
    long long st = 0, dn = 0;
    km_status s = km_train_checkpoint_load(path, "train", m, epoch, rng, pl, es, &meta);
    if (!s) s = km_train_meta_int(&meta, "train.steps", path, &st);
    if (!s) s = km_train_meta_int(&meta, "train.done", path, &dn);
    km_tdict_free(&meta);
    *steps = (int)st;
    *done = (int)dn;
    if (s && *m) {
        km_unetpp_free(*m);
        *m = NULL;
    }
    return s;
}

static void log_epoch(FILE *f, int epoch, int epochs, double tl, const eval_out *v, const eval_out *t, double lr,
                      double secs) {
    if (!f) return;
    fprintf(f, "epoch %d/%d  train_loss %.4f  val_loss %.4f  val_dice %.4f  val_iou %.4f", epoch, epochs, tl,
            v->loss, v->dice, v->iou);
    if (!isnan(t->dice)) fprintf(f, "  test_dice %.4f", t->dice);
    fprintf(f, "  lr %.3g  %.1f s\n", lr, secs);
    fflush(f);
}

km_status km_train_run(const km_train_config *c, int resume, const km_train_hooks *hooks, km_train_result *res) {
    static const km_train_hooks no_hooks = {0};
    if (!hooks) hooks = &no_hooks;
    FILE *log = hooks->log;
    memset(res, 0, sizeof *res);
    res->init_val_dice = res->last_test_dice = NAN;
    res->best_val_loss = res->first_step_loss = res->last_train_loss = NAN;
    km_status s = km_train_config_check(c);
    if (s) return s;
    if (resume && !c->out) return km_err(KM_EARG, "--resume needs the run folder");
    km_set_threads(c->threads);

    char *p_cfg = NULL, *p_best = NULL, *p_last = NULL, *p_csv = NULL, *p_jsonl = NULL;
    if (c->out) {
        s = km_mkdir_p(c->out);
        if (s) return s;
        p_cfg = km_path_join(c->out, "config.json");
        p_best = km_path_join(c->out, "best.safetensors");
        p_last = km_path_join(c->out, "last.safetensors");
        p_csv = km_path_join(c->out, "metrics.csv");
        p_jsonl = km_path_join(c->out, "metrics.jsonl");
    }
    run_data d;
    memset(&d, 0, sizeof d);
    loop L;
    memset(&L, 0, sizeof L);
    km_csv csv;
    km_jsonl jl;
    memset(&csv, 0, sizeof csv);
    memset(&jl, 0, sizeof jl);
    int pf_started = 0;
    L.c = c;
    L.B = c->batch;
    L.S = c->size;

    km_rng rng;
    km_rng_seed(&rng, c->seed ^ KM_TRAIN_RNG_SALT);
    km_plateau pl;
    km_plateau_init(&pl, c->lr, c->plateau_factor, c->plateau_patience, c->min_lr);
    km_early_stop es;
    km_early_stop_init(&es, c->early_stop);
    int epoch = 0, steps = 0, done = 0;

    if (!resume && c->out) s = config_write(c, p_cfg);
    if (!s) s = prepare_data(c, resume, &d, log);
    L.idx = &d.s.idx;
    if (s) goto out;

    if (resume) {
        s = load_last(p_last, &L.m, &epoch, &steps, &done, &rng, &pl, &es);
        if (!s && km_unetpp_resnet_depth(L.m) != c->resnet)
            s = km_err(KM_EFORMAT, "%s: resnet%d weights, but the run's config says resnet%d", p_last,
                       km_unetpp_resnet_depth(L.m), c->resnet);
        if (s) goto out;
        /* drop log rows written after the checkpoint (killed between the
         * log write and the checkpoint write) */
        int rows = epoch + (c->eval_init ? 1 : 0);
        s = km_text_keep_lines(p_csv, rows + 1);
        if (!s) s = km_text_keep_lines(p_jsonl, rows);
        if (s) goto out;
        if (log) fprintf(log, "resuming %s after epoch %d (%d steps)%s\n", c->out, epoch, steps,
                         done ? ": the run had already finished" : "");
    } else if (c->init_weights) {
        s = km_unetpp_load(&L.m, c->init_weights);
        if (!s && km_unetpp_resnet_depth(L.m) != c->resnet)
            s = km_err(KM_EARG, "%s: resnet%d weights, but --resnet %d", c->init_weights,
                       km_unetpp_resnet_depth(L.m), c->resnet);
        if (s) goto out;
    } else {
        L.m = km_unetpp_create(c->resnet, c->seed);
        if (c->encoder_weights) {
            int ign = 0;
            s = km_unetpp_load_encoder(L.m, c->encoder_weights, &ign);
            if (s) goto out;
            if (log) fprintf(log, "encoder initialised from %s (%d classifier tensors ignored)\n", c->encoder_weights, ign);
        }
    }
    s = km_unetpp_reserve(L.m, L.B, L.S, L.S);
    if (s) goto out;
    size_t P = (size_t)L.S * L.S;
    for (int i = 0; i < 2; i++) {
        L.x[i] = km_malloc(sizeof(float) * 3 * P * L.B);
        L.y[i] = km_malloc(sizeof(float) * P * L.B);
    }
    L.logits = km_malloc(sizeof(float) * P * L.B);
    L.dlogits = km_malloc(sizeof(float) * P * L.B);
    s = prefetch_start(&L.pf);
    if (s) goto out;
    pf_started = 1;

    if (c->out) {
        s = km_csv_open(&csv, p_csv, (const char *const *)k_cols, NCOLS, resume);
        if (!s) s = km_jsonl_open(&jl, p_jsonl, resume);
        if (s) goto out;
    }
    int *val_order = km_malloc(sizeof(int) * (size_t)(d.va.n + d.te.n + 1));
    for (int i = 0; i < d.va.n || i < d.te.n; i++) val_order[i] = i;
    eval_out vo = {NAN, NAN, NAN, NAN, NAN}, to = vo;
    const eval_out none = vo;

    if (!resume && c->eval_init) {
        double t0 = km_now();
        s = evaluate(&L, &d.va, val_order, &vo);
        if (!s && d.te.n) s = evaluate(&L, &d.te, val_order, &to);
        if (!s) s = log_row(&csv, &jl, 0, NAN, &vo, &to, pl.lr, km_now() - t0, NAN);
        if (s) goto out_loop;
        res->init_val_dice = vo.dice;
        log_epoch(log, 0, c->epochs, NAN, &vo, &to, pl.lr, km_now() - t0);
    }

    int n = d.tr.n, B = L.B;
    int *order = km_malloc(sizeof(int) * (size_t)n);
    uint8_t *aug = km_malloc((size_t)n);
    while (!done && epoch < c->epochs && !(c->max_steps && steps >= c->max_steps)) {
        epoch++;
        double t_ep = km_now(), t_steps = 0;
        /* the epoch's randomness, drawn up front on this thread */
        for (int i = 0; i < n; i++) order[i] = i;
        km_rng_shuffle(&rng, order, n);
        for (int i = 0; i < n; i++) aug[i] = km_aug_draw(&rng);
        int nb = n / B + (n % B > 1 ? 1 : 0);
        double lr_ep = pl.lr; /* torch keeps the lr as a double; Adam gets it as float */
        float lr = (float)lr_ep;
        km_progress pg;
        char label[48], extra[48];
        snprintf(label, sizeof label, "epoch %d/%d", epoch, c->epochs);
        if (hooks->progress && log) km_progress_start(&pg, log, label, (int64_t)nb * B > n ? n : (int64_t)nb * B, "img");
        double lsum = 0;
        int seen = 0;
        prefetch_submit(&L.pf, &d.tr, order, aug, n < B ? n : B, L.x[0], L.y[0]);
        for (int k = 0; k < nb; k++) {
            int b0 = k * B, bn = n - b0 < B ? n - b0 : B;
            prefetch_wait(&L.pf);
            int last = k + 1 == nb || (c->max_steps && steps + 1 >= c->max_steps);
            if (!last) {
                int nb0 = b0 + B, nbn = n - nb0 < B ? n - nb0 : B;
                prefetch_submit(&L.pf, &d.tr, order + nb0, aug + nb0, nbn, L.x[(k + 1) & 1], L.y[(k + 1) & 1]);
            }
            double ts = km_now();
            km_unetpp_zero_grad(L.m);
            s = km_unetpp_forward(L.m, L.x[k & 1], bn, L.S, L.S, 1, L.logits);
            if (s) goto out_epoch;
            double l = km_seg_loss(L.logits, L.y[k & 1], P * bn, c->bce_weight, 1.0f, L.dlogits, NULL, NULL);
            km_unetpp_backward(L.m, L.dlogits, NULL);
            km_unetpp_adam_step(L.m, lr, (float)c->beta1, (float)c->beta2, (float)c->eps, (float)c->weight_decay);
            t_steps += km_now() - ts;
            steps++;
            lsum += l * bn;
            seen += bn;
            if (isnan(res->first_step_loss)) res->first_step_loss = l;
            res->train_images += bn;
            if (hooks->on_step) hooks->on_step(hooks->ud, epoch, steps, l);
            if (hooks->progress && log) {
                snprintf(extra, sizeof extra, "loss %.4f", lsum / seen);
                km_progress_update(&pg, seen, extra);
            }
            if (last) break;
        }
        if (hooks->progress && log) {
            snprintf(extra, sizeof extra, "loss %.4f", lsum / seen);
            km_progress_end(&pg, extra);
        }
        res->train_seconds += t_steps;
        double tl = seen ? lsum / seen : NAN;
        s = evaluate(&L, &d.va, val_order, &vo);
        to = none;
        if (!s && d.te.n) s = evaluate(&L, &d.te, val_order, &to);
        if (s) goto out_epoch;
        int improved = 0;
        int stop = km_early_stop_step(&es, vo.loss, epoch, &improved);
        km_plateau_step(&pl, vo.loss);
        done = stop || epoch >= c->epochs || (c->max_steps && steps >= c->max_steps);
        double secs = km_now() - t_ep;
        if (improved && c->out) {
            km_tdict meta;
            km_tdict_init(&meta);
            model_meta(c, &meta, "train", epoch);
            meta_set_num(&meta, "val_loss", vo.loss);
            meta_set_num(&meta, "val_dice", vo.dice);
            km_dataset_label_meta(L.idx, &meta);
            s = km_unetpp_save(L.m, p_best, &meta);
            km_tdict_free(&meta);
            if (s) goto out_epoch;
        }
        s = log_row(&csv, &jl, epoch, tl, &vo, &to, lr_ep, secs, t_steps > 0 ? seen / t_steps : NAN);
        if (!s && c->out) s = save_last(&L, p_last, epoch, steps, &rng, &pl, &es, done);
        if (s) goto out_epoch;
        log_epoch(log, epoch, c->epochs, tl, &vo, &to, lr_ep, secs);
        if (stop && log) fprintf(log, "early stop: no val-loss improvement for %d epochs (best epoch %d)\n", es.num_bad, es.best_epoch);
        res->stopped_early = stop;
        res->last_train_loss = tl;
        res->last_val_loss = vo.loss;
        res->last_val_dice = vo.dice;
        res->last_val_iou = vo.iou;
        res->last_test_dice = to.dice;
        if (hooks->stop_after && epoch >= hooks->stop_after) break;
    }
    res->finished = done;
    res->epochs_done = epoch;
    res->steps = steps;
    res->best_epoch = es.best_epoch;
    res->best_val_loss = es.best;
out_epoch:
    km_free(order);
    km_free(aug);
out_loop:
    km_free(val_order);
out:
    if (pf_started) prefetch_stop(&L.pf);
    if (csv.f) {
        km_status s2 = km_csv_close(&csv);
        if (!s) s = s2;
    }
    if (jl.f) {
        km_status s2 = km_jsonl_close(&jl);
        if (!s) s = s2;
    }
    for (int i = 0; i < 2; i++) {
        km_free(L.x[i]);
        km_free(L.y[i]);
    }
    km_free(L.logits);
    km_free(L.dlogits);
    if (L.m) km_unetpp_free(L.m);
    run_data_free(&d);
    km_free(p_cfg);
    km_free(p_best);
    km_free(p_last);
    km_free(p_csv);
    km_free(p_jsonl);
    return s;
}

km_status km_train_load_student(const char *path, km_unetpp **m, int *size) {
    *m = NULL;
    *size = 0;
    km_tdict d;
    km_tdict_init(&d);
    km_status s = km_load_checkpoint(path, &d);
    if (!s) s = km_unetpp_from_tdict(m, &d, path);
    const char *v = s ? NULL : km_tdict_get_meta(&d, "size");
    if (v) {
        char *end;
        long z = strtol(v, &end, 10);
        if (*end || z < 32 || z % 32)
            s = km_err(KM_EFORMAT, "%s: metadata size '%s' is not a positive multiple of 32", path, v);
        else
            *size = (int)z;
    }
    km_tdict_free(&d);
    if (s && *m) {
        km_unetpp_free(*m);
        *m = NULL;
    }
    return s;
}
