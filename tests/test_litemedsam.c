/* test_litemedsam.c - LiteMedSAM's pre/post-processing (OpenCV INTER_AREA,
 * min-max normalisation, box/point scaling, crop + bilinear, sigmoid > 0.5)
 * and the existing SAM prompt encoder + mask decoder on a 256 canvas, against
 * the goldens made by the official code (fixtures/README.md):
 *   tinyvit_tiny/resize_cases  cv2.resize INTER_AREA (OpenCV 4.6): exact;
 *   tinyvit_tiny/lite256       random-weight LiteMedSAM, 270x301 image;
 *   litemedsam_real            the real checkpoint on Kvasir-SEG / COVID-QU-Ex
 *                              images and one 224x224 input (upscale branch);
 *   tinyvit_tiny/mobile1024    MobileSAM's decoder side through the SAM
 *                              predictor as it is.
 * Tolerances are the manifests' recommended_tolerances (20x the reference's
 * own float32-vs-float64 gap): uint8 images exact, the normalised input 1e-7
 * (one double division rounded to float: exact when done the same way),
 * sparse embeddings 1e-5, logits 1e-4..1e-2 (the real checkpoint's logits
 * reach ~36), masks exact except where |reference logit| <= the mask_logits
 * tolerance. The real checkpoint is read from $KMSEG_TEACHER or the installer's
 * default path (tools/install-teacher.sh); its tests fail, saying so, when it
 * is missing. */
#include "test.h"
#include "sha256.h"
#include "../src/io/image.h"
#include "../src/io/json.h"
#include "../src/io/load.h"
#include "../src/io/npy.h"
#include "../src/io/resize.h"
#include "../src/models/sam.h"
#include "../src/models/sam_postprocess.h"
#include "../src/models/sam_preprocess.h"

#define LOW (256 * 256)
#define EMB (256 * 64 * 64)

static km_json *load_manifest(const char *rel) {
    uint8_t *buf;
    size_t n;
    if (km_read_file(km_test_path(rel), 1 << 24, &buf, &n) != KM_OK) {
        km_test_fail(__FILE__, __LINE__, "%s: %s", rel, km_errmsg());
        return NULL;
    }
    km_json *j = km_malloc(sizeof *j);
    km_status s = km_json_parse(rel, (const char *)buf, n, j);
    km_free(buf);
    if (s != KM_OK) {
        km_test_fail(__FILE__, __LINE__, "%s: %s", rel, km_errmsg());
        km_free(j);
        return NULL;
    }
    return j;
}

static void free_manifest(km_json *j) {
    if (!j) return;
    km_json_free(j);
    km_free(j);
}

/* recommended_tolerances[key].max_abs */
static double tol(const km_json *man, const char *key) {
    const km_json *t = km_json_get(km_json_get(man, "recommended_tolerances"), key);
    const km_json *v = t ? km_json_get(t, "max_abs") : NULL;
    KM_ASSERT(v && v->type == KM_JSON_NUM);
    return v->num;
}

static float *load_f32(const char *rel, int64_t expect_numel) {
    km_tensor t;
    if (km_npy_load_f32(km_test_path(rel), -1, NULL, &t) != KM_OK) {
        km_test_fail(__FILE__, __LINE__, "%s: %s", rel, km_errmsg());
        return NULL;
    }
    if (km_numel(t.ndim, t.shape) != expect_numel) {
        km_test_fail(__FILE__, __LINE__, "%s: %lld elements, expected %lld", rel,
                     (long long)km_numel(t.ndim, t.shape), (long long)expect_numel);
        km_tensor_free(&t);
        return NULL;
    }
    float *d = t.data;
    t.data = NULL;
    km_tensor_free(&t);
    return d;
}

/* A uint8 (or bool) .npy; returns 0 (test failed) when unreadable. */
static int load_u8(const char *rel, km_tensor *t) {
    if (km_npy_load(km_test_path(rel), t) != KM_OK) {
        km_test_fail(__FILE__, __LINE__, "%s: %s", rel, km_errmsg());
        return 0;
    }
    if (t->dtype != KM_U8 && t->dtype != KM_BOOL) {
        km_test_fail(__FILE__, __LINE__, "%s: dtype %s, expected uint8", rel, km_dtype_name(t->dtype));
        km_tensor_free(t);
        return 0;
    }
    return 1;
}

static size_t count_diff_u8(const uint8_t *a, const uint8_t *b, size_t n) {
    size_t d = 0;
    for (size_t i = 0; i < n; i++) d += a[i] != b[i];
    return d;
}

/* Masks from mask logits (got) vs a reference 0/1 (or 0/255) mask; a pixel may
 * differ only where the reference logit is within `band` of 0 (ref_logits
 * NULL: no band, exact). Returns the disagreements outside the band. */
static size_t check_masks(const char *label, const float *logits, const uint8_t *ref,
                          const float *ref_logits, size_t n, double band) {
    size_t flips = 0, bad = 0, fg = 0;
    for (size_t i = 0; i < n; i++) {
        int m = km_litemedsam_mask(logits[i]), r = ref[i] != 0;
        fg += r;
        if (m != r) {
            flips++;
            bad += !(ref_logits && fabs(ref_logits[i]) <= band);
        }
    }
    printf("    %s: %zu of %zu px foreground, %zu differ, %zu outside the |logit| <= %g band\n", label,
           fg, n, flips, bad, ref_logits ? band : 0.0);
    CHECK(fg > 0 && fg < n); /* a real mask */
    return bad;
}

/* ---------------------------------------------------------------------- */
/* INTER_AREA                                                             */

KM_TEST(litemedsam_resize_area_hand_cases) {
    /* (b) 2x2: (S + 2) >> 2 rounds half up for 1 channel; with 2 channels
     * OpenCV takes the generic rule, S * 0.25f rounded half to even. */
    const uint8_t q1[4] = {0, 0, 0, 2}, q2[8] = {0, 1, 0, 1, 0, 1, 2, 1};
    uint8_t o[4];
    km_resize_area_u8(q1, 2, 2, 1, o, 1, 1);
    CHECK(o[0] == 1);
    km_resize_area_u8(q2, 2, 2, 2, o, 1, 1);
    CHECK(o[0] == 0 && o[1] == 1); /* S = 2: 0.5 -> 0 (the 1-channel rule gives 1); S = 4: 1 */
    /* (b) 1x2 factors (same width): S * 0.5f, half to even: (3+4)/2 = 3.5 -> 4, (1+2)/2 -> 2 */
    const uint8_t v2[4] = {3, 1, 4, 2};
    km_resize_area_u8(v2, 2, 2, 1, o, 2, 1);
    CHECK(o[0] == 4 && o[1] == 2);
    /* (c) 3 -> 2 columns: taps (2/3, 1/3) and (1/3, 2/3) */
    const uint8_t g[3] = {30, 60, 90};
    km_resize_area_u8(g, 3, 1, 1, o, 2, 1);
    CHECK(o[0] == 40 && o[1] == 80);
    /* (d) 2 -> 4 is pixel replication in "area" coordinates; 2 -> 3 puts the
     * midpoint in the middle */
    const uint8_t u[2] = {10, 200};
    uint8_t o4[4];
    km_resize_area_u8(u, 2, 1, 1, o4, 4, 1);
    CHECK(o4[0] == 10 && o4[1] == 10 && o4[2] == 200 && o4[3] == 200);
    km_resize_area_u8(u, 2, 1, 1, o4, 3, 1);
    CHECK(o4[0] == 10 && o4[1] == 105 && o4[2] == 200);
    /* (a) same size: a copy, 4 channels */
    uint8_t s[24], d[24];
    for (int i = 0; i < 24; i++) s[i] = (uint8_t)(i * 11);
    km_resize_area_u8(s, 3, 2, 4, d, 3, 2);
    CHECK(memcmp(s, d, sizeof s) == 0);
}

KM_TEST(litemedsam_resize_area_matches_cv2_cases) {
    km_json *man = load_manifest("fixtures/tinyvit_tiny/resize_cases/manifest.json");
    if (!man) return;
    const km_json *cases = km_json_get(man, "cases");
    CHECK(cases && cases->n == 5);
    for (int i = 0; cases && i < cases->n; i++) {
        const km_json *c = &cases->items[i];
        const char *name = km_json_get(c, "name")->str;
        const km_json *dwh = km_json_get(c, "dsize_wh");
        int dw = (int)dwh->items[0].i, dh = (int)dwh->items[1].i;
        char rel[256];
        km_tensor in, ref;
        snprintf(rel, sizeof rel, "fixtures/tinyvit_tiny/resize_cases/%s.input.npy", name);
        if (!load_u8(rel, &in)) continue;
        snprintf(rel, sizeof rel, "fixtures/tinyvit_tiny/resize_cases/%s.output.npy", name);
        if (!load_u8(rel, &ref)) {
            km_tensor_free(&in);
            continue;
        }
        int sh = (int)in.shape[0], sw = (int)in.shape[1], C = in.ndim == 3 ? (int)in.shape[2] : 1;
        CHECK(ref.shape[0] == dh && ref.shape[1] == dw);
        size_t n = (size_t)dw * dh * C;
        uint8_t *out = km_malloc(n);
        km_resize_area_u8(in.data, sw, sh, C, out, dw, dh);
        size_t bad = count_diff_u8(out, ref.data, n);
        printf("    %-17s %dx%dx%d -> %dx%d: %zu of %zu values differ\n", name, sw, sh, C, dw, dh, bad,
               n);
        CHECK(bad == 0);
        km_free(out);
        km_tensor_free(&in);
        km_tensor_free(&ref);
    }
    free_manifest(man);
}

/* ---------------------------------------------------------------------- */
/* Pre-processing and prompt scaling                                      */

/* km_litemedsam_preprocess on rgb (h x w x 3) against the stored resized
 * uint8 image and encoder input; returns 1 when both match. */
static int check_preprocess(const char *label, const uint8_t *rgb, int w, int h, const char *rel_resized,
                            const char *rel_input, int expect_nh, int expect_nw, double in_tol) {
    int nh = 0, nw = 0, ok = 1;
    float *x = km_malloc(sizeof(float) * 3 * LOW);
    km_litemedsam_preprocess(x, 256, rgb, w, h, 3, &nh, &nw);
    CHECK(nh == expect_nh && nw == expect_nw);
    km_tensor rs;
    if (load_u8(rel_resized, &rs)) {
        CHECK(rs.shape[0] == nh && rs.shape[1] == nw);
        uint8_t *mine = km_malloc((size_t)nh * nw * 3);
        km_resize_area_u8(rgb, w, h, 3, mine, nw, nh);
        size_t bad = count_diff_u8(mine, rs.data, (size_t)nh * nw * 3);
        printf("    %s: %dx%d -> %dx%d, resized uint8: %zu of %d values differ\n", label, w, h, nw, nh,
               bad, nh * nw * 3);
        CHECK(bad == 0);
        ok &= bad == 0;
        km_free(mine);
        km_tensor_free(&rs);
    }
    float *ref = load_f32(rel_input, 3 * LOW);
    if (ref) {
        km_cmp c = km_compare("  encoder input", x, ref, 3 * LOW);
        CHECK(c.max_abs <= in_tol);
        ok &= c.max_abs <= in_tol;
        km_free(ref);
    }
    km_free(x);
    return ok;
}

KM_TEST(litemedsam_preprocess_lite256) {
    km_json *man = load_manifest("fixtures/tinyvit_tiny/lite256/manifest.json");
    km_tensor img;
    if (!man || !load_u8("fixtures/tinyvit_tiny/lite256/image.npy", &img)) {
        free_manifest(man);
        return;
    }
    const int H = 270, W = 301;
    CHECK(img.shape[0] == H && img.shape[1] == W && img.shape[2] == 3);
    check_preprocess("lite256", img.data, W, H, "fixtures/tinyvit_tiny/lite256/resized_uint8.npy",
                     "fixtures/tinyvit_tiny/lite256/input_preprocessed.npy", 230, 256,
                     tol(man, "input_preprocessed"));
    /* grey input = its replication to RGB; a constant image gives zeros */
    uint8_t *g = km_malloc((size_t)H * W), *g3 = km_malloc((size_t)H * W * 3);
    const uint8_t *im = img.data;
    for (int i = 0; i < H * W; i++) g[i] = g3[3 * i] = g3[3 * i + 1] = g3[3 * i + 2] = im[3 * i + 1];
    float *a = km_malloc(sizeof(float) * 3 * LOW), *b = km_malloc(sizeof(float) * 3 * LOW);
    km_litemedsam_preprocess(a, 256, g, W, H, 1, NULL, NULL);
    km_litemedsam_preprocess(b, 256, g3, W, H, 3, NULL, NULL);
    CHECK(memcmp(a, b, sizeof(float) * 3 * LOW) == 0);
    float mx = 0;
    for (int i = 0; i < 3 * LOW; i++) mx = a[i] > mx ? a[i] : mx;
    CHECK(mx == 1.0f); /* the maximum maps to exactly 1 */
    memset(g, 77, (size_t)H * W);
    a[5] = 123.f;
    km_litemedsam_preprocess(a, 256, g, W, H, 1, NULL, NULL);
    int nonzero = 0;
    for (int i = 0; i < 3 * LOW; i++) nonzero += a[i] != 0.0f;
    CHECK(nonzero == 0);
    km_free(a);
    km_free(b);
    km_free(g);
    km_free(g3);
    km_tensor_free(&img);
    free_manifest(man);
}

/* The fixture's prompt sets, in the original frame and in the 256 frame. */
typedef struct {
    const char *name;
    float points[8], pts256[8], box[4], box256[4];
    int labels[4], n_points, has_box, multimask;
} lite_prompt;

static int read_lite_prompts(const km_json *man, lite_prompt *ps, int max) {
    const km_json *arr = km_json_get(man, "prompts");
    const km_json *tr = km_json_get(km_json_get(man, "image"), "prompts_transformed");
    KM_ASSERT(arr && tr && arr->n <= max && tr->n == arr->n);
    for (int i = 0; i < arr->n; i++) {
        const km_json *o = &arr->items[i], *t = &tr->items[i], *v;
        lite_prompt *p = &ps[i];
        memset(p, 0, sizeof *p);
        p->name = km_json_get(o, "name")->str;
        KM_ASSERT(strcmp(p->name, km_json_get(t, "name")->str) == 0);
        if ((v = km_json_get(o, "point_coords"))) {
            p->n_points = v->n;
            KM_ASSERT(v->n <= 4);
            const km_json *v256 = km_json_get(t, "point_coords_256");
            for (int k = 0; k < v->n; k++)
                for (int d = 0; d < 2; d++) {
                    p->points[2 * k + d] = (float)v->items[k].items[d].num;
                    p->pts256[2 * k + d] = (float)v256->items[k].items[d].num;
                }
            for (int k = 0; k < v->n; k++)
                p->labels[k] = (int)km_json_get(o, "point_labels")->items[k].i;
        }
        if ((v = km_json_get(o, "box"))) {
            p->has_box = 1;
            const km_json *b256 = km_json_get(t, "box_256");
            for (int k = 0; k < 4; k++) {
                p->box[k] = (float)v->items[k].num;
                p->box256[k] = (float)b256->items[k].num;
            }
        }
        p->multimask = km_json_get(o, "multimask_output")->b;
    }
    return arr->n;
}

KM_TEST(litemedsam_prompt_coords_lite256) {
    km_json *man = load_manifest("fixtures/tinyvit_tiny/lite256/manifest.json");
    if (!man) return;
    lite_prompt ps[4];
    int n = read_lite_prompts(man, ps, 4), checked = 0;
    const int H = 270, W = 301;
    for (int s = 0; s < n; s++) {
        const lite_prompt *p = &ps[s];
        for (int k = 0; k < 2 * p->n_points; k++, checked++) {
            float got = km_litemedsam_point_coord(p->points[k], W, H, 256);
            CHECK_MSG(got == p->pts256[k], "%s point value %d: %.9g, reference %.9g", p->name, k, got,
                      p->pts256[k]);
        }
        for (int k = 0; p->has_box && k < 4; k++, checked++) {
            float got = km_litemedsam_box_coord(p->box[k], W, H, 256);
            CHECK_MSG(got == p->box256[k], "%s box value %d: %g, reference %g", p->name, k, got,
                      p->box256[k]);
        }
    }
    printf("    %d prompt coordinates equal image.prompts_transformed\n", checked);
    CHECK(checked == 4 + 4 + 2 + 4);
    /* truncation toward zero, the ratio taken first: 255.9 * 256/301 = 217.6 -> 217 */
    CHECK(km_litemedsam_box_coord(255.9f, 301, 270, 256) == 217.0f);
    CHECK(km_litemedsam_box_coord(-0.5f, 301, 270, 256) == 0.0f);
    CHECK(km_litemedsam_box_coord(623.0f, 624, 300, 256) == 255.0f);
    free_manifest(man);
}
