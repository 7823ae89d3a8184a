/* test_ops.c - the student's layer library (src/nn/ops.h, conv2d.h):
 * finite-difference gradient checks for every op with a backward, the conv
 * fast paths against naive references, hand-computed BatchNorm/BCE/Dice
 * values, Adam against torch.optim.Adam, and bit-determinism.
 *
 * Gradient checks use the objective L = sum(out * R) (R fixed random), so the
 * analytic input gradient is the op's backward with dout = R; numeric
 * gradients are central differences of L computed in double (gradcheck.h).
 * Tolerance (relative to the largest gradient checked): 1e-3 for ops that
 * are linear in the checked input (conv, add, concat, upsample, maxpool and
 * relu away from kinks), 1e-2 for BatchNorm, BCE and Dice, where the O(h^2)
 * truncation error of the central difference adds to float rounding. */
#include "test.h"
#include "gradcheck.h"
#include "../src/core/rng.h"
#include "../src/nn/conv2d.h"
#include "../src/nn/ops.h"

static float *falloc(size_t n) { return km_calloc(sizeof(float) * (n ? n : 1)); }

static void fill(km_rng *r, float *x, size_t n, double scale) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * km_rng_normal(r));
}

/* ------------------------------------------------------------------ conv2d */

typedef struct {
    int N, C, H, W, K, kh, kw, sh, sw, ph, pw, bias;
} conv_case;

/* 7x7 s2 p3 (stem), 3x3 s1 p1, 1x1 s2 p0 (downsample), 1x1 s1 (pointwise
 * path), an asymmetric kernel/stride/pad, and non-square inputs throughout. */
static const conv_case k_grad_cases[] = {
    {2, 3, 11, 9, 4, 7, 7, 2, 2, 3, 3, 1}, {2, 5, 8, 6, 6, 3, 3, 1, 1, 1, 1, 0},
    {3, 4, 7, 5, 5, 1, 1, 2, 2, 0, 0, 1},  {2, 4, 6, 5, 3, 1, 1, 1, 1, 0, 0, 1},
    {2, 3, 9, 10, 4, 3, 2, 2, 1, 0, 1, 1},
};
/* Adds shapes that exercise the batching of images into one GEMM: no
 * batching (P = 1440 > target), a full group (7x7, N = 5) and a partial last
 * group (20x20: 2 images per GEMM, N = 3); and the row blocking of large
 * images (col > 2^20 floats: 48 output rows in blocks of 37 + 11, and 45 + 3
 * with stride 2). */
static const conv_case k_fwd_cases[] = {
    {2, 3, 11, 9, 4, 7, 7, 2, 2, 3, 3, 1},   {2, 5, 8, 6, 6, 3, 3, 1, 1, 1, 1, 0},
    {3, 4, 7, 5, 5, 1, 1, 2, 2, 0, 0, 1},    {2, 4, 6, 5, 3, 1, 1, 1, 1, 0, 0, 1},
    {2, 3, 9, 10, 4, 3, 2, 2, 1, 0, 1, 1},   {2, 2, 40, 36, 3, 3, 3, 1, 1, 1, 1, 1},
    {5, 3, 7, 7, 4, 3, 3, 1, 1, 1, 1, 0},    {3, 2, 20, 20, 3, 3, 3, 1, 1, 1, 1, 1},
    {4, 6, 14, 14, 8, 3, 3, 2, 2, 1, 1, 0},  {1, 64, 48, 48, 4, 3, 3, 1, 1, 1, 1, 1},
    {1, 64, 96, 80, 3, 3, 3, 2, 2, 1, 1, 0},
};

typedef struct {
    km_conv_dims d;
    float *in, *w, *b, *out, *R, *work;
    size_t nin, nw, nout;
} conv_ctx;

static void conv_ctx_init(conv_ctx *c, const conv_case *k, km_rng *r) {
    c->d = km_conv2d_dims(k->N, k->C, k->H, k->W, k->K, k->kh, k->kw, k->sh, k->sw, k->ph, k->pw);
    c->nin = (size_t)k->N * k->C * k->H * k->W;
    c->nw = (size_t)k->K * k->C * k->kh * k->kw;
    c->nout = (size_t)k->N * k->K * c->d.OH * c->d.OW;
    c->in = falloc(c->nin);
    c->w = falloc(c->nw);
    c->b = k->bias ? falloc(k->K) : NULL;
    c->out = falloc(c->nout);
    c->R = falloc(c->nout);
    c->work = falloc(km_conv2d_work_floats(&c->d));
    fill(r, c->in, c->nin, 1.0);
    fill(r, c->w, c->nw, 0.3);
    if (c->b) fill(r, c->b, k->K, 0.5);
    fill(r, c->R, c->nout, 1.0);
}

static void conv_ctx_free(conv_ctx *c) {
    km_free(c->in); km_free(c->w); km_free(c->b); km_free(c->out); km_free(c->R); km_free(c->work);
}

static double conv_loss(void *p) {
    conv_ctx *c = p;
    km_conv2d_forward(c->out, c->in, c->w, c->b, &c->d, c->work);
    return km_gc_dot(c->out, c->R, c->nout);
}

static const char *case_name(const conv_case *k) {
    static char buf[128];
    snprintf(buf, sizeof buf, "N%d C%d %dx%d K%d k%dx%d s%d,%d p%d,%d%s", k->N, k->C, k->H, k->W,
             k->K, k->kh, k->kw, k->sh, k->sw, k->ph, k->pw, k->bias ? " +b" : "");
    return buf;
}

KM_TEST(conv2d_fast_path_matches_direct_reference) {
    km_rng r;
    km_rng_seed(&r, 11);
    for (size_t t = 0; t < sizeof k_fwd_cases / sizeof k_fwd_cases[0]; t++) {
        conv_ctx c;
        conv_ctx_init(&c, &k_fwd_cases[t], &r);
        float *ref = falloc(c.nout);
        km_conv2d_forward(c.out, c.in, c.w, c.b, &c.d, c.work);
        km_conv2d_forward_ref(ref, c.in, c.w, c.b, &c.d);
        km_cmp m = km_compare(case_name(&k_fwd_cases[t]), c.out, ref, c.nout);
        CHECK_MSG(m.max_abs <= 1e-5 * (m.max_ref > 1 ? m.max_ref : 1), "case %zu: %g", t, m.max_abs);
        km_free(ref);
        conv_ctx_free(&c);
    }
}

/* Naive backward in double: every (output, tap) pair adds its product. */
static void conv_backward_naive(double *din, double *dw, double *db, const float *dout,
                                const float *in, const float *w, const km_conv_dims *d) {
    for (int n = 0; n < d->N; n++)
        for (int k = 0; k < d->K; k++)
            for (int oy = 0; oy < d->OH; oy++)
                for (int ox = 0; ox < d->OW; ox++) {
                    double g = dout[(((size_t)n * d->K + k) * d->OH + oy) * d->OW + ox];
                    db[k] += g;
                    for (int c = 0; c < d->C; c++)
                        for (int i = 0; i < d->kh; i++)
                            for (int j = 0; j < d->kw; j++) {
                                int iy = oy * d->sh - d->ph + i, ix = ox * d->sw - d->pw + j;
                                if (iy < 0 || iy >= d->H || ix < 0 || ix >= d->W) continue;
                                size_t ii = (((size_t)n * d->C + c) * d->H + iy) * d->W + ix;
                                size_t wi = (((size_t)k * d->C + c) * d->kh + i) * d->kw + j;
                                dw[wi] += g * in[ii];
                                din[ii] += g * w[wi];
                            }
                }
}

static void to_float(float *dst, const double *src, size_t n, float add) {
    for (size_t i = 0; i < n; i++) dst[i] = (float)(src[i] + add);
}

KM_TEST(conv2d_backward_matches_naive_and_accumulates) {
    km_rng r;
    km_rng_seed(&r, 12);
    for (size_t t = 0; t < sizeof k_fwd_cases / sizeof k_fwd_cases[0]; t++) {
        const conv_case *k = &k_fwd_cases[t];
        conv_ctx c;
        conv_ctx_init(&c, k, &r);
        double *rin = km_calloc(sizeof(double) * c.nin), *rw = km_calloc(sizeof(double) * c.nw);
        double *rb = km_calloc(sizeof(double) * k->K);
        conv_backward_naive(rin, rw, rb, c.R, c.in, c.w, &c.d);
        /* Gradient buffers start at 0.25: the backward must add, not overwrite. */
        float *din = falloc(c.nin), *dw = falloc(c.nw), *db = falloc(k->K);
        for (size_t i = 0; i < c.nin; i++) din[i] = 0.25f;
        for (size_t i = 0; i < c.nw; i++) dw[i] = 0.25f;
        for (int i = 0; i < k->K; i++) db[i] = 0.25f;
        km_conv2d_backward(din, dw, db, c.R, c.in, c.w, &c.d, c.work);
        float *ein = falloc(c.nin), *ew = falloc(c.nw), *eb = falloc(k->K);
        to_float(ein, rin, c.nin, 0.25f);
        to_float(ew, rw, c.nw, 0.25f);
        to_float(eb, rb, k->K, 0.25f);
        char label[160];
        snprintf(label, sizeof label, "dx %s", case_name(k));
        km_cmp a = km_compare(label, din, ein, c.nin);
        snprintf(label, sizeof label, "dw %s", case_name(k));
        km_cmp b = km_compare(label, dw, ew, c.nw);
        km_cmp e = km_compare("db", db, eb, k->K);
        CHECK(a.max_abs <= 1e-5 * (a.max_ref > 1 ? a.max_ref : 1));
        CHECK(b.max_abs <= 1e-5 * (b.max_ref > 1 ? b.max_ref : 1));
        CHECK(e.max_abs <= 1e-5 * (e.max_ref > 1 ? e.max_ref : 1));
        /* din = NULL and db = NULL are allowed and leave dw identical. */
        float *dw2 = falloc(c.nw);
        for (size_t i = 0; i < c.nw; i++) dw2[i] = 0.25f;
        km_conv2d_backward(NULL, dw2, NULL, c.R, c.in, c.w, &c.d, c.work);
        CHECK(memcmp(dw2, dw, sizeof(float) * c.nw) == 0);
        km_free(dw2);
        km_free(rin); km_free(rw); km_free(rb); km_free(din); km_free(dw); km_free(db);
        km_free(ein); km_free(ew); km_free(eb);
        conv_ctx_free(&c);
    }
}

KM_TEST(conv2d_gradcheck) {
    km_rng r;
    km_rng_seed(&r, 13);
    for (size_t t = 0; t < sizeof k_grad_cases / sizeof k_grad_cases[0]; t++) {
        const conv_case *k = &k_grad_cases[t];
        conv_ctx c;
        conv_ctx_init(&c, k, &r);
        float *din = falloc(c.nin), *dw = falloc(c.nw), *db = falloc(k->K);
        km_conv2d_backward(din, dw, c.b ? db : NULL, c.R, c.in, c.w, &c.d, c.work);
        char label[160];
        snprintf(label, sizeof label, "conv dx %s", case_name(k));
        CHECK(km_gradcheck(label, conv_loss, &c, c.in, din, c.nin, 1e-2, 60) < 1e-3);
        snprintf(label, sizeof label, "conv dw %s", case_name(k));
        CHECK(km_gradcheck(label, conv_loss, &c, c.w, dw, c.nw, 1e-2, 60) < 1e-3);
        if (c.b) CHECK(km_gradcheck("conv db", conv_loss, &c, c.b, db, k->K, 1e-2, 60) < 1e-3);
        km_free(din); km_free(dw); km_free(db);
        conv_ctx_free(&c);
    }
}

/* Winograd (KM_CONV_WINOGRAD forces it for every 3x3 s1 p1 shape) against
 * the double-precision naive forward/backward and against im2col.
 * F(2x2,3x3) (outputs under 16x16): odd sizes (edge tiles cut), a 1x1 image
 * (all taps but the centre in the padding), rows longer than the 256-tile
 * runs (W = 601), tile blocks spanning several images (7x7, N = 6: 96 tiles
 * in 32-tile blocks). F(4x4,3x3): 17x23 (partial tiles on both edges), rows
 * longer than the 128-tile chunks (18x1030), and 64 input channels (its
 * rounding error grows with the channel count). The output and the input
 * gradient are bit-identical for 1 and 2 threads. */
KM_TEST(conv2d_winograd_matches_reference_and_im2col) {
    static const conv_case cases[] = {
        {3, 5, 9, 13, 7, 3, 3, 1, 1, 1, 1, 1}, {2, 2, 1, 1, 3, 3, 3, 1, 1, 1, 1, 0},
        {1, 2, 5, 601, 2, 3, 3, 1, 1, 1, 1, 1}, {6, 300, 7, 7, 300, 3, 3, 1, 1, 1, 1, 0},
        {2, 3, 17, 23, 5, 3, 3, 1, 1, 1, 1, 1}, {1, 2, 18, 1030, 2, 3, 3, 1, 1, 1, 1, 0},
        {3, 64, 20, 20, 48, 3, 3, 1, 1, 1, 1, 1},
    };
    km_rng r;
    km_rng_seed(&r, 21);
    const int threads = km_get_threads();
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const conv_case *k = &cases[t];
        conv_ctx c;
        conv_ctx_init(&c, k, &r);
        km_conv2d_set_algo(KM_CONV_WINOGRAD);
        float *ref = falloc(c.nout), *im = falloc(c.nout), *o1 = falloc(c.nout);
        km_conv2d_forward(c.out, c.in, c.w, c.b, &c.d, c.work);
        km_conv2d_forward_ref(ref, c.in, c.w, c.b, &c.d);
        km_conv2d_set_algo(KM_CONV_IM2COL);
        km_conv2d_forward(im, c.in, c.w, c.b, &c.d, c.work);
        km_conv2d_set_algo(KM_CONV_WINOGRAD);
        char label[160];
        snprintf(label, sizeof label, "wino fwd %s", case_name(k));
        km_cmp a = km_compare(label, c.out, ref, c.nout);
        CHECK(a.max_abs <= 1e-5 * (a.max_ref > 1 ? a.max_ref : 1));
        km_cmp b = km_compare("  vs im2col", c.out, im, c.nout);
        CHECK(b.max_abs <= 1e-5 * (b.max_ref > 1 ? b.max_ref : 1));
        CHECK(memcmp(c.out, im, sizeof(float) * c.nout) != 0 || c.d.H == 1); /* really another path */

        double *rin = km_calloc(sizeof(double) * c.nin), *rw = km_calloc(sizeof(double) * c.nw);
        double *rb = km_calloc(sizeof(double) * k->K);
        conv_backward_naive(rin, rw, rb, c.R, c.in, c.w, &c.d);
        float *din = falloc(c.nin), *dw = falloc(c.nw), *ein = falloc(c.nin), *ew = falloc(c.nw);
        for (size_t i = 0; i < c.nin; i++) din[i] = 0.25f;
        for (size_t i = 0; i < c.nw; i++) dw[i] = 0.25f;
        km_conv2d_backward(din, dw, NULL, c.R, c.in, c.w, &c.d, c.work);
        to_float(ein, rin, c.nin, 0.25f);
        to_float(ew, rw, c.nw, 0.25f);
        snprintf(label, sizeof label, "wino dx %s", case_name(k));
        km_cmp e = km_compare(label, din, ein, c.nin);
        snprintf(label, sizeof label, "wino dw %s", case_name(k));
        km_cmp f = km_compare(label, dw, ew, c.nw);
        CHECK(e.max_abs <= 1e-5 * (e.max_ref > 1 ? e.max_ref : 1));
        CHECK(f.max_abs <= 1e-5 * (f.max_ref > 1 ? f.max_ref : 1));

        /* the other thread count gives the same bits */
        km_set_threads(threads == 1 ? 2 : 1);
        float *work2 = falloc(km_conv2d_work_floats(&c.d));
        float *din2 = falloc(c.nin), *dw2 = falloc(c.nw);
        for (size_t i = 0; i < c.nin; i++) din2[i] = 0.25f;
        for (size_t i = 0; i < c.nw; i++) dw2[i] = 0.25f;
        km_conv2d_forward(o1, c.in, c.w, c.b, &c.d, work2);
        km_conv2d_backward(din2, dw2, NULL, c.R, c.in, c.w, &c.d, work2);
        km_set_threads(threads);
        km_conv2d_set_algo(KM_CONV_AUTO);
        CHECK(memcmp(o1, c.out, sizeof(float) * c.nout) == 0);
        CHECK(memcmp(din2, din, sizeof(float) * c.nin) == 0);
        /* dW sums per-thread partials: same bits only for the same thread count */
        km_cmp g = km_compare("  dw, other thread count", dw2, dw, c.nw);
        CHECK(g.max_abs <= 1e-5 * (g.max_ref > 1 ? g.max_ref : 1));
        km_free(work2); km_free(din2); km_free(dw2);
        km_free(rin); km_free(rw); km_free(rb); km_free(din); km_free(dw); km_free(ein);
        km_free(ew); km_free(ref); km_free(im); km_free(o1);
        conv_ctx_free(&c);
    }
}

/* --------------------------------------------------------------- batchnorm */

typedef struct {
    int N, C, HW;
    float *in, *w, *b, *out, *R, *mean, *invstd, *rm, *rv;
} bn_ctx;

static double bn_loss(void *p) {
    bn_ctx *c = p;
    km_bn_forward_train(c->out, c->mean, c->invstd, c->in, c->w, c->b, c->rm, c->rv, c->N, c->C,
                        c->HW, 1e-5f, 0.1f);
    return km_gc_dot(c->out, c->R, (size_t)c->N * c->C * c->HW);
}

KM_TEST(batchnorm_train_gradcheck) {
    km_rng r;
    km_rng_seed(&r, 21);
    bn_ctx c = {.N = 3, .C = 4, .HW = 5};
    size_t n = (size_t)c.N * c.C * c.HW;
    c.in = falloc(n); c.out = falloc(n); c.R = falloc(n);
    c.w = falloc(c.C); c.b = falloc(c.C); c.mean = falloc(c.C); c.invstd = falloc(c.C);
    c.rm = falloc(c.C); c.rv = falloc(c.C);
    fill(&r, c.in, n, 2.0);
    for (size_t i = 0; i < n; i++) c.in[i] += (float)(i % c.C); /* nonzero channel means */
    fill(&r, c.w, c.C, 1.0);
    fill(&r, c.b, c.C, 1.0);
    fill(&r, c.R, n, 1.0);
    bn_loss(&c);
    float *din = falloc(n), *dw = falloc(c.C), *db = falloc(c.C);
    km_bn_backward(din, dw, db, c.R, c.in, c.w, c.mean, c.invstd, c.N, c.C, c.HW);
    CHECK(km_gradcheck("bn dx (N3 C4 HW5)", bn_loss, &c, c.in, din, n, 1e-3, 60) < 1e-2);
    CHECK(km_gradcheck("bn dw", bn_loss, &c, c.w, dw, c.C, 1e-3, 60) < 1e-2);
    CHECK(km_gradcheck("bn db", bn_loss, &c, c.b, db, c.C, 1e-3, 60) < 1e-2);
    /* Accumulation: a second backward doubles every gradient. */
    float *din2 = falloc(n);
    memcpy(din2, din, sizeof(float) * n);
    km_bn_backward(din2, dw, db, c.R, c.in, c.w, c.mean, c.invstd, c.N, c.C, c.HW);
    int doubled = 1;
    for (size_t i = 0; i < n; i++) doubled &= din2[i] == 2 * din[i];
    CHECK(doubled);
    km_free(din2); km_free(din); km_free(dw); km_free(db);
    km_free(c.in); km_free(c.out); km_free(c.R); km_free(c.w); km_free(c.b); km_free(c.mean);
    km_free(c.invstd); km_free(c.rm); km_free(c.rv);
}

KM_TEST(batchnorm_running_stats_by_hand) {
    /* One channel, N=2, HW=2: x = {1, 2 | 3, 4}. mean 2.5, biased var 1.25,
     * unbiased var 5/3. From running (0.5, 2): running_mean = 0.9*0.5 + 0.1*2.5
     * = 0.7; running_var = 0.9*2 + 0.1*5/3 = 1.96666667. With w = 2, b = 1:
     * y = (x - 2.5) / sqrt(1.25 + 1e-5) * 2 + 1, e.g. y(1) = -1.68327...,
     * and after the update eval mode uses (x - 0.7) / sqrt(1.96666667 + 1e-5). */
    float x[4] = {1, 2, 3, 4}, y[4], mean[1], invstd[1], rm[1] = {0.5f}, rv[1] = {2.0f};
    float w[1] = {2.0f}, b[1] = {1.0f};
    km_bn_forward_train(y, mean, invstd, x, w, b, rm, rv, 2, 1, 2, 1e-5f, 0.1f);
    CHECK_NEAR(mean[0], 2.5, 0);
    CHECK_NEAR(invstd[0], 1.0 / sqrt(1.25 + 1e-5), 1e-7);
    CHECK_NEAR(rm[0], 0.7, 1e-7);
    CHECK_NEAR(rv[0], 0.9 * 2.0 + 0.1 * 5.0 / 3.0, 1e-7);
    for (int i = 0; i < 4; i++) CHECK_NEAR(y[i], (x[i] - 2.5) / sqrt(1.25 + 1e-5) * 2 + 1, 1e-6);
    printf("    running_mean %.9g running_var %.9g y[0] %.9g\n", rm[0], rv[0], y[0]);
    float ye[4];
    km_bn_forward_eval(ye, x, w, b, rm, rv, 2, 1, 2, 1e-5f);
    for (int i = 0; i < 4; i++)
        CHECK_NEAR(ye[i], (x[i] - (double)rm[0]) / sqrt((double)rv[0] + 1e-5) * 2 + 1, 1e-6);
    /* NULL affine parameters mean w = 1, b = 0. */
    km_bn_forward_eval(ye, x, NULL, NULL, rm, rv, 2, 1, 2, 1e-5f);
    CHECK_NEAR(ye[3], (4 - (double)rm[0]) / sqrt((double)rv[0] + 1e-5), 1e-6);
}

/* --------------------------------------------------- relu, pool, upsample... */

typedef struct {
    int N, C, H, W;
    float *in, *out, *R;
    int32_t *am;
    size_t nout;
    const float *a2; /* add: the other operand */
    int kind;        /* 0 relu, 1 maxpool, 2 upsample, 3 add */
} simple_ctx;

static double simple_loss(void *p) {
    simple_ctx *c = p;
    size_t n = (size_t)c->N * c->C * c->H * c->W;
    switch (c->kind) {
    case 0: km_relu_forward(c->out, c->in, n); break;
    case 1: km_maxpool3s2_forward(c->out, c->am, c->in, c->N, c->C, c->H, c->W); break;
    case 2: km_upsample2x_forward(c->out, c->in, c->N, c->C, c->H, c->W); break;
    default: km_add_forward(c->out, c->in, c->a2, n); break;
    }
    return km_gc_dot(c->out, c->R, c->nout);
}

KM_TEST(relu_gradcheck_and_zero_rule) {
    km_rng r;
    km_rng_seed(&r, 31);
    simple_ctx c = {.N = 2, .C = 3, .H = 4, .W = 5};
    size_t n = 120;
    c.nout = n;
    c.in = falloc(n); c.out = falloc(n); c.R = falloc(n);
    for (size_t i = 0; i < n; i++) { /* keep |x| >= 0.05: no kink within +-h */
        float v = (float)km_rng_normal(&r);
        c.in[i] = v < 0 ? v - 0.05f : v + 0.05f;
    }
    fill(&r, c.R, n, 1.0);
    simple_loss(&c);
    float *din = falloc(n);
    km_relu_backward(din, c.R, c.out, n);
    CHECK(km_gradcheck("relu dx", simple_loss, &c, c.in, din, n, 1e-3, 120) < 1e-3);
    /* out == 0 exactly (input 0 or negative): no gradient; NaN propagates. */
    float x[3] = {0.0f, -1.0f, NAN}, y[3], g[3] = {1, 1, 1}, dx[3] = {0, 0, 0};
    km_relu_forward(y, x, 3);
    km_relu_backward(dx, g, y, 3);
    CHECK(y[0] == 0 && y[1] == 0 && isnan(y[2]) && dx[0] == 0 && dx[1] == 0 && dx[2] == 0);
    km_free(din); km_free(c.in); km_free(c.out); km_free(c.R);
}

/* Direct MaxPool2d(3, 2, 1) reference: first maximum in scan order. */
static void maxpool_naive(float *out, int32_t *am, const float *in, int H, int W) {
    int OH = (H - 1) / 2 + 1, OW = (W - 1) / 2 + 1;
    for (int oy = 0; oy < OH; oy++)
        for (int ox = 0; ox < OW; ox++) {
            float best = -INFINITY;
            int bi = -1;
            for (int iy = 2 * oy - 1; iy <= 2 * oy + 1; iy++)
                for (int ix = 2 * ox - 1; ix <= 2 * ox + 1; ix++)
                    if (iy >= 0 && iy < H && ix >= 0 && ix < W && (bi < 0 || in[iy * W + ix] > best)) {
                        best = in[iy * W + ix];
                        bi = iy * W + ix;
                    }
            out[oy * OW + ox] = best;
            am[oy * OW + ox] = bi;
        }
}

KM_TEST(maxpool_borders_ties_and_gradcheck) {
    /* Ties: a 4x4 plane of ones -> 2x2 output; each window keeps its first
     * in-image pixel: (0,0)->0, (0,1)->1, (1,0)->4, (1,1)->5. */
    float ones[16], o[4], d[16] = {0}, g[4] = {1, 2, 3, 4};
    int32_t am[4];
    for (int i = 0; i < 16; i++) ones[i] = 1.0f;
    km_maxpool3s2_forward(o, am, ones, 1, 1, 4, 4);
    CHECK(am[0] == 0 && am[1] == 1 && am[2] == 4 && am[3] == 5);
    CHECK(o[0] == 1 && o[1] == 1 && o[2] == 1 && o[3] == 1);
    km_maxpool3s2_backward(d, g, am, 1, 1, 4, 4);
    CHECK(d[0] == 1 && d[1] == 2 && d[4] == 3 && d[5] == 4 && d[2] == 0 && d[15] == 0);
    /* Borders: odd/even/non-square planes against the direct loop, with
     * negative values so that -inf padding (not 0) matters. */
    km_rng r;
    km_rng_seed(&r, 41);
    int shapes[][2] = {{5, 3}, {6, 7}, {7, 4}, {1, 1}, {2, 9}};
    for (int s = 0; s < 5; s++) {
        int H = shapes[s][0], W = shapes[s][1], OH = (H - 1) / 2 + 1, OW = (W - 1) / 2 + 1;
        float *x = falloc(2 * H * W), *y = falloc(2 * OH * OW), *ye = falloc(OH * OW);
        int32_t *a = km_malloc(sizeof(int32_t) * 2 * OH * OW), *ae = km_malloc(sizeof(int32_t) * OH * OW);
        for (int i = 0; i < 2 * H * W; i++) x[i] = -1.0f - (float)km_rng_uniform(&r);
        x[H * W + (H * W) / 2] = x[H * W]; /* a tie inside the second plane */
        km_maxpool3s2_forward(y, a, x, 1, 2, H, W);
        for (int pl = 0; pl < 2; pl++) {
            maxpool_naive(ye, ae, x + pl * H * W, H, W);
            CHECK(memcmp(ye, y + pl * OH * OW, sizeof(float) * OH * OW) == 0);
            CHECK(memcmp(ae, a + pl * OH * OW, sizeof(int32_t) * OH * OW) == 0);
        }
        km_free(x); km_free(y); km_free(ye); km_free(a); km_free(ae);
    }
    /* Gradcheck on distinct values 0.01 apart (h = 1e-3 never changes an argmax). */
    simple_ctx c = {.N = 2, .C = 3, .H = 7, .W = 6};
    size_t n = (size_t)2 * 3 * 7 * 6;
    c.kind = 1;
    c.nout = (size_t)2 * 3 * 4 * 3;
    c.in = falloc(n); c.out = falloc(c.nout); c.R = falloc(c.nout);
    c.am = km_malloc(sizeof(int32_t) * c.nout);
    int *perm = km_malloc(sizeof(int) * n);
    for (size_t i = 0; i < n; i++) perm[i] = (int)i;
    km_rng_shuffle(&r, perm, (int)n);
    for (size_t i = 0; i < n; i++) c.in[i] = 0.01f * (float)perm[i] - 1.0f;
    fill(&r, c.R, c.nout, 1.0);
    simple_loss(&c);
    float *din = falloc(n);
    km_maxpool3s2_backward(din, c.R, c.am, 2, 3, 7, 6);
    CHECK(km_gradcheck("maxpool dx (7x6)", simple_loss, &c, c.in, din, n, 1e-3, 300) < 1e-3);
    km_free(perm); km_free(din); km_free(c.in); km_free(c.out); km_free(c.R); km_free(c.am);
}

KM_TEST(upsample_add_gradcheck) {
    /* Forward by hand: [[1,2],[3,4]] -> rows 1122 / 1122 / 3344 / 3344. */
    float x[4] = {1, 2, 3, 4}, y[16];
    float e[16] = {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4};
    km_upsample2x_forward(y, x, 1, 1, 2, 2);
    CHECK(memcmp(y, e, sizeof y) == 0);
    km_rng r;
    km_rng_seed(&r, 51);
    simple_ctx c = {.N = 2, .C = 3, .H = 3, .W = 5};
    size_t n = 90;
    c.kind = 2;
    c.nout = 4 * n;
    c.in = falloc(n); c.out = falloc(c.nout); c.R = falloc(c.nout);
    fill(&r, c.in, n, 1.0);
    fill(&r, c.R, c.nout, 1.0);
    float *din = falloc(n);
    km_upsample2x_backward(din, c.R, 2, 3, 3, 5);
    CHECK(km_gradcheck("upsample2x dx", simple_loss, &c, c.in, din, n, 1e-2, 90) < 1e-3);
    /* add: both operands receive dout, accumulated. */
    float *b = falloc(n), *da = falloc(n), *db = falloc(n);
    fill(&r, b, n, 1.0);
    c.kind = 3;
    c.a2 = b;
    c.nout = n;
    km_add_backward(da, db, c.R, n);
    km_add_backward(NULL, db, c.R, n);
    CHECK(km_gradcheck("add da", simple_loss, &c, c.in, da, n, 1e-2, 90) < 1e-3);
    int twice = 1;
    for (size_t i = 0; i < n; i++) twice &= db[i] == 2 * c.R[i];
    CHECK(twice);
    km_free(b); km_free(da); km_free(db); km_free(din); km_free(c.in); km_free(c.out); km_free(c.R);
}

typedef struct {
    float *a, *b, *out, *R;
    int N, HW;
} cat_ctx;

static double cat_loss(void *p) {
    cat_ctx *c = p;
    const float *ins[2] = {c->a, c->b};
    int ch[2] = {2, 3};
    km_concat_forward(c->out, ins, ch, 2, c->N, c->HW);
    return km_gc_dot(c->out, c->R, (size_t)c->N * 5 * c->HW);
}

KM_TEST(concat_layout_and_gradcheck) {
    /* N=2, chans {1, 2}, HW=2: out[n] = [a[n] | b[n]]. */
    float a[4] = {1, 2, 3, 4}, b[8] = {10, 11, 12, 13, 14, 15, 16, 17}, o[12];
    const float *ins[2] = {a, b};
    int ch[2] = {1, 2};
    km_concat_forward(o, ins, ch, 2, 2, 2);
    float e[12] = {1, 2, 10, 11, 12, 13, 3, 4, 14, 15, 16, 17};
    CHECK(memcmp(o, e, sizeof o) == 0);
    float da[4] = {0}, *dins[2] = {da, NULL};
    km_concat_backward(dins, ch, 2, e, 2, 2); /* dins[1] == NULL is skipped */
    CHECK(da[0] == 1 && da[1] == 2 && da[2] == 3 && da[3] == 4);
    km_rng r;
    km_rng_seed(&r, 61);
    cat_ctx c = {0};
    c.N = 2;
    c.HW = 6;
    c.a = falloc(24); c.b = falloc(36); c.out = falloc(60); c.R = falloc(60);
    fill(&r, c.a, 24, 1.0);
    fill(&r, c.b, 36, 1.0);
    fill(&r, c.R, 60, 1.0);
    float *ga = falloc(24), *gb = falloc(36), *gd[2] = {ga, gb};
    int ch2[2] = {2, 3};
    km_concat_backward(gd, ch2, 2, c.R, 2, 6);
    CHECK(km_gradcheck("concat d(first)", cat_loss, &c, c.a, ga, 24, 1e-2, 60) < 1e-3);
    CHECK(km_gradcheck("concat d(second)", cat_loss, &c, c.b, gb, 36, 1e-2, 60) < 1e-3);
    km_free(ga); km_free(gb); km_free(c.a); km_free(c.b); km_free(c.out); km_free(c.R);
}

/* ------------------------------------------------------------------- losses */

typedef struct {
    float *z, *y;
    size_t n;
    int dice;
} loss_ctx;

static double loss_fn(void *p) {
    loss_ctx *c = p;
    return c->dice ? km_dice_logits_forward(c->z, c->y, c->n) : km_bce_logits_forward(c->z, c->y, c->n);
}

KM_TEST(bce_by_hand_and_gradcheck) {
    /* z = {0, 2, -1}, y = {1, 0, 1}: l = (1-y) z + log(1 + e^-z) =
     * {log 2, 2 + log(1 + e^-2), log(1 + e)} = {0.693147, 2.126928, 1.313262},
     * mean 1.37777901 (torch 1.13 prints 1.37777901).
     * dz = (sigmoid(z) - y) / 3 = {-1/6, 0.880797/3, (0.268941 - 1)/3}. */
    float z[3] = {0, 2, -1}, y[3] = {1, 0, 1}, dz[3] = {0, 0, 0};
    double l = km_bce_logits_forward(z, y, 3);
    CHECK_NEAR(l, (log(2.0) + 2 + log(1 + exp(-2.0)) + log(1 + exp(1.0))) / 3, 1e-7);
    km_bce_logits_backward(dz, z, y, 3, 1.0f);
    CHECK_NEAR(dz[0], -1.0 / 6, 1e-7);
    CHECK_NEAR(dz[1], 0.293599009513855, 1e-7);
    CHECK_NEAR(dz[2], -0.24368619918823242, 1e-7);
    /* Stability: |z| = 100 gives finite losses (softplus(100) = 100). */
    float zb[2] = {100, -100}, yb[2] = {0, 1};
    CHECK_NEAR(km_bce_logits_forward(zb, yb, 2), 100.0, 1e-4);
    km_rng r;
    km_rng_seed(&r, 71);
    loss_ctx c = {falloc(64), falloc(64), 64, 0};
    fill(&r, c.z, 64, 2.0);
    for (int i = 0; i < 64; i++) c.y[i] = km_rng_uniform(&r) < 0.4 ? 1.0f : 0.0f;
    float *g = falloc(64);
    km_bce_logits_backward(g, c.z, c.y, 64, 1.0f);
    CHECK(km_gradcheck("bce dz", loss_fn, &c, c.z, g, 64, 1e-2, 64) < 1e-2);
    km_free(g); km_free(c.z); km_free(c.y);
}

KM_TEST(dice_by_hand_gradcheck_and_no_positive) {
    /* z = {0, ln 3}, y = {1, 1}: p = {0.5, 0.75}, I = 1.25, S = 1.25 + 2 = 3.25,
     * loss = 1 - 2.5 / 3.25 = 3/13 = 0.230769...
     * dL/dz0 = (2I - 2 y0 S) / S^2 * p0 (1 - p0) = (2.5 - 6.5) / 10.5625 * 0.25. */
    float z[2] = {0.0f, (float)log(3.0)}, y[2] = {1, 1}, dz[2] = {0, 0};
    CHECK_NEAR(km_dice_logits_forward(z, y, 2), 3.0 / 13.0, 1e-7);
    km_dice_logits_backward(dz, z, y, 2, 1.0f);
    CHECK_NEAR(dz[0], -4.0 / 10.5625 * 0.25, 1e-7);
    CHECK_NEAR(dz[1], (2.5 - 6.5) / 10.5625 * 0.75 * 0.25, 1e-7);
    /* z = {0, 0}, y = {1, 0}: p = {.5, .5}, I = .5, S = 2 -> loss 0.5. */
    float z2[2] = {0, 0}, y2[2] = {1, 0};
    CHECK_NEAR(km_dice_logits_forward(z2, y2, 2), 0.5, 1e-7);
    /* No positive pixel in the whole batch: loss and gradient are 0 (the
     * gradient buffer keeps its previous contents). */
    float y0[2] = {0, 0}, dz0[2] = {0.5f, -0.5f};
    CHECK(km_dice_logits_forward(z, y0, 2) == 0.0);
    km_dice_logits_backward(dz0, z, y0, 2, 1.0f);
    CHECK(dz0[0] == 0.5f && dz0[1] == -0.5f);
    /* Batch pooling: one sum over all elements, not a per-image mean. */
    km_rng r;
    km_rng_seed(&r, 81);
    loss_ctx c = {falloc(96), falloc(96), 96, 1};
    fill(&r, c.z, 96, 2.0);
    for (int i = 0; i < 96; i++) c.y[i] = km_rng_uniform(&r) < 0.3 ? 1.0f : 0.0f;
    double I = 0, S = 0;
    for (int i = 0; i < 96; i++) {
        double p = 1 / (1 + exp(-(double)c.z[i]));
        I += p * c.y[i];
        S += p + c.y[i];
    }
    CHECK_NEAR(km_dice_logits_forward(c.z, c.y, 96), 1 - 2 * I / S, 1e-6);
    float *g = falloc(96);
    km_dice_logits_backward(g, c.z, c.y, 96, 1.0f);
    CHECK(km_gradcheck("dice dz", loss_fn, &c, c.z, g, 96, 1e-2, 96) < 1e-2);
    km_free(g); km_free(c.z); km_free(c.y);
}

/* --------------------------------------------------------------------- adam */

KM_TEST(adam_matches_torch) {
    /* Expected values made once with /usr/bin/python3 (Debian torch 1.13.0):
     *   p = torch.tensor([0.5, -1.0, 2.0, 0.0, 1e-3, -3.25], requires_grad=True)
     *   opt = torch.optim.Adam([p], lr=LR, weight_decay=WD)   # betas (0.9, 0.999), eps 1e-8
     *   for g in G: p.grad = torch.tensor(g); opt.step()
     * printing p, state exp_avg and exp_avg_sq with "%.9g", for (LR, WD) =
     * (1e-3, 0) and (1e-2, 1e-4), G as below. */
    static const float p0[6] = {0.5f, -1.0f, 2.0f, 0.0f, 1e-3f, -3.25f};
    static const float G[3][6] = {{0.1f, -0.2f, 3.0f, 1e-4f, -5.0f, 0.0f},
                                  {-0.3f, 0.25f, 2.5f, -1e-4f, 4.0f, 1e-6f},
                                  {0.05f, 0.5f, -1.0f, 2e-4f, -0.5f, -2e-6f}};
    static const float ep[2][6] = {
        {0.499771684f, -0.999768615f, 1.99742508f, -0.00144548051f, 0.00215269043f, -3.250422f},
        {0.497712672f, -0.997679889f, 1.97425163f, -0.0143642453f, 0.0125269014f, -3.22000241f}};
    static const float em[2][6] = {
        {-0.0139000015f, 0.0562999994f, 0.368000031f, 1.90999999e-05f, -0.0949999839f, -1.10000002e-07f},
        {-0.0138865914f, 0.0562730767f, 0.368053943f, 1.89157799e-05f, -0.0949997753f, -8.78950232e-05f}};
    static const float ev[2][6] = {
        {0.000102390019f, 0.000352357572f, 0.0162257589f, 5.99700081e-11f, 0.0411840305f, 4.99900041e-15f},
        {0.00010237559f, 0.000352248899f, 0.0162275564f, 5.97947594e-11f, 0.0411840379f, 3.15263704e-10f}};
    const float lr[2] = {1e-3f, 1e-2f}, wd[2] = {0.0f, 1e-4f};
    for (int cfg = 0; cfg < 2; cfg++) {
        float p[6], m[6] = {0}, v[6] = {0};
        memcpy(p, p0, sizeof p);
        for (int t = 1; t <= 3; t++) km_adam_step(p, G[t - 1], m, v, 6, lr[cfg], 0.9f, 0.999f, 1e-8f, wd[cfg], t);
        km_cmp a = km_compare(cfg ? "adam param (lr 1e-2, wd 1e-4)" : "adam param (lr 1e-3)", p, ep[cfg], 6);
        km_cmp b = km_compare("adam exp_avg", m, em[cfg], 6);
        km_cmp c = km_compare("adam exp_avg_sq", v, ev[cfg], 6);
        /* Same operation order and precision as torch: at most 1 ulp apart
         * (observed: bit-identical). */
        for (int i = 0; i < 6; i++) {
            CHECK_NEAR(p[i], ep[cfg][i], fabs(ep[cfg][i]) * 1.2e-7);
            CHECK_NEAR(m[i], em[cfg][i], fabs(em[cfg][i]) * 1.2e-7);
            CHECK_NEAR(v[i], ev[cfg][i], fabs(ev[cfg][i]) * 1.2e-7);
        }
        (void)a; (void)b; (void)c;
    }
}

/* ------------------------------------------------------------ determinism */

/* Runs conv (batched and per-image paths), BN, maxpool and Adam on fixed
 * data and returns a buffer of all results for a bitwise comparison. */
static float *run_all_ops(size_t *len) {
    km_rng r;
    km_rng_seed(&r, 99);
    const conv_case cases[2] = {{8, 16, 7, 7, 32, 3, 3, 1, 1, 1, 1, 1},
                                {2, 8, 40, 40, 8, 3, 3, 1, 1, 1, 1, 0}};
    size_t cap = 0;
    conv_ctx cc[2];
    for (int i = 0; i < 2; i++) {
        conv_ctx_init(&cc[i], &cases[i], &r);
        cap += cc[i].nout + cc[i].nin + cc[i].nw + cases[i].K;
    }
    const int N = 4, C = 8, H = 33, W = 33, HW = H * W, PHW = 17 * 17; /* > KM_OMP_MIN: threaded */
    size_t nb = (size_t)N * C * HW;
    cap += 2 * nb + 6 * C + (size_t)N * C * PHW + 64 * 3;
    float *res = falloc(cap), *o = res;
    for (int i = 0; i < 2; i++) {
        conv_ctx *c = &cc[i];
        km_conv2d_forward(o, c->in, c->w, c->b, &c->d, c->work);
        o += c->nout;
        float *din = o, *dw = o + c->nin, *db = dw + c->nw;
        km_conv2d_backward(din, dw, c->b ? db : NULL, c->R, c->in, c->w, &c->d, c->work);
        o = db + cases[i].K;
        conv_ctx_free(c);
    }
    float *x = falloc(nb), *R = falloc(nb), *w = falloc(C), *b = falloc(C);
    fill(&r, x, nb, 3.0);
    fill(&r, R, nb, 1.0);
    fill(&r, w, C, 1.0);
    fill(&r, b, C, 1.0);
    float *mean = o, *invstd = o + C, *rm = o + 2 * C, *rv = o + 3 * C;
    o += 4 * C;
    km_bn_forward_train(o, mean, invstd, x, w, b, rm, rv, N, C, HW, 1e-5f, 0.1f);
    o += nb;
    km_bn_backward(o, o + nb, o + nb + C, R, x, w, mean, invstd, N, C, HW);
    o += nb + 2 * C;
    int32_t *am = km_malloc(sizeof(int32_t) * N * C * PHW);
    km_maxpool3s2_forward(o, am, x, N, C, H, W);
    o += (size_t)N * C * PHW;
    float *p = o, *m = o + 64, *v = o + 128;
    for (int i = 0; i < 64; i++) p[i] = x[i];
    for (int t = 1; t <= 3; t++) km_adam_step(p, R + 64 * t, m, v, 64, 1e-3f, 0.9f, 0.999f, 1e-8f, 0, t);
    o += 192;
    KM_ASSERT((size_t)(o - res) <= cap);
    *len = (size_t)(o - res);
    km_free(am); km_free(x); km_free(R); km_free(w); km_free(b);
    return res;
}

KM_TEST(ops_are_bit_deterministic) {
    size_t n1, n2;
    float *a = run_all_ops(&n1), *b = run_all_ops(&n2);
    CHECK(n1 == n2);
    CHECK(memcmp(a, b, sizeof(float) * n1) == 0);
    printf("    %zu result floats identical across two runs (%d threads)\n", n1, km_get_threads());
    km_free(a);
    km_free(b);
}

/* The fused BatchNorm+ReLU backward equals ReLU backward into a zeroed buffer
 * followed by the plain BatchNorm backward, bit for bit. */
KM_TEST(bn_relu_backward_fused_equals_unfused) {
    enum { N = 3, C = 5, HW = 37 };
    static float x[N * C * HW], y[N * C * HW], g[N * C * HW], gm[N * C * HW], d1[N * C * HW],
        d2[N * C * HW];
    float w[C], b[C], rm[C] = {0}, rv[C] = {1, 1, 1, 1, 1}, mean[C], inv[C], dw1[C] = {0},
                        db1[C] = {0}, dw2[C] = {0}, db2[C] = {0};
    km_rng r;
    km_rng_seed(&r, 9);
    for (int i = 0; i < N * C * HW; i++) {
        x[i] = (float)km_rng_normal(&r);
        g[i] = (float)km_rng_normal(&r);
    }
    for (int c = 0; c < C; c++) {
        w[c] = 0.5f + (float)km_rng_uniform(&r);
        b[c] = (float)km_rng_normal(&r) * 0.1f;
    }
    km_bn_forward_train(y, mean, inv, x, w, b, rm, rv, N, C, HW, 1e-5f, 0.1f);
    km_relu_forward(y, y, N * C * HW);
    memset(gm, 0, sizeof gm);
    km_relu_backward(gm, g, y, N * C * HW);
    memset(d1, 0, sizeof d1);
    memset(d2, 0, sizeof d2);
    km_bn_backward(d1, dw1, db1, gm, x, w, mean, inv, N, C, HW);
    km_bn_relu_backward(d2, dw2, db2, g, y, x, w, mean, inv, N, C, HW);
    CHECK(!memcmp(d1, d2, sizeof d1));
    CHECK(!memcmp(dw1, dw2, sizeof dw1));
    CHECK(!memcmp(db1, db2, sizeof db1));
    int zeros = 0;
    for (int i = 0; i < N * C * HW; i++) zeros += y[i] == 0.0f;
    CHECK(zeros > 50); /* the mask really masks something */
}
