/* test_tinyvit.c - the TinyViT image encoder (LiteMedSAM / MobileSAM) against
 * golden outputs of the real PyTorch code (tiny_vit_sam.py, torch 1.13):
 *   tinyvit_tiny/lite256     random LiteMedSAM-shaped model, taps + embedding
 *   tinyvit_tiny/mobile1024  random MobileSAM-shaped model (3x3 patch
 *                            embedding, unused classifier head in the state
 *                            dict) through SamPredictor preprocessing
 *   litemedsam_real          the real LiteMedSAM checkpoint on real images
 * Tolerances are each fixture's manifest.json recommended_tolerances: 20x
 * the measured float32-vs-float64 distance of the reference itself (a float32
 * implementation with another summation order, folded BatchNorm and our
 * exp/erf polynomials sits at about that distance, not at zero). */
#include "test.h"
#include "../src/io/json.h"
#include "../src/io/load.h"
#include "../src/io/npy.h"
#include "../src/models/sam_preprocess.h"
#include "../src/models/tinyvit.h"

#include <stdint.h>
#include <stdlib.h>

/* recommended_tolerances[key].max_abs of a fixture's manifest (-1 if absent,
 * which fails the caller's check). */
static double manifest_tol(const km_json *m, const char *key) {
    const km_json *t = km_json_get(km_json_get(m, "recommended_tolerances"), key);
    const km_json *v = t ? km_json_get(t, "max_abs") : NULL;
    CHECK_MSG(v && v->type == KM_JSON_NUM, "manifest has no recommended_tolerances.%s.max_abs", key);
    return v && v->type == KM_JSON_NUM ? v->num : -1.0;
}

static int load_manifest(const char *rel, km_json *m) {
    km_status s = km_json_load(km_test_path(rel), "cannot read %s", rel, m);
    CHECK_MSG(s == KM_OK, "%s: %s", rel, km_errmsg());
    return s == KM_OK;
}

/* A float32 .npy of n elements (any shape), or NULL after a failed CHECK. */
static float *npy_f32(const char *path, size_t n) {
    km_tensor t;
    km_status s = km_npy_load_f32(path, -1, NULL, &t);
    CHECK_MSG(s == KM_OK, "%s: %s", path, km_errmsg());
    if (s) return NULL;
    size_t got = (size_t)km_numel(t.ndim, t.shape);
    CHECK_MSG(got == n, "%s: %zu elements, expected %zu", path, got, n);
    float *p = got == n ? km_malloc(sizeof(float) * n) : NULL;
    if (p) memcpy(p, t.data, sizeof(float) * n);
    km_tensor_free(&t);
    return p;
}

static km_tinyvit *load_encoder(const char *path, const char *label) {
    km_tdict sd;
    km_tdict_init(&sd);
    km_status s = km_load_checkpoint(path, &sd);
    CHECK_MSG(s == KM_OK, "%s: %s", path, km_errmsg());
    km_tinyvit *e = NULL;
    if (s == KM_OK) {
        CHECK(km_tinyvit_detect(&sd) == 1);
        CHECK_OK(km_tinyvit_load(&e, &sd, label));
    }
    km_tdict_free(&sd);
    return e;
}

static void compare_tol(const char *label, const float *got, const float *ref, size_t n,
                        double tol) {
    km_cmp c = km_compare(label, got, ref, n);
    printf("    %s: max_abs %.3g, tolerance %.3g\n", label, c.max_abs, tol);
    CHECK_MSG(c.max_abs <= tol, "%s: max_abs %.3g > tolerance %.3g", label, c.max_abs, tol);
}

#define EMB_FLOATS ((size_t)256 * 64 * 64)

/* Parity with the taps and the embedding, then determinism (a second forward
 * with the same thread count is bit-identical). */
KM_TEST(tinyvit_lite256_matches_fixture) {
    km_json m;
    if (!load_manifest("fixtures/tinyvit_tiny/lite256/manifest.json", &m)) return;
    km_tinyvit *e = load_encoder(km_test_path("fixtures/tinyvit_tiny/lite256/lite256.pth"),
                                 "lite256.pth");
    if (!e) {
        km_json_free(&m);
        return;
    }
    const km_tinyvit_config *c = km_tinyvit_config_of(e);
    CHECK(c->img_size == 256 && c->patch_k == 1 && c->out_chans == 256);
    CHECK(c->embed_dims[0] == 16 && c->embed_dims[1] == 32 && c->embed_dims[2] == 40 &&
          c->embed_dims[3] == 320);
    CHECK(c->depths[0] == 1 && c->depths[1] == 1 && c->depths[2] == 2 && c->depths[3] == 1);
    CHECK(c->num_heads[0] == 0 && c->num_heads[1] == 2 && c->num_heads[2] == 2 &&
          c->num_heads[3] == 4);
    CHECK(c->window_sizes[1] == 7 && c->window_sizes[2] == 14 && c->window_sizes[3] == 7);
    CHECK(c->mlp_ratio == 4 && c->mbconv_expand == 4 && c->local_conv_k == 3);
    const size_t n0 = 16384 * 32, n1 = 4096 * 40, n2 = 4096 * 40;
    float *img = npy_f32(km_test_path("fixtures/tinyvit_tiny/lite256/input_preprocessed.npy"),
                         3 * 256 * 256);
    float *r0 = npy_f32(km_test_path("fixtures/tinyvit_tiny/lite256/enc_layer0_out.npy"), n0);
    float *r1 = npy_f32(km_test_path("fixtures/tinyvit_tiny/lite256/enc_layer1_out.npy"), n1);
    float *r2 = npy_f32(km_test_path("fixtures/tinyvit_tiny/lite256/enc_layer2_blocks_out.npy"), n2);
    float *re = npy_f32(km_test_path("fixtures/tinyvit_tiny/lite256/image_embedding.npy"),
                        EMB_FLOATS);
    if (img && r0 && r1 && r2 && re) {
        float *t0 = km_malloc(sizeof(float) * n0), *t1 = km_malloc(sizeof(float) * n1);
        float *t2 = km_malloc(sizeof(float) * n2), *emb = km_malloc(sizeof(float) * EMB_FLOATS);
        km_tinyvit_taps taps = {t0, t1, t2};
        int saved = km_get_threads();
        km_set_threads(2);
        double t = km_now();
        CHECK_OK(km_tinyvit_forward(e, img, emb, &taps));
        printf("    lite256 forward: %.3f s (2 threads)\n", km_now() - t);
        km_set_threads(saved);
        compare_tol("enc_layer0_out", t0, r0, n0, manifest_tol(&m, "enc_layer0_out"));
        compare_tol("enc_layer1_out", t1, r1, n1, manifest_tol(&m, "enc_layer1_out"));
        compare_tol("enc_layer2_blocks_out", t2, r2, n2, manifest_tol(&m, "enc_layer2_blocks_out"));
        compare_tol("image_embedding", emb, re, EMB_FLOATS, manifest_tol(&m, "image_embedding"));
        /* Determinism: a second forward with 2 threads (scratch reused, no
         * taps) gives the same bits. */
        float *emb2 = km_malloc(sizeof(float) * EMB_FLOATS);
        km_set_threads(2);
        CHECK_OK(km_tinyvit_forward(e, img, emb2, NULL));
        km_set_threads(saved);
        size_t ndiff = 0;
        for (size_t i = 0; i < EMB_FLOATS; i++) ndiff += memcmp(emb + i, emb2 + i, 4) != 0;
        printf("    second forward with 2 threads: %zu of %zu floats differ\n", ndiff, EMB_FLOATS);
        CHECK(ndiff == 0);
        km_free(t0); km_free(t1); km_free(t2); km_free(emb); km_free(emb2);
    }
    km_free(img); km_free(r0); km_free(r1); km_free(r2); km_free(re);
    km_tinyvit_free(e);
    km_json_free(&m);
}

KM_TEST(tinyvit_mobile1024_matches_fixture) {
    km_json m;
    if (!load_manifest("fixtures/tinyvit_tiny/mobile1024/manifest.json", &m)) return;
    km_tinyvit *e = load_encoder(km_test_path("fixtures/tinyvit_tiny/mobile1024/mobile1024.pth"),
                                 "mobile1024.pth");
    km_tensor im;
    km_status s = km_npy_load(km_test_path("fixtures/tinyvit_tiny/mobile1024/image.npy"), &im);
    CHECK_MSG(s == KM_OK, "image.npy: %s", km_errmsg());
    float *re = npy_f32(km_test_path("fixtures/tinyvit_tiny/mobile1024/image_embedding.npy"),
                        EMB_FLOATS);
    if (e && s == KM_OK && re) {
        const km_tinyvit_config *c = km_tinyvit_config_of(e);
        CHECK(c->img_size == 1024 && c->patch_k == 3 && c->embed_dims[3] == 320);
        CHECK(im.dtype == KM_U8 && im.ndim == 3 && im.shape[0] == 190 && im.shape[1] == 260 &&
              im.shape[2] == 3);
        /* The encoder input is SamPredictor's (not stored in the fixture). */
        float *img = km_malloc(sizeof(float) * 3 * 1024 * 1024);
        float *emb = km_malloc(sizeof(float) * EMB_FLOATS);
        int nh = 0, nw = 0;
        km_sam_preprocess(img, 1024, im.data, 260, 190, 3, &nh, &nw);
        CHECK(nh == 748 && nw == 1024);
        int saved = km_get_threads();
        km_set_threads(2);
        double t = km_now();
        CHECK_OK(km_tinyvit_forward(e, img, emb, NULL));
        printf("    mobile1024 forward: %.3f s (2 threads)\n", km_now() - t);
        km_set_threads(saved);
        compare_tol("image_embedding", emb, re, EMB_FLOATS, manifest_tol(&m, "image_embedding"));
        km_free(img); km_free(emb);
    }
    if (s == KM_OK) km_tensor_free(&im);
    km_free(re);
    km_tinyvit_free(e);
    km_json_free(&m);
}

/* The real checkpoint: $KMSEG_TEACHER or the installed default. Missing is a
 * failure, not a skip: the teacher is part of the product. */
static const char *teacher_path(void) {
    const char *p = getenv("KMSEG_TEACHER");
    if (p && *p) return p;
    static char buf[1024];
    const char *home = getenv("HOME");
    snprintf(buf, sizeof buf, "%s/.local/share/kmseg/teachers/lite_medsam.pth", home ? home : "");
    return buf;
}

KM_TEST(tinyvit_litemedsam_real_matches_fixture) {
    const char *ck = teacher_path();
    FILE *f = fopen(ck, "rb");
    CHECK_MSG(f != NULL, "the real LiteMedSAM checkpoint %s is missing: run tools/install-teacher.sh "
              "(or set KMSEG_TEACHER to lite_medsam.pth)", ck);
    if (!f) return;
    fclose(f);
    km_json m;
    if (!load_manifest("fixtures/litemedsam_real/manifest.json", &m)) return;
    km_tinyvit *e = load_encoder(ck, "lite_medsam.pth");
    const km_json *samples = km_json_get(&m, "samples"), *arrays = km_json_get(&m, "arrays");
    CHECK(samples && samples->type == KM_JSON_ARR && arrays && arrays->type == KM_JSON_OBJ);
    int compared = 0;
    for (int i = 0; e && samples && arrays && i < samples->n; i++) {
        const km_json *id = km_json_get(&samples->items[i], "id");
        if (!id || id->type != KM_JSON_STR) continue;
        char key[256], rel[320];
        snprintf(key, sizeof key, "%s.image_embedding", id->str);
        const km_json *a = km_json_get(arrays, key), *file = a ? km_json_get(a, "file") : NULL;
        if (!file || file->type != KM_JSON_STR) continue; /* embedding left out ("file": null) */
        const km_tinyvit_config *c = km_tinyvit_config_of(e);
        CHECK(c->embed_dims[0] == 64 && c->embed_dims[3] == 320 && c->depths[2] == 6 &&
              c->num_heads[2] == 5 && c->window_sizes[2] == 14);
        snprintf(rel, sizeof rel, "fixtures/litemedsam_real/%s.input_256.npy", id->str);
        float *img = npy_f32(km_test_path(rel), 3 * 256 * 256);
        snprintf(rel, sizeof rel, "fixtures/litemedsam_real/%s.image_embedding.npy", id->str);
        float *re = npy_f32(km_test_path(rel), EMB_FLOATS);
        if (img && re) {
            float *emb = km_malloc(sizeof(float) * EMB_FLOATS);
            int saved = km_get_threads();
            km_set_threads(2);
            double t = km_now();
            CHECK_OK(km_tinyvit_forward(e, img, emb, NULL));
            printf("    %s forward: %.3f s (2 threads)\n", id->str, km_now() - t);
            km_set_threads(saved);
            compare_tol(key, emb, re, EMB_FLOATS, manifest_tol(&m, key));
            km_free(emb);
            compared++;
        }
        km_free(img); km_free(re);
    }
    printf("    %d samples compared\n", compared);
    CHECK(compared >= 2); /* kvasir-cju0qkwl35piu0993l0dewei2 and covid-covid_1 */
    km_tinyvit_free(e);
    km_json_free(&m);
}

KM_TEST(tinyvit_rejects_bad_checkpoints) {
    km_tdict sd;
    km_tdict_init(&sd);
    CHECK_OK(km_load_checkpoint(km_test_path("fixtures/tinyvit_tiny/lite256/lite256.pth"), &sd));
    km_tinyvit *e = NULL;
    /* Wrong shape: the error names the file, the tensor and both shapes. */
    km_tensor *t = km_tdict_find(&sd, "image_encoder.layers.2.blocks.1.mlp.fc1.weight");
    CHECK(t != NULL);
    if (!t) goto out;
    t->shape[0] = 150;
    CHECK_ERR(km_tinyvit_load(&e, &sd, "bad.pth"), KM_ESHAPE,
              "image_encoder.layers.2.blocks.1.mlp.fc1.weight");
    printf("    message: %s\n", km_errmsg());
    CHECK(strstr(km_errmsg(), "bad.pth") && strstr(km_errmsg(), "[150, 40]") &&
          strstr(km_errmsg(), "[160, 40]"));
    t->shape[0] = 160;
    /* A last width outside {320, 448, 576}. */
    t = km_tdict_find(&sd, "image_encoder.layers.2.downsample.conv1.c.weight");
    t->shape[0] = 256;
    CHECK_ERR(km_tinyvit_load(&e, &sd, "bad.pth"), KM_ESHAPE, "320, 448 or 576");
    printf("    message: %s\n", km_errmsg());
    CHECK(strstr(km_errmsg(), "256") != NULL);
    t->shape[0] = 320;
    /* A first merge width of 448 keeps the 256 grid (stride rule): the last
     * grid is then 128x128, not 64x64. */
    t = km_tdict_find(&sd, "image_encoder.layers.0.downsample.conv1.c.weight");
    km_tensor *t1 = km_tdict_find(&sd, "image_encoder.layers.1.downsample.conv1.c.weight");
    t->shape[0] = 448;
    t1->shape[1] = 448;
    CHECK_ERR(km_tinyvit_load(&e, &sd, "bad.pth"), KM_ESHAPE, "neck needs 64x64");
    printf("    message: %s\n", km_errmsg());
    CHECK(strstr(km_errmsg(), "128x128") != NULL);
    t->shape[0] = 32;
    t1->shape[1] = 32;
    /* A missing tensor. */
    t = km_tdict_find(&sd, "image_encoder.neck.3.bias");
    t->name[0] = 'X';
    CHECK_ERR(km_tinyvit_load(&e, &sd, "bad.pth"), KM_EMISSING, "image_encoder.neck.3.bias");
    t->name[0] = 'i';
    CHECK(e == NULL);
    CHECK_OK(km_tinyvit_load(&e, &sd, "lite256.pth"));
    km_tinyvit_free(e);
    e = NULL;
out:
    km_tdict_free(&sd);
    /* A SAM ViT checkpoint is not a TinyViT. */
    km_tdict_init(&sd);
    CHECK_OK(km_load_checkpoint(km_test_path("fixtures/sam_tiny/sam_tiny.pth"), &sd));
    CHECK(km_tinyvit_detect(&sd) == 0);
    CHECK_ERR(km_tinyvit_load(&e, &sd, "sam_tiny.pth"), KM_EMISSING,
              "image_encoder.patch_embed.seq.0.c.weight");
    printf("    message: %s\n", km_errmsg());
    CHECK(e == NULL);
    km_tdict_free(&sd);
}
