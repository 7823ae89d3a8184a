/* train.h - supervised training of the student (method.md sections 2, 3):
 * the loop as a library function taking a config struct.
 *
 * One run:
 *   1. scan <data> (any scan error - unreadable folder, image without mask,
 *      unsupported file - fails the run before anything is trained);
 *   2. splits: user lists from split_dir (train.txt [val.txt test.txt]) or a
 *      seeded random 80/10/10 split (splits.h) over the first max_images ids
 *      (0 = all); labelled subset = nested labelled_fraction of train;
 *   3. decode + preprocess every labelled-train and val image once into the
 *      uint8 cache (dataset.h; any problem fails with the full list);
 *   4. epochs: one permutation of the labelled train set and one augmentation
 *      code per sample are drawn on the main thread from the run's km_rng
 *      (seeded from `seed`), then batches of `batch` in that order; a trailing
 *      batch of one image is dropped (train-mode BatchNorm statistics of a
 *      single image are degenerate; torch raises on a 1x1 map). While batch k
 *      runs forward/backward on the main thread, a second thread (pthread)
 *      assembles batch k+1 (augmentation + normalisation, km_batch_fill, a
 *      pure function), so results never depend on timing.
 *      Step: zero_grad, forward(train), L = a*BCE + (1-a)*Dice over the batch
 *      (km_seg_loss), backward, Adam(lr rounded to float, betas, eps, wd).
 *      Train loss of an epoch = sum(batch loss * batch size) / images seen.
 *      With micro_batch M (microbatch.h): the batch is B/M micro-batches,
 *      each its own forward/backward (BatchNorm statistics of the
 *      micro-batch), gradients summed in a fixed tree order, running
 *      statistics applied in micro-batch order; under `mpirun -np N` the
 *      ranks share them (src/core/dist.h) with the same result for every N.
 *      With sync_bn, BatchNorm uses the whole batch's statistics instead
 *      (one update of the running statistics per step; the loss is still
 *      per micro-batch: Dice pooled over the micro-batch).
 *   5. validation in eval mode (BatchNorm running statistics), batches of
 *      `batch` in val-list order: val loss = the same size-weighted mean of
 *      the batch losses; Dice/IoU per image at logit > 0 (metrics.h), mean and
 *      global. ReduceLROnPlateau and early stopping step on the val loss
 *      (sched.h). With eval_test the test split is scored the same way each
 *      epoch (reported only, never used for decisions).
 *   6. run folder (out, NULL = no files): config.json (every resolved
 *      setting, version, GEMM backend), splits/{train,val,test,labelled,
 *      unlabelled}.txt, metrics.csv + metrics.jsonl (one row per epoch),
 *      best.safetensors (weights of the best val-loss epoch) and
 *      last.safetensors (weights + "adam.*" optimiser tensors + metadata
 *      "train.*": epoch, rng state, scheduler, early stopping, step counter),
 *      every file written atomically. Per epoch the order is best -> log rows
 *      -> last, so a run killed anywhere resumes from last.safetensors after
 *      dropping log rows beyond its epoch, and recomputes the rest exactly.
 *      A stop request (SIGTERM/SIGUSR1, see km_train_run) in mid-epoch writes
 *      last.safetensors with "train.partial_steps", "train.partial_seen" and
 *      "train.partial_loss_sum" and the RNG as the epoch began; a resume
 *      redraws the epoch's order and continues after those steps. Under
 *      mpirun only rank 0 writes (after a barrier); every rank reads.
 *
 * Determinism: same config (seed, threads included) -> bit-identical
 * weights, logs aside from the seconds column. --resume continues from
 * last.safetensors with every piece of state restored (weights, BatchNorm
 * running statistics and counters, Adam moments and step, lr, plateau and
 * early-stop counters, RNG), so an interrupted + resumed run ends with the
 * same bytes as an uninterrupted one. */
#ifndef KM_TRAIN_H
#define KM_TRAIN_H

#include "../core/km.h"
#include "../core/rng.h"
#include "../io/settings.h"
#include "sched.h"
#include "splits.h"

typedef struct {
    /* data */
    char *data;            /* dataset folder: images/ + masks/, or nnU-Net raw (dataset.h) */
    char *label;           /* --label: mask value or dataset.json label name (NULL: default) */
    char *split_dir;       /* user lists: a folder, or an nnU-Net splits_final.json (NULL:
                              seeded random split) */
    int fold;              /* fold of a splits_final.json */
    double val_fraction, test_fraction, labelled_fraction;
    int max_images;        /* random split over the first N ids only (0 = all) */
    int size;              /* crop size, multiple of 2^encoder_depth */
    /* model */
    int resnet;            /* 18 or 34 */
    char *encoder_weights; /* torchvision ResNet checkpoint (NULL: random init) */
    char *init_weights;    /* full student checkpoint to start from (NULL: none) */
    char *decoder_channels; /* smp decoder_channels "a,b,c,d,e" (NULL: 256,128,64,32,16; added later,
                               written only when given) */
    int encoder_depth;      /* smp encoder_depth, 3..5 (5: the default; added later, written only when
                               not 5) */
    /* optimisation */
    int batch, epochs;
    double lr, beta1, beta2, eps, weight_decay;
    double plateau_factor, min_lr;
    int plateau_patience, early_stop;
    double bce_weight;     /* a in a*BCE + (1-a)*Dice */
    int max_steps;         /* stop after this many optimiser steps (0 = none) */
    /* run */
    uint64_t seed;
    int threads;
    char *out;             /* run folder (NULL: write nothing) */
    int eval_test;         /* score the test split every epoch */
    int eval_init;         /* log the untrained model's validation as epoch 0 */
    /* data parallel (src/core/dist.h; added later: absent from older config.json = 0) */
    int micro_batch;       /* M: each batch is B/M micro-batches of M, gradients summed in a
                              fixed tree order, shared by the ranks of `mpirun` (0: off) */
    int sync_bn;           /* with micro_batch: BatchNorm statistics of the whole batch
                              (microbatch.h, --sync-bn; 0: per micro-batch) */
    double step_timeout;   /* seconds one step (its collectives) may take before the job is
                              ended (0: no watchdog; not saved) */
} km_train_config;

/* Not part of the saved configuration: how this process runs. */
typedef struct {
    FILE *log;       /* epoch lines and progress (NULL: silent) */
    int progress;    /* 1: progress bar / lines on `log` during epochs */
    int stop_after;  /* return after this many epochs in total, as if killed (0: off) */
    /* called after each optimiser step (may be NULL) */
    void (*on_step)(void *ud, int epoch, int step, double loss);
    void *ud;
} km_train_hooks;

typedef struct {
    int epochs_done, steps;
    int best_epoch;           /* epoch of the best val loss (0 = before training) */
    double best_val_loss;
    double first_step_loss, last_train_loss;
    double init_val_dice;     /* NaN unless eval_init */
    double last_val_loss, last_val_dice, last_val_iou;
    double last_test_dice;    /* NaN unless eval_test */
    double train_seconds;     /* time in optimiser steps only */
    int64_t train_images;     /* images through forward/backward */
    int stopped_early, finished;
} km_train_result;

/* The table of the settings above (settings.h): defaults, flags and --help
 * text, range checks, config.json keys, experiments pass-through. mine's
 * configuration embeds a km_train_config and offers most of these flags. */
extern const km_settings km_train_settings;

/* method.md defaults (Adam 5e-5, batch 8, plateau 3/0.5/1e-7, early stop 10,
 * 100 epochs, a = 0.5, ResNet34, 224, 80/10/10, seed 0, 2 threads). */
void km_train_config_default(km_train_config *c);
/* Frees the strings of a config read by km_train_config_load. */
void km_train_config_free(km_train_config *c);
/* Writes config.json: kmseg_version, gemm_backend, then every setting in
 * table order (the format every run since the first has written; label and
 * fold, last, since --label/--fold: files without them load with the
 * defaults; micro_batch and sync_bn after them, only when not 0; decoder_channels,
 * only when given; encoder_depth, only when not 5). */
km_status km_train_config_save(const km_train_config *c, const char *path);
/* Reads <dir>/config.json (written by a run) into c (strings owned). */
km_status km_train_config_load(const char *dir, km_train_config *c);
/* Reads the settings of a parsed config object (j: a km_json object; the keys
 * as config.json writes them) into c, whose strings must be owned or NULL;
 * keys listed in `optional` (NULL-terminated, may be NULL) may be absent and
 * keep c's value. Errors name `path` and the key. Used for mine_config.json. */
struct km_json;
km_status km_train_config_from_json(const struct km_json *j, const char *path, const char *const *optional,
                                    km_train_config *c);
/* KM_EARG naming the flag when a setting is out of range (the table's ranges,
 * then --data, --size, --resnet and the split fractions together). */
km_status km_train_config_check(const km_train_config *c);

/* Trains. resume = 1 continues the run in c->out from last.safetensors
 * (c must be the run's own config, see km_train_config_load). After
 * km_dist_signals_install (dist.h; `kmseg train` does, callers that would
 * take an unfinished run for a finished one do not), SIGTERM / SIGUSR1 stop
 * the run after the current step, every rank of mpirun after the same step,
 * with a resumable checkpoint (also in mid-epoch); it returns KM_OK with
 * res->finished = 0 and km_dist_stop_pending() true. */
km_status km_train_run(const km_train_config *c, int resume, const km_train_hooks *hooks,
                       km_train_result *res);

/* Steps 1-2 of a run (shared by km_train_run and the mining run, so that
 * both phases see the same images): scan c->data (any problem fails), the
 * split (c->split_dir lists or the seeded random split) and its nested
 * labelled subset, written to <out>/splits/ when out != NULL. resume = 1
 * reads train/val/test and labelled.txt back from <out>/splits/ instead
 * (unl then empty). */
typedef struct {
    km_dataset_index idx;
    km_split sp;
    int *lab, *unl; /* labelled / unlabelled parts of sp.train (indices into idx) */
    int n_lab, n_unl;
} km_train_split;
km_status km_train_split_make(const km_train_config *c, int resume, const char *out, km_train_split *t);
void km_train_split_free(km_train_split *t);

/* Resumable checkpoints (train's and mine's last.safetensors), written
 * atomically: weights and BatchNorm state, the "adam.*" optimiser tensors,
 * metadata format / kmseg_version / arch / encoder_name, "<prefix>.epoch",
 * size, seed, the caller's `extra` metadata (may be NULL), "<prefix>.rng",
 * "<prefix>.plateau.*" and "<prefix>.early_stop.*". */
struct km_unetpp;
km_status km_train_checkpoint_save(const char *path, const struct km_unetpp *m, const km_train_config *c,
                                   const char *prefix, int epoch, const km_rng *rng, const km_plateau *pl,
                                   const km_early_stop *es, const km_tdict *extra);
/* Reads one back: the model with its optimiser state (*m, NULL on error),
 * epoch, RNG, scheduler and early stopping; with meta != NULL the file's
 * metadata is added to *meta (extras: km_meta_get_int, runfolder.h). Errors name the
 * file. */
km_status km_train_checkpoint_load(const char *path, const char *prefix, struct km_unetpp **m, int *epoch,
                                   km_rng *rng, km_plateau *pl, km_early_stop *es, km_tdict *meta);

/* Loads a student checkpoint (any format km_unetpp_load reads) and the crop
 * size it was trained at (metadata "size" written by kmseg train; 0 when
 * absent, e.g. an smp .pth). Used by eval and predict. */
km_status km_train_load_student(const char *path, struct km_unetpp **m, int *size);

#endif
