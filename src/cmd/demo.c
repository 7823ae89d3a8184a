/* demo.c - `kmseg demo`: the README's first command. Trains the student for
 * ~20 optimiser steps on a few real images at low resolution and prints the
 * loss after every step, so one sees within ~1-2 minutes on 2 cores that the
 * whole pipeline (decoding, augmentation, forward, backward, Adam,
 * validation) works and learns.
 *
 * It is `kmseg train` (src/train/train.h) with small defaults: 16 Kvasir-SEG
 * images (12 train / 2 val / 2 test), 64x64, ResNet18, batch 8, lr 1e-3
 * (20x the paper's, so the loss moves within a few steps), 10 epochs of 2
 * steps. Nothing is written unless --out is given. */
#include "cmd.h"

#include "../core/args.h"
#include "../train/train.h"

#include <math.h>

typedef struct {
    double first, last;
    int n;
} demo_state;

static void on_step(void *ud, int epoch, int step, double loss) {
    demo_state *d = ud;
    if (d->n++ == 0) d->first = loss;
    d->last = loss;
    printf("step %3d  epoch %2d  loss %.4f\n", step, epoch, loss);
    fflush(stdout);
}

km_status km_cmd_demo(int argc, char **argv) {
    km_train_config c;
    km_train_config_default(&c);
    const char *data = "../shared/data/kvasir-seg", *out = NULL;
    int seed = 0;
    c.max_images = 16;
    c.size = 64;
    c.resnet = 18;
    c.lr = 1e-3;
    c.epochs = 10;
    c.eval_init = 1;
    km_flag flags[] = {
        {"--data", KM_FLAG_STR, &data, "dataset folder with images/ and masks/", 0, 0},
        {"--images", KM_FLAG_INT, &c.max_images, "number of images used (80/10/10 split)", 0, 0},
        {"--size", KM_FLAG_INT, &c.size, "crop size, multiple of 32", 0, 0},
        {"--resnet", KM_FLAG_INT, &c.resnet, "encoder depth: 18 or 34", 0, 0},
        {"--batch", KM_FLAG_INT, &c.batch, "batch size", 0, 0},
        {"--epochs", KM_FLAG_INT, &c.epochs, "epochs", 0, 0},
        {"--lr", KM_FLAG_FLOAT, &c.lr, "Adam learning rate", 0, 0},
        {"--seed", KM_FLAG_INT, &seed, "seed", 0, 0},
        {"--threads", KM_FLAG_INT, &c.threads, "compute threads", 0, 0},
        {"--out", KM_FLAG_STR, &out, "also write a run folder here (as kmseg train)", 0, 0},
        {0}};
    int help = 0;
    km_status s = km_parse_flags("demo", "[--data DIR] [--images N] [--size S] [--epochs E]", flags, argc, argv, &help);
    if (s || help) return s;
    if (seed < 0) return km_err(KM_EARG, "--seed %d: expected >= 0", seed);
    if (c.max_images < 4) return km_err(KM_EARG, "--images %d: expected >= 4", c.max_images);
    c.data = (char *)data;
    c.out = (char *)out;
    c.seed = (uint64_t)seed;
    demo_state st = {NAN, NAN, 0};
    km_train_hooks hooks = {stdout, 0, 0, on_step, &st};
    km_train_result res;
    double t0 = km_now();
    s = km_train_run(&c, 0, &hooks, &res);
    if (s) return s;
    printf("\n%d steps in %.1f s (%.2f train img/s): loss %.4f -> %.4f, val Dice %.4f (untrained) -> %.4f\n", res.steps,
           km_now() - t0, res.train_seconds > 0 ? res.train_images / res.train_seconds : 0.0, st.first, st.last,
           res.init_val_dice, res.last_val_dice);
    return KM_OK;
}
