/* train.c - `kmseg train`: supervised training of the student (method.md 3).
 *
 *   kmseg train --data DIR --out RUN [knobs]     a new run into RUN/
 *   kmseg train --resume RUN [--threads N]       continue a killed run
 *
 * Every knob is a flag whose default (the paper's protocol, method.md) is
 * shown by --help; the loop and the run folder are described in
 * src/train/train.h. With --resume the settings come from RUN/config.json;
 * passing any other setting with it is an error (it would silently change
 * the run), except --threads (results are bit-identical only for the
 * thread count of the original run), --stop-after and --quiet. */
#include "cmd.h"

#include "../core/args.h"
#include "../train/train.h"

#include <string.h>

km_status km_cmd_train(int argc, char **argv) {
    km_train_config c;
    km_train_config_default(&c);
    const char *data = NULL, *out = NULL, *resume = NULL, *split_dir = NULL, *enc = NULL, *init = NULL;
    const char *label = NULL, *split_file = NULL;
    int seed = 0, stop_after = 0, quiet = 0;
    km_flag flags[] = {
        {"--data", KM_FLAG_STR, &data, "dataset folder: images/ + masks/, or an nnU-Net raw dataset (dataset.json)", 0, 0},
        KM_DATA_FLAGS(&label, &split_file, &c.fold),
        {"--out", KM_FLAG_STR, &out, "run folder (config, splits, metrics, best/last checkpoints)", 0, 0},
        {"--resume", KM_FLAG_STR, &resume, "continue the run in this folder from last.safetensors", 0, 0},
        {"--split-dir", KM_FLAG_STR, &split_dir, "folder with train.txt [val.txt test.txt] (default: seeded random split)", 0, 0},
        {"--val-fraction", KM_FLAG_FLOAT, &c.val_fraction, "random split: validation fraction", 0, 0},
        {"--test-fraction", KM_FLAG_FLOAT, &c.test_fraction, "random split: test fraction", 0, 0},
        {"--labelled-fraction", KM_FLAG_FLOAT, &c.labelled_fraction, "nested labelled fraction of the train split", 0, 0},
        {"--max-images", KM_FLAG_INT, &c.max_images, "random split over the first N ids only (0 = all)", 0, 0},
        {"--size", KM_FLAG_INT, &c.size, "crop size (shortest side resized to it, centre crop), multiple of 32", 0, 0},
        {"--resnet", KM_FLAG_INT, &c.resnet, "encoder depth: 34 or 18", 0, 0},
        {"--encoder-weights", KM_FLAG_STR, &enc, "torchvision ResNet checkpoint for the encoder (default: random init)", 0, 0},
        {"--init", KM_FLAG_STR, &init, "full student checkpoint to start from (fine-tuning)", 0, 0},
        {"--batch", KM_FLAG_INT, &c.batch, "batch size", 0, 0},
        {"--epochs", KM_FLAG_INT, &c.epochs, "maximum number of epochs", 0, 0},
        {"--lr", KM_FLAG_FLOAT, &c.lr, "Adam learning rate", 0, 0},
        {"--beta1", KM_FLAG_FLOAT, &c.beta1, "Adam beta1", 0, 0},
        {"--beta2", KM_FLAG_FLOAT, &c.beta2, "Adam beta2", 0, 0},
        {"--eps", KM_FLAG_FLOAT, &c.eps, "Adam eps", 0, 0},
        {"--weight-decay", KM_FLAG_FLOAT, &c.weight_decay, "Adam weight decay (L2, torch Adam)", 0, 0},
        {"--plateau-patience", KM_FLAG_INT, &c.plateau_patience, "ReduceLROnPlateau patience (epochs)", 0, 0},
        {"--plateau-factor", KM_FLAG_FLOAT, &c.plateau_factor, "ReduceLROnPlateau factor", 0, 0},
        {"--min-lr", KM_FLAG_FLOAT, &c.min_lr, "ReduceLROnPlateau minimum lr", 0, 0},
        {"--early-stop", KM_FLAG_INT, &c.early_stop, "stop after this many epochs without val-loss improvement", 0, 0},
        {"--bce-weight", KM_FLAG_FLOAT, &c.bce_weight, "a in loss = a*BCE + (1-a)*Dice", 0, 0},
        {"--max-steps", KM_FLAG_INT, &c.max_steps, "stop after this many optimiser steps (0 = no limit; benchmarks)", 0, 0},
        {"--seed", KM_FLAG_INT, &seed, "seed of the split, weight init, shuffling and augmentation", 0, 0},
        {"--threads", KM_FLAG_INT, &c.threads, "compute threads (results are bit-identical for a given count)", 0, 0},
        {"--eval-test", KM_FLAG_BOOL, &c.eval_test, "also score the test split every epoch (reported only)", 0, 0},
        {"--eval-init", KM_FLAG_BOOL, &c.eval_init, "log the untrained model's validation as epoch 0", 0, 0},
        {"--stop-after", KM_FLAG_INT, &stop_after, "exit after this many epochs in total, resumable (0 = off)", 0, 0},
        {"--quiet", KM_FLAG_BOOL, &quiet, "no progress or epoch lines", 0, 0},
        {0}};
    int help = 0;
    km_status s = km_parse_flags("train", "--data DIR --out RUN [options] | --resume RUN", flags, argc, argv, &help);
    if (s || help) return s;
    km_train_hooks hooks = {quiet ? NULL : stderr, !quiet, stop_after, NULL, NULL};
    if (stop_after < 0) return km_err(KM_EARG, "--stop-after %d: expected >= 0", stop_after);
    km_train_result res;
    if (resume) {
        static const char *const allowed[] = {"--threads", "--stop-after", "--quiet", NULL};
        int threads_seen;
        s = km_flags_resume_only(flags, allowed, resume, "config.json", &threads_seen);
        if (s) return s;
        km_train_config rc;
        s = km_train_config_load(resume, &rc);
        if (s) return s;
        km_resume_threads(&rc.threads, c.threads, threads_seen, hooks.log != NULL);
        km_free(rc.out);
        rc.out = km_strdup(resume); /* the folder may have moved */
        s = km_train_run(&rc, 1, &hooks, &res);
        km_train_config_free(&rc);
    } else {
        if (!data) return km_err(KM_EARG, "missing required flag --data (or --resume RUN; see kmseg train --help)");
        if (!out) return km_err(KM_EARG, "missing required flag --out (the run folder)");
        if (seed < 0) return km_err(KM_EARG, "--seed %d: expected >= 0", seed);
        if ((s = km_split_choose(&split_dir, split_file, c.fold))) return s;
        c.data = (char *)data;
        c.label = (char *)label;
        c.out = (char *)out;
        c.split_dir = (char *)split_dir;
        c.encoder_weights = (char *)enc;
        c.init_weights = (char *)init;
        c.seed = (uint64_t)seed;
        s = km_train_run(&c, 0, &hooks, &res);
    }
    if (s) return s;
    if (!quiet) {
        fprintf(stderr, "%s after epoch %d: best val loss %.4f at epoch %d; %d steps, %.2f train img/s\n",
                res.finished ? "finished" : "stopped", res.epochs_done, res.best_val_loss, res.best_epoch,
                res.steps, res.train_seconds > 0 ? res.train_images / res.train_seconds : 0.0);
    }
    return KM_OK;
}
