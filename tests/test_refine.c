/* test_refine.c - refined inference (issue 5.4): student -> prompts -> teacher
 * mask, through the library (src/mine/refine.h) and `kmseg eval/predict
 * --teacher`, on 6 real Kvasir-SEG images at 64x64 with a random ResNet18
 * student and the random-weight sam_tiny teacher. Random weights prove the
 * plumbing (the teacher's mask replaces the student's, fallbacks counted,
 * modes recorded, original-size output, cache reuse, errors), not quality. */
#include "cli.h"
#include "test.h"

#include <sys/stat.h>
#include "../src/io/image.h"
#include "../src/io/safetensors.h"
#include "../src/mine/refine.h"
#include "../src/models/unetpp.h"
#include "../src/train/dataset.h"
#include "../src/train/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define RS 64
#define RN 6

static const char *sub(const char *name) {
    static char b[32][1024];
    static int k;
    char *p = b[k++ & 31];
    snprintf(p, sizeof b[0], "%s/refine_%s", km_test_tmpdir(), name);
    return p;
}

static const char *teacher(void) { return km_test_path("fixtures/sam_tiny/sam_tiny.pth"); }

/* A dataset folder with the first RN Kvasir images and masks (once). */
static const char *data6(void) {
    static char dir[1024];
    if (dir[0]) return dir;
    snprintf(dir, sizeof dir, "%s", sub("data"));
    const char *src = km_test_path("data/kvasir-seg");
    int rc = km_test_sh("mkdir -p '%s/images' '%s/masks' && for f in $(ls '%s/images' | head -%d); do "
                        "cp '%s/images/'$f '%s/images/' && cp '%s/masks/'$f '%s/masks/'; done",
                        dir, dir, src, RN, src, dir, src, dir);
    CHECK(rc == 0);
    return dir;
}

/* Random ResNet18 student saved with size RS; head bias set to `bias` (NAN:
 * keep the init). Paths are per bias so both students coexist. */
static const char *student(float bias, const char *name) {
    const char *p = sub(name);
    km_unetpp *m = km_unetpp_create(18, 7);
    if (!isnan(bias)) km_unetpp_tensor(m, "segmentation_head.0.bias", 0)[0] = bias;
    km_tdict meta;
    km_tdict_init(&meta);
    km_tdict_set_meta(&meta, "size", "64");
    CHECK_OK(km_unetpp_save(m, p, &meta));
    km_tdict_free(&meta);
    km_unetpp_free(m);
    return p;
}

/* Column `col` (0-based) of every data row of a CSV, as strings. */
static int csv_col(const char *path, int col, char out[][64], int max) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[2048];
    int n = 0, r = 0;
    while (fgets(line, sizeof line, f)) {
        if (r++ == 0) continue;
        char *save = NULL, *tok = strtok_r(line, ",\n", &save);
        for (int k = 0; k < col && tok; k++) tok = strtok_r(NULL, ",\n", &save);
        if (tok && n < max) snprintf(out[n++], 64, "%s", tok);
    }
    fclose(f);
    return n;
}

static double json_num(const char *path, const char *key) {
    uint8_t *txt;
    size_t len;
    if (km_read_file(path, 1 << 20, &txt, &len)) return NAN;
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    char *p = strstr((char *)txt, pat);
    double v = p ? strtod(p + strlen(pat), NULL) : NAN;
    km_free(txt);
    return v;
}

static int json_has(const char *path, const char *text) {
    uint8_t *txt;
    size_t len;
    if (km_read_file(path, 1 << 20, &txt, &len)) return 0;
    int r = strstr((char *)txt, text) != NULL;
    km_free(txt);
    return r;
}

/* The library path on the dataset crops: every image's outcome, the +-1
 * logits, teacher calls and fallbacks adding up; returns the refined
 * per-image foreground counts in fg[RN] and the encoder runs (cache_dir
 * already filled by the CLI with the same crops: 0). */
static void library_refine(const char *weights, const char *cache_dir, long fg[RN], km_refine_outcome oc[RN],
                           long *calls, long *enc_runs) {
    km_dataset_index idx;
    km_dataset ds;
    CHECK_OK(km_dataset_scan(data6(), NULL, &idx, NULL));
    int which[RN] = {0, 1, 2, 3, 4, 5};
    CHECK_OK(km_dataset_load(&idx, which, RN, RS, 1, &ds, NULL));
    km_unetpp *m = NULL;
    int size = 0;
    CHECK_OK(km_train_load_student(weights, &m, &size));
    const size_t P = RS * RS;
    float *x = km_malloc(sizeof(float) * 3 * P * RN), *z = km_malloc(sizeof(float) * P * RN);
    km_batch_fill(&ds, which, NULL, RN, x, NULL);
    CHECK_OK(km_unetpp_forward(m, x, RN, RS, RS, 0, z));
    km_refine_config rc;
    km_refine_config_default(&rc);
    rc.teacher = teacher();
    rc.box_rule = KM_BOX_ALL; /* as the CLI run it is compared with */
    rc.cache_dir = cache_dir;
    km_refiner r;
    CHECK_OK(km_refiner_open(&r, &rc));
    float *z0 = km_malloc(sizeof(float) * P);
    for (int i = 0; i < RN; i++) {
        memcpy(z0, z + P * i, sizeof(float) * P);
        char *ip = km_dataset_image_path(&idx, ds.src[i]);
        km_refine_image im;
        km_refine_image_file(&im, ip, ds.orig_w[i], ds.orig_h[i], ds.orig_hash[i]);
        CHECK_OK(km_refine_logits(&r, &im, RS, z + P * i, &oc[i]));
        km_free(ip);
        long n = 0, pm = 0, same = 1;
        for (size_t p = 0; p < P; p++) {
            float v = z[P * i + p];
            n += v > 0;
            pm += v == 1.0f || v == -1.0f;
            same &= v == z0[p];
        }
        fg[i] = n;
        if (oc[i] == KM_REFINE_TEACHER) CHECK(pm == (long)P && n > 0); /* the teacher's mask as +-1 logits */
        else CHECK(same);                                             /* fallback: the student's logits */
    }
    CHECK(r.images == RN);
    CHECK(r.teacher_calls + r.fallback_no_box == RN);
    CHECK(r.encoder_runs + km_refiner_cache_hits(&r) == r.teacher_calls);
    *calls = r.teacher_calls;
    *enc_runs = r.encoder_runs;
    km_refiner_close(&r);
    km_free(z0);
    km_free(x);
    km_free(z);
    km_unetpp_free(m);
    km_dataset_free(&ds);
    km_dataset_index_free(&idx);
}

KM_TEST(refine_eval_cli_modes_fallbacks_and_cache) {
    const char *w = student(NAN, "rand.safetensors");
    const char *so = sub("eval_student"), *ro = sub("eval_refined"), *r2 = sub("eval_refined2"), *cache = sub("cache");
    int rc = km_test_sh("'%s' eval --weights '%s' --data '%s' --split all --out '%s' --threads 1 > /dev/null 2>&1",
                        km_test_bin(), w, data6(), so);
    CHECK(rc == 0);
    /* one box per image: sam_tiny decodes take seconds here, and a random
     * student's mask has many specks (per-component: test_boxrule.c) */
    rc = km_test_sh("'%s' eval --weights '%s' --data '%s' --split all --out '%s' --threads 1 --teacher '%s' "
                    "--cache-dir '%s' --box-rule all > /dev/null 2>&1",
                    km_test_bin(), w, data6(), ro, teacher(), cache);
    CHECK(rc == 0);
    char p[1200], q[1200];
    snprintf(p, sizeof p, "%s/summary.json", so);
    CHECK(json_has(p, "\"mode\": \"student\""));
    CHECK(json_num(p, "teacher_calls") == 0);
    snprintf(q, sizeof q, "%s/summary.json", ro);
    CHECK(json_has(q, "\"mode\": \"refined\""));
    CHECK(json_has(q, "\"prompt_mode\": \"points+box\""));
    CHECK(json_has(q, "\"box_rule\": \"all\""));
    CHECK(json_num(q, "teacher_decodes") == json_num(q, "teacher_calls"));
    double calls = json_num(q, "teacher_calls"), fb = json_num(q, "fallbacks");
    CHECK(calls + json_num(q, "fallback_no_box") == RN);
    CHECK(fb == json_num(q, "fallback_no_box") + json_num(q, "fallback_empty_teacher"));
    CHECK(json_num(q, "teacher_encoder_runs") == calls);
    /* per-image: the prediction column, and refined pixels = the library's */
    char ps[RN + 2][64], pr[RN + 2][64], ms[RN + 2][64], mr[RN + 2][64];
    snprintf(p, sizeof p, "%s/per_image.csv", so);
    snprintf(q, sizeof q, "%s/per_image.csv", ro);
    CHECK(csv_col(p, 6, ps, RN + 2) == RN);
    CHECK(csv_col(q, 6, pr, RN + 2) == RN);
    CHECK(csv_col(p, 8, ms, RN + 2) == RN);
    CHECK(csv_col(q, 8, mr, RN + 2) == RN);
    long fg[RN], lcalls = 0, lenc = -1;
    km_refine_outcome oc[RN];
    library_refine(w, cache, fg, oc, &lcalls, &lenc);
    CHECK(lcalls == (long)calls);
    CHECK(lenc == 0); /* the library keyed the same crops as the CLI */
    int differ = 0, nfb = 0;
    for (int i = 0; i < RN; i++) {
        CHECK(!strcmp(ms[i], "student"));
        CHECK(!strcmp(mr[i], km_refine_outcome_name(oc[i])));
        CHECK(atol(pr[i]) == fg[i]);
        differ += strcmp(ps[i], pr[i]) != 0;
        nfb += oc[i] != KM_REFINE_TEACHER;
        printf("    %d: student %s px, refined %s px (%s)\n", i, ps[i], pr[i], mr[i]);
    }
    CHECK(nfb == (int)fb);
    CHECK(differ > 0 || fb > 0);
    /* second run on the same disk cache, box of the largest component: no
     * encoder run, every original image a hit, one decode per image */
    rc = km_test_sh("'%s' eval --weights '%s' --data '%s' --split all --out '%s' --threads 1 --teacher '%s' "
                    "--cache-dir '%s' --box-rule largest > /dev/null 2>&1",
                    km_test_bin(), w, data6(), r2, teacher(), cache);
    CHECK(rc == 0);
    snprintf(q, sizeof q, "%s/summary.json", r2);
    CHECK(json_has(q, "\"box_rule\": \"largest\""));
    CHECK(json_num(q, "teacher_encoder_runs") == 0);
    CHECK(json_num(q, "teacher_cache_hits") == calls);
    CHECK(json_num(q, "teacher_decodes") == calls);
}

KM_TEST(refine_eval_cli_empty_student_falls_back) {
    /* head bias -100: no pixel > 0, so points+box gives NO_BOX everywhere */
    const char *w = student(-100.0f, "empty.safetensors"), *o = sub("eval_empty");
    int rc = km_test_sh("'%s' eval --weights '%s' --data '%s' --split all --out '%s' --threads 1 --teacher '%s' "
                        "--no-cache > /dev/null 2>&1",
                        km_test_bin(), w, data6(), o, teacher());
    CHECK(rc == 0);
    char p[1200];
    snprintf(p, sizeof p, "%s/summary.json", o);
    CHECK(json_has(p, "\"mode\": \"refined\""));
    CHECK(json_num(p, "teacher_calls") == 0);
    CHECK(json_num(p, "fallbacks") == RN);
    CHECK(json_num(p, "fallback_no_box") == RN);
    char m[RN + 2][64];
    snprintf(p, sizeof p, "%s/per_image.csv", o);
    CHECK(csv_col(p, 8, m, RN + 2) == RN);
    for (int i = 0; i < RN; i++) CHECK(!strcmp(m[i], "student_no_box"));
}

KM_TEST(refine_predict_cli_original_size) {
    const char *w = student(NAN, "rand.safetensors"), *so = sub("pred_student"), *ro = sub("pred_refined");
    char imgs[1100];
    snprintf(imgs, sizeof imgs, "%s/images", data6());
    int rc = km_test_sh("'%s' predict --weights '%s' --images '%s' --out '%s' --threads 1 > /dev/null 2>&1", km_test_bin(), w,
                        imgs, so);
    CHECK(rc == 0);
    char log[1200];
    snprintf(log, sizeof log, "%s.log", ro);
    /* the eval test's cache: predict and eval key the same original images */
    rc = km_test_sh("'%s' predict --weights '%s' --images '%s' --out '%s' --threads 1 --teacher '%s' --cache-dir '%s' "
                    "--box-rule largest > '%s' 2>&1",
                    km_test_bin(), w, imgs, ro, teacher(), sub("cache"), log);
    CHECK(rc == 0);
    CHECK(km_test_sh("grep -q 'refined by .*teacher call' '%s'", log) == 0);
    km_test_sh("grep refined \x27%s\x27", log);
    km_dataset_index idx;
    CHECK_OK(km_dataset_scan_images(imgs, &idx, NULL));
    CHECK(idx.n == RN);
    int differ = 0;
    for (int i = 0; i < idx.n; i++) {
        char *ip = km_dataset_image_path(&idx, i), a[1200], b[1200];
        km_image im = {0}, ma = {0}, mb = {0};
        CHECK_OK(km_image_load(ip, &im, 3));
        km_free(ip);
        snprintf(a, sizeof a, "%s/masks/%s.png", so, idx.items[i].id);
        snprintf(b, sizeof b, "%s/masks/%s.png", ro, idx.items[i].id);
        CHECK_OK(km_image_load(a, &ma, 1));
        CHECK_OK(km_image_load(b, &mb, 1));
        CHECK(mb.w == im.w && mb.h == im.h && mb.c == 1);
        if (mb.w == im.w && mb.h == im.h && ma.w == mb.w && ma.h == mb.h) {
            size_t np = (size_t)im.w * im.h, bad = 0;
            for (size_t p = 0; p < np; p++) bad += mb.data[p] != 0 && mb.data[p] != 255;
            CHECK(bad == 0);
            differ += memcmp(ma.data, mb.data, np) != 0;
        }
        km_image_free(&im);
        km_image_free(&ma);
        km_image_free(&mb);
    }
    printf("    %d of %d masks differ from student-only\n", differ, RN);
    CHECK(differ > 0);
    km_dataset_index_free(&idx);
}

KM_TEST(refine_cli_missing_teacher_is_an_error) {
    const char *w = student(NAN, "rand.safetensors");
    char log[1200], imgs[1100];
    snprintf(log, sizeof log, "%s.log", sub("missing"));
    snprintf(imgs, sizeof imgs, "%s/images", data6());
    int rc = km_test_sh("'%s' eval --weights '%s' --data '%s' --split all --out '%s' --teacher /nonexistent/sam.pth "
                        "> '%s' 2>&1",
                        km_test_bin(), w, data6(), sub("eval_missing"), log);
    CHECK(rc != 0);
    CHECK(km_test_sh("grep -q 'teacher /nonexistent/sam.pth: no such checkpoint file' '%s'", log) == 0);
    rc = km_test_sh("'%s' predict --weights '%s' --images '%s' --out '%s' --teacher /nonexistent/sam.pth > '%s' 2>&1",
                    km_test_bin(), w, imgs, sub("pred_missing"), log);
    CHECK(rc != 0);
    CHECK(km_test_sh("grep -q 'no such checkpoint file' '%s'", log) == 0);
    /* MedSAM takes boxes only (its default prompt mode is box; asking for
     * points is refused) */
    rc = km_test_sh("'%s' eval --weights '%s' --data '%s' --split all --out '%s' --teacher '%s' --teacher-profile "
                    "medsam --prompt-mode points+box > '%s' 2>&1",
                    km_test_bin(), w, data6(), sub("eval_medsam"), teacher(), log);
    CHECK(rc != 0);
    CHECK(km_test_sh("grep -q 'the medsam teacher takes box prompts only' '%s'", log) == 0);
    /* --refine without --teacher and no default teacher installed: says how to install it */
    rc = km_test_sh("KMSEG_TEACHER=/nonexistent/lite.pth '%s' eval --weights '%s' --data '%s' --split all --out '%s' "
                    "--refine > '%s' 2>&1", km_test_bin(), w, data6(), sub("eval_default"), log);
    CHECK(rc != 0);
    CHECK(km_test_sh("grep -q 'default teacher /nonexistent/lite.pth is not installed.*install-teacher.sh' '%s'", log) == 0);
    struct stat st;
    CHECK(stat(sub("eval_default"), &st) != 0); /* nothing written */
}
