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

/* sigmoid(logit) > 0.5 in float32: 1 exactly for logit > 1.5 * 2^-24 */
KM_TEST(litemedsam_mask_rule) {
    CHECK(km_litemedsam_mask(1e-3f) == 1 && km_litemedsam_mask(1e-7f) == 1);
    const float t = 1.5f * 0x1p-24f; /* 8.9407e-8 */
    CHECK(km_litemedsam_mask(nextafterf(t, 1.f)) == 1 && km_litemedsam_mask(t) == 0);
    CHECK(km_litemedsam_mask(5e-8f) == 0 && km_litemedsam_mask(1e-30f) == 0);
    CHECK(km_litemedsam_mask(0.0f) == 0 && km_litemedsam_mask(-1e-3f) == 0);
    CHECK(km_litemedsam_mask(40.f) == 1 && km_litemedsam_mask(-40.f) == 0);
    CHECK(km_litemedsam_mask(INFINITY) == 1 && km_litemedsam_mask(-INFINITY) == 0);
    CHECK(km_litemedsam_mask(NAN) == 0);
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

/* ---------------------------------------------------------------------- */
/* Prompt encoder + mask decoder on the 256 canvas                        */

typedef struct {
    km_tdict sd;
    km_sam_prompt pe;
    km_sam_decoder dec;
    float *dense_pe, *dense;
} lite_model;

/* Loads prompt_encoder.* and mask_decoder.* of a LiteMedSAM state dict
 * (the image encoder's tensors are left unused). */
static int lite_open(lite_model *m, const char *path) {
    memset(m, 0, sizeof *m);
    km_status s = km_load_checkpoint(path, &m->sd);
    if (s == KM_OK) s = km_sam_prompt_load(&m->pe, &m->sd, path, "prompt_encoder.");
    if (s == KM_OK) s = km_sam_decoder_load(&m->dec, &m->sd, path, "mask_decoder.");
    if (s != KM_OK) {
        km_test_fail(__FILE__, __LINE__, "%s: %s", path, km_errmsg());
        km_tdict_free(&m->sd);
        return 0;
    }
    CHECK(m->pe.input_size == KM_SAM_INPUT); /* the default, kept for SAM */
    m->pe.input_size = 256;                  /* PromptEncoder(256, (64, 64), (256, 256), 16) */
    m->dense_pe = km_malloc(sizeof(float) * EMB);
    m->dense = km_malloc(sizeof(float) * EMB);
    km_sam_prompt_dense_pe(&m->pe, m->dense_pe);
    km_sam_prompt_dense(&m->pe, m->dense, NULL, NULL);
    return 1;
}

static void lite_close(lite_model *m) {
    km_free(m->dense_pe);
    km_free(m->dense);
    km_tdict_free(&m->sd);
}

/* One prompt set (256-frame coordinates) against an embedding: sparse
 * [n_sparse, 256] (returned, km_free), low [K, 256*256], iou [K] for the
 * selected mask tokens (multimask: 1..3, else 0). */
static float *lite_decode(const lite_model *m, const float *emb, const float *pts, const int *lab,
                          int n, const float *box, int multimask, int *n_sparse, float *low,
                          float *iou) {
    int ns = km_sam_prompt_num_sparse(n, box != NULL), M = m->dec.n_mask_tokens;
    float *sparse = km_malloc(sizeof(float) * (size_t)ns * m->pe.D);
    km_sam_prompt_sparse(&m->pe, sparse, pts, lab, n, box);
    float *all = km_malloc(sizeof(float) * (size_t)M * LOW), iou_all[8];
    float *work = km_malloc(sizeof(float) * km_sam_decoder_work_floats(&m->dec, ns));
    km_sam_decoder_forward(&m->dec, all, iou_all, emb, m->dense_pe, sparse, ns, m->dense, work);
    int first = multimask ? 1 : 0, K = multimask ? 3 : 1;
    memcpy(low, all + (size_t)first * LOW, sizeof(float) * (size_t)K * LOW);
    memcpy(iou, iou_all + first, sizeof(float) * K);
    km_free(work);
    km_free(all);
    *n_sparse = ns;
    return sparse;
}

/* Compares got [n] with the .npy at rel under tolerance t; 1 when within. */
static int cmp_npy(const char *label, const float *got, size_t n, const char *rel, double t) {
    float *ref = load_f32(rel, (int64_t)n);
    if (!ref) return 0;
    km_cmp c = km_compare(label, got, ref, n);
    CHECK_MSG(c.max_abs <= t, "%s: max_abs %.3g > tolerance %.3g", label, c.max_abs, t);
    km_free(ref);
    return c.max_abs <= t;
}

KM_TEST(litemedsam_decoder_lite256) {
    km_json *man = load_manifest("fixtures/tinyvit_tiny/lite256/manifest.json");
    lite_model m;
    if (!man || !lite_open(&m, km_test_path("fixtures/tinyvit_tiny/lite256/lite256.pth"))) {
        free_manifest(man);
        return;
    }
    CHECK(m.dec.depth == 2 && m.dec.mlp_dim == 256 && m.dec.n_mask_tokens == 4);
    {   /* the canvas side matters: the same box on a 1024 canvas encodes differently */
        const float bx[4] = {34, 25, 213, 186};
        float a[512], b[512], d = 0;
        km_sam_prompt_sparse(&m.pe, a, NULL, NULL, 0, bx);
        m.pe.input_size = 1024;
        km_sam_prompt_sparse(&m.pe, b, NULL, NULL, 0, bx);
        m.pe.input_size = 256;
        for (int i = 0; i < 512; i++) d = fabsf(a[i] - b[i]) > d ? fabsf(a[i] - b[i]) : d;
        CHECK(d > 0.1f);
    }
    float *emb = load_f32("fixtures/tinyvit_tiny/lite256/image_embedding.npy", EMB);
    lite_prompt ps[4];
    int n = read_lite_prompts(man, ps, 4);
    const int H = 270, W = 301, NH = 230, NW = 256;
    float *low = km_malloc(sizeof(float) * 3 * LOW), *logits = km_malloc(sizeof(float) * 3 * H * W);
    float *work = km_malloc(sizeof(float) * NH * NW), iou[3];
    char rel[256], key[256];
    for (int s = 0; emb && s < n; s++) {
        const lite_prompt *p = &ps[s];
        int K = p->multimask ? 3 : 1, ns;
        printf("    [%s] K=%d\n", p->name, K);
        float *sparse = lite_decode(&m, emb, p->pts256, p->labels, p->n_points,
                                    p->has_box ? p->box256 : NULL, p->multimask, &ns, low, iou);
#define FIXREL(what) (snprintf(rel, sizeof rel, "fixtures/tinyvit_tiny/lite256/%s." what ".npy", p->name), rel)
#define TOLKEY(what) (snprintf(key, sizeof key, "%s." what, p->name), tol(man, key))
        cmp_npy("  sparse_embeddings", sparse, (size_t)ns * 256, FIXREL("sparse_embeddings"),
                tol(man, "sparse_embeddings"));
        cmp_npy("  low_res_logits", low, (size_t)K * LOW, FIXREL("low_res_logits"), TOLKEY("low_res_logits"));
        cmp_npy("  iou_predictions", iou, K, FIXREL("iou_predictions"), TOLKEY("iou_predictions"));
        km_litemedsam_postprocess(logits, low, K, NH, NW, H, W, work);
        double tl = TOLKEY("mask_logits");
        cmp_npy("  mask_logits", logits, (size_t)K * H * W, FIXREL("mask_logits"), tl);
        float *ref_logits = load_f32(FIXREL("mask_logits"), (int64_t)K * H * W);
        km_tensor mt;
        if (ref_logits && load_u8(FIXREL("masks"), &mt)) {
            CHECK(check_masks("masks", logits, mt.data, ref_logits, (size_t)K * H * W, tl) == 0);
            km_tensor_free(&mt);
        }
#undef FIXREL
#undef TOLKEY
        km_free(ref_logits);
        km_free(sparse);
    }
    km_free(work);
    km_free(low);
    km_free(logits);
    km_free(emb);
    lite_close(&m);
    free_manifest(man);
}

/* ---------------------------------------------------------------------- */
/* The real checkpoint on real images (litemedsam_real)                   */

#define REAL "fixtures/litemedsam_real/"

/* Where kmseg looks for the checkpoint: $KMSEG_TEACHER, else the installer's
 * default ${KMSEG_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/kmseg}/teachers/. */
static const char *real_teacher(void) {
    static char buf[4096];
    const char *e = getenv("KMSEG_TEACHER"), *home = getenv("KMSEG_HOME"), *xdg = getenv("XDG_DATA_HOME");
    if (e && *e) return e;
    if (home && *home)
        snprintf(buf, sizeof buf, "%s/teachers/lite_medsam.pth", home);
    else if (xdg && *xdg)
        snprintf(buf, sizeof buf, "%s/kmseg/teachers/lite_medsam.pth", xdg);
    else
        snprintf(buf, sizeof buf, "%s/.local/share/kmseg/teachers/lite_medsam.pth",
                 getenv("HOME") ? getenv("HOME") : "");
    FILE *f = fopen(buf, "rb");
    if (!f) {
        km_test_fail(__FILE__, __LINE__, "LiteMedSAM checkpoint %s not found: run "
                     "tools/install-teacher.sh (or set KMSEG_TEACHER)", buf);
        return NULL;
    }
    fclose(f);
    return buf;
}

/* The sample's input image as h x w x 3 uint8: the dataset file decoded by
 * kmseg (checked against the manifest's sha256 of PIL's decoding), or the
 * stored <id>.image.npy of a transformed sample. */
static uint8_t *real_image(const km_json *smp, int *w, int *h) {
    const char *id = km_json_get(smp, "id")->str;
    const km_json *dec = km_json_get(smp, "decoded_rgb");
    char rel[512];
    uint8_t *rgb = NULL;
    if (km_json_get(smp, "transform")->type != KM_JSON_NULL) {
        km_tensor t;
        snprintf(rel, sizeof rel, REAL "%s.image.npy", id);
        if (!load_u8(rel, &t)) return NULL;
        *h = (int)t.shape[0], *w = (int)t.shape[1];
        rgb = t.data;
        t.data = NULL;
        km_tensor_free(&t);
    } else {
        km_image img;
        snprintf(rel, sizeof rel, "data/%s", km_json_get(smp, "image")->str);
        if (km_image_load(km_test_path(rel), &img, 3) != KM_OK) {
            km_test_fail(__FILE__, __LINE__, "%s", km_errmsg());
            return NULL;
        }
        *w = img.w, *h = img.h;
        rgb = img.data;
    }
    const km_json *shape = km_json_get(dec, "shape_hwc");
    CHECK(shape->items[0].i == *h && shape->items[1].i == *w);
    char hex[65];
    km_sha256_hex(rgb, (size_t)*w * *h * 3, hex);
    const char *want = km_json_get(dec, "sha256_of_uint8_bytes")->str;
    CHECK_MSG(strcmp(hex, want) == 0, "%s: decoded RGB sha256 %s, the reference decoder's %s", rel, hex,
              want);
    return rgb;
}

KM_TEST(litemedsam_real_preprocess_and_boxes) {
    km_json *man = load_manifest(REAL "manifest.json");
    if (!man) return;
    const km_json *samples = km_json_get(man, "samples");
    int checked = 0;
    for (int i = 0; i < samples->n; i++) {
        const km_json *smp = &samples->items[i];
        const char *id = km_json_get(smp, "id")->str;
        int w, h;
        uint8_t *rgb = real_image(smp, &w, &h);
        if (!rgb) continue;
        const km_json *ns = km_json_get(smp, "new_size");
        char r1[512], r2[512];
        snprintf(r1, sizeof r1, REAL "%s.resized_uint8.npy", id);
        snprintf(r2, sizeof r2, REAL "%s.input_256.npy", id);
        checked += check_preprocess(id, rgb, w, h, r1, r2, (int)ns->items[0].i, (int)ns->items[1].i,
                                    tol(man, "input_preprocessed"));
        const km_json *bo = km_json_get(smp, "box_original_xyxy"), *b256 = km_json_get(smp, "box_256");
        for (int k = 0; k < 4; k++) {
            float got = km_litemedsam_box_coord((float)bo->items[k].num, w, h, 256);
            CHECK_MSG(got == (float)b256->items[k].num, "%s box[%d]: %g, reference %g", id, k, got,
                      b256->items[k].num);
        }
        km_free(rgb);
    }
    printf("    %d of %d samples: resized uint8 exact, encoder input within tolerance\n", checked,
           samples->n);
    CHECK(samples->n == 5 && checked == 5);
    free_manifest(man);
}

/* A sample's mask.png as 0/1 bytes, H x W. */
static uint8_t *real_mask(const km_json *smp, int H, int W) {
    char rel[512];
    km_image img;
    snprintf(rel, sizeof rel, REAL "%s", km_json_get(smp, "mask_png")->str);
    if (km_image_load(km_test_path(rel), &img, 1) != KM_OK) {
        km_test_fail(__FILE__, __LINE__, "%s", km_errmsg());
        return NULL;
    }
    CHECK(img.w == W && img.h == H);
    return img.data;
}

/* Post-processing from the stored low-res logits (no checkpoint needed):
 * mask_logits where the folder keeps them, and mask.png for every sample. As
 * the logits come from the same low-res input, a mask pixel may differ only
 * where our own logit is within 1e-4 of 0 (the bilinear arithmetic matches
 * torch to ~1e-6). */
KM_TEST(litemedsam_real_postprocess) {
    km_json *man = load_manifest(REAL "manifest.json");
    if (!man) return;
    const km_json *samples = km_json_get(man, "samples"), *arrays = km_json_get(man, "arrays");
    int masks_ok = 0;
    for (int i = 0; i < samples->n; i++) {
        const km_json *smp = &samples->items[i];
        const char *id = km_json_get(smp, "id")->str;
        const km_json *os = km_json_get(smp, "original_size"), *ns = km_json_get(smp, "new_size");
        int H = (int)os->items[0].i, W = (int)os->items[1].i;
        int NH = (int)ns->items[0].i, NW = (int)ns->items[1].i;
        char rel[512], key[512];
        snprintf(rel, sizeof rel, REAL "%s.low_res_logits.npy", id);
        float *low = load_f32(rel, LOW);
        uint8_t *ref = real_mask(smp, H, W);
        if (low && ref) {
            float *logits = km_malloc(sizeof(float) * H * W), *work = km_malloc(sizeof(float) * NH * NW);
            km_litemedsam_postprocess(logits, low, 1, NH, NW, H, W, work);
            snprintf(key, sizeof key, "%s.mask_logits", id);
            const km_json *a = km_json_get(arrays, key);
            printf("    %s (%dx%d, crop %dx%d)\n", id, W, H, NW, NH);
            if (a && km_json_get(a, "file")->type == KM_JSON_STR) {
                snprintf(rel, sizeof rel, REAL "%s", km_json_get(a, "file")->str);
                cmp_npy("  mask_logits", logits, (size_t)H * W, rel, tol(man, key));
            }
            size_t bad = check_masks("mask.png", logits, ref, logits, (size_t)H * W, 1e-4);
            CHECK(bad == 0);
            masks_ok += bad == 0;
            km_free(logits);
            km_free(work);
        }
        km_free(low);
        km_free(ref);
    }
    CHECK(masks_ok == 5);
    free_manifest(man);
}

/* The real checkpoint's prompt encoder + mask decoder on the stored
 * embeddings (the first Kvasir sample and the COVID sample keep theirs). */
KM_TEST(litemedsam_real_decoder) {
    km_json *man = load_manifest(REAL "manifest.json");
    const char *path = real_teacher();
    lite_model m;
    if (!man || !path || !lite_open(&m, path)) {
        free_manifest(man);
        return;
    }
    CHECK(m.dec.depth == 2 && m.dec.mlp_dim == 2048);
    const km_json *samples = km_json_get(man, "samples"), *arrays = km_json_get(man, "arrays");
    int decoded = 0;
    for (int i = 0; i < samples->n; i++) {
        const km_json *smp = &samples->items[i];
        const char *id = km_json_get(smp, "id")->str;
        char rel[512], key[512];
        snprintf(key, sizeof key, "%s.image_embedding", id);
        const km_json *a = km_json_get(arrays, key);
        if (!a || km_json_get(a, "file")->type != KM_JSON_STR) continue;
        snprintf(rel, sizeof rel, REAL "%s", km_json_get(a, "file")->str);
        float *emb = load_f32(rel, EMB);
        if (!emb) continue;
        const km_json *os = km_json_get(smp, "original_size"), *ns = km_json_get(smp, "new_size");
        int H = (int)os->items[0].i, W = (int)os->items[1].i;
        int NH = (int)ns->items[0].i, NW = (int)ns->items[1].i;
        float box[4], iou, *low = km_malloc(sizeof(float) * LOW);
        for (int k = 0; k < 4; k++) box[k] = (float)km_json_get(smp, "box_256")->items[k].num;
        int nsp;
        printf("    %s: box_256 [%g %g %g %g]\n", id, box[0], box[1], box[2], box[3]);
        float *sparse = lite_decode(&m, emb, NULL, NULL, 0, box, 0, &nsp, low, &iou);
        snprintf(rel, sizeof rel, REAL "%s.low_res_logits.npy", id);
        snprintf(key, sizeof key, "%s.low_res_logits", id);
        cmp_npy("  low_res_logits", low, LOW, rel, tol(man, key));
        snprintf(key, sizeof key, "%s.iou_predictions", id);
        double ref_iou = km_json_get(smp, "iou_prediction")->num;
        printf("      iou %.7f, reference %.7f (tol %g)\n", iou, ref_iou, tol(man, key));
        CHECK_NEAR(iou, ref_iou, tol(man, key));
        float *logits = km_malloc(sizeof(float) * H * W), *work = km_malloc(sizeof(float) * NH * NW);
        km_litemedsam_postprocess(logits, low, 1, NH, NW, H, W, work);
        snprintf(key, sizeof key, "%s.mask_logits", id);
        double tl = tol(man, key);
        snprintf(rel, sizeof rel, REAL "%s.mask_logits.npy", id);
        float *ref_logits = load_f32(rel, (int64_t)H * W);
        if (ref_logits) cmp_npy("  mask_logits", logits, (size_t)H * W, rel, tl);
        uint8_t *ref = real_mask(smp, H, W);
        if (ref && ref_logits) CHECK(check_masks("mask.png", logits, ref, ref_logits, (size_t)H * W, tl) == 0);
        decoded++;
        km_free(ref);
        km_free(ref_logits);
        km_free(logits);
        km_free(work);
        km_free(sparse);
        km_free(low);
        km_free(emb);
    }
    CHECK(decoded == 2);
    lite_close(&m);
    free_manifest(man);
}

/* ---------------------------------------------------------------------- */
/* MobileSAM's decoder side through the SAM predictor, unchanged          */

#define MOB "fixtures/tinyvit_tiny/mobile1024/"

static void check_mobile_set(km_sam_predictor *p, const km_json *man, const km_json *o) {
    const char *name = km_json_get(o, "name")->str;
    const km_json *pc = km_json_get(o, "point_coords"), *bx = km_json_get(o, "box");
    float pts[8], box[4];
    int lab[4], n = pc ? pc->n : 0;
    KM_ASSERT(n <= 4);
    for (int k = 0; k < n; k++) {
        pts[2 * k] = (float)pc->items[k].items[0].num;
        pts[2 * k + 1] = (float)pc->items[k].items[1].num;
        lab[k] = (int)km_json_get(o, "point_labels")->items[k].i;
    }
    for (int k = 0; bx && k < 4; k++) box[k] = (float)bx->items[k].num;
    int mm = km_json_get(o, "multimask_output")->b, K = mm ? 3 : 1;
    km_sam_prompts pr = {n ? pts : NULL, n ? lab : NULL, n, bx ? box : NULL, NULL, 0, 0, mm};
    km_sam_result r;
    CHECK_OK(km_sam_predict(p, &pr, &r));
    if (r.K != K || r.h != 190 || r.w != 260) {
        km_test_fail(__FILE__, __LINE__, "%s: K=%d %dx%d", name, r.K, r.w, r.h);
        km_sam_result_free(&r);
        return;
    }
    printf("    [%s] K=%d\n", name, K);
    char rel[256], key[256];
#define REL(what) (snprintf(rel, sizeof rel, MOB "%s." what ".npy", name), rel)
#define TOL(what) (snprintf(key, sizeof key, "%s." what, name), tol(man, key))
    cmp_npy("  sparse_embeddings", r.sparse, (size_t)r.n_sparse * 256, REL("sparse_embeddings"),
            tol(man, "sparse_embeddings"));
    cmp_npy("  low_res_logits", r.low_res, (size_t)K * LOW, REL("low_res_logits"), TOL("low_res_logits"));
    cmp_npy("  iou_predictions", r.iou, K, REL("iou_predictions"), TOL("iou_predictions"));
    size_t n_px = (size_t)K * 190 * 260;
    double tl = TOL("mask_logits");
    cmp_npy("  mask_logits", r.scores, n_px, REL("mask_logits"), tl);
    float *ref_logits = load_f32(REL("mask_logits"), (int64_t)n_px);
    km_tensor mt;
    if (ref_logits && load_u8(REL("masks"), &mt)) {
        const uint8_t *m = mt.data;
        size_t bad = 0;
        for (size_t i = 0; i < n_px; i++)
            bad += (r.masks[i] != 0) != (m[i] != 0) && fabsf(ref_logits[i]) > tl;
        printf("    masks (logit > 0): %zu px differ outside the |logit| <= %g band\n", bad, tl);
        CHECK(bad == 0);
        km_tensor_free(&mt);
    }
#undef REL
#undef TOL
    km_free(ref_logits);
    km_sam_result_free(&r);
}

KM_TEST(litemedsam_mobile1024_decoder_via_sam_predictor) {
    km_json *man = load_manifest(MOB "manifest.json");
    if (!man) return;
    km_sam m;
    km_status s = km_sam_load(&m, km_test_path(MOB "mobile1024.pth"), 0);
    CHECK_OK(s);
    if (s != KM_OK) {
        free_manifest(man);
        return;
    }
    CHECK(m.dec.depth == 1 && m.dec.mlp_dim == 128 && m.pe.input_size == 1024);
    km_sam_predictor p;
    s = km_sam_predictor_init(&p, &m, KM_SAM_PROFILE_MOBILESAM); /* = SamPredictor on a TinyViT */
    CHECK_OK(s);
    if (s != KM_OK) {
        km_sam_free(&m);
        free_manifest(man);
        return;
    }
    float *emb = load_f32(MOB "image_embedding.npy", EMB);
    if (emb) {
        CHECK_OK(km_sam_set_embedding(&p, emb, 260, 190));
        CHECK(p.input_h == 748 && p.input_w == 1024);
        const km_json *ps = km_json_get(man, "prompts");
        CHECK(ps->n == 2);
        for (int i = 0; i < ps->n; i++) check_mobile_set(&p, man, &ps->items[i]);
    }
    km_free(emb);
    km_sam_predictor_free(&p);
    km_sam_free(&m);
    free_manifest(man);
}
