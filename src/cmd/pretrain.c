/* pretrain.c - `kmseg pretrain`: SimCLR self-supervised pretraining of the
 * student's ResNet encoder (issue 6, method.md 6; the method and the run
 * folder are described in src/train/simclr.h).
 *
 *   kmseg pretrain --data DIR --out RUN [knobs]
 *   kmseg pretrain --resume RUN [--threads N]     continue a killed run
 *   kmseg train --data DIR --out RUN2 --encoder-weights RUN/encoder.safetensors
 *
 * With --resume the settings come from RUN/config.json; passing any other
 * setting with it is an error (it would silently change the run), except
 * --threads (results are bit-identical only for the thread count of the
 * original run), --stop-after and --quiet, as for `kmseg train --resume`.
 *
 * Use the same --seed and --max-images as the later `kmseg train` runs: the
 * pretraining images are the train split of that seeded 80/10/10 split, so
 * the supervised run's val/test images are never seen. */
#include "cmd.h"

#include "../core/args.h"
#include "../train/simclr.h"

#include <math.h>
#include <string.h>

km_status km_cmd_pretrain(int argc, char **argv) {
    km_simclr_config c;
    km_simclr_config_default(&c);
    const char *data = NULL, *out = NULL, *resume = NULL, *label = NULL;
    int seed = 0, quiet = 0, stop_after = 0;
    double scale_min = c.aug.scale_min;
    km_flag flags[] = {
        {"--data", KM_FLAG_STR, &data, "dataset folder: images/ + masks/ or nnU-Net raw (train split used, masks ignored)", 0, 0},
        {"--label", KM_FLAG_STR, &label, "accepted as by train; no effect (pretraining reads no masks)", 0, 0},
        {"--out", KM_FLAG_STR, &out, "run folder (encoder.safetensors, projection_head.safetensors, metrics.csv)", 0, 0},
        {"--resume", KM_FLAG_STR, &resume, "continue the run in this folder from last.safetensors", 0, 0},
        {"--epochs", KM_FLAG_INT, &c.epochs, "number of epochs", 0, 0},
        {"--batch", KM_FLAG_INT, &c.batch, "images per step (2 views each)", 0, 0},
        {"--lr", KM_FLAG_FLOAT, &c.lr, "Adam learning rate (constant)", 0, 0},
        {"--weight-decay", KM_FLAG_FLOAT, &c.weight_decay, "Adam weight decay (L2, torch Adam)", 0, 0},
        {"--temperature", KM_FLAG_FLOAT, &c.temperature, "NT-Xent temperature", 0, 0},
        {"--crop-scale-min", KM_FLAG_FLOAT, &scale_min, "random resized crop: smallest area fraction", 0, 0},
        {"--size", KM_FLAG_INT, &c.size, "crop size (shortest side resized to it, centre crop), multiple of 32", 0, 0},
        {"--resnet", KM_FLAG_INT, &c.resnet, "encoder depth: 34 or 18", 0, 0},
        {"--seed", KM_FLAG_INT, &seed, "seed of the split (same as kmseg train's), init, shuffling and views", 0, 0},
        {"--threads", KM_FLAG_INT, &c.threads, "compute threads (results are bit-identical for a given count)", 0, 0},
        {"--max-images", KM_FLAG_INT, &c.max_images, "random split over the first N ids only (0 = all)", 0, 0},
        {"--max-steps", KM_FLAG_INT, &c.max_steps, "stop after this many optimiser steps (0 = no limit)", 0, 0},
        {"--stop-after", KM_FLAG_INT, &stop_after, "exit after this many epochs in total, resumable (0 = off)", 0, 0},
        {"--quiet", KM_FLAG_BOOL, &quiet, "no progress or summary lines", 0, 0},
        {0}};
    int help = 0;
    km_status s = km_parse_flags("pretrain", "--data DIR --out RUN [options] | --resume RUN", flags, argc, argv, &help);
    if (s || help) return s;
    if (stop_after < 0) return km_err(KM_EARG, "--stop-after %d: expected >= 0", stop_after);
    km_simclr_result r;
    if (resume) {
        static const char *const allowed[] = {"--threads", "--stop-after", "--quiet", NULL};
        int threads_seen;
        s = km_flags_resume_only(flags, allowed, resume, "config.json", &threads_seen);
        if (s) return s;
        km_simclr_config rc;
        s = km_simclr_config_load(resume, &rc);
        if (s) return s;
        km_resume_threads(&rc.threads, c.threads, threads_seen, !quiet);
        rc.out = resume; /* the folder may have moved */
        rc.resume = 1;
        rc.stop_after = stop_after;
        s = km_simclr_run(&rc, quiet ? NULL : stderr, &r);
        km_simclr_config_free(&rc);
    } else {
        if (!data) return km_err(KM_EARG, "missing required flag --data (or --resume RUN; see kmseg pretrain --help)");
        if (seed < 0) return km_err(KM_EARG, "--seed %d: expected >= 0", seed);
        if (!(scale_min > 0 && scale_min <= 1))
            return km_err(KM_EARG, "--crop-scale-min %g: expected in (0, 1]", scale_min);
        c.data = data;
        c.out = out;
        c.seed = (uint64_t)seed;
        c.aug.scale_min = (float)scale_min;
        c.stop_after = stop_after;
        s = km_simclr_run(&c, quiet ? NULL : stderr, &r);
    }
    if (s) return s;
    if (!quiet && !isnan(r.last_epoch_loss)) /* NaN: resumed, nothing left to train */
        fprintf(stderr, "%s epoch %d: loss %.4f (%s %.4f); %d steps, %.2f img/s\n",
                r.finished ? "finished after" : "at", r.epochs_done, r.last_epoch_loss,
                r.resumed_epoch ? "first epoch after resuming" : "first epoch", r.first_epoch_loss, r.steps,
                r.seconds > 0 ? r.images / r.seconds : 0.0);
    if (!quiet && !r.finished)
        fprintf(stderr, "stopped after epoch %d as asked (--stop-after): continue with --resume %s\n", r.epochs_done,
                resume ? resume : out);
    return KM_OK;
}
