/* test_train.c - the training loop and the train / eval / predict commands on
 * real Kvasir-SEG images at low resolution (ResNet18): learning, exact
 * resume, bit-identical reruns, eval files against a recomputation, predict
 * at original size, and each bad input's error through the CLI. */
#include "cli.h"
#include "test.h"
#include "../src/eval/metrics.h"
#include "../src/io/image.h"
#include "../src/io/safetensors.h"
#include "../src/models/unetpp.h"
#include "../src/train/dataset.h"
#include "../src/train/splits.h"
#include "../src/train/train.h"

#include <stdlib.h>

static int file_eq(const char *a, const char *b) {
    uint8_t *da, *db;
    size_t na, nb;
    if (km_read_file(a, (size_t)1 << 30, &da, &nb) != KM_OK) return 0;
    if (km_read_file(b, (size_t)1 << 30, &db, &na) != KM_OK) {
        km_free(da);
        return 0;
    }
    int eq = na == nb && !memcmp(da, db, na);
    km_free(da);
    km_free(db);
    return eq;
}

static int count_lines(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0, ch;
    while ((ch = fgetc(f)) != EOF) n += ch == '\n';
    fclose(f);
    return n;
}

/* The learning run, trained once and shared by the eval and predict tests:
 * 16 images (12 train / 4 val), 32x32, batch 4, lr 1e-3, 6 epochs = 18
 * steps. Few steps at larger sizes do not work reliably: after 6 steps the
 * BatchNorm running statistics (momentum 0.1) are still half their initial
 * values, so the eval-mode network used for validation is far from the
 * trained one and often predicts all background. */
#define LEARN_S 32
#define LEARN_EPOCHS 6
static km_train_result g_learn;
static const char *learn_run(void) {
    static int done;
    const char *dir = km_test_sub("learn");
    if (done) return dir;
    done = 1;
    km_train_config c;
    km_train_config_default(&c);
    c.data = (char *)km_test_path("data/kvasir-seg");
    c.out = (char *)dir;
    c.max_images = 16;
    c.val_fraction = 0.25;
    c.test_fraction = 0;
    c.size = LEARN_S;
    c.batch = 4;
    c.resnet = 18;
    c.lr = 1e-3;
    c.epochs = LEARN_EPOCHS;
    c.eval_init = 1;
    c.seed = 3;
    double t0 = km_now();
    CHECK_OK(km_train_run(&c, 0, NULL, &g_learn));
    printf("    learn run: %d steps, %.1f s, first step loss %.4f, epoch-%d train loss %.4f, val Dice %.4f -> %.4f\n",
           g_learn.steps, km_now() - t0, g_learn.first_step_loss, g_learn.epochs_done, g_learn.last_train_loss,
           g_learn.init_val_dice, g_learn.last_val_dice);
    return dir;
}

KM_TEST(train_loss_falls_and_val_dice_rises) {
    const char *dir = learn_run();
    CHECK(g_learn.finished && g_learn.epochs_done == LEARN_EPOCHS && g_learn.steps == 3 * LEARN_EPOCHS);
    /* per-epoch rows: the untrained model (epoch 0) + the epochs, header */
    char p[1100];
    snprintf(p, sizeof p, "%s/metrics.csv", dir);
    CHECK(count_lines(p) == LEARN_EPOCHS + 2);
    FILE *f = fopen(p, "r");
    double tl[LEARN_EPOCHS + 1] = {0}, vd[LEARN_EPOCHS + 1] = {0}, best = 0;
    char line[1024];
    CHECK(f && fgets(line, sizeof line, f));
    for (int e = 0; f && e <= LEARN_EPOCHS && fgets(line, sizeof line, f); e++) {
        int ep;
        char tls[32];
        CHECK(sscanf(line, "%d,%31[^,],%*[^,],%lf", &ep, tls, &vd[e]) == 3 && ep == e);
        tl[e] = strtod(tls, NULL);
        if (e && vd[e] > best) best = vd[e];
        printf("    epoch %d: train loss %.4f, val Dice %.4f\n", e, tl[e], vd[e]);
    }
    if (f) fclose(f);
    /* the loss falls (epoch-to-epoch noise allowed, not over the run) and
     * the validation Dice rises clearly above the untrained model's */
    CHECK(tl[LEARN_EPOCHS] < tl[1] - 0.05);
    CHECK(tl[LEARN_EPOCHS - 1] < tl[1] && tl[LEARN_EPOCHS - 2] < tl[1]);
    CHECK(best > vd[0] + 0.15);
    CHECK_NEAR(g_learn.last_val_dice, vd[LEARN_EPOCHS], 1e-8);
    CHECK_NEAR(g_learn.init_val_dice, vd[0], 1e-8);
    /* run folder contents */
    const char *files[] = {"config.json", "metrics.jsonl", "best.safetensors", "last.safetensors",
                           "splits/train.txt", "splits/val.txt", "splits/labelled.txt"};
    for (int i = 0; i < 7; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        CHECK_MSG(count_lines(p) >= 0, "missing %s", p);
    }
    snprintf(p, sizeof p, "%s/metrics.jsonl", dir);
    CHECK(count_lines(p) == LEARN_EPOCHS + 1);
    snprintf(p, sizeof p, "%s/splits/val.txt", dir);
    CHECK(count_lines(p) == 4);
    snprintf(p, sizeof p, "%s/splits/test.txt", dir); /* empty split: no file */
    CHECK(count_lines(p) == -1);
    km_train_config rc;
    CHECK_OK(km_train_config_load(dir, &rc));
    CHECK(rc.size == LEARN_S && rc.resnet == 18 && rc.lr == 1e-3 && rc.seed == 3 && rc.max_images == 16 &&
          rc.batch == 4 && rc.val_fraction == 0.25 && rc.plateau_patience == 3 && rc.early_stop == 10 && rc.min_lr == 1e-7);
    km_train_config_free(&rc);
    /* the best checkpoint loads and carries its training size */
    km_unetpp *m;
    int size;
    snprintf(p, sizeof p, "%s/best.safetensors", dir);
    CHECK_OK(km_train_load_student(p, &m, &size));
    CHECK(size == LEARN_S);
    if (m) km_unetpp_free(m);
}

static void small_config(km_train_config *c, const char *out) {
    km_train_config_default(c);
    c->data = (char *)km_test_path("data/kvasir-seg");
    c->out = (char *)out;
    c->max_images = 10; /* 8 train / 1 val / 1 test */
    c->size = 32;
    c->resnet = 18;
    c->batch = 4;
    c->lr = 1e-3;
    c->epochs = 3;
    c->plateau_patience = 0; /* any non-improving epoch halves the lr */
    c->seed = 7;
}

KM_TEST(train_resume_and_rerun_are_bit_identical) {
    km_train_config c;
    km_train_result r;
    const char *a = km_test_sub("full"), *b = km_test_sub("killed"), *c2 = km_test_sub("rerun");
    small_config(&c, a);
    CHECK_OK(km_train_run(&c, 0, NULL, &r));
    CHECK(r.epochs_done == 3 && r.steps == 6);
    small_config(&c, b);
    km_train_hooks h = {0};
    h.stop_after = 2;
    CHECK_OK(km_train_run(&c, 0, &h, &r));
    CHECK(r.epochs_done == 2 && !r.finished);
    char pa[1100], pb[1100], pc[1100];
    /* rerun: the same two epochs again, compared with the killed run's
     * epoch-2 checkpoint byte for byte */
    small_config(&c, c2);
    CHECK_OK(km_train_run(&c, 0, &h, &r));
    snprintf(pb, sizeof pb, "%s/last.safetensors", b);
    snprintf(pc, sizeof pc, "%s/last.safetensors", c2);
    CHECK_MSG(file_eq(pb, pc), "rerun with the same seed and threads differs");
    snprintf(pb, sizeof pb, "%s/metrics.csv", b);
    CHECK(count_lines(pb) == 3);
    /* a log row written after the checkpoint (killed before last.safetensors
     * was replaced) must be dropped by the resume */
    FILE *f = fopen(pb, "a");
    if (f) {
        fputs("3,9,9,9,9,9,9,9,9,9,9,9\n", f);
        fclose(f);
    }
    km_train_config rc;
    CHECK_OK(km_train_config_load(b, &rc));
    CHECK_OK(km_train_run(&rc, 1, NULL, &r));
    km_train_config_free(&rc);
    CHECK(r.epochs_done == 3 && r.finished);
    CHECK(count_lines(pb) == 4);
    const char *names[] = {"last.safetensors", "best.safetensors"};
    for (int i = 0; i < 2; i++) {
        snprintf(pa, sizeof pa, "%s/%s", a, names[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, names[i]);
        CHECK_MSG(file_eq(pa, pb), "%s: resumed run differs from the uninterrupted one", names[i]);
    }
    /* the resumable state is all in last.safetensors */
    km_tdict d;
    km_tdict_init(&d);
    snprintf(pa, sizeof pa, "%s/last.safetensors", a);
    CHECK_OK(km_safetensors_load(pa, &d));
    const char *lr = km_tdict_get_meta(&d, "train.plateau.lr");
    printf("    final lr %s, adam.step present %d\n", lr ? lr : "?", km_tdict_find(&d, "adam.step") != NULL);
    CHECK(km_tdict_find(&d, "adam.exp_avg") && km_tdict_find(&d, "encoder.bn1.running_mean"));
    km_tdict_free(&d);
    /* a different seed gives different weights (the comparison can fail) */
    small_config(&c, km_test_sub("seed8"));
    c.seed = 8;
    c.epochs = 1;
    CHECK_OK(km_train_run(&c, 0, NULL, &r));
    snprintf(pc, sizeof pc, "%s/seed8/last.safetensors", km_test_tmpdir());
    CHECK(!file_eq(pa, pc));
}

/* Parses per_image.csv rows "id,dice,iou,..." */
static int read_csv_dice(const char *path, char ids[][64], double *dice, int max) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[1024];
    int n = 0;
    if (!fgets(line, sizeof line, f)) n = -1;
    while (n >= 0 && n < max && fgets(line, sizeof line, f))
        if (sscanf(line, "%63[^,],%lf", ids[n], &dice[n]) == 2) n++;
    fclose(f);
    return n;
}

KM_TEST(train_eval_cli_matches_recomputed_metrics) {
    const char *run = learn_run();
    const char *out = km_test_sub("eval");
    int rc = km_test_sh("'%s' eval --weights '%s/best.safetensors' --data '%s' --split val --split-dir '%s/splits' "
                        "--out '%s' > /dev/null 2>&1",
                        km_test_bin(), run, km_test_path("data/kvasir-seg"), run, out);
    CHECK(rc == 0);
    char p[1100];
    snprintf(p, sizeof p, "%s/per_image.csv", out);
    char ids[8][64];
    double dice[8];
    int n = read_csv_dice(p, ids, dice, 8);
    CHECK(n == 4);
    if (n != 4) return;
    /* recompute with the library: the val images, eval mode, logit > 0 */
    km_dataset_index idx;
    km_split sp;
    km_dataset ds;
    CHECK_OK(km_dataset_scan(km_test_path("data/kvasir-seg"), NULL, &idx, NULL));
    snprintf(p, sizeof p, "%s/splits", run);
    CHECK_OK(km_split_from_dir(&idx, p, &sp, NULL));
    CHECK_OK(km_dataset_load(&idx, sp.val, sp.n_val, LEARN_S, 1, &ds, NULL));
    km_unetpp *m;
    int size;
    snprintf(p, sizeof p, "%s/best.safetensors", run);
    CHECK_OK(km_train_load_student(p, &m, &size));
    const size_t P = LEARN_S * LEARN_S;
    float *x = km_malloc(sizeof(float) * 3 * P * ds.n), *lg = km_malloc(sizeof(float) * P * ds.n);
    int pos[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    km_batch_fill(&ds, pos, NULL, ds.n, x, NULL);
    CHECK_OK(km_unetpp_forward(m, x, ds.n, LEARN_S, LEARN_S, 0, lg));
    km_metric_acc acc;
    km_metric_acc_init(&acc);
    for (int i = 0; i < ds.n && i < n; i++) {
        double d;
        km_metric_acc_add(&acc, km_conf_logits_u8(lg + P * i, ds.masks + P * i, P), &d, NULL);
        CHECK(!strcmp(ids[i], ds.ids[i]));
        CHECK_NEAR(dice[i], d, 1e-8);
        printf("    %s: Dice csv %.6f recomputed %.6f\n", ids[i], dice[i], d);
    }
    /* summary: mean of the rows, and the run's val Dice at its best epoch */
    snprintf(p, sizeof p, "%s/summary.json", out);
    uint8_t *txt;
    size_t len;
    CHECK_OK(km_read_file(p, 1 << 20, &txt, &len));
    char *md = strstr((char *)txt, "\"mean_dice\": ");
    CHECK(md != NULL);
    if (md) CHECK_NEAR(strtod(md + 13, NULL), km_metric_mean_dice(&acc), 1e-8);
    char *gd = strstr((char *)txt, "\"global_dice\": ");
    CHECK(gd != NULL);
    if (gd) CHECK_NEAR(strtod(gd + 15, NULL), km_metric_global_dice(&acc), 1e-8);
    km_free(txt);
    km_free(x);
    km_free(lg);
    km_unetpp_free(m);
    km_dataset_free(&ds);
    km_split_free(&sp);
    km_dataset_index_free(&idx);
}

KM_TEST(train_predict_cli_writes_masks_at_original_size) {
    const char *run = learn_run();
    const char *in = km_test_sub("pred_in"), *out = km_test_sub("pred_out"), *outb = km_test_sub("pred_bg");
    /* a landscape JPEG, a near-square one, and a grey PNG with a COVID-style name */
    int rc = km_test_sh("mkdir -p '%s' && cp '%s/images/cju0qkwl35piu0993l0dewei2.jpg' '%s/images/cju0qoxqj9q6s0835b43399p4.jpg' '%s/' && "
                        "cp '%s/train/images/covid_359.png' '%s/Non_COVID (1).png'",
                        in, km_test_path("data/kvasir-seg"), km_test_path("data/kvasir-seg"), in,
                        km_test_path("data/covid-qu-ex"), in);
    CHECK(rc == 0);
    rc = km_test_sh("'%s' predict --weights '%s/best.safetensors' --images '%s' --out '%s' --prob --overlay > /dev/null 2>&1",
                    km_test_bin(), run, in, out);
    CHECK(rc == 0);
    rc = km_test_sh("'%s' predict --weights '%s/best.safetensors' --images '%s' --out '%s' --outside background > /dev/null 2>&1",
                    km_test_bin(), run, in, outb);
    CHECK(rc == 0);
    km_dataset_index idx;
    CHECK_OK(km_dataset_scan_images(in, &idx, NULL));
    CHECK(idx.n >= 2);
    for (int i = 0; i < idx.n; i++) {
        char *ip = km_dataset_image_path(&idx, i), p[1200];
        km_image im = {0}, mk = {0}, pr = {0}, ov = {0}, bg = {0};
        CHECK_OK(km_image_load(ip, &im, 0));
        snprintf(p, sizeof p, "%s/masks/%s.png", out, idx.items[i].id);
        CHECK_OK(km_image_load(p, &mk, 0));
        snprintf(p, sizeof p, "%s/prob/%s.png", out, idx.items[i].id);
        CHECK_OK(km_image_load(p, &pr, 0));
        snprintf(p, sizeof p, "%s/overlay/%s.png", out, idx.items[i].id);
        CHECK_OK(km_image_load(p, &ov, 0));
        snprintf(p, sizeof p, "%s/masks/%s.png", outb, idx.items[i].id);
        CHECK_OK(km_image_load(p, &bg, 0));
        CHECK(mk.w == im.w && mk.h == im.h && mk.c == 1);
        CHECK(pr.w == im.w && pr.h == im.h && ov.w == im.w && ov.h == im.h && ov.c == 3);
        CHECK(bg.w == im.w && bg.h == im.h);
        if (mk.w != im.w || mk.h != im.h || bg.w != im.w || bg.h != im.h || pr.w != im.w || pr.h != im.h) continue;
        km_geom g;
        km_geom_compute(im.w, im.h, LEARN_S, &g);
        /* which original pixels interpolate (half-pixel bilinear) only
         * between logits of the centre crop, or only outside it */
        int *cx = km_malloc(sizeof(int) * (size_t)(im.w + im.h)), *cy = cx + im.w;
        for (int pass = 0; pass < 2; pass++) {
            int n = pass ? im.h : im.w, rn = pass ? g.rh : g.rw, o = pass ? g.top : g.left;
            for (int q = 0; q < n; q++) {
                double f = (q + 0.5) * rn / n - 0.5;
                if (f < 0) f = 0;
                int t0 = (int)f, t1 = t0 + 1 < rn ? t0 + 1 : rn - 1;
                (pass ? cy : cx)[q] = t0 >= o && t1 < o + LEARN_S ? 1 : (t1 < o || t0 >= o + LEARN_S) ? -1 : 0;
            }
        }
        size_t bad = 0, nonbin = 0, fg = 0, bg_out = 0, inside_diff = 0, n_in = 0;
        for (int y = 0; y < im.h; y++)
            for (int x = 0; x < im.w; x++) {
                size_t q = (size_t)y * im.w + x;
                uint8_t v = mk.data[q];
                nonbin += v != 0 && v != 255;
                fg += v == 255;
                bad += (pr.data[q] >= 128 && v != 255) || (v == 0 && pr.data[q] > 127);
                if (cx[x] == 1 && cy[y] == 1) {
                    n_in++;
                    inside_diff += bg.data[q] != v;
                } else if (cx[x] == -1 || cy[y] == -1) {
                    bg_out += bg.data[q] != 0;
                }
            }
        km_free(cx);
        CHECK(n_in > (size_t)im.w * im.h / 2);
        printf("    %s: %dx%d (c %d), resized %dx%d crop at (%d,%d); fg %.1f %%\n", idx.items[i].id, im.w, im.h, im.c,
               g.rw, g.rh, g.left, g.top, 100.0 * fg / ((double)im.w * im.h));
        CHECK(nonbin == 0 && bad == 0);
        CHECK_MSG(inside_diff == 0, "%zu pixels of the centre crop differ between tile and background modes", inside_diff);
        CHECK_MSG(bg_out == 0, "%zu foreground pixels outside the crop in background mode", bg_out);
        km_image_free(&im);
        km_image_free(&mk);
        km_image_free(&pr);
        km_image_free(&ov);
        km_image_free(&bg);
        km_free(ip);
    }
    km_dataset_index_free(&idx);
}

KM_TEST(train_cli_bad_inputs_fail_clearly) {
    const char *kv = km_test_path("data/kvasir-seg");
    const char *ok = km_test_sub("bad_ok"), *nomask = km_test_sub("bad_nomask"), *corrupt = km_test_sub("bad_corrupt");
    /* three copies of a 4-pair dataset, then break two of them */
    const char *ids[] = {"cju0qkwl35piu0993l0dewei2", "cju0qoxqj9q6s0835b43399p4", "cju0qx73cjw570799j4n5cjze",
                         "cju0roawvklrq0799vmjorwfv"};
    const char *dirs[] = {ok, nomask, corrupt};
    for (int d = 0; d < 3; d++) {
        CHECK(km_test_sh("mkdir -p '%s/images' '%s/masks'", dirs[d], dirs[d]) == 0);
        for (int i = 0; i < 4; i++)
            CHECK(km_test_sh("cp '%s/images/%s.jpg' '%s/images/' && cp '%s/masks/%s.jpg' '%s/masks/'", kv, ids[i], dirs[d],
                             kv, ids[i], dirs[d]) == 0);
    }
    CHECK(km_test_sh("rm '%s/masks/%s.jpg'", nomask, ids[2]) == 0);
    CHECK(km_test_sh("head -c 3000 '%s/images/%s.jpg' > '%s/t' && mv '%s/t' '%s/images/%s.jpg'", kv, ids[1], corrupt, corrupt,
                     corrupt, ids[1]) == 0);
    char a[4096];
    const char *common = "--max-images 4 --size 32 --resnet 18 --batch 2 --epochs 1 --val-fraction 0.25 --test-fraction 0 --quiet";
    snprintf(a, sizeof a, "train --data '%s/nothere' --out '%s/r0' %s", ok, ok, common);
    KM_CLI_EXPECT_FAIL(a, "nothere");
    snprintf(a, sizeof a, "train --data '%s' --out '%s/r1' %s", nomask, nomask, common);
    KM_CLI_EXPECT_FAIL(a, ids[2]);
    snprintf(a, sizeof a, "train --data '%s' --out '%s/r2' %s", corrupt, corrupt, common);
    KM_CLI_EXPECT_FAIL(a, ids[1]);
    snprintf(a, sizeof a, "train --data '%s' --out '%s/r3' %s --bogus 1", ok, ok, common);
    KM_CLI_EXPECT_FAIL(a, "unknown flag");
    snprintf(a, sizeof a, "train --data '%s' --out '%s/r4' --size 100", ok, ok);
    KM_CLI_EXPECT_FAIL(a, "multiple of 32");
    snprintf(a, sizeof a, "train --resume '%s/never'", ok);
    KM_CLI_EXPECT_FAIL(a, "config.json");
    snprintf(a, sizeof a, "train --resume '%s/never' --lr 0.1", ok);
    KM_CLI_EXPECT_FAIL(a, "cannot be combined with --resume");
    /* a checkpoint that is not one */
    CHECK(km_test_sh("printf 'garbage, not a checkpoint' > '%s/w.safetensors'", ok) == 0);
    snprintf(a, sizeof a, "eval --weights '%s/w.safetensors' --data '%s' --split all --out '%s/ev'", ok, ok, ok);
    KM_CLI_EXPECT_FAIL(a, "w.safetensors");
    snprintf(a, sizeof a, "predict --weights '%s/w.safetensors' --images '%s/images' --out '%s/pr'", ok, ok, ok);
    KM_CLI_EXPECT_FAIL(a, "w.safetensors");
    snprintf(a, sizeof a, "eval --weights '%s/w.safetensors' --data '%s' --split test --out '%s/ev'", ok, ok, ok);
    KM_CLI_EXPECT_FAIL(a, "--split-dir");
    /* and the good copy trains (the failures above are the inputs' fault) */
    snprintf(a, sizeof a, "'%s' train --data '%s' --out '%s/r5' %s", km_test_bin(), ok, ok, common);
    CHECK(km_test_sh("%s > /dev/null 2>&1", a) == 0);
}
