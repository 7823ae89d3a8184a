/* demo.c - `kmseg demo`: the README's first command. A short knowledge-mining
 * run on real Kvasir-SEG images with the installed LiteMedSAM teacher, which
 * prints, as measured:
 *   1. the student's test Dice after supervised training on the few labels;
 *   2. on the unlabelled images, the Dice of the teacher's pseudo labels
 *      against their hidden ground truth next to the student's own Dice on
 *      the same images (what the teacher adds);
 *   3. the student's test Dice after mining.
 * It is `kmseg mine` (one-time schedule) with small defaults: the first 200
 * images (160 train / 20 val / 20 test), 10 % of the train split labelled,
 * 128 x 128, ResNet18 (random init: no ImageNet weights here), lr 1e-3 (20x
 * the paper's, so that ~40 supervised epochs of 2 steps get somewhere), then
 * 5 mining epochs. About 5 minutes on 2 cores (the teacher encodes 144
 * images once; the embeddings are cached for the next run). The run folder
 * goes to --out, else to a temporary folder that is removed. */
/* nftw (removing the temporary run folder) is an X/Open extension */
#define _XOPEN_SOURCE 700
#include "cmd.h"

#include "../core/args.h"
#include "../io/json.h"
#include "../mine/embcache.h"
#include "../mine/mine.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Mean test Dice of a checkpoint: `kmseg eval` in-process into <run>/<sub>. */
static km_status test_dice(const char *run, const char *weights, const char *data, const char *sub, double *dice) {
    char w[4200], sd[4200], out[4200], sum[4300];
    snprintf(w, sizeof w, "%s/%s", run, weights);
    snprintf(sd, sizeof sd, "%s/splits", run);
    snprintf(out, sizeof out, "%s/%s", run, sub);
    char *argv[] = {"eval", "--weights", w, "--data", (char *)data, "--split", "test", "--split-dir", sd, "--out",
                    out, NULL};
    fflush(stdout);
    km_status s = km_cmd_eval(11, argv);
    if (s) return s;
    snprintf(sum, sizeof sum, "%s/summary.json", out);
    km_json j;
    if ((s = km_json_load(sum, "", "", &j))) return s;
    const km_json *d = km_json_get(&j, "mean_dice");
    *dice = d && d->type == KM_JSON_NUM ? d->num : NAN;
    km_json_free(&j);
    return KM_OK;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static void demo_defaults(km_mine_config *c) {
    km_mine_config_default(c);
    km_train_config *t = &c->train;
    t->max_images = 200;
    t->labelled_fraction = 0.1;
    t->size = 128;
    t->resnet = 18;
    t->lr = 1e-3;
    t->epochs = 40;
    t->early_stop = 8;
    t->plateau_patience = 3;
    c->mine_epochs = 5;
    c->schedule = KM_MINE_ONETIME;
    c->cache_mem = 256;
}

km_status km_cmd_demo(int argc, char **argv) {
    km_mine_config c;
    demo_defaults(&c);
    km_train_config *t = &c.train;
    const char *data = "../shared/data/kvasir-seg", *out = NULL, *teacher = NULL, *cache_dir = NULL;
    int seed = 0, no_cache = 0;
    km_flag flags[] = {
        {"--data", KM_FLAG_STR, &data, "dataset folder with images/ and masks/", 0, 0},
        {"--images", KM_FLAG_INT, &t->max_images, "number of images used (80/10/10 split)", 0, 0},
        {"--labelled-fraction", KM_FLAG_FLOAT, &t->labelled_fraction, "labelled part of the train split", 0, 0},
        {"--size", KM_FLAG_INT, &t->size, "crop size, multiple of 32", 0, 0},
        KM_CMD_TEACHER_FLAG("--teacher", &teacher),
        KM_CMD_CACHE_FLAGS(&cache_dir, &no_cache),
        {"--resnet", KM_FLAG_INT, &t->resnet, "encoder depth: 18 or 34", 0, 0},
        {"--epochs", KM_FLAG_INT, &t->epochs, "maximum supervised epochs", 0, 0},
        {"--mine-epochs", KM_FLAG_INT, &c.mine_epochs, "maximum mining epochs", 0, 0},
        {"--lr", KM_FLAG_FLOAT, &t->lr, "Adam learning rate", 0, 0},
        KM_CMD_THREADS_FLAG(&t->threads),
        {"--seed", KM_FLAG_INT, &seed, "seed", 0, 0},
        {"--out", KM_FLAG_STR, &out, "keep the run folder here (as kmseg mine writes it)", 0, 0},
        {0}};
    int help = 0;
    km_status s = km_parse_flags("demo", "[--data DIR] [--images N] [--size S] [--out RUN]", flags, argc, argv, &help);
    if (s || help) return s;
    if (seed < 0) return km_err(KM_EARG, "--seed %d: expected >= 0", seed);
    if (t->max_images < 20) return km_err(KM_EARG, "--images %d: expected >= 20", t->max_images);
    char tbuf[4096], dbuf[4096], tmp[] = "/tmp/kmseg-demo-XXXXXX";
    if ((s = km_teacher_resolve(teacher, tbuf, sizeof tbuf, &teacher))) return s;
    if (!out && !(out = mkdtemp(tmp))) return km_err(KM_EIO, "cannot create a temporary run folder");
    if (!no_cache && !cache_dir) cache_dir = km_embcache_default_dir(dbuf, sizeof dbuf);
    c.cache_dir = no_cache ? NULL : (char *)cache_dir;
    c.teacher = (char *)teacher;
    c.out = (char *)out;
    t->data = (char *)data;
    t->seed = (uint64_t)seed;
    t->eval_test = 0;
    printf("kmseg demo: knowledge mining on %d Kvasir-SEG images at %dx%d, %.0f %% of the train split labelled, "
           "teacher %s\n\n", t->max_images, t->size, t->size, 100 * t->labelled_fraction, teacher);
    fflush(stdout);
    km_train_hooks hooks = {stderr, 1, 0, NULL, NULL};
    km_mine_result r;
    double t0 = km_now(), sup = NAN, fin = NAN;
    s = km_mine_run(&c, 0, &hooks, &r);
    if (!s) s = test_dice(out, "supervised/best.safetensors", data, "eval_supervised", &sup);
    if (!s) s = test_dice(out, "best.safetensors", data, "eval_mined", &fin);
    if (!s) {
        printf("\n=== kmseg demo: results as measured (%.0f s) ===\n", km_now() - t0);
        printf("1. student after supervised training on %d labelled images: test Dice %.4f\n", r.n_labelled, sup);
        printf("2. unlabelled images: %ld of %d got a box from the student and a pseudo label; on those, the "
               "teacher's pseudo labels score Dice %.4f against the hidden ground truth, the student's own prediction "
               "%.4f (teacher gain %+.4f)\n",
               r.n_unlabelled - r.no_box, r.n_unlabelled, r.last_pseudo_dice, r.last_student_unl_dice,
               r.last_pseudo_dice - r.last_student_unl_dice);
        printf("3. student after %d mining epoch(s) on labelled + pseudo-labelled images: test Dice %.4f (%+.4f)\n",
               r.epochs_done, fin, fin - sup);
        printf("(20 test images, one seed: differences of a few points are within the noise; kmseg experiments "
               "gives means over seeds)\n");
    }
    if (out == tmp) nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return s;
}
