/* test_simclr_ops.c - the SimCLR ops (src/nn/simclr_ops.h): hand-computed
 * values, finite-difference gradient checks, and parity with PyTorch 1.13 of
 * the NT-Xent loss and of the whole projection head (GAP -> Linear -> ReLU ->
 * Linear -> NT-Xent) on the arrays of tests/data/ntxent/, written by
 * tools/make_ntxent_ref.py.
 *
 * Gradient checks (gradcheck.h) use L = sum(out * R) for R fixed random, or
 * the loss itself for NT-Xent. Tolerance, relative to the largest gradient
 * checked: 1e-3 for GAP and Linear (linear in the checked input: only float
 * rounding of the forward enters the difference quotient), 1e-2 for L2
 * normalisation and NT-Xent, where the O(h^2) truncation error of the central
 * difference adds to float rounding. */
#include "test.h"
#include "gradcheck.h"
#include "../src/core/rng.h"
#include "../src/io/npy.h"
#include "../src/nn/basic.h"
#include "../src/nn/ops.h"
#include "../src/nn/simclr_ops.h"

#define D_NTX "tests/data/ntxent/"

static float *falloc(size_t n) { return km_calloc(sizeof(float) * (n ? n : 1)); }

static void fill(km_rng *r, float *x, size_t n, double scale) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * km_rng_normal(r));
}

/* ------------------------------------------------------------------- GAP */

typedef struct {
    int N, C, HW;
    float *in, *out, *R;
} gap_ctx;

static double gap_loss(void *p) {
    gap_ctx *c = p;
    km_gap_forward(c->out, c->in, c->N, c->C, c->HW);
    return km_gc_dot(c->out, c->R, (size_t)c->N * c->C);
}

KM_TEST(gap_by_hand_and_gradcheck) {
    const float x[6] = {1, 2, 3, 4, 5, 9};
    float y[2], dout[2] = {3, -6}, dx[6] = {10, 10, 10, 0, 0, 0};
    km_gap_forward(y, x, 1, 2, 3);
    CHECK_NEAR(y[0], 2.0, 0);
    CHECK_NEAR(y[1], 6.0, 0);
    km_gap_backward(dx, dout, 1, 2, 3); /* accumulates onto 10 and 0 */
    for (int i = 0; i < 3; i++) CHECK_NEAR(dx[i], 11.0, 0);
    for (int i = 3; i < 6; i++) CHECK_NEAR(dx[i], -2.0, 0);

    km_rng r;
    km_rng_seed(&r, 61);
    gap_ctx c = {3, 5, 7 * 6, NULL, NULL, NULL};
    size_t nin = (size_t)c.N * c.C * c.HW, nout = (size_t)c.N * c.C;
    c.in = falloc(nin), c.out = falloc(nout), c.R = falloc(nout);
    fill(&r, c.in, nin, 1.0);
    fill(&r, c.R, nout, 1.0);
    float *g = falloc(nin);
    km_gap_backward(g, c.R, c.N, c.C, c.HW);
    CHECK(km_gradcheck("gap din", gap_loss, &c, c.in, g, nin, 1e-2, 400) < 1e-3);
    km_free(c.in); km_free(c.out); km_free(c.R); km_free(g);
}

/* ---------------------------------------------------------------- Linear */

KM_TEST(linear_backward_by_hand) {
    /* M 2, I 3, O 2: din = dout @ w, dw = dout^T @ in, db = column sums. */
    const float in[6] = {1, 2, 3, 4, 5, 6}, w[6] = {1, 0, -1, 2, 1, 0}, dout[4] = {1, 0, 2, -1};
    const float e_din[6] = {1, 0, -1, 0, -1, -2}, e_dw[6] = {9, 12, 15, -4, -5, -6},
                e_db[2] = {3, -1};
    float din[6] = {0}, dw[6] = {0}, db[2] = {0};
    km_linear_backward(din, dw, db, dout, in, w, 2, 3, 2);
    for (int i = 0; i < 6; i++) CHECK_NEAR(din[i], e_din[i], 0);
    for (int i = 0; i < 6; i++) CHECK_NEAR(dw[i], e_dw[i], 0);
    for (int i = 0; i < 2; i++) CHECK_NEAR(db[i], e_db[i], 0);
    /* Accumulates; NULL outputs are skipped. */
    km_linear_backward(din, NULL, db, dout, in, w, 2, 3, 2);
    km_linear_backward(NULL, dw, NULL, dout, in, w, 2, 3, 2);
    for (int i = 0; i < 6; i++) CHECK_NEAR(din[i], 2 * e_din[i], 0);
    for (int i = 0; i < 6; i++) CHECK_NEAR(dw[i], 2 * e_dw[i], 0);
    for (int i = 0; i < 2; i++) CHECK_NEAR(db[i], 2 * e_db[i], 0);
}

typedef struct {
    int M, I, O;
    float *in, *w, *b, *out, *R;
} lin_ctx;

static double lin_loss(void *p) {
    lin_ctx *c = p;
    km_linear_forward(c->out, c->in, c->w, c->b, c->M, c->I, c->O);
    return km_gc_dot(c->out, c->R, (size_t)c->M * c->O);
}

KM_TEST(linear_gradcheck) {
    km_rng r;
    km_rng_seed(&r, 62);
    lin_ctx c = {5, 7, 3, NULL, NULL, NULL, NULL, NULL};
    size_t nin = (size_t)c.M * c.I, nw = (size_t)c.O * c.I, nout = (size_t)c.M * c.O;
    c.in = falloc(nin), c.w = falloc(nw), c.b = falloc(c.O), c.out = falloc(nout), c.R = falloc(nout);
    fill(&r, c.in, nin, 1.0);
    fill(&r, c.w, nw, 0.5);
    fill(&r, c.b, c.O, 0.5);
    fill(&r, c.R, nout, 1.0);
    float *din = falloc(nin), *dw = falloc(nw), *db = falloc(c.O);
    km_linear_backward(din, dw, db, c.R, c.in, c.w, c.M, c.I, c.O);
    CHECK(km_gradcheck("linear din", lin_loss, &c, c.in, din, nin, 1e-2, 100) < 1e-3);
    CHECK(km_gradcheck("linear dw", lin_loss, &c, c.w, dw, nw, 1e-2, 100) < 1e-3);
    CHECK(km_gradcheck("linear db", lin_loss, &c, c.b, db, c.O, 1e-2, 100) < 1e-3);
    km_free(c.in); km_free(c.w); km_free(c.b); km_free(c.out); km_free(c.R);
    km_free(din); km_free(dw); km_free(db);
}

/* ----------------------------------------------------------- L2 normalise */

typedef struct {
    int M, D;
    float eps;
    float *in, *out, *norm, *R;
} l2_ctx;

static double l2_loss(void *p) {
    l2_ctx *c = p;
    km_l2norm_forward(c->out, c->norm, c->in, c->M, c->D, c->eps);
    return km_gc_dot(c->out, c->R, (size_t)c->M * c->D);
}

KM_TEST(l2norm_by_hand_and_gradcheck) {
    /* Rows: [3,4] (norm 5), [0,0] (zero row: output 0, gradient g/eps). */
    const float x[4] = {3, 4, 0, 0}, g[4] = {1, 0, 2e-12f, -1e-12f};
    float y[4], n[2], dx[4] = {0};
    km_l2norm_forward(y, n, x, 2, 2, 1e-12f);
    CHECK_NEAR(n[0], 5.0, 0);
    CHECK_NEAR(y[0], 0.6, 1e-7);
    CHECK_NEAR(y[1], 0.8, 1e-7);
    CHECK(y[2] == 0.0f && y[3] == 0.0f && n[1] == 0.0f);
    km_l2norm_backward(dx, g, x, n, 2, 2, 1e-12f);
    /* (g - x (g.x)/n^2)/n = ([1,0] - [3,4] 3/25) / 5 */
    CHECK_NEAR(dx[0], 0.128, 1e-7);
    CHECK_NEAR(dx[1], -0.096, 1e-7);
    CHECK_NEAR(dx[2], 2.0, 1e-6);
    CHECK_NEAR(dx[3], -1.0, 1e-6);
    /* Norm 0.5 below eps = 1: out = x / 1 and the gradient is g / 1. */
    const float xs[2] = {0.3f, 0.4f}, gs[2] = {1.5f, -2.0f};
    float ys[2], ns[1], dxs[2] = {0};
    km_l2norm_forward(ys, ns, xs, 1, 2, 1.0f);
    CHECK(ys[0] == 0.3f && ys[1] == 0.4f);
    km_l2norm_backward(dxs, gs, xs, ns, 1, 2, 1.0f);
    CHECK(dxs[0] == 1.5f && dxs[1] == -2.0f);

    km_rng r;
    km_rng_seed(&r, 63);
    l2_ctx c = {6, 9, 1e-12f, NULL, NULL, NULL, NULL};
    size_t nx = (size_t)c.M * c.D;
    c.in = falloc(nx), c.out = falloc(nx), c.norm = falloc(c.M), c.R = falloc(nx);
    fill(&r, c.in, nx, 1.0);
    fill(&r, c.R, nx, 1.0);
    float *gd = falloc(nx);
    l2_loss(&c);
    km_l2norm_backward(gd, c.R, c.in, c.norm, c.M, c.D, c.eps);
    CHECK(km_gradcheck("l2norm din", l2_loss, &c, c.in, gd, nx, 1e-3, nx) < 1e-2);
    km_free(c.in); km_free(c.out); km_free(c.norm); km_free(c.R); km_free(gd);
}

/* ---------------------------------------------------------------- NT-Xent */

KM_TEST(ntxent_by_hand) {
    /* B 4 (N 2), D 2; directions e1, e2, e1, -e2 with assorted lengths, so
     * s = [[., 0, 1, 0], [0, ., 0, -1], [1, 0, ., 0], [0, -1, 0, .]] and the
     * positives are (0,2) and (1,3). With logits s/T:
     *   rows 0, 2: log(2 + e^{1/T}) - 1/T;  rows 1, 3: log(2 + e^{-1/T}) + 1/T,
     * so loss = (log(2 + e^{1/T}) + log(2 + e^{-1/T})) / 2. */
    const float p[8] = {2, 0, 0, 0.5f, 3, 0, 0, -7};
    float work[64];
    CHECK(km_ntxent_work_floats(4, 2) <= 64);
    const float T[2] = {1.0f, 0.5f};
    for (int t = 0; t < 2; t++) {
        double k = 1.0 / T[t];
        double e = (log(2 + exp(k)) + log(2 + exp(-k))) / 2;
        CHECK_NEAR(km_ntxent_forward(p, 4, 2, T[t], work), e, 1e-6);
    }
    /* N = 1: each row's only candidate is its positive, so loss 0, gradient 0. */
    const float p2[6] = {1, 2, 3, -4, 0.5f, 2};
    float dp2[6] = {0};
    CHECK_NEAR(km_ntxent_forward(p2, 2, 3, 0.1f, work), 0.0, 1e-7);
    km_ntxent_backward(dp2, p2, 2, 3, 0.1f, 1.0f, work);
    for (int i = 0; i < 6; i++) CHECK_NEAR(dp2[i], 0.0, 1e-7);
}

typedef struct {
    int B, D;
    float T;
    float *p, *work;
} ntx_ctx;

static double ntx_loss(void *c_) {
    ntx_ctx *c = c_;
    return km_ntxent_forward(c->p, c->B, c->D, c->T, c->work);
}

KM_TEST(ntxent_gradcheck_and_accumulation) {
    km_rng r;
    km_rng_seed(&r, 64);
    const float T[2] = {0.5f, 0.1f};
    for (int t = 0; t < 2; t++) {
        ntx_ctx c = {6, 5, T[t], NULL, NULL};
        size_t np = (size_t)c.B * c.D;
        c.p = falloc(np);
        c.work = falloc(km_ntxent_work_floats(c.B, c.D));
        fill(&r, c.p, np, 1.0);
        float *g = falloc(np), *g2 = falloc(np);
        ntx_loss(&c);
        km_ntxent_backward(g, c.p, c.B, c.D, c.T, 1.0f, c.work);
        CHECK(km_gradcheck(t ? "ntxent dp (T 0.1)" : "ntxent dp (T 0.5)", ntx_loss, &c, c.p, g, np,
                           1e-3, np) < 1e-2);
        /* scale multiplies and the result adds onto dp. */
        for (size_t i = 0; i < np; i++) g2[i] = 1.0f;
        ntx_loss(&c);
        km_ntxent_backward(g2, c.p, c.B, c.D, c.T, 3.0f, c.work);
        for (size_t i = 0; i < np; i++) CHECK_NEAR(g2[i], 1.0 + 3.0 * g[i], 1e-6);
        km_free(c.p); km_free(c.work); km_free(g); km_free(g2);
    }
}

/* Loads a float64 .npy of `n` values. */
static int load_f64(const char *path, double *v, int n) {
    km_tensor t = {0};
    km_status s = km_npy_load(path, &t);
    CHECK_MSG(s == KM_OK, "%s: %s", path, km_errmsg());
    int ok = s == KM_OK && t.dtype == KM_F64 && t.ndim == 1 && t.shape[0] == n;
    CHECK_MSG(ok, "%s: expected float64 [%d]", path, n);
    if (ok) memcpy(v, t.data, sizeof(double) * (size_t)n);
    km_tensor_free(&t);
    return ok;
}

static float *load_f32(const char *path, int ndim, const int64_t *shape, km_tensor *t) {
    km_status s = km_npy_load_f32(path, ndim, shape, t);
    CHECK_MSG(s == KM_OK, "%s: %s", path, km_errmsg());
    return s == KM_OK ? t->data : NULL;
}

/* Tolerances. The loss is a log-sum-exp of logits up to 1/T = 10 that PyTorch
 * and we both compute from float32 dot products of float32 unit vectors; a
 * logit carries up to ~1 ulp of 10 (~1e-6) of rounding, which moves the loss
 * by at most as much, so |loss - torch| <= 2e-6, against both torch's float32
 * loss and the float64 one (they differ by 3e-8 / 1e-7 here). The gradient is
 * a float32 GEMM of the softmax matrix with z followed by the normalisation
 * backward: normwise relative error (max abs / max |ref|) <= 1e-5, i.e. tens
 * of float32 ulps, allowing for the different summation orders of the GEMMs. */
KM_TEST(ntxent_matches_torch) {
    const int B = 8, D = 128;
    const int64_t shp[2] = {B, D};
    km_tensor tp = {0}, tg = {0};
    float *p = load_f32(D_NTX "proj.npy", 2, shp, &tp);
    float *work = falloc(km_ntxent_work_floats(B, D)), *dp = falloc((size_t)B * D);
    const char *tags[2] = {"0.1", "0.5"};
    const float T[2] = {0.1f, 0.5f};
    for (int t = 0; t < 2 && p; t++) {
        char path[128], label[96];
        double eloss[2];
        snprintf(path, sizeof path, D_NTX "loss_t%s.npy", tags[t]);
        if (!load_f64(path, eloss, 2)) continue;
        snprintf(path, sizeof path, D_NTX "grad_t%s.npy", tags[t]);
        float *eg = load_f32(path, 2, shp, &tg);
        if (!eg) continue;
        double loss = km_ntxent_forward(p, B, D, T[t], work);
        printf("    T %s: loss %.9g, torch f32 %.9g (|diff| %.3g), torch f64 %.12g (|diff| %.3g)\n",
               tags[t], loss, eloss[0], fabs(loss - eloss[0]), eloss[1], fabs(loss - eloss[1]));
        CHECK_NEAR(loss, eloss[0], 2e-6);
        CHECK_NEAR(loss, eloss[1], 2e-6);
        memset(dp, 0, sizeof(float) * (size_t)B * D);
        km_ntxent_backward(dp, p, B, D, T[t], 1.0f, work);
        snprintf(label, sizeof label, "ntxent d loss/d proj vs torch (T %s)", tags[t]);
        km_cmp m = km_compare(label, dp, eg, (size_t)B * D);
        CHECK(m.max_rel <= 1e-5);
        km_tensor_free(&tg);
    }
    km_tensor_free(&tp);
    km_free(work); km_free(dp);
}

/* The projection head end to end: GAP -> Linear(32,32) -> ReLU -> Linear(32,16)
 * -> NT-Xent (T 0.5) on features [8,32,2,2], loss and the gradients of the
 * features and the four parameters against torch autograd. Same tolerance
 * reasoning as above, over a few more float32 GEMMs: loss |diff| <= 2e-6,
 * normwise relative gradient error <= 1e-5. */
KM_TEST(projection_head_matches_torch) {
    enum { B = 8, C = 32, HW = 4, H1 = 32, O = 16 };
    const int64_t s_feat[4] = {B, C, 2, 2}, s_w1[2] = {H1, C}, s_b1[1] = {H1}, s_w2[2] = {O, H1},
                  s_b2[1] = {O};
    km_tensor t[11] = {{0}};
    float *x = load_f32(D_NTX "head_feats.npy", 4, s_feat, &t[0]);
    float *w1 = load_f32(D_NTX "head_w1.npy", 2, s_w1, &t[1]);
    float *b1 = load_f32(D_NTX "head_b1.npy", 1, s_b1, &t[2]);
    float *w2 = load_f32(D_NTX "head_w2.npy", 2, s_w2, &t[3]);
    float *b2 = load_f32(D_NTX "head_b2.npy", 1, s_b2, &t[4]);
    float *edx = load_f32(D_NTX "head_dfeats.npy", 4, s_feat, &t[5]);
    float *edw1 = load_f32(D_NTX "head_dw1.npy", 2, s_w1, &t[6]);
    float *edb1 = load_f32(D_NTX "head_db1.npy", 1, s_b1, &t[7]);
    float *edw2 = load_f32(D_NTX "head_dw2.npy", 2, s_w2, &t[8]);
    float *edb2 = load_f32(D_NTX "head_db2.npy", 1, s_b2, &t[9]);
    double eloss;
    int ok = load_f64(D_NTX "head_loss.npy", &eloss, 1) && x && w1 && b1 && w2 && b2 && edx &&
             edw1 && edb1 && edw2 && edb2;
    if (ok) {
        float pooled[B * C], h[B * H1], a[B * H1], proj[B * O];
        float dpool[B * C] = {0}, dh[B * H1] = {0}, da[B * H1] = {0}, dproj[B * O] = {0};
        float dw1[H1 * C] = {0}, db1[H1] = {0}, dw2[O * H1] = {0}, db2[O] = {0};
        float *dx = falloc((size_t)B * C * HW), *work = falloc(km_ntxent_work_floats(B, O));
        km_gap_forward(pooled, x, B, C, HW);
        km_linear_forward(h, pooled, w1, b1, B, C, H1);
        km_relu_forward(a, h, (size_t)B * H1);
        km_linear_forward(proj, a, w2, b2, B, H1, O);
        double loss = km_ntxent_forward(proj, B, O, 0.5f, work);
        km_ntxent_backward(dproj, proj, B, O, 0.5f, 1.0f, work);
        km_linear_backward(da, dw2, db2, dproj, a, w2, B, H1, O);
        km_relu_backward(dh, da, a, (size_t)B * H1);
        km_linear_backward(dpool, dw1, db1, dh, pooled, w1, B, C, H1);
        km_gap_backward(dx, dpool, B, C, HW);
        printf("    head loss %.9g, torch %.9g (|diff| %.3g)\n", loss, eloss, fabs(loss - eloss));
        CHECK_NEAR(loss, eloss, 2e-6);
        const struct {
            const char *label;
            const float *got, *ref;
            size_t n;
        } cmp[5] = {{"head d features vs torch", dx, edx, (size_t)B * C * HW},
                    {"head d w1 vs torch", dw1, edw1, H1 * C},
                    {"head d b1 vs torch", db1, edb1, H1},
                    {"head d w2 vs torch", dw2, edw2, O * H1},
                    {"head d b2 vs torch", db2, edb2, O}};
        for (int i = 0; i < 5; i++) {
            km_cmp m = km_compare(cmp[i].label, cmp[i].got, cmp[i].ref, cmp[i].n);
            CHECK_MSG(m.max_rel <= 1e-5, "%s: max_rel %.3g > 1e-5", cmp[i].label, m.max_rel);
        }
        km_free(dx); km_free(work);
    }
    for (int i = 0; i < 11; i++) km_tensor_free(&t[i]);
}
