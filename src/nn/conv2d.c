/* conv2d.c - nn.Conv2d (groups 1, no dilation) as im2col + SGEMM, NCHW.
 * 3x3 stride-1 pad-1 convolutions with outputs of at least 8x8 go to
 * winograd.c instead, F(4x4) or F(2x2) by output size (KM_CONV_AUTO, the
 * default; see conv2d.h).
 *
 * Per image, with P = OH*OW and CKK = C*kh*kw:
 *   forward   out[K, P]   = W[K, CKK] @ col[CKK, P] (+ b[K])
 *   backward  dW[K, CKK] += dout[K, P] @ col[CKK, P]^T
 *             dcol[CKK,P] = W^T @ dout[K, P];  din += col2im(dcol)
 *             db[K]      += sum_P dout
 * where col[(c*kh + i)*kw + j, oy*OW + ox] = in[c, oy*sh - ph + i, ox*sw - pw + j]
 * (0 outside the image), the layout darknet and Caffe use.
 *
 * Small spatial sizes (ResNet layer3/4 at 14x14 and 7x7) give GEMMs with a
 * tiny N = P where OpenBLAS spends its time packing; there G images are
 * batched into one GEMM of width G*P: col holds G images side by side
 * ([CKK, G*P]), the product lands in a [K, G*P] scratch that is scattered to
 * NCHW (forward) or gathered from NCHW (backward). G is a pure function of
 * the dims (conv_group), so the workspace size and the kernels agree.
 *
 * 1x1 stride-1 pad-0 convolutions are plain GEMMs on the image itself
 * (col == in), with no workspace. Large images are processed in blocks of
 * output rows so that the col block stays in cache.
 *
 * Threads: the BLAS itself always runs single-threaded (gemm.c). Unbatched
 * (G == 1): the images of one call are shared among min(threads, N) OpenMP
 * threads, each with its own col block and dW partial sum (summed in thread
 * order), its GEMMs single-threaded. Batched (G > 1): km_sgemm splits each
 * GEMM across the threads, and im2col and the scatter / gather of large
 * blocks are OpenMP loops.
 * Every reduction has a fixed order: bit-identical results for a given
 * thread count. */
#include "conv2d.h"
#include "gemm.h"
#include "winograd.h"
#include "../core/km.h"

#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Aim for GEMMs at least this wide (columns) when batching images; tuned
 * with bench/bench_ops.c, which rebuilds this file with other values. */
#ifndef KM_CONV_TARGET_COLS
#define KM_CONV_TARGET_COLS 1024
#endif
/* Large images (decoder at 112x112: col = 2880 x 12544 floats = 144 MB per
 * image) are processed in blocks of whole output rows so that the col block
 * stays near the caches instead of streaming through DRAM twice. */
#ifndef KM_CONV_BLOCK_FLOATS
#define KM_CONV_BLOCK_FLOATS (1 << 20)
#endif

km_conv_dims km_conv2d_dims(int N, int C, int H, int W, int K, int kh, int kw, int sh, int sw,
                            int ph, int pw) {
    KM_ASSERT(N > 0 && C > 0 && H > 0 && W > 0 && K > 0 && kh > 0 && kw > 0 && sh > 0 && sw > 0);
    KM_ASSERT(ph >= 0 && pw >= 0 && H + 2 * ph >= kh && W + 2 * pw >= kw);
    km_conv_dims d = {N, C, H, W, K, kh, kw, sh, sw, ph, pw, 0, 0};
    d.OH = (H + 2 * ph - kh) / sh + 1;
    d.OW = (W + 2 * pw - kw) / sw + 1;
    return d;
}

static int is_pointwise(const km_conv_dims *d) {
    return d->kh == 1 && d->kw == 1 && d->sh == 1 && d->sw == 1 && d->ph == 0 && d->pw == 0;
}

/* Images per GEMM (1 = no batching). */
static int conv_group(const km_conv_dims *d) {
    if (is_pointwise(d)) return 1;
    int P = d->OH * d->OW;
    int g = KM_CONV_TARGET_COLS / P;
    if (g < 1) g = 1;
    if (g > d->N) g = d->N;
    return g;
}

/* Output rows per col block when images are not batched (G == 1). */
static int conv_block_rows(const km_conv_dims *d) {
    size_t row = (size_t)d->C * d->kh * d->kw * d->OW;
    size_t r = KM_CONV_BLOCK_FLOATS / row;
    if (r < 1) r = 1;
    return r > (size_t)d->OH ? d->OH : (int)r;
}

/* Threads that share the images of one convolution (see conv_threads). */
static int conv_threads(const km_conv_dims *d) {
    int T = km_get_threads();
    return T > d->N ? d->N : T;
}

static size_t work_plain(const km_conv_dims *d) {
    size_t P = (size_t)d->OH * d->OW, CKK = (size_t)d->C * d->kh * d->kw;
    size_t G = (size_t)conv_group(d), T = (size_t)conv_threads(d);
    /* G == 1: per thread, a col block and a private dW partial sum */
    if (G == 1)
        return T * ((is_pointwise(d) ? 0 : CKK * (size_t)conv_block_rows(d) * d->OW) +
                    (size_t)d->K * CKK);
    return CKK * G * P + (size_t)d->K * G * P;
}

/* The input gradient of a stride-1 convolution is itself a convolution: the
 * "full" correlation of dout with the flipped, transposed kernel,
 *   din[c, y, x] = sum_{k,i,j} dout[k, y - (kh-1-ph) + i, x - (kw-1-pw) + j]
 *                              * W[k, c, kh-1-i, kw-1-j],
 * i.e. km_conv2d_forward on dout [N, K, OH, OW] with weights W'[C, K, kh, kw]
 * and padding (kh-1-ph, kw-1-pw). Its im2col has K*kh*kw rows instead of the
 * C*kh*kw rows that dcol + col2im stream through memory (read-modify-write),
 * so it is used whenever K <= C: the decoder's concat convolutions (e.g.
 * 320 -> 32 channels at 112x112) read 10x less. */
static int use_transposed(const km_conv_dims *d) {
    return d->sh == 1 && d->sw == 1 && !is_pointwise(d) && d->K <= d->C && d->ph <= d->kh - 1 &&
           d->pw <= d->kw - 1;
}

static km_conv_dims transposed_dims(const km_conv_dims *d) {
    return km_conv2d_dims(d->N, d->K, d->OH, d->OW, d->C, d->kh, d->kw, 1, 1, d->kh - 1 - d->ph,
                          d->kw - 1 - d->pw);
}

static int g_algo = -1; /* -1: not read from the environment yet */

void km_conv2d_set_algo(km_conv_algo a) { g_algo = (int)a; }

km_conv_algo km_conv2d_get_algo(void) {
    if (g_algo < 0) {
        const char *e = getenv("KMSEG_CONV");
        g_algo = (e && !strcmp(e, "im2col"))     ? KM_CONV_IM2COL
                 : (e && !strcmp(e, "winograd")) ? KM_CONV_WINOGRAD
                                                 : KM_CONV_AUTO;
    }
    return (km_conv_algo)g_algo;
}

/* AUTO: Winograd from 8x8 outputs up; below (ResNet layer4 at 7x7), the
 * 2x2 tiles pad 7 to 8 and the blocks are too small for the GEMMs: im2col
 * was 1.4x faster there (bench: 512 -> 512 channels, 7x7, batch 8). */
static int use_wino(const km_conv_dims *d) {
    const km_conv_algo a = km_conv2d_get_algo();
    if (a == KM_CONV_IM2COL || !km_wino_eligible(d)) return 0;
    return a == KM_CONV_WINOGRAD || (d->OH >= 8 && d->OW >= 8);
}

double km_conv2d_gemm_flop(const km_conv_dims *d) {
    if (use_wino(d)) return km_wino_gemm_flop(d);
    return 2.0 * d->N * d->K * d->C * d->kh * d->kw * (double)d->OH * d->OW;
}

size_t km_conv2d_work_floats(const km_conv_dims *d) {
    size_t w = work_plain(d);
    if (km_wino_eligible(d)) {
        size_t ww = km_wino_work_floats(d);
        if (ww > w) w = ww;
    }
    if (use_transposed(d)) {
        km_conv_dims t = transposed_dims(d);
        size_t wt = (size_t)d->C * d->K * d->kh * d->kw + work_plain(&t);
        if (wt > w) w = wt;
    }
    return w;
}

/* Valid output-column range [lo, hi) for kernel column j: the ox with
 * 0 <= ox*sw - pw + j < W. */
static void valid_range(int j, int pad, int stride, int in, int out, int *lo, int *hi) {
    int a = pad - j; /* need ox*stride >= a */
    int l = a <= 0 ? 0 : (a + stride - 1) / stride;
    int b = in - 1 + pad - j; /* need ox*stride <= b */
    int h = b < 0 ? 0 : b / stride + 1;
    if (h > out) h = out;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* One row of col for output rows [oy0, oy0 + nr) (channel plane `im` [H, W],
 * kernel offset (i, j)) -> dst[nr * OW]. */
static void im2col_row(float *dst, const float *im, int i, int j, int oy0, int nr,
                       const km_conv_dims *d) {
    int lo, hi;
    valid_range(j, d->pw, d->sw, d->W, d->OW, &lo, &hi);
    for (int oy = oy0; oy < oy0 + nr; oy++) {
        float *o = dst + (size_t)(oy - oy0) * d->OW;
        int iy = oy * d->sh - d->ph + i;
        if (iy < 0 || iy >= d->H) {
            memset(o, 0, sizeof(float) * d->OW);
            continue;
        }
        const float *src = im + (size_t)iy * d->W - d->pw + j;
        for (int ox = 0; ox < lo; ox++) o[ox] = 0.0f;
        if (d->sw == 1) {
            if (hi > lo) memcpy(o + lo, src + lo, sizeof(float) * (hi - lo));
        } else {
            for (int ox = lo; ox < hi; ox++) o[ox] = src[ox * d->sw];
        }
        for (int ox = hi; ox < d->OW; ox++) o[ox] = 0.0f;
    }
}

/* Adds the kh*kw rows of channel c in dcol (row stride ld, output rows
 * [oy0, oy0 + nr)) back into the channel plane im [H, W], in a fixed
 * (i, j, oy, ox) order. */
static void col2im_channel(float *im, const float *dcol, size_t ld, int c, int oy0, int nr,
                           const km_conv_dims *d) {
    for (int i = 0; i < d->kh; i++)
        for (int j = 0; j < d->kw; j++) {
            const float *row = dcol + (size_t)((c * d->kh + i) * d->kw + j) * ld;
            int lo, hi;
            valid_range(j, d->pw, d->sw, d->W, d->OW, &lo, &hi);
            for (int oy = oy0; oy < oy0 + nr; oy++) {
                int iy = oy * d->sh - d->ph + i;
                if (iy < 0 || iy >= d->H) continue;
                float *dst = im + (size_t)iy * d->W - d->pw + j;
                const float *r = row + (size_t)(oy - oy0) * d->OW;
                if (d->sw == 1)
                    for (int ox = lo; ox < hi; ox++) dst[ox] += r[ox];
                else
                    for (int ox = lo; ox < hi; ox++) dst[ox * d->sw] += r[ox];
            }
        }
}

/* col [CKK, ld] gets output rows [oy0, oy0 + nr) of images n0..n0+G-1 side
 * by side (image g at column g * nr * OW). */
static void im2col_group(float *col, size_t ld, const float *in, int n0, int G, int oy0, int nr,
                         const km_conv_dims *d) {
    const int kk = d->kh * d->kw, CKK = d->C * kk;
    const size_t P = (size_t)nr * d->OW, plane = (size_t)d->H * d->W;
    const long rows = (long)G * CKK;
#pragma omp parallel for schedule(static) if (rows * P > 65536)
    for (long t = 0; t < rows; t++) {
        int g = (int)(t / CKK), r = (int)(t % CKK);
        int c = r / kk, i = (r % kk) / d->kw, j = r % d->kw;
        const float *im = in + ((size_t)(n0 + g) * d->C + c) * plane;
        im2col_row(col + (size_t)r * ld + (size_t)g * P, im, i, j, oy0, nr, d);
    }
}

/* accumulate: out += conv(in) instead of out = conv(in) + b. */
static void conv_forward(float *out, const float *in, const float *w, const float *b,
                         const km_conv_dims *d, float *work, int accumulate) {
    const int K = d->K, CKK = d->C * d->kh * d->kw;
    const size_t P = (size_t)d->OH * d->OW, HW = (size_t)d->H * d->W;
    const int G = conv_group(d);
    if (G == 1) {
        /* Images are shared among the threads (one parallel region per call,
         * single-threaded GEMMs inside), each with its own col block. */
        const int R = is_pointwise(d) ? d->OH : conv_block_rows(d);
        const int T = conv_threads(d);
        const size_t wper = work_plain(d) / (size_t)T;
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
        for (int n = 0; n < d->N; n++) {
#ifdef _OPENMP
            float *work_t = work + (size_t)omp_get_thread_num() * wper;
#else
            float *work_t = work;
#endif
            float *o = out + (size_t)n * K * P;
            if (b) {
                for (int k = 0; k < K; k++)
                    for (size_t p = 0; p < P; p++) o[(size_t)k * P + p] = b[k];
            }
            for (int oy0 = 0; oy0 < d->OH; oy0 += R) {
                const int nr = d->OH - oy0 < R ? d->OH - oy0 : R;
                const int cols = nr * d->OW;
                const float *src = in + (size_t)n * d->C * HW; /* pointwise: R == OH */
                if (!is_pointwise(d)) {
                    im2col_group(work_t, (size_t)cols, in, n, 1, oy0, nr, d);
                    src = work_t;
                }
                km_sgemm(0, 0, K, cols, CKK, 1.0f, w, CKK, src, cols, (b || accumulate) ? 1.0f : 0.0f,
                         o + (size_t)oy0 * d->OW, (int)P);
            }
        }
        return;
    }
    float *col = work, *tmp = work + (size_t)CKK * G * P;
    for (int n0 = 0; n0 < d->N; n0 += G) {
        int g_n = d->N - n0 < G ? d->N - n0 : G;
        size_t ld = (size_t)g_n * P;
        im2col_group(col, ld, in, n0, g_n, 0, d->OH, d);
        km_sgemm(0, 0, K, (int)ld, CKK, 1.0f, w, CKK, col, (int)ld, 0.0f, tmp, (int)ld);
        const long rows = (long)g_n * K;
#pragma omp parallel for schedule(static) if (rows * P > 65536)
        for (long t = 0; t < rows; t++) {
            int g = (int)(t / K), k = (int)(t % K);
            const float *s = tmp + (size_t)k * ld + (size_t)g * P;
            float *o = out + ((size_t)(n0 + g) * K + k) * P;
            if (accumulate) {
                for (size_t p = 0; p < P; p++) o[p] += s[p];
            } else if (b) {
                for (size_t p = 0; p < P; p++) o[p] = s[p] + b[k];
            } else {
                memcpy(o, s, sizeof(float) * P);
            }
        }
    }
}

void km_conv2d_forward(float *out, const float *in, const float *w, const float *b,
                       const km_conv_dims *d, float *work) {
    if (use_wino(d)) {
        km_wino_forward(out, in, w, b, d, work, 0);
        return;
    }
    conv_forward(out, in, w, b, d, work, 0);
}

/* din += conv(dout, flipped W^T) for stride-1 convolutions (see use_transposed). */
static void input_grad_transposed(float *din, const float *dout, const float *w,
                                  const km_conv_dims *d, float *work) {
    const int C = d->C, K = d->K, kh = d->kh, kw = d->kw, kk = kh * kw;
    float *wt = work; /* [C, K, kh, kw] */
#pragma omp parallel for schedule(static) if ((size_t)C * K * kk > 65536)
    for (int c = 0; c < C; c++)
        for (int k = 0; k < K; k++)
            for (int i = 0; i < kh; i++)
                for (int j = 0; j < kw; j++)
                    wt[(((size_t)c * K + k) * kh + i) * kw + j] =
                        w[(((size_t)k * C + c) * kh + (kh - 1 - i)) * kw + (kw - 1 - j)];
    km_conv_dims t = transposed_dims(d);
    conv_forward(din, dout, wt, NULL, &t, work + (size_t)C * K * kk, 1);
}

/* db[k] += sum over images and pixels of dout[n, k, :], double accumulator. */
static void bias_grad(float *db, const float *dout, const km_conv_dims *d) {
    const size_t P = (size_t)d->OH * d->OW;
    for (int k = 0; k < d->K; k++) {
        double s = 0;
        for (int n = 0; n < d->N; n++) {
            const float *g = dout + ((size_t)n * d->K + k) * P;
            for (size_t p = 0; p < P; p++) s += g[p];
        }
        db[k] = (float)(db[k] + s);
    }
}

void km_conv2d_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, const km_conv_dims *d, float *work) {
    const int K = d->K, C = d->C, CKK = C * d->kh * d->kw;
    const size_t P = (size_t)d->OH * d->OW, HW = (size_t)d->H * d->W;
    const int G = conv_group(d);
    if (db) bias_grad(db, dout, d);
    if (use_wino(d)) {
        km_wino_backward(din, dw, dout, in, w, d, work);
        return;
    }
    if (din && use_transposed(d)) {
        km_conv2d_backward(NULL, dw, NULL, dout, in, w, d, work);
        input_grad_transposed(din, dout, w, d, work);
        return;
    }
    if (G == 1) {
        /* Images are shared among the threads; each accumulates dW into its
         * own partial buffer (zeroed here), summed into dw at the end in
         * thread order: deterministic for a given thread count. */
        const int pw = is_pointwise(d);
        const int R = pw ? d->OH : conv_block_rows(d);
        const int T = conv_threads(d);
        const size_t wper = work_plain(d) / (size_t)T, nw = (size_t)K * CKK;
#pragma omp parallel num_threads(T) if (T > 1)
        {
#ifdef _OPENMP
            const int tid = omp_get_thread_num();
#else
            const int tid = 0;
#endif
            float *dwt = work + (size_t)tid * wper, *col = dwt + nw;
            memset(dwt, 0, sizeof(float) * nw);
#pragma omp for schedule(static)
            for (int n = 0; n < d->N; n++) {
                const float *g = dout + (size_t)n * K * P;
                if (pw) {
                    const float *x = in + (size_t)n * C * HW;
                    km_sgemm(0, 1, K, C, (int)P, 1.0f, g, (int)P, x, (int)P, 1.0f, dwt, C);
                    if (din)
                        km_sgemm(1, 0, C, (int)P, K, 1.0f, w, C, g, (int)P, 1.0f,
                                 din + (size_t)n * C * HW, (int)P);
                    continue;
                }
                for (int oy0 = 0; oy0 < d->OH; oy0 += R) {
                    const int nr = d->OH - oy0 < R ? d->OH - oy0 : R;
                    const int cols = nr * d->OW;
                    const float *gb = g + (size_t)oy0 * d->OW; /* [K, cols], row stride P */
                    im2col_group(col, (size_t)cols, in, n, 1, oy0, nr, d);
                    km_sgemm(0, 1, K, CKK, cols, 1.0f, gb, (int)P, col, cols, 1.0f, dwt, CKK);
                    if (!din) continue;
                    km_sgemm(1, 0, CKK, cols, K, 1.0f, w, CKK, gb, (int)P, 0.0f, col, cols);
                    float *dx = din + (size_t)n * C * HW;
                    for (int c = 0; c < C; c++)
                        col2im_channel(dx + (size_t)c * HW, col, (size_t)cols, c, oy0, nr, d);
                }
            }
#pragma omp for schedule(static)
            for (size_t i = 0; i < nw; i++) {
                float acc = dw[i];
                for (int t = 0; t < T; t++) acc += work[(size_t)t * wper + i];
                dw[i] = acc;
            }
        }
        return;
    }
    float *col = work, *tmp = work + (size_t)CKK * G * P;
    for (int n0 = 0; n0 < d->N; n0 += G) {
        int g_n = d->N - n0 < G ? d->N - n0 : G;
        size_t ld = (size_t)g_n * P;
        const float *g = tmp;
        {
            const long rows = (long)g_n * K;
#pragma omp parallel for schedule(static) if (rows * P > 65536)
            for (long t = 0; t < rows; t++) {
                int gi = (int)(t / K), k = (int)(t % K);
                memcpy(tmp + (size_t)k * ld + (size_t)gi * P, dout + ((size_t)(n0 + gi) * K + k) * P,
                       sizeof(float) * P);
            }
        }
        im2col_group(col, ld, in, n0, g_n, 0, d->OH, d);
        km_sgemm(0, 1, K, CKK, (int)ld, 1.0f, g, (int)ld, col, (int)ld, 1.0f, dw, CKK);
        if (!din) continue;
        km_sgemm(1, 0, CKK, (int)ld, K, 1.0f, w, CKK, g, (int)ld, 0.0f, col, (int)ld);
        const long planes = (long)g_n * C;
#pragma omp parallel for schedule(static) if (planes * P > 65536)
        for (long t = 0; t < planes; t++) {
            int gi = (int)(t / C), c = (int)(t % C);
            col2im_channel(din + ((size_t)(n0 + gi) * C + c) * HW, col + (size_t)gi * P, ld, c, 0,
                           d->OH, d);
        }
    }
}

void km_conv2d_forward_ref(float *out, const float *in, const float *w, const float *b,
                           const km_conv_dims *d) {
    for (int n = 0; n < d->N; n++)
        for (int k = 0; k < d->K; k++)
            for (int oy = 0; oy < d->OH; oy++)
                for (int ox = 0; ox < d->OW; ox++) {
                    double acc = b ? b[k] : 0.0;
                    for (int c = 0; c < d->C; c++)
                        for (int i = 0; i < d->kh; i++) {
                            int iy = oy * d->sh - d->ph + i;
                            if (iy < 0 || iy >= d->H) continue;
                            for (int j = 0; j < d->kw; j++) {
                                int ix = ox * d->sw - d->pw + j;
                                if (ix < 0 || ix >= d->W) continue;
                                acc += (double)in[(((size_t)n * d->C + c) * d->H + iy) * d->W + ix] *
                                       w[(((size_t)k * d->C + c) * d->kh + i) * d->kw + j];
                            }
                        }
                    out[(((size_t)n * d->K + k) * d->OH + oy) * d->OW + ox] = (float)acc;
                }
}
