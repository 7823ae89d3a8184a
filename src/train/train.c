/* train.c - the supervised training loop; see train.h for the protocol. */
#include "train.h"

#include "augment.h"
#include "dataset.h"
#include "microbatch.h"
#include "runfolder.h"
#include "sched.h"
#include "splits.h"
#include "../core/dist.h"
#include "../core/log.h"
#include "../core/progress.h"
#include "../core/rng.h"
#include "../eval/metrics.h"
#include "../io/json.h"
#include "../io/load.h"
#include "../io/safetensors.h"
#include "../io/settings.h"
#include "../io/tensor.h"
#include "../models/unetpp.h"
#include "../nn/gemm.h"

#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>

/* Salt of the run's shuffle/augmentation stream, distinct from the split
 * streams (splits.h) and the weight initialisation (seed itself). */
#define KM_TRAIN_RNG_SALT 0x747261696e696e67ULL /* "training" */

/* ------------------------------------------------------------------ config */

/* The table of every setting (settings.h). Row order = config.json order (as
 * written since the first version) = --help order. */
#define O(f) offsetof(km_train_config, f)
#define P_ KM_SET_PASS
static const km_setting k_rows[] = {
    {"data", "--data", KM_SET_STR, O(data), 0, 0, 0, 0, 0, NULL, 0,
     "dataset folder: images/ + masks/, or an nnU-Net raw dataset (dataset.json)", NULL, NULL},
    {"split_dir", "--split-dir", KM_SET_STR, O(split_dir), 0, 0, 0, 0, 0, NULL, 0,
     "folder with train.txt [val.txt test.txt] (default: seeded random split)", NULL, NULL},
    {"val_fraction", "--val-fraction", KM_SET_DBL, O(val_fraction), 0.1, 0, 0, 0, 0, NULL, P_,
     "random split: validation fraction", NULL, NULL},
    {"test_fraction", "--test-fraction", KM_SET_DBL, O(test_fraction), 0.1, 0, 0, 0, 0, NULL, P_,
     "random split: test fraction", NULL, NULL},
    {"labelled_fraction", "--labelled-fraction", KM_SET_DBL, O(labelled_fraction), 1.0, 0, KM_SET_GT | KM_SET_LE, 0, 1,
     NULL, 0, "nested labelled fraction of the train split", NULL, NULL},
    {"max_images", "--max-images", KM_SET_INT, O(max_images), 0, 0, KM_SET_GE, 0, 0, NULL, P_,
     "random split over the first N ids only (0 = all)", NULL, NULL},
    {"size", "--size", KM_SET_INT, O(size), 224, 0, 0, 0, 0, NULL, P_,
     "crop size (shortest side resized to it, centre crop), multiple of 32 (of 2^D with --encoder-depth D)", NULL,
     NULL},
    {"resnet", "--resnet", KM_SET_INT, O(resnet), 34, 0, 0, 0, 0, NULL, P_, "ResNet variant of the encoder: 34 or 18", NULL, NULL},
    {"encoder_weights", "--encoder-weights", KM_SET_STR, O(encoder_weights), 0, 0, 0, 0, 0, NULL, 0,
     "torchvision ResNet checkpoint for the encoder (default: random init)", NULL, NULL},
    {"init_weights", "--init", KM_SET_STR, O(init_weights), 0, 0, 0, 0, 0, NULL, 0,
     "full student checkpoint to start from (fine-tuning)", NULL, NULL},
    {"batch", "--batch", KM_SET_INT, O(batch), 8, 0, KM_SET_GE, 2, 0, "BatchNorm batch statistics", P_, "batch size", NULL, NULL},
    {"epochs", "--epochs", KM_SET_INT, O(epochs), 100, 0, KM_SET_GE, 1, 0, NULL, P_, "maximum number of epochs", NULL, NULL},
    {"lr", "--lr", KM_SET_DBL, O(lr), 5e-5, 0, KM_SET_GT, 0, 0, NULL, P_, "Adam learning rate", NULL, NULL},
    {"beta1", "--beta1", KM_SET_DBL, O(beta1), 0.9, 0, KM_SET_GE | KM_SET_LT, 0, 1, NULL, 0, "Adam beta1", NULL, NULL},
    {"beta2", "--beta2", KM_SET_DBL, O(beta2), 0.999, 0, KM_SET_GE | KM_SET_LT, 0, 1, NULL, 0, "Adam beta2", NULL, NULL},
    {"eps", "--eps", KM_SET_DBL, O(eps), 1e-8, 0, KM_SET_GT, 0, 0, NULL, 0, "Adam eps", NULL, NULL},
    {"weight_decay", "--weight-decay", KM_SET_DBL, O(weight_decay), 0, 0, KM_SET_GE, 0, 0, NULL, P_,
     "Adam weight decay (L2, torch Adam)", NULL, NULL},
    {"plateau_factor", "--plateau-factor", KM_SET_DBL, O(plateau_factor), 0.5, 0, KM_SET_GT | KM_SET_LT, 0, 1, NULL, P_,
     "ReduceLROnPlateau factor", NULL, NULL},
    {"min_lr", "--min-lr", KM_SET_DBL, O(min_lr), 1e-7, 0, KM_SET_GE, 0, 0, NULL, P_, "ReduceLROnPlateau minimum lr", NULL, NULL},
    {"plateau_patience", "--plateau-patience", KM_SET_INT, O(plateau_patience), 3, 0, KM_SET_GE, 0, 0, NULL, P_,
     "ReduceLROnPlateau patience (epochs)", NULL, NULL},
    {"early_stop", "--early-stop", KM_SET_INT, O(early_stop), 10, 0, KM_SET_GE, 1, 0, NULL, P_,
     "stop after this many epochs without val-loss improvement", NULL, NULL},
    {"bce_weight", "--bce-weight", KM_SET_DBL, O(bce_weight), 0.5, 0, KM_SET_GE | KM_SET_LE, 0, 1, NULL, P_,
     "a in loss = a*BCE + (1-a)*Dice", NULL, NULL},
    {"max_steps", "--max-steps", KM_SET_INT, O(max_steps), 0, 0, KM_SET_GE, 0, 0, NULL, P_,
     "stop after this many optimiser steps (0 = no limit; benchmarks)", NULL, NULL},
    {"seed", "--seed", KM_SET_U64, O(seed), 0, 0, 0, 0, 0, NULL, 0,
     "seed of the split, weight init, shuffling and augmentation", NULL, NULL},
    {"threads", "--threads", KM_SET_INT, O(threads), 2, 0, KM_SET_GE, 1, 0, NULL, P_ | KM_SET_NEUTRAL,
     "compute threads (results are bit-identical for a given count)", NULL, NULL},
    {"out", "--out", KM_SET_STR, O(out), 0, 0, 0, 0, 0, NULL, 0,
     "run folder (config, splits, metrics, best/last checkpoints)", NULL, NULL},
    {"eval_test", "--eval-test", KM_SET_BOOL, O(eval_test), 0, 0, 0, 0, 0, NULL, 0,
     "also score the test split every epoch (reported only)", NULL, NULL},
    {"eval_init", "--eval-init", KM_SET_BOOL, O(eval_init), 0, 0, 0, 0, 0, NULL, 0,
     "log the untrained model's validation as epoch 0", NULL, NULL},
    /* added after config.json files were first written: absent = default */
    {"label", "--label", KM_SET_STR, O(label), 0, 0, 0, 0, 0, NULL, KM_SET_OPTIONAL | P_,
     "label to segment: a mask value, or a label name from an nnU-Net dataset.json (default: binary 0/255 or 0/1 "
     "masks; nnU-Net: its only foreground label)", NULL, NULL},
    {"fold", "--fold", KM_SET_INT, O(fold), 0, 0, KM_SET_GE, 0, 0, NULL, KM_SET_OPTIONAL, "fold of --split-file", NULL,
     NULL},
    {"micro_batch", "--micro-batch", KM_SET_INT, O(micro_batch), 0, 0, KM_SET_GE, 0, 0, NULL, KM_SET_OPTIONAL,
     "split each batch into micro-batches of M (BatchNorm statistics per micro-batch, gradients summed in a fixed "
     "order; `mpirun -np N` shares them: any N dividing batch/M gives the same weights; 0 = off)", NULL, NULL},
    {"sync_bn", "--sync-bn", KM_SET_BOOL, O(sync_bn), 0, 0, 0, 0, 0, NULL, KM_SET_OPTIONAL | KM_SET_OMIT_DEFAULT,
     KM_HELP_SYNC_BN, NULL, NULL},
    {"decoder_channels", "--decoder-channels", KM_SET_STR, O(decoder_channels), 0, 0, 0, 0, 0, NULL,
     KM_SET_OPTIONAL | KM_SET_OMIT_DEFAULT | P_,
     KM_HELP_DECODER_CHANNELS, NULL, NULL},
    {"encoder_depth", "--encoder-depth", KM_SET_INT, O(encoder_depth), 5, 0, KM_SET_GE | KM_SET_LE, 3, 5, NULL,
     KM_SET_OPTIONAL | KM_SET_OMIT_DEFAULT | P_, KM_HELP_ENCODER_DEPTH, NULL, NULL},
    {NULL, "--step-timeout", KM_SET_DBL, O(step_timeout), 0, 0, KM_SET_GE, 0, 0, NULL, KM_SET_NEUTRAL,
     "end the job (MPI_Abort) when one optimiser step takes longer than SEC seconds (0 = no watchdog)", NULL, NULL},
};
#undef P_
#undef O
const km_settings km_train_settings = {"train", k_rows, (int)(sizeof k_rows / sizeof k_rows[0])};

void km_train_config_default(km_train_config *c) {
    memset(c, 0, sizeof *c);
    km_settings_default(&km_train_settings, c);
}

void km_train_config_free(km_train_config *c) { km_settings_free_strings(&km_train_settings, c); }

km_status km_train_config_check(const km_train_config *c) {
    if (!c->data || !c->data[0]) return km_err(KM_EARG, "--data: a dataset folder is required");
    if (c->resnet != 18 && c->resnet != 34)
        return km_err(KM_EARG, "--resnet %d: expected 18 or 34", c->resnet);
    km_status s = km_settings_check(&km_train_settings, c);
    if (!s) s = km_unetpp_check_size(c->size, c->encoder_depth);
    int dec[5];
    if (!s) s = km_unetpp_parse_decoder(c->decoder_channels, c->encoder_depth, dec);
    if (s) return s;
    if (!(c->val_fraction > 0 && c->test_fraction >= 0 && c->val_fraction + c->test_fraction < 1))
        return km_err(KM_EARG, "--val-fraction %g / --test-fraction %g: expected val > 0, test >= 0, sum < 1",
                      c->val_fraction, c->test_fraction);
    if (c->seed > (uint64_t)INT64_MAX) return km_err(KM_EARG, "--seed: expected < 2^63");
    if (c->micro_batch && (c->micro_batch < 2 || c->batch % c->micro_batch))
        return km_micro_check(c->batch, c->micro_batch);
    if (c->sync_bn && !c->micro_batch)
        return km_err(KM_EARG,
                      "--sync-bn needs --micro-batch M (without micro-batches BatchNorm already sees the whole batch)");
    return KM_OK;
}

/* config.json: version and GEMM backend, then every setting of the table. */
km_status km_train_config_save(const km_train_config *c, const char *path) {
    km_jw w = {0};
    km_jw_str(&w, "kmseg_version", KM_VERSION);
    km_jw_str(&w, "gemm_backend", km_gemm_backend());
    static const char *const no_micro[] = {"micro_batch", NULL}; /* 0: written as before it existed */
    km_jw_settings(&w, &km_train_settings, c, c->micro_batch ? NULL : no_micro);
    return km_jw_write(&w, path);
}

km_status km_train_config_from_json(const km_json *j, const char *path, const char *const *optional,
                                    km_train_config *c) {
    return km_settings_from_json(&km_train_settings, j, path, optional, c);
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

/* ------------------------------------------------------------- checkpoints */

static void model_meta(const km_train_config *c, km_tdict *d, const char *prefix, int epoch) {
    char key[64];
    snprintf(key, sizeof key, "%s.epoch", prefix);
    km_meta_set_int(d, key, epoch);
    km_meta_set_int(d, "size", c->size);
    km_meta_set_int(d, "seed", (long long)c->seed);
}

km_status km_train_checkpoint_save(const char *path, const km_unetpp *m, const km_train_config *c, const char *prefix,
                                   int epoch, const km_rng *rng, const km_plateau *pl, const km_early_stop *es,
                                   const km_tdict *extra) {
    km_tdict d;
    km_tdict_init(&d);
    km_unetpp_to_tdict(m, &d);
    km_unetpp_optim_to_tdict(m, &d);
    km_meta_model(&d, "UnetPlusPlus", km_unetpp_resnet_depth(m));
    model_meta(c, &d, prefix, epoch);
    if (extra)
        for (int i = 0; i < extra->nmeta; i++) km_tdict_set_meta(&d, extra->meta[i].key, extra->meta[i].value);
    char key[64];
    snprintf(key, sizeof key, "%s.rng", prefix);
    km_meta_set_rng(&d, key, rng);
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
    if (!s) s = km_meta_get_int(&d, key, path, &e);
    snprintf(key, sizeof key, "%s.plateau", prefix);
    if (!s) s = km_plateau_from_meta(pl, &d, key, path);
    snprintf(key, sizeof key, "%s.early_stop", prefix);
    if (!s) s = km_early_stop_from_meta(es, &d, key, path);
    snprintf(key, sizeof key, "%s.rng", prefix);
    if (!s) s = km_meta_get_rng(&d, key, path, rng);
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

/* ------------------------------------------------------------------ splits */

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

/* --------------------------------------------------------------- the run */

static const char *const k_cols[] = {"epoch", "train_loss", "val_loss", "val_dice", "val_iou",
                                     "val_dice_global", "val_iou_global", "test_dice", "test_iou",
                                     "lr", "seconds", "train_img_per_s"};
#define NCOLS ((int)(sizeof k_cols / sizeof k_cols[0]))

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

static km_status prepare_data(const km_train_config *c, int resume, const char *out, run_data *d, FILE *log) {
    km_train_split *t = &d->s;
    km_status s = km_train_split_make(c, resume, out, t);
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

/* Everything one run holds: zeroed by trainer_open, released by
 * trainer_close on every path (the one cleanup of the run). */
typedef struct {
    const km_train_config *c;
    const km_train_hooks *h;
    FILE *log;
    km_train_result *res;
    km_run run;
    run_data d;
    loop L;
    int pf_started;
    km_rng rng; /* shuffling and augmentation */
    km_plateau pl;
    km_early_stop es;
    int epoch, steps, done;
    int *val_order, *order;
    uint8_t *aug;
    km_micro mb; /* micro_batch > 0 (microbatch.h) */
    /* A stop request (SIGTERM/SIGUSR1, dist.h) ends the run after any step:
     * the checkpoint then holds the epoch's first part_steps steps, its loss
     * sum and images, and the RNG as the epoch began (ep_rng), from which a
     * resumed run redraws the epoch's order and skips what was done. */
    km_rng ep_rng;
    int part_steps, part_seen, stopped;
    double part_lsum;
} trainer;

static km_status save_last(trainer *T) {
    km_tdict extra;
    km_tdict_init(&extra);
    km_meta_set_int(&extra, "train.steps", T->steps);
    km_meta_set_int(&extra, "train.done", T->done);
    if (T->part_steps) {
        km_meta_set_int(&extra, "train.partial_steps", T->part_steps);
        km_meta_set_int(&extra, "train.partial_seen", T->part_seen);
        km_meta_set_num(&extra, "train.partial_loss_sum", T->part_lsum);
    }
    km_dataset_label_meta(&T->d.s.idx, &extra);
    char *p = km_run_path(&T->run, "last.safetensors");
    const km_rng *rng = T->part_steps ? &T->ep_rng : &T->rng;
    km_status s = km_train_checkpoint_save(p, T->L.m, T->c, "train", T->epoch, rng, &T->pl, &T->es, &extra);
    km_free(p);
    km_tdict_free(&extra);
    return s;
}

static km_status save_best(trainer *T, const eval_out *vo) {
    km_tdict meta;
    km_tdict_init(&meta);
    model_meta(T->c, &meta, "train", T->epoch);
    km_meta_set_num(&meta, "val_loss", vo->loss);
    km_meta_set_num(&meta, "val_dice", vo->dice);
    km_dataset_label_meta(&T->d.s.idx, &meta);
    char *p = km_run_path(&T->run, "best.safetensors");
    km_status s = km_unetpp_save(T->L.m, p, &meta);
    km_free(p);
    km_tdict_free(&meta);
    return s;
}

/* The model, optimiser and schedule state from last.safetensors. */
static km_status load_last(trainer *T) {
    km_tdict meta;
    km_tdict_init(&meta);
    long long st = 0, dn = 0;
    char *path = km_path_join(T->c->out, "last.safetensors"); /* every rank reads it */
    km_status s = km_train_checkpoint_load(path, "train", &T->L.m, &T->epoch, &T->rng, &T->pl, &T->es, &meta);
    if (!s) s = km_meta_get_int(&meta, "train.steps", path, &st);
    if (!s) s = km_meta_get_int(&meta, "train.done", path, &dn);
    if (!s && km_tdict_get_meta(&meta, "train.partial_steps")) { /* stopped mid-epoch */
        long long ps = 0, pn = 0;
        s = km_meta_get_int(&meta, "train.partial_steps", path, &ps);
        if (!s) s = km_meta_get_int(&meta, "train.partial_seen", path, &pn);
        const char *v = km_tdict_get_meta(&meta, "train.partial_loss_sum");
        if (!s && !v) s = km_err(KM_EMISSING, "%s: missing metadata 'train.partial_loss_sum'", path);
        if (!s) T->part_lsum = strtod(v, NULL);
        T->part_steps = (int)ps;
        T->part_seen = (int)pn;
    }
    if (!s && km_unetpp_resnet_depth(T->L.m) != T->c->resnet)
        s = km_err(KM_EFORMAT, "%s: resnet%d weights, but the run's config says resnet%d", path,
                   km_unetpp_resnet_depth(T->L.m), T->c->resnet);
    if (!s) s = km_unetpp_check_arch(T->L.m, T->c->encoder_depth, T->c->decoder_channels, path);
    km_tdict_free(&meta);
    km_free(path);
    T->steps = (int)st;
    T->done = (int)dn;
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

static km_status log_row(trainer *T, int epoch, double tl, const eval_out *v, const eval_out *t, double lr,
                         double secs, double ips) {
    double vals[NCOLS] = {epoch, tl, v->loss, v->dice, v->iou, v->gdice, v->giou, t->dice, t->iou, lr, secs, ips};
    return km_run_metrics_row(&T->run, vals);
}

/* Phase 1: settings, run folder, config.json, data, the RNG and schedule. */
static km_status trainer_open(trainer *T, const km_train_config *c, int resume, const km_train_hooks *hooks,
                              km_train_result *res) {
    memset(T, 0, sizeof *T);
    T->c = c;
    T->h = hooks;
    km_status s = km_dist_init();
    if (s) return s;
    T->log = km_dist_rank() ? NULL : hooks->log; /* rank 0 alone logs and writes files */
    T->res = res;
    T->L.c = c;
    T->L.B = c->batch;
    T->L.S = c->size;
    s = km_train_config_check(c);
    if (s) return s;
    if (resume && !c->out) return km_err(KM_EARG, "--resume needs the run folder");
    s = km_micro_check(c->batch, c->micro_batch);
    if (s) return s;
    km_set_threads(c->threads);
    km_rng_seed(&T->rng, c->seed ^ KM_TRAIN_RNG_SALT);
    km_plateau_init(&T->pl, c->lr, c->plateau_factor, c->plateau_patience, c->min_lr);
    km_early_stop_init(&T->es, c->early_stop);
    s = km_dist_watchdog_start(c->step_timeout);
    if (s) return s;
    const char *wdir = km_dist_rank() ? NULL : c->out; /* NULL: this rank writes nothing */
    s = km_run_open(&T->run, wdir, "config.json", "train", resume);
    if (!s && !resume && wdir) s = km_train_config_save(c, T->run.config);
    if (!s) s = prepare_data(c, resume, resume ? c->out : wdir, &T->d, T->log);
    return s;
}

/* Phase 2: the student, from last.safetensors (resume), --init, or a seeded
 * initialisation (optionally with an ImageNet encoder). */
static km_status trainer_model(trainer *T, int resume) {
    const km_train_config *c = T->c;
    km_status s = KM_OK;
    if (resume) {
        s = load_last(T);
        if (!s && !T->done) s = km_run_note_resume(&T->run, T->epoch);
        if (!s && T->log)
            fprintf(T->log, "resuming %s after epoch %d (%d steps)%s\n", c->out, T->epoch, T->steps,
                    T->done ? ": the run had already finished" : "");
    } else if (c->init_weights) {
        s = km_unetpp_load(&T->L.m, c->init_weights);
        if (!s && km_unetpp_resnet_depth(T->L.m) != c->resnet)
            s = km_err(KM_EARG, "%s: resnet%d weights, but --resnet %d", c->init_weights,
                       km_unetpp_resnet_depth(T->L.m), c->resnet);
        if (!s) s = km_unetpp_check_arch(T->L.m, c->encoder_depth, c->decoder_channels, c->init_weights);
    } else {
        int dec[5];
        s = km_unetpp_parse_decoder(c->decoder_channels, c->encoder_depth, dec); /* checked: km_train_config_check */
        if (s) return s;
        T->L.m = km_unetpp_create_arch(c->resnet, c->encoder_depth, dec, c->seed);
        if (c->encoder_weights) {
            int ign = 0;
            s = km_unetpp_load_encoder(T->L.m, c->encoder_weights, &ign);
            if (!s && T->log)
                fprintf(T->log, "encoder initialised from %s (%d classifier%s tensors ignored)\n", c->encoder_weights, ign,
                        c->encoder_depth < 5 ? " and unused-stage" : "");
        }
    }
    return s;
}

/* Several ranks: rank 0's initial weights go to every rank (a resumed run:
 * each read the same checkpoint), then every rank checks that its model,
 * optimiser and RNG state hash like rank 0's. */
static km_status trainer_sync(trainer *T, int resume) {
    if (km_dist_size() == 1) return KM_OK;
    if (!resume) km_dist_bcast(km_unetpp_params(T->L.m), sizeof(float) * km_unetpp_num_params(T->L.m));
    uint64_t h = km_dist_hash(km_unetpp_state_hash(T->L.m), &T->rng, sizeof T->rng);
    h = km_dist_hash(h, &T->epoch, sizeof T->epoch);
    return km_dist_check_same(km_dist_hash(h, &T->steps, sizeof T->steps), "the model, optimiser and RNG state");
}

/* Phase 3: activations, batch buffers, the batch thread, the metric files
 * (a resumed run drops the rows written after its checkpoint). */
static km_status trainer_buffers(trainer *T, int resume) {
    loop *L = &T->L;
    km_status s = km_unetpp_reserve(L->m, L->B, L->S, L->S);
    if (s) return s;
    size_t P = (size_t)L->S * L->S;
    for (int i = 0; i < 2; i++) {
        L->x[i] = km_malloc(sizeof(float) * 3 * P * L->B);
        L->y[i] = km_malloc(sizeof(float) * P * L->B);
    }
    L->logits = km_malloc(sizeof(float) * P * L->B);
    L->dlogits = km_malloc(sizeof(float) * P * L->B);
    s = prefetch_start(&L->pf);
    if (s) return s;
    T->pf_started = 1;
    int keep = resume ? T->epoch + (T->c->eval_init ? 1 : 0) : -1;
    s = km_run_metrics_open(&T->run, k_cols, NCOLS, 1, 1, keep);
    if (s) return s;
    run_data *d = &T->d;
    T->val_order = km_malloc(sizeof(int) * (size_t)(d->va.n + d->te.n + 1));
    for (int i = 0; i < d->va.n || i < d->te.n; i++) T->val_order[i] = i;
    T->order = km_malloc(sizeof(int) * (size_t)(d->tr.n + 1));
    T->aug = km_malloc((size_t)d->tr.n + 1);
    if (!T->c->micro_batch) return KM_OK;
    s = km_micro_open(&T->mb, T->c->batch, T->c->micro_batch, km_unetpp_num_params(L->m), L->m);
    return !s && T->c->sync_bn ? km_micro_sync_open(&T->mb, L->m) : s;
}

/* The untrained model's validation as log row 0 (eval_init). */
static km_status eval_init_row(trainer *T) {
    eval_out vo = {NAN, NAN, NAN, NAN, NAN}, to = vo;
    double t0 = km_now();
    km_status s = evaluate(&T->L, &T->d.va, T->val_order, &vo);
    if (!s && T->d.te.n) s = evaluate(&T->L, &T->d.te, T->val_order, &to);
    if (!s) s = log_row(T, 0, NAN, &vo, &to, T->pl.lr, km_now() - t0, NAN);
    if (s) return s;
    T->res->init_val_dice = vo.dice;
    log_epoch(T->log, 0, T->c->epochs, NAN, &vo, &to, T->pl.lr, km_now() - t0);
    return KM_OK;
}

/* One optimiser step on a batch of bn images (x, y) in one piece. */
static km_status step_whole(trainer *T, const float *x, const float *y, int bn, float lr, double *loss) {
    const km_train_config *c = T->c;
    loop *L = &T->L;
    km_unetpp_zero_grad(L->m);
    km_status s = km_unetpp_forward(L->m, x, bn, L->S, L->S, 1, L->logits);
    if (s) return s;
    *loss = km_seg_loss(L->logits, y, (size_t)L->S * L->S * bn, c->bce_weight, 1.0f, L->dlogits, NULL, NULL);
    km_unetpp_backward(L->m, L->dlogits, NULL);
    km_unetpp_adam_step(L->m, lr, (float)c->beta1, (float)c->beta2, (float)c->eps, (float)c->weight_decay);
    return KM_OK;
}

/* One optimiser step in micro-batches (microbatch.h): x, y hold this rank's
 * images of the batch of bn. *loss = the batch loss, *used = the images in
 * micro-batches that count. */
static km_status step_micro(trainer *T, const float *x, const float *y, int bn, float lr, double *loss, int *used) {
    const km_train_config *c = T->c;
    loop *L = &T->L;
    km_micro *u = &T->mb;
    size_t P = (size_t)L->S * L->S;
    int total = km_micro_total(u, bn);
    float *g = km_unetpp_grads(L->m);
    for (int i = 0; i < u->Kl; i++) {
        int nj = km_micro_n(u, km_micro_global(u, i), bn);
        double l = 0;
        km_micro_begin(u, L->m, i);
        km_unetpp_zero_grad(L->m);
        if (nj) {
            const float *xi = x + 3 * P * (size_t)i * u->M, *yi = y + P * (size_t)i * u->M;
            km_status s = km_unetpp_forward(L->m, xi, nj, L->S, L->S, 1, L->logits);
            if (s) {
                km_unetpp_bn_capture(L->m, NULL);
                return s;
            }
            float share = (float)((double)nj / total);
            l = km_seg_loss(L->logits, yi, P * nj, c->bce_weight, share, L->dlogits, NULL, NULL);
            km_unetpp_backward(L->m, L->dlogits, NULL);
        }
        km_micro_end(u, L->m, i, l, g);
    }
    *loss = km_micro_finish(u, L->m, bn, g);
    km_unetpp_adam_step(L->m, lr, (float)c->beta1, (float)c->beta2, (float)c->eps, (float)c->weight_decay);
    *used = total;
    return KM_OK;
}

/* --sync-bn (microbatch.h): this rank's micro-batches as one forward and one
 * backward with whole-batch BatchNorm, the loss per micro-batch. */
static km_status step_sync(trainer *T, const float *x, const float *y, int bn, float lr, double *loss, int *used) {
    const km_train_config *c = T->c;
    loop *L = &T->L;
    km_micro *u = &T->mb;
    size_t P = (size_t)L->S * L->S;
    int total = km_micro_total(u, bn);
    int rows = km_micro_sync_batch(u, bn, 1);
    km_unetpp_zero_grad(L->m);
    km_status s = km_unetpp_forward(L->m, x, rows, L->S, L->S, 1, L->logits);
    if (s) return s;
    for (int i = 0, o = 0; i < u->Kl; o += u->cnt[km_micro_global(u, i)], i++) {
        int nj = u->cnt[km_micro_global(u, i)];
        float share = nj ? (float)((double)nj / total) : 0.0f;
        u->ls[i] = nj ? km_seg_loss(L->logits + P * o, y + P * o, P * nj, c->bce_weight, share, L->dlogits + P * o,
                                    NULL, NULL)
                      : 0.0;
    }
    km_unetpp_backward(L->m, L->dlogits, NULL);
    for (int i = 0; i < u->Kl; i++) km_micro_end(u, L->m, i, u->ls[i], km_unetpp_group_grads(L->m, i));
    *loss = km_micro_finish(u, L->m, bn, km_unetpp_grads(L->m));
    km_unetpp_adam_step(L->m, lr, (float)c->beta1, (float)c->beta2, (float)c->eps, (float)c->weight_decay);
    *used = total;
    return KM_OK;
}

/* One epoch's optimiser steps: the permutation and augmentation codes are
 * drawn up front on this thread, batch k+1 is assembled while k runs.
 * *tl: the size-weighted mean train loss, *seen images, *t_steps seconds. */
static km_status train_steps(trainer *T, float lr, double *tl, int *seen, double *t_steps) {
    const km_train_config *c = T->c;
    loop *L = &T->L;
    int n = T->d.tr.n, B = L->B;
    T->ep_rng = T->rng;
    for (int i = 0; i < n; i++) T->order[i] = i;
    km_rng_shuffle(&T->rng, T->order, n);
    for (int i = 0; i < n; i++) T->aug[i] = km_aug_draw(&T->rng);
    int nb = n / B + (n % B > 1 ? 1 : 0), prog = T->h->progress && T->log;
    km_progress pg;
    char label[48], extra[48];
    snprintf(label, sizeof label, "epoch %d/%d", T->epoch, c->epochs);
    if (prog) km_progress_start(&pg, T->log, label, (int64_t)nb * B > n ? n : (int64_t)nb * B, "img");
    int k0 = T->part_steps; /* > 0: resumed after a stop in this epoch */
    double lsum = T->part_lsum;
    *seen = T->part_seen;
    *t_steps = 0;
    T->part_steps = T->part_seen = 0;
    T->part_lsum = 0;
    int lo, hi, b00 = k0 * B;
    km_micro_rank_images(&T->mb, n - b00 < B ? n - b00 : B, &lo, &hi);
    prefetch_submit(&L->pf, &T->d.tr, T->order + b00 + lo, T->aug + b00 + lo, hi - lo, L->x[k0 & 1], L->y[k0 & 1]);
    for (int k = k0; k < nb; k++) {
        int b0 = k * B, bn = n - b0 < B ? n - b0 : B;
        prefetch_wait(&L->pf);
        int last = k + 1 == nb || (c->max_steps && T->steps + 1 >= c->max_steps);
        if (!last) {
            int nb0 = b0 + B, nbn = n - nb0 < B ? n - nb0 : B;
            km_micro_rank_images(&T->mb, nbn, &lo, &hi);
            prefetch_submit(&L->pf, &T->d.tr, T->order + nb0 + lo, T->aug + nb0 + lo, hi - lo, L->x[(k + 1) & 1],
                            L->y[(k + 1) & 1]);
        }
        double ts = km_now(), l = 0;
        km_dist_step_begin(T->steps + 1);
        km_status s = T->mb.sync ? step_sync(T, L->x[k & 1], L->y[k & 1], bn, lr, &l, &bn)
                      : T->mb.M  ? step_micro(T, L->x[k & 1], L->y[k & 1], bn, lr, &l, &bn)
                                 : step_whole(T, L->x[k & 1], L->y[k & 1], bn, lr, &l);
        km_dist_step_end();
        if (s) return s;
        *t_steps += km_now() - ts;
        T->steps++;
        lsum += l * bn;
        *seen += bn;
        if (isnan(T->res->first_step_loss)) T->res->first_step_loss = l;
        T->res->train_images += bn;
        if (T->h->on_step) T->h->on_step(T->h->ud, T->epoch, T->steps, l);
        if (prog) {
            snprintf(extra, sizeof extra, "loss %.4f", lsum / *seen);
            km_progress_update(&pg, *seen, extra);
        }
        km_dist_test_fault(T->steps);
        if (km_dist_stop_requested()) {
            T->stopped = 1;
            if (!last) { /* the end of an epoch stops after its checkpoint */
                T->part_steps = k + 1;
                T->part_seen = *seen;
                T->part_lsum = lsum;
                break;
            }
        }
        if (last) break;
    }
    if (prog) {
        snprintf(extra, sizeof extra, "loss %.4f", lsum / *seen);
        km_progress_end(&pg, extra);
    }
    *tl = *seen ? lsum / *seen : NAN;
    return KM_OK;
}

/* A stop request in the middle of the epoch: its first part_steps steps go
 * to last.safetensors (no log row, no validation) and the run ends. */
static km_status stop_mid_epoch(trainer *T) {
    T->epoch--; /* the epochs completed */
    km_dist_barrier();
    km_status s = T->run.dir ? save_last(T) : KM_OK;
    if (!s && T->log)
        fprintf(T->log, "stop requested (SIGTERM/SIGUSR1): checkpoint after step %d (%d of epoch %d); continue with "
                "--resume %s\n", T->steps, T->part_steps, T->epoch + 1, T->c->out ? T->c->out : "RUN");
    return s;
}

/* One epoch: steps, validation (and test), schedule and early stopping, then
 * best -> log row -> last (the resume protocol, train.h). *stop: early stop. */
static km_status train_epoch(trainer *T, int *stop) {
    const km_train_config *c = T->c;
    T->epoch++;
    double t_ep = km_now(), t_steps = 0, tl = NAN;
    double lr_ep = T->pl.lr; /* torch keeps the lr as a double; Adam gets it as float */
    int seen;
    km_status s = train_steps(T, (float)lr_ep, &tl, &seen, &t_steps);
    T->res->train_seconds += t_steps;
    if (!s && T->part_steps) return stop_mid_epoch(T);
    eval_out vo = {NAN, NAN, NAN, NAN, NAN}, to = vo;
    if (!s) s = evaluate(&T->L, &T->d.va, T->val_order, &vo);
    if (!s && T->d.te.n) s = evaluate(&T->L, &T->d.te, T->val_order, &to);
    if (s) return s;
    km_dist_bcast(&vo, sizeof vo); /* every rank computed the same; decisions follow rank 0's by construction */
    km_dist_bcast(&to, sizeof to);
    int improved = 0;
    *stop = km_early_stop_step(&T->es, vo.loss, T->epoch, &improved);
    km_plateau_step(&T->pl, vo.loss);
    T->done = *stop || T->epoch >= c->epochs || (c->max_steps && T->steps >= c->max_steps);
    double secs = km_now() - t_ep;
    km_dist_barrier(); /* files only once every rank has finished the epoch */
    if (improved && T->run.dir) s = save_best(T, &vo);
    if (!s) s = log_row(T, T->epoch, tl, &vo, &to, lr_ep, secs, t_steps > 0 ? seen / t_steps : NAN);
    if (!s && T->run.dir) s = save_last(T);
    if (s) return s;
    log_epoch(T->log, T->epoch, c->epochs, tl, &vo, &to, lr_ep, secs);
    if (*stop && T->log)
        fprintf(T->log, "early stop: no val-loss improvement for %d epochs (best epoch %d)\n", T->es.num_bad,
                T->es.best_epoch);
    km_train_result *res = T->res;
    res->last_train_loss = tl;
    res->last_val_loss = vo.loss;
    res->last_val_dice = vo.dice;
    res->last_val_iou = vo.iou;
    res->last_test_dice = to.dice;
    return KM_OK;
}

static km_status trainer_close(trainer *T, km_status s) {
    loop *L = &T->L;
    km_dist_watchdog_stop();
    if (T->pf_started) prefetch_stop(&L->pf);
    s = km_run_close(&T->run, s);
    for (int i = 0; i < 2; i++) {
        km_free(L->x[i]);
        km_free(L->y[i]);
    }
    km_free(L->logits);
    km_free(L->dlogits);
    if (L->m) km_unetpp_free(L->m);
    km_free(T->val_order);
    km_free(T->order);
    km_free(T->aug);
    km_micro_close(&T->mb);
    run_data_free(&T->d);
    return s;
}

km_status km_train_run(const km_train_config *c, int resume, const km_train_hooks *hooks, km_train_result *res) {
    static const km_train_hooks no_hooks = {0};
    memset(res, 0, sizeof *res);
    res->init_val_dice = res->last_test_dice = NAN;
    res->best_val_loss = res->first_step_loss = res->last_train_loss = NAN;
    trainer T;
    km_status s = trainer_open(&T, c, resume, hooks ? hooks : &no_hooks, res);
    if (!s) s = trainer_model(&T, resume);
    if (!s) s = trainer_sync(&T, resume);
    if (!s) s = trainer_buffers(&T, resume);
    if (!s && !resume && c->eval_init) s = eval_init_row(&T);
    while (!s && !T.done && T.epoch < c->epochs && !(c->max_steps && T.steps >= c->max_steps)) {
        int stop = 0;
        s = train_epoch(&T, &stop);
        res->stopped_early = stop;
        if (T.h->stop_after && T.epoch >= T.h->stop_after) break;
        if (!s && (T.stopped || km_dist_stop_requested())) {
            if (!T.part_steps && T.log)
                fprintf(T.log, "stop requested (SIGTERM/SIGUSR1): checkpoint after epoch %d; continue with --resume "
                        "%s\n", T.epoch, c->out ? c->out : "RUN");
            break;
        }
    }
    res->finished = T.done;
    res->epochs_done = T.epoch;
    res->steps = T.steps;
    res->best_epoch = T.es.best_epoch;
    res->best_val_loss = T.es.best;
    if (!s && T.log && T.mb.M)
        fprintf(T.log, "micro-batches: %d of %d images per step over %d process%s; gradient sum: %.2f s in MPI calls "
                "(rank 0, waiting included) of %.2f s in steps\n", T.mb.K, T.mb.M, km_dist_size(),
                km_dist_size() > 1 ? "es" : "", km_dist_comm_seconds(), res->train_seconds);
    s = trainer_close(&T, s);
    return s ? km_dist_fail(s) : s; /* a failed rank ends the job */
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
        int q = 1 << km_unetpp_encoder_depth(*m);
        if (*end || z < q || z % q)
            s = km_err(KM_EFORMAT, "%s: metadata size '%s' is not a positive multiple of %d (encoder depth %d)", path,
                       v, q, km_unetpp_encoder_depth(*m));
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
