/* winograd.c - 3x3 stride-1 pad-1 convolutions by Winograd's minimal
 * filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
 * Neural Networks", 2016), forward and both gradients.
 *
 * The output is cut into 2x2 tiles t (over all images: t = (n*TH + ty)*TW + tx)
 * whose 4x4 input patches d_t overlap by 2. With
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
 *   G   = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]
 *   A^T = [1 1 1 0; 0 1 -1 -1]
 * one output tile is Y_kt = A^T [ sum_c (G g_kc G^T) (.) (B^T d_ct B) ] A, so
 * for each of the 16 positions a of the 4x4 transformed tile the sum over c
 * is a GEMM: M[a] (K x T) = U[a] (K x C) @ V[a] (C x T). That is 16 MACs per
 * 4 outputs instead of 36: 2.25x fewer than a direct/im2col convolution.
 * F(2x2, 3x3) is the variant whose transforms have only 0, +-1 and +-1/2 as
 * coefficients, so its rounding error stays at the level of a direct
 * convolution (tests/test_ops.c compares it with the double-precision
 * reference at the same tolerance as im2col).
 *
 * Gradients:
 *   dL/dg_kc = G^T [ sum_t (A dY_kt A^T) (.) (B^T d_ct B) ] G,
 * a GEMM per position with the tiles as the inner dimension:
 *   dU[a] (K x C) += Z[a] (K x T) @ V[a]^T,  Z[a] = (A dY A^T)[a];
 * and the input gradient of a stride-1 pad-1 3x3 convolution is the forward
 * convolution of dY with the flipped, transposed kernel (also pad 1).
 *
 * Tiles are processed in blocks of `nt` so that V and M (or Z) stay near the
 * caches; inside a block the threads split the channels (transforms) and the
 * 16 positions (one single-threaded GEMM each). Every sum has an order fixed
 * by the dims alone, so results do not even depend on the thread count. */
#include "winograd.h"
#include "gemm.h"
#include "../core/km.h"

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef KM_WINO_BLOCK_FLOATS
#define KM_WINO_BLOCK_FLOATS (1 << 18)
#endif

int km_wino_eligible(const km_conv_dims *d) {
    return d->kh == 3 && d->kw == 3 && d->sh == 1 && d->sw == 1 && d->ph == 1 && d->pw == 1;
}

static size_t tiles_total(const km_conv_dims *d) {
    return (size_t)d->N * ((d->OH + 1) / 2) * ((d->OW + 1) / 2);
}

/* Tiles per block: V (16 x C x nt) and M (16 x K x nt) of one thread within
 * the budget, and at least 4 blocks per thread when there are enough tiles
 * (the threads take blocks round robin). */
static size_t block_tiles(const km_conv_dims *d) {
    size_t nt = KM_WINO_BLOCK_FLOATS / (16 * ((size_t)d->C + d->K));
    const size_t T = tiles_total(d), per = T / (4 * (size_t)km_get_threads());
    if (nt > per) nt = per;
    if (nt < 32) nt = 32;
    nt = (nt + 15) & ~(size_t)15;
    return nt < T ? nt : T;
}

/* Per thread: V and M (or Z) for one block. */
static size_t thread_floats(const km_conv_dims *d) {
    return 16 * ((size_t)d->C + d->K) * block_tiles(d);
}

static km_conv_dims flipped_dims(const km_conv_dims *d) {
    return km_conv2d_dims(d->N, d->K, d->OH, d->OW, d->C, 3, 3, 1, 1, 1, 1);
}

/* forward: U + T x (V, M); backward: T x dU + T x (V, Z), then the input
 * gradient: W' + U' + T x (V', M'). */
size_t km_wino_work_floats(const km_conv_dims *d) {
    const size_t T = (size_t)km_get_threads(), KC = (size_t)d->K * d->C;
    km_conv_dims t = flipped_dims(d);
    size_t f = 16 * KC + T * thread_floats(d);
    size_t b = T * (16 * KC + thread_floats(d));
    size_t x = 9 * KC + 16 * KC + T * thread_floats(&t);
    if (b > f) f = b;
    return x > f ? x : f;
}

/* U[a][k][c] = (G g_kc G^T)[a]. */
static void transform_weights(float *U, const float *w, int K, int C) {
    const size_t KC = (size_t)K * C;
#pragma omp for schedule(static)
    for (int k = 0; k < K; k++)
        for (int c = 0; c < C; c++) {
            const float *g = w + ((size_t)k * C + c) * 9;
            float t[4][3];
            for (int j = 0; j < 3; j++) {
                t[0][j] = g[j];
                t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
                t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
                t[3][j] = g[6 + j];
            }
            size_t o = (size_t)k * C + c;
            for (int i = 0; i < 4; i++) {
                U[(i * 4 + 0) * KC + o] = t[i][0];
                U[(i * 4 + 1) * KC + o] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
                U[(i * 4 + 2) * KC + o] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
                U[(i * 4 + 3) * KC + o] = t[i][2];
            }
        }
}

/* Tile index -> (image, tile row, tile column). */
typedef struct {
    int TH, TW;
} tiling;

/* The tiles [t, end) start with a run in one tile row: image *img, row *ty,
 * columns [*tx0, *tx1), at most CHUNK long. Returns the run's length. */
#define CHUNK 256
static int next_run(tiling tl, size_t t, size_t end, size_t *img, int *ty, int *tx0, int *tx1) {
    const size_t per = (size_t)tl.TH * tl.TW;
    *img = t / per;
    const int rem = (int)(t % per);
    *ty = rem / tl.TW;
    *tx0 = rem % tl.TW;
    int n = tl.TW - *tx0;
    if (n > CHUNK) n = CHUNK;
    if ((size_t)n > end - t) n = (int)(end - t);
    *tx1 = *tx0 + n;
    return n;
}

/* V[a][c][t - t0] = (B^T d_ct B)[a] for tiles [t0, t0 + n) of the planes
 * src (channel c of image i at src + (i*C + c)*H*W), ld = row stride of V's
 * per-position matrices (C x ld). Zero padding outside the image.
 * Per run of tiles in one tile row: the 4 input rows are copied with their
 * padding (buf[x + 1] = row[x]), combined vertically (s = B^T d, contiguous),
 * split into even/odd columns, and combined horizontally, all contiguous
 * along the run so that the loops vectorise. */
static void transform_input(float *V, size_t ld, const float *src, int C, int H, int W,
                            tiling tl, size_t t0, size_t n) {
    const size_t plane = (size_t)H * W, pstride = (size_t)C * ld;
    for (int c = 0; c < C; c++) {
        float buf[4][2 * CHUNK + 2], se[4][CHUNK + 1], so[4][CHUNK + 1];
        for (size_t t = t0; t < t0 + n;) {
            size_t img;
            int ty, tx0, tx1;
            const int len = next_run(tl, t, t0 + n, &img, &ty, &tx0, &tx1);
            const float *p = src + (img * C + c) * plane;
            /* padded columns x' = 2*tx0 .. 2*tx1 + 1, i.e. x = x' - 1 */
            const int xa = 2 * tx0 - 1, nx = 2 * len + 2;
            for (int i = 0; i < 4; i++) {
                const int y = 2 * ty - 1 + i;
                float *b = buf[i];
                if (y < 0 || y >= H) {
                    memset(b, 0, sizeof(float) * nx);
                    continue;
                }
                const float *row = p + (size_t)y * W;
                int lo = xa < 0 ? -xa : 0, hi = W - xa < nx ? W - xa : nx;
                for (int x = 0; x < lo; x++) b[x] = 0.0f;
                if (hi > lo) memcpy(b + lo, row + xa + lo, sizeof(float) * (hi - lo));
                for (int x = hi > lo ? hi : lo; x < nx; x++) b[x] = 0.0f;
            }
            for (int m = 0; m <= len; m++) {
                const float e0 = buf[0][2 * m], e1 = buf[1][2 * m], e2 = buf[2][2 * m],
                            e3 = buf[3][2 * m];
                const float o0 = buf[0][2 * m + 1], o1 = buf[1][2 * m + 1],
                            o2 = buf[2][2 * m + 1], o3 = buf[3][2 * m + 1];
                se[0][m] = e0 - e2; se[1][m] = e1 + e2; se[2][m] = e2 - e1; se[3][m] = e1 - e3;
                so[0][m] = o0 - o2; so[1][m] = o1 + o2; so[2][m] = o2 - o1; so[3][m] = o1 - o3;
            }
            float *v = V + (size_t)c * ld + (t - t0);
            for (int i = 0; i < 4; i++) {
                float *v0 = v + (size_t)(i * 4 + 0) * pstride, *v1 = v + (size_t)(i * 4 + 1) * pstride;
                float *v2 = v + (size_t)(i * 4 + 2) * pstride, *v3 = v + (size_t)(i * 4 + 3) * pstride;
                const float *e = se[i], *o = so[i];
#pragma omp simd
                for (int m = 0; m < len; m++) {
                    v0[m] = e[m] - e[m + 1];
                    v1[m] = o[m] + e[m + 1];
                    v2[m] = e[m + 1] - o[m];
                    v3[m] = o[m] - o[m + 1];
                }
            }
            t += (size_t)len;
        }
    }
}

/* out[n, k, 2ty + i, 2tx + j] (=|+=) (A^T M_kt A)[i][j] (+ b[k]) for tiles
 * [t0, t0 + n); M[a] is K x ld. Rows/columns past OH/OW are dropped. */
static void transform_output(float *out, const float *M, size_t ld, const float *b, int K,
                             int OH, int OW, tiling tl, size_t t0, size_t n, int accumulate) {
    const size_t plane = (size_t)OH * OW, pstride = (size_t)K * ld;
    for (int k = 0; k < K; k++) {
        const float bias = b ? b[k] : 0.0f;
        float y[2][2][CHUNK];
        for (size_t t = t0; t < t0 + n;) {
            size_t img;
            int ty, tx0, tx1;
            const int len = next_run(tl, t, t0 + n, &img, &ty, &tx0, &tx1);
            const float *m = M + (size_t)k * ld + (t - t0);
            const float *m0 = m, *m1 = m + pstride, *m2 = m + 2 * pstride, *m3 = m + 3 * pstride;
            const float *m4 = m + 4 * pstride, *m5 = m + 5 * pstride, *m6 = m + 6 * pstride;
            const float *m7 = m + 7 * pstride, *m8 = m + 8 * pstride, *m9 = m + 9 * pstride;
            const float *m10 = m + 10 * pstride, *m11 = m + 11 * pstride, *m12 = m + 12 * pstride;
            const float *m13 = m + 13 * pstride, *m14 = m + 14 * pstride, *m15 = m + 15 * pstride;
            float *y00 = y[0][0], *y01 = y[0][1], *y10 = y[1][0], *y11 = y[1][1];
#pragma omp simd
            for (int q = 0; q < len; q++) {
                /* s = A^T M (rows), y = s A (columns) */
                const float s00 = m0[q] + m4[q] + m8[q], s01 = m1[q] + m5[q] + m9[q];
                const float s02 = m2[q] + m6[q] + m10[q], s03 = m3[q] + m7[q] + m11[q];
                const float s10 = m4[q] - m8[q] - m12[q], s11 = m5[q] - m9[q] - m13[q];
                const float s12 = m6[q] - m10[q] - m14[q], s13 = m7[q] - m11[q] - m15[q];
                y00[q] = s00 + s01 + s02 + bias;
                y01[q] = s01 - s02 - s03 + bias;
                y10[q] = s10 + s11 + s12 + bias;
                y11[q] = s11 - s12 - s13 + bias;
            }
            float *dst = out + (img * K + k) * plane;
            for (int i = 0; i < 2; i++) {
                const int oy = 2 * ty + i;
                if (oy >= OH) break;
                float *o = dst + (size_t)oy * OW + 2 * tx0;
                const float *ya = y[i][0], *yb = y[i][1];
                int full = len; /* tiles with both columns inside */
                if (2 * tx1 > OW) full = len - 1;
                if (accumulate) {
                    for (int q = 0; q < full; q++) {
                        o[2 * q] += ya[q];
                        o[2 * q + 1] += yb[q];
                    }
                    if (full < len) o[2 * full] += ya[full];
                } else {
                    for (int q = 0; q < full; q++) {
                        o[2 * q] = ya[q];
                        o[2 * q + 1] = yb[q];
                    }
                    if (full < len) o[2 * full] = ya[full];
                }
            }
            t += (size_t)len;
        }
    }
}

/* Z[a][k][t - t0] = (A dY_kt A^T)[a], dY zero past OH/OW. */
static void transform_dout(float *Z, size_t ld, const float *dout, int K, int OH, int OW,
                           tiling tl, size_t t0, size_t n) {
    const size_t plane = (size_t)OH * OW, pstride = (size_t)K * ld;
    for (int k = 0; k < K; k++) {
        float ev[2][CHUNK], od[2][CHUNK];
        for (size_t t = t0; t < t0 + n;) {
            size_t img;
            int ty, tx0, tx1;
            const int len = next_run(tl, t, t0 + n, &img, &ty, &tx0, &tx1);
            const float *g = dout + (img * K + k) * plane;
            for (int i = 0; i < 2; i++) {
                const int oy = 2 * ty + i;
                if (oy >= OH) {
                    memset(ev[i], 0, sizeof(float) * len);
                    memset(od[i], 0, sizeof(float) * len);
                    continue;
                }
                const float *r = g + (size_t)oy * OW + 2 * tx0;
                int full = len;
                if (2 * tx1 > OW) full = len - 1;
                for (int q = 0; q < full; q++) {
                    ev[i][q] = r[2 * q];
                    od[i][q] = r[2 * q + 1];
                }
                if (full < len) {
                    ev[i][full] = r[2 * full];
                    od[i][full] = 0.0f;
                }
            }
            float *z = Z + (size_t)k * ld + (t - t0);
            float *z0 = z, *z1 = z + pstride, *z2 = z + 2 * pstride, *z3 = z + 3 * pstride;
            float *z4 = z + 4 * pstride, *z5 = z + 5 * pstride, *z6 = z + 6 * pstride;
            float *z7 = z + 7 * pstride, *z8 = z + 8 * pstride, *z9 = z + 9 * pstride;
            float *z10 = z + 10 * pstride, *z11 = z + 11 * pstride, *z12 = z + 12 * pstride;
            float *z13 = z + 13 * pstride, *z14 = z + 14 * pstride, *z15 = z + 15 * pstride;
            const float *e0 = ev[0], *e1 = ev[1], *f0 = od[0], *f1 = od[1];
            /* r = A e (rows), then z = r A^T (columns) */
#pragma omp simd
            for (int q = 0; q < len; q++) {
                const float r0 = e0[q], r1 = e0[q] + e1[q], r2 = e0[q] - e1[q], r3 = -e1[q];
                const float p0 = f0[q], p1 = f0[q] + f1[q], p2 = f0[q] - f1[q], p3 = -f1[q];
                z0[q] = r0; z1[q] = r0 + p0; z2[q] = r0 - p0; z3[q] = -p0;
                z4[q] = r1; z5[q] = r1 + p1; z6[q] = r1 - p1; z7[q] = -p1;
                z8[q] = r2; z9[q] = r2 + p2; z10[q] = r2 - p2; z11[q] = -p2;
                z12[q] = r3; z13[q] = r3 + p3; z14[q] = r3 - p3; z15[q] = -p3;
            }
            t += (size_t)len;
        }
    }
}

/* Forward pass; runs inside a parallel region (or serially): U is shared
 * (one barrier after it is built), each thread then takes blocks
 * tid, tid + nth, ... with its own V and M, without further barriers. Every
 * output element comes from one block, computed the same way whatever the
 * thread count. */
static void forward_body(float *out, const float *in, const float *w, const float *b,
                         const km_conv_dims *d, float *work, int accumulate) {
    const int C = d->C, K = d->K;
    const tiling tl = {(d->OH + 1) / 2, (d->OW + 1) / 2};
    const size_t T = tiles_total(d), nt = block_tiles(d), KC = (size_t)K * C;
    float *U = work;
    transform_weights(U, w, K, C);
#ifdef _OPENMP
    const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
#else
    const int tid = 0, nth = 1;
#endif
    float *V = U + 16 * KC + (size_t)tid * thread_floats(d), *M = V + 16 * (size_t)C * nt;
    for (size_t t0 = (size_t)tid * nt; t0 < T; t0 += (size_t)nth * nt) {
        const size_t n = T - t0 < nt ? T - t0 : nt;
        transform_input(V, nt, in, C, d->H, d->W, tl, t0, n);
        for (int a = 0; a < 16; a++)
            km_sgemm(0, 0, K, (int)n, C, 1.0f, U + a * KC, C, V + (size_t)a * C * nt, (int)nt, 0.0f,
                     M + (size_t)a * K * nt, (int)nt);
        transform_output(out, M, nt, b, K, d->OH, d->OW, tl, t0, n, accumulate);
    }
}

void km_wino_forward(float *out, const float *in, const float *w, const float *b,
                     const km_conv_dims *d, float *work, int accumulate) {
    KM_ASSERT(km_wino_eligible(d));
    const int T = km_get_threads();
#pragma omp parallel num_threads(T) if (T > 1)
    forward_body(out, in, w, b, d, work, accumulate);
}

/* Weight gradient: each thread sums its blocks into its own dU; the partial
 * sums are added in thread order (deterministic for a given thread count,
 * like the im2col path). Input gradient: forward_body on dY. */
void km_wino_backward(float *din, float *dw, const float *dout, const float *in, const float *w,
                      const km_conv_dims *d, float *work) {
    KM_ASSERT(km_wino_eligible(d));
    const int C = d->C, K = d->K, T = km_get_threads();
    const tiling tl = {(d->OH + 1) / 2, (d->OW + 1) / 2};
    const size_t Tt = tiles_total(d), nt = block_tiles(d), KC = (size_t)K * C;
    const size_t per = 16 * KC + thread_floats(d);
    const km_conv_dims fd = flipped_dims(d);
    int used = 1;
#pragma omp parallel num_threads(T) if (T > 1)
    {
#ifdef _OPENMP
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
#else
        const int tid = 0, nth = 1;
#endif
#pragma omp single
        used = nth;
        float *dU = work + (size_t)tid * per, *V = dU + 16 * KC, *Z = V + 16 * (size_t)C * nt;
        memset(dU, 0, sizeof(float) * 16 * KC);
        for (size_t t0 = (size_t)tid * nt; t0 < Tt; t0 += (size_t)nth * nt) {
            const size_t n = Tt - t0 < nt ? Tt - t0 : nt;
            transform_input(V, nt, in, C, d->H, d->W, tl, t0, n);
            transform_dout(Z, nt, dout, K, d->OH, d->OW, tl, t0, n);
            for (int a = 0; a < 16; a++)
                km_sgemm(0, 1, K, C, (int)n, 1.0f, Z + (size_t)a * K * nt, (int)nt,
                         V + (size_t)a * C * nt, (int)nt, 1.0f, dU + a * KC, C);
        }
#pragma omp barrier
        /* dw[k, c] += G^T (sum over threads of dU_kc) G */
#pragma omp for schedule(static)
        for (int k = 0; k < K; k++)
            for (int c = 0; c < C; c++) {
                const size_t o = (size_t)k * C + c;
                float q[4][4];
                for (int a = 0; a < 16; a++) {
                    float acc = work[a * KC + o];
                    for (int t = 1; t < used; t++) acc += work[(size_t)t * per + a * KC + o];
                    q[a / 4][a % 4] = acc;
                }
                float s[3][4];
                for (int j = 0; j < 4; j++) {
                    s[0][j] = q[0][j] + 0.5f * (q[1][j] + q[2][j]);
                    s[1][j] = 0.5f * (q[1][j] - q[2][j]);
                    s[2][j] = 0.5f * (q[1][j] + q[2][j]) + q[3][j];
                }
                float *g = dw + o * 9;
                for (int i = 0; i < 3; i++) {
                    g[i * 3 + 0] += s[i][0] + 0.5f * (s[i][1] + s[i][2]);
                    g[i * 3 + 1] += 0.5f * (s[i][1] - s[i][2]);
                    g[i * 3 + 2] += 0.5f * (s[i][1] + s[i][2]) + s[i][3];
                }
            }
        if (din) {
            /* din += conv(dout, W'), W'[c, k, i, j] = W[k, c, 2 - i, 2 - j] */
            float *wt = work, *fw = work + 9 * KC;
#pragma omp for schedule(static)
            for (int c = 0; c < C; c++)
                for (int k = 0; k < K; k++)
                    for (int i = 0; i < 9; i++)
                        wt[((size_t)c * K + k) * 9 + i] = w[((size_t)k * C + c) * 9 + 8 - i];
            forward_body(din, dout, wt, NULL, &fd, fw, 1);
        }
    }
}
