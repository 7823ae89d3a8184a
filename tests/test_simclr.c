/* test_simclr.c - SimCLR pretraining (issue 6 points 1 and 5): the view
 * augmentations, the training loop on real Kvasir images, the encoder
 * checkpoint it writes (read back by km_unetpp_load_encoder and by
 * `kmseg train --encoder-weights`), and the command's errors. */
#include "cli.h"
#include "test.h"
#include "../src/core/rng.h"
#include "../src/io/load.h"
#include "../src/io/safetensors.h"
#include "../src/io/tensor.h"
#include "../src/models/unetpp.h"
#include "../src/train/dataset.h"
#include "../src/train/simclr.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The first n Kvasir images as a cache at size S (NULL on failure, CHECKed). */
static int load_kvasir(int n, int S, km_dataset *ds) {
    km_dataset_index idx;
    km_status s = km_dataset_scan(km_test_path("data/kvasir-seg"), NULL, &idx, NULL);
    CHECK_OK(s);
    if (s) return 0;
    int which[16];
    for (int i = 0; i < n; i++) which[i] = i;
    s = km_dataset_load(&idx, which, n, S, 0, ds, NULL);
    km_dataset_index_free(&idx);
    CHECK_OK(s);
    return !s;
}

static km_simclr_view identity_view(int S) {
    km_simclr_view v;
    memset(&v, 0, sizeof v);
    v.w = v.h = S;
    v.bright = v.contrast = v.sat = 1.0f;
    for (int i = 0; i < 4; i++) v.order[i] = i;
    return v;
}

KM_TEST(simclr_views_differ_are_seeded_and_in_range) {
    const int S = 64;
    km_dataset ds;
    if (!load_kvasir(2, S, &ds)) return;
    size_t P = (size_t)S * S, wf = km_simclr_apply_work_floats(S);
    float *work = km_malloc(sizeof(float) * wf), *a = km_malloc(sizeof(float) * 3 * P),
          *b = km_malloc(sizeof(float) * 3 * P), *c = km_malloc(sizeof(float) * 3 * P);
    km_simclr_aug_cfg cfg;
    km_simclr_aug_default(&cfg);

    /* identity parameters reproduce the cached image exactly */
    km_simclr_view id = identity_view(S);
    km_simclr_apply_rgb(ds.images, S, &id, work, a);
    double md = 0;
    for (size_t i = 0; i < 3 * P; i++) md = fmax(md, fabs(a[i] - ds.images[i] / 255.0));
    printf("    identity view max diff %.3g\n", md);
    CHECK(md < 1e-6);
    /* a neutral jitter (factors 1, hue 0) changes nothing but float rounding (HSV round trip) */
    km_simclr_view nj = id;
    nj.jitter = 1;
    km_simclr_apply_rgb(ds.images, S, &nj, work, b);
    CHECK(km_compare("neutral jitter", b, a, 3 * P).max_abs < 1e-5);
    /* flip mirrors the columns */
    km_simclr_view fl = id;
    fl.flip = 1;
    km_simclr_apply_rgb(ds.images, S, &fl, work, b);
    int mirrored = 1;
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++)
            for (int ch = 0; ch < 3; ch++)
                mirrored &= b[((size_t)y * S + x) * 3 + ch] == a[((size_t)y * S + S - 1 - x) * 3 + ch];
    CHECK(mirrored);
    /* greyscale: equal channels; blur: smooths (lower total variation), keeps the mean */
    km_simclr_view gr = id;
    gr.grey = 1;
    gr.sigma = 2.0f;
    km_simclr_apply_rgb(ds.images, S, &gr, work, b);
    int equal = 1;
    double tv_a = 0, tv_b = 0, m_a = 0, m_b = 0;
    for (size_t i = 0; i < P; i++) {
        equal &= b[3 * i] == b[3 * i + 1] && b[3 * i] == b[3 * i + 2];
        m_a += 0.299 * a[3 * i] + 0.587 * a[3 * i + 1] + 0.114 * a[3 * i + 2];
        m_b += b[3 * i];
        if (i % S) tv_a += fabs(a[3 * i + 1] - a[3 * i - 2]), tv_b += fabs(b[3 * i + 1] - b[3 * i - 2]);
    }
    CHECK(equal);
    printf("    blur: total variation %.1f -> %.1f, mean %.4f -> %.4f\n", tv_a, tv_b, m_a / P, m_b / P);
    CHECK(tv_b < 0.6 * tv_a);
    CHECK_NEAR(m_a / P, m_b / P, 0.01);

    /* random views: two views of one image differ; the same seed gives the same views */
    km_rng r1, r2;
    km_rng_seed(&r1, 7);
    km_rng_seed(&r2, 7);
    km_simclr_view v1, v2, w1, w2;
    double min_diff = 1e9;
    for (int t = 0; t < 8; t++) {
        km_simclr_draw(&r1, S, &cfg, &v1);
        km_simclr_draw(&r1, S, &cfg, &v2);
        km_simclr_draw(&r2, S, &cfg, &w1);
        km_simclr_draw(&r2, S, &cfg, &w2);
        CHECK(!memcmp(&v1, &w1, sizeof v1) && !memcmp(&v2, &w2, sizeof v2));
        const uint8_t *src = ds.images + (size_t)(t % 2) * 3 * P;
        km_simclr_apply_rgb(src, S, &v1, work, a);
        km_simclr_apply_rgb(src, S, &v2, work, b);
        km_simclr_apply_rgb(src, S, &w1, work, c);
        CHECK(!memcmp(a, c, sizeof(float) * 3 * P));
        double d = 0, lo = 1, hi = 0;
        for (size_t i = 0; i < 3 * P; i++) {
            d += fabs(a[i] - b[i]);
            lo = fmin(lo, fmin(a[i], b[i]));
            hi = fmax(hi, fmax(a[i], b[i]));
        }
        CHECK(lo >= 0.0 && hi <= 1.0);
        min_diff = fmin(min_diff, d / (3 * P));
    }
    printf("    smallest mean |view1 - view2| over 8 pairs: %.4f\n", min_diff);
    CHECK(min_diff > 0.01);
    /* the normalised output is the rgb output through ImageNet mean/std, CHW */
    km_simclr_apply_rgb(ds.images, S, &v1, work, a);
    km_simclr_apply(ds.images, S, &v1, work, b);
    CHECK_NEAR(b[0], (a[0] - 0.485f) / 0.229f, 1e-6);
    CHECK_NEAR(b[2 * P + 5], (a[3 * 5 + 2] - 0.406f) / 0.225f, 1e-6);

    /* parameter statistics over many draws */
    int nf = 0, nj2 = 0, ng = 0, nb = 0, bad = 0;
    const int ND = 4000;
    for (int t = 0; t < ND; t++) {
        km_simclr_draw(&r1, 224, &cfg, &v1);
        double area = (double)v1.w * v1.h / (224.0 * 224), ar = (double)v1.w / v1.h;
        bad += area < 0.19 || area > 1.0 || ar < 0.74 || ar > 1.36 || v1.x0 + v1.w > 224 || v1.y0 + v1.h > 224;
        bad += v1.bright < 0.6f || v1.bright > 1.4f || fabsf(v1.hue) > 0.1f;
        bad += v1.sigma != 0.0f && (v1.sigma < 0.1f || v1.sigma > 2.0f);
        nf += v1.flip, nj2 += v1.jitter, ng += v1.grey, nb += v1.sigma > 0;
    }
    printf("    rates over %d draws: flip %.3f jitter %.3f grey %.3f blur %.3f\n", ND, (double)nf / ND,
           (double)nj2 / ND, (double)ng / ND, (double)nb / ND);
    CHECK(bad == 0);
    CHECK_NEAR((double)nf / ND, 0.5, 0.03);
    CHECK_NEAR((double)nj2 / ND, 0.8, 0.03);
    CHECK_NEAR((double)ng / ND, 0.2, 0.03);
    CHECK_NEAR((double)nb / ND, 0.5, 0.03);
    km_free(work), km_free(a), km_free(b), km_free(c);
    km_dataset_free(&ds);
}

KM_TEST(simclr_pretrain_loss_falls_and_encoder_loads) {
    char out[1024];
    snprintf(out, sizeof out, "%s/pre", km_test_tmpdir());
    km_simclr_config c;
    km_simclr_config_default(&c);
    c.data = km_test_path("data/kvasir-seg");
    c.out = out;
    c.max_images = 20; /* 16 train images */
    c.size = 32;
    c.resnet = 18;
    c.batch = 8;
    c.lr = 1e-3;
    c.epochs = 4; /* 2 steps per epoch */
    c.seed = 3;
    c.fixed_batch = 1; /* one batch of views, repeated: the loss must fall */
    km_simclr_result r;
    CHECK_OK(km_simclr_run(&c, NULL, &r));
    printf("    fixed batch: loss %.4f -> %.4f over %d steps (chance log(15) = %.4f)\n", r.first_loss, r.last_loss,
           r.steps, log(15.0));
    CHECK(r.steps == 8 && r.epochs_done == 4);
    CHECK(r.last_loss < 0.5 * r.first_loss);

    /* the encoder checkpoint loads into a fresh student, nothing ignored */
    char p[1200];
    snprintf(p, sizeof p, "%s/encoder.safetensors", out);
    km_unetpp *m = km_unetpp_create(18, 99);
    int ign = -1;
    CHECK_OK(km_unetpp_load_encoder(m, p, &ign));
    CHECK(ign == 0);
    km_tdict d;
    km_tdict_init(&d);
    CHECK_OK(km_load_checkpoint(p, &d));
    int n_enc = 0, others = 0;
    for (int i = 0; i < d.n; i++) {
        if (!strncmp(d.items[i].name, "encoder.", 8)) n_enc++;
        else others++;
    }
    printf("    encoder.safetensors: %d tensors\n", n_enc);
    CHECK(n_enc == 120 && others == 0); /* resnet18: 20 conv+BN pairs x (1 + 5 BN tensors), no fc */
    const float *w;
    int64_t sh[4] = {64, 3, 7, 7};
    CHECK_OK(km_tdict_get_f32(&d, p, "encoder.conv1.weight", 4, sh, &w));
    if (w) CHECK(!memcmp(w, km_unetpp_tensor(m, "encoder.conv1.weight", 0), sizeof(float) * 64 * 3 * 49));
    km_tdict_free(&d);
    km_unetpp_free(m);

    /* projection head: 512-512-128 */
    snprintf(p, sizeof p, "%s/projection_head.safetensors", out);
    km_tdict_init(&d);
    CHECK_OK(km_load_checkpoint(p, &d));
    int64_t s0[2] = {512, 512}, s2[2] = {128, 512}, b0[1] = {512}, b2[1] = {128};
    CHECK_OK(km_tdict_get_f32(&d, p, "projection_head.0.weight", 2, s0, &w));
    CHECK_OK(km_tdict_get_f32(&d, p, "projection_head.0.bias", 1, b0, &w));
    CHECK_OK(km_tdict_get_f32(&d, p, "projection_head.2.weight", 2, s2, &w));
    CHECK_OK(km_tdict_get_f32(&d, p, "projection_head.2.bias", 1, b2, &w));
    CHECK(d.n == 4);
    km_tdict_free(&d);
    CHECK(km_test_sh("test $(wc -l < '%s/metrics.csv') -eq 5 && head -1 '%s/metrics.csv' | grep -q '^epoch,steps,images,loss'",
                     out, out) == 0);

    /* kmseg train accepts it as its encoder init */
    int rc = km_test_sh("'%s' train --data '%s' --out '%s/sup' --max-images 20 --size 32 --resnet 18 --batch 4 "
                        "--epochs 1 --max-steps 1 --threads 1 --encoder-weights '%s/encoder.safetensors' > '%s/train.txt' 2>&1",
                        km_test_bin(), km_test_path("data/kvasir-seg"), out, out, out);
    CHECK_MSG(rc == 0, "kmseg train --encoder-weights failed (%d), see %s/train.txt", rc, out);
    CHECK(km_test_sh("grep -q 'encoder initialised from .*encoder.safetensors (0 classifier' '%s/train.txt'", out) == 0);
}

KM_TEST(simclr_pretrain_is_deterministic) {
    /* real augmentations, two runs of 2 steps with the same seed and threads */
    char out[2][1024];
    km_simclr_result r[2];
    for (int k = 0; k < 2; k++) {
        snprintf(out[k], sizeof out[k], "%s/det%d", km_test_tmpdir(), k);
        km_simclr_config c;
        km_simclr_config_default(&c);
        c.data = km_test_path("data/kvasir-seg");
        c.out = out[k];
        c.max_images = 10;
        c.size = 32;
        c.resnet = 18;
        c.batch = 4;
        c.epochs = 1;
        c.seed = 5;
        CHECK_OK(km_simclr_run(&c, NULL, &r[k]));
    }
    printf("    run losses %.6f / %.6f\n", r[0].last_loss, r[1].last_loss);
    CHECK(r[0].steps == 2 && r[0].first_loss == r[1].first_loss && r[0].last_loss == r[1].last_loss);
    CHECK(km_test_sh("cmp -s '%s/encoder.safetensors' '%s/encoder.safetensors'", out[0], out[1]) == 0);
}

KM_TEST(simclr_pretrain_command_errors) {
    const char *t = km_test_tmpdir(), *data = km_test_path("data/kvasir-seg");
    CHECK(km_test_sh("'%s' pretrain --help | grep -q 'temperature.*default: 0.1'", km_test_bin()) == 0);
    CHECK(km_test_sh("'%s' pretrain --out '%s/x' > '%s/e1.txt' 2>&1", km_test_bin(), t, t) == 2);
    CHECK(km_test_sh("grep -q 'missing required flag --data' '%s/e1.txt'", t) == 0);
    CHECK(km_test_sh("'%s' pretrain --data '%s' --out '%s/x' --bogus 1 > '%s/e2.txt' 2>&1", km_test_bin(), data, t, t) == 2);
    CHECK(km_test_sh("grep -q -- '--bogus' '%s/e2.txt'", t) == 0);
    CHECK(km_test_sh("'%s' pretrain --data '%s/nothere' --out '%s/x' > '%s/e3.txt' 2>&1", km_test_bin(), t, t, t) == 1);
    CHECK(km_test_sh("grep -q 'nothere' '%s/e3.txt'", t) == 0);
    CHECK(km_test_sh("'%s' pretrain --data '%s' --out '%s/x' --resnet 50 > '%s/e4.txt' 2>&1", km_test_bin(), data, t, t) == 2);
    CHECK(km_test_sh("grep -q 'expected 18 or 34' '%s/e4.txt'", t) == 0);
    CHECK(km_test_sh("'%s' pretrain --data '%s' --out '%s/x' --batch 1 > /dev/null 2>&1", km_test_bin(), data, t) == 2);
}

/* ------------------------------------------------------------------ resume */

#define PRE_ARGS "--max-images 10 --size 32 --resnet 18 --batch 4 --epochs 2 --seed 5 --threads 2 --quiet"

static long long meta_ll(const char *file, const char *key) {
    km_tdict d;
    km_tdict_init(&d);
    long long v = -1;
    if (km_safetensors_load(file, &d) == KM_OK) {
        const char *s = km_tdict_get_meta(&d, key);
        if (s) v = atoll(s);
    }
    km_tdict_free(&d);
    return v;
}

KM_TEST(simclr_pretrain_resume_is_bit_identical) {
    /* 8 train images, batch 4: 2 steps per epoch, real augmentations. An
     * uninterrupted 2-epoch run against one stopped after epoch 1 (as if
     * killed, with a stray log row written after its checkpoint) and resumed. */
    const char *t = km_test_tmpdir(), *data = km_test_path("data/kvasir-seg");
    double t0 = km_now();
    CHECK(km_test_sh("'%s' pretrain --data '%s' --out '%s/rfull' " PRE_ARGS " > '%s/rfull.txt' 2>&1", km_test_bin(), data, t, t) == 0);
    CHECK(km_test_sh("'%s' pretrain --data '%s' --out '%s/rkill' " PRE_ARGS " --stop-after 1 > '%s/rkill.txt' 2>&1", km_test_bin(),
                     data, t, t) == 0);
    char p[1200], q[1200];
    snprintf(p, sizeof p, "%s/rkill/last.safetensors", t);
    CHECK(meta_ll(p, "pretrain.epoch") == 1 && meta_ll(p, "pretrain.steps") == 2 && meta_ll(p, "pretrain.done") == 0);
    /* the comparison below can fail: after one epoch the weights differ */
    CHECK(km_test_sh("cmp -s '%s/rfull/encoder.safetensors' '%s/rkill/encoder.safetensors'", t, t) != 0);
    CHECK(km_test_sh("test $(wc -l < '%s/rkill/metrics.csv') -eq 2 && echo '2,9,9,9,9,9,9' >> '%s/rkill/metrics.csv'", t,
                     t) == 0);
    int rc = km_test_sh("'%s' pretrain --resume '%s/rkill' --quiet > '%s/rres.txt' 2>&1", km_test_bin(), t, t);
    CHECK_MSG(rc == 0, "pretrain --resume failed (%d), see %s/rres.txt", rc, t);
    const char *files[] = {"encoder.safetensors", "projection_head.safetensors", "last.safetensors"};
    for (int i = 0; i < 3; i++)
        CHECK_MSG(km_test_sh("cmp -s '%s/rfull/%s' '%s/rkill/%s'", t, files[i], t, files[i]) == 0,
                  "%s: the resumed run's bytes differ from the uninterrupted run's", files[i]);
    /* log rows: the stray one dropped, the rest identical but for the time columns */
    CHECK(km_test_sh("test $(wc -l < '%s/rkill/metrics.csv') -eq 3", t) == 0);
    CHECK_MSG(km_test_sh("cut -d, -f1-5 '%s/rfull/metrics.csv' > '%s/a.csv' && cut -d, -f1-5 '%s/rkill/metrics.csv' > "
                         "'%s/b.csv' && cmp -s '%s/a.csv' '%s/b.csv'", t, t, t, t, t, t) == 0,
              "metrics.csv rows of the resumed run differ");
    snprintf(q, sizeof q, "%s/rfull/last.safetensors", t);
    CHECK(meta_ll(q, "pretrain.epoch") == 2 && meta_ll(q, "pretrain.steps") == 4 && meta_ll(q, "pretrain.done") == 1);
    /* the resumable state is in last.safetensors */
    km_tdict d;
    km_tdict_init(&d);
    CHECK_OK(km_safetensors_load(q, &d));
    const char *keys[] = {"adam.encoder.exp_avg", "adam.encoder.exp_avg_sq", "adam.head.exp_avg", "adam.head.exp_avg_sq",
                          "pretrain.order", "projection_head.2.bias", "encoder.bn1.running_mean"};
    for (int i = 0; i < 7; i++) CHECK_MSG(km_tdict_find(&d, keys[i]), "last.safetensors lacks '%s'", keys[i]);
    CHECK(km_tdict_get_meta(&d, "pretrain.rng_shuffle") && km_tdict_get_meta(&d, "pretrain.rng_aug"));
    km_tdict_free(&d);
    /* resuming a finished run changes nothing */
    CHECK(km_test_sh("'%s' pretrain --resume '%s/rkill' > '%s/rres2.txt' 2>&1", km_test_bin(), t, t) == 0);
    CHECK(km_test_sh("grep -q 'already finished' '%s/rres2.txt' && cmp -s '%s/rfull/last.safetensors' "
                     "'%s/rkill/last.safetensors' && test $(wc -l < '%s/rkill/metrics.csv') -eq 3", t, t, t, t) == 0);
    printf("    full, stopped + resumed runs: %.1f s\n", km_now() - t0);
}

KM_TEST(simclr_pretrain_resume_errors) {
    const char *t = km_test_tmpdir(), *data = km_test_path("data/kvasir-seg");
    CHECK(km_test_sh("'%s' pretrain --data '%s' --out '%s/ebase' " PRE_ARGS " --stop-after 1 > /dev/null 2>&1", km_test_bin(), data,
                     t) == 0);
    /* no such folder */
    CHECK(km_test_sh("'%s' pretrain --resume '%s/nothere' > '%s/r1.txt' 2>&1", km_test_bin(), t, t) == 1);
    CHECK(km_test_sh("grep -q 'nothere/config.json' '%s/r1.txt'", t) == 0);
    /* a setting with --resume */
    CHECK(km_test_sh("'%s' pretrain --resume '%s/ebase' --epochs 3 > '%s/r2.txt' 2>&1", km_test_bin(), t, t) == 2);
    CHECK(km_test_sh("grep -q -- '--epochs cannot be combined with --resume' '%s/r2.txt'", t) == 0);
    /* a truncated checkpoint */
    CHECK(km_test_sh("cp -r '%s/ebase' '%s/etrunc' && head -c 4000 '%s/ebase/last.safetensors' > '%s/etrunc/last.safetensors'",
                     t, t, t, t) == 0);
    CHECK(km_test_sh("'%s' pretrain --resume '%s/etrunc' > '%s/r3.txt' 2>&1", km_test_bin(), t, t) == 1);
    CHECK_MSG(km_test_sh("grep -q 'etrunc/last.safetensors' '%s/r3.txt'", t) == 0, "see %s/r3.txt", t);
    /* bad configs: a wrong type, a missing setting, not JSON, another command's */
    const char *edits[][2] = {{"s/\"batch\": 4/\"batch\": \"four\"/", "'batch' must be an integer"},
                              {"/\"temperature\"/d", "missing setting 'temperature'"},
                              {"s/}/,/", "config.json"},
                              {"s/\"command\": \"pretrain\"/\"command\": \"train\"/", "not the config of a kmseg pretrain run"}};
    for (int i = 0; i < 4; i++) {
        CHECK(km_test_sh("rm -rf '%s/ecfg' && cp -r '%s/ebase' '%s/ecfg' && sed -i '%s' '%s/ecfg/config.json'", t, t, t,
                         edits[i][0], t) == 0);
        CHECK(km_test_sh("'%s' pretrain --resume '%s/ecfg' > '%s/r4.txt' 2>&1", km_test_bin(), t, t) == 1);
        CHECK_MSG(km_test_sh("grep -q 'ecfg/config.json' '%s/r4.txt' && grep -q \"%s\" '%s/r4.txt'", t, edits[i][1], t) == 0,
                  "config edit %d: see %s/r4.txt", i, t);
    }
    /* killed inside epoch 1 (config.json, no checkpoint yet): starts over and
     * reaches the same epoch-1 checkpoint */
    CHECK(km_test_sh("cp -r '%s/ebase' '%s/enolast' && rm '%s/enolast/last.safetensors' '%s/enolast/encoder.safetensors'", t,
                     t, t, t) == 0);
    CHECK(km_test_sh("'%s' pretrain --resume '%s/enolast' --stop-after 1 > '%s/r5.txt' 2>&1", km_test_bin(), t, t) == 0);
    CHECK(km_test_sh("grep -q 'starting over' '%s/r5.txt' && cmp -s '%s/ebase/last.safetensors' '%s/enolast/last.safetensors'",
                     t, t, t) == 0);
    CHECK(km_test_sh("test $(wc -l < '%s/enolast/metrics.csv') -eq 2", t) == 0);
}
