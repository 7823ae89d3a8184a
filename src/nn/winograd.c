/* winograd.c - 3x3 stride-1 pad-1 convolutions by Winograd's minimal
 * filtering F(m x m, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
 * Neural Networks", 2016), forward and both gradients; m = 4 for outputs of
 * at least 16x16, m = 2 below (tile_m).
 *
 * The output is cut into m x m tiles t (over all images: t = (n*TH + ty)*TW + tx)
 * whose (m+2) x (m+2) input patches d_t overlap by 2. For F(2x2, 3x3)
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
 *   G   = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]
 *   A^T = [1 1 1 0; 0 1 -1 -1]
 * (F(4x4, 3x3)'s matrices are given above its transforms). One output tile is
 *   Y_kt = A^T [ sum_c (G g_kc G^T) (.) (B^T d_ct B) ] A,
 * so for each of the P = (m+2)^2 positions a of the transformed tile the sum
 * over c is a GEMM: M[a] (K x T) = U[a] (K x C) @ V[a] (C x T). That is 16
 * MACs per 4 outputs (F(2x2): 2.25x fewer than direct or im2col) or 36 per 16
 * (F(4x4): 4x fewer). F(2x2)'s transforms have only 0, +-1 and +-1/2 as
 * coefficients and its rounding error stays at the level of a direct
 * convolution; F(4x4)'s (4, 5, 1/6, 1/24, ...) cost about 10x that, still
 * ~1e-5 relative with 64 channels (tests/test_ops.c compares both with the
 * double-precision reference, within 1e-5 of the largest value).
 *
 * Gradients:
 *   dL/dg_kc = G^T [ sum_t (A dY_kt A^T) (.) (B^T d_ct B) ] G,
 * a GEMM per position with the tiles as the inner dimension:
 *   dU[a] (K x C) += Z[a] (K x T) @ V[a]^T,  Z[a] = (A dY A^T)[a];
 * and the input gradient of a stride-1 pad-1 3x3 convolution is the forward
 * convolution of dY with the flipped, transposed kernel (also pad 1).
 *
 * Tiles are processed in blocks of `nt` (block_tiles) so that one thread's V
 * and M (or Z) stay near its caches; the threads take whole blocks round
 * robin, each running its P GEMMs single-threaded, with no barrier inside a
 * convolution. Forward outputs and input gradients come from one block each
 * and do not depend on the thread count; weight gradients are summed from
 * per-thread partials in thread order (same bits for the same thread count).
 * The transforms gather each chunk of up to 128 tiles (which may span tile
 * rows and images) into per-position arrays so that their arithmetic is
 * vectorised across tiles. */
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

/* Output tile size: F(4x4, 3x3) (6x6 transformed tiles, 36 GEMMs, 4x fewer
 * multiplications than direct) from 16x16 outputs up, F(2x2, 3x3) below
 * (ResNet layer3 at 14x14: 4x4 tiles would pad 14 to 16). */
static int tile_m(const km_conv_dims *d) { return (d->OH >= 16 && d->OW >= 16) ? 4 : 2; }
/* positions per transformed tile: (m + 2)^2 */
static int npos(const km_conv_dims *d) { return (tile_m(d) + 2) * (tile_m(d) + 2); }

static size_t tiles_total(const km_conv_dims *d) {
    const int m = tile_m(d);
    return (size_t)d->N * ((d->OH + m - 1) / m) * ((d->OW + m - 1) / m);
}

double km_wino_gemm_flop(const km_conv_dims *d) {
    return 2.0 * npos(d) * d->K * d->C * (double)tiles_total(d);
}

/* Tiles per block: V (P x C x nt) and M (P x K x nt) of one thread within
 * the budget, and at least 4 blocks per thread when there are enough tiles
 * (the threads take blocks round robin). */
static size_t block_tiles(const km_conv_dims *d) {
    size_t nt = KM_WINO_BLOCK_FLOATS / ((size_t)npos(d) * ((size_t)d->C + d->K));
    const size_t T = tiles_total(d), per = T / (4 * (size_t)km_get_threads());
    if (nt > per) nt = per;
    if (nt < 32) nt = 32;
    nt = (nt + 15) & ~(size_t)15;
    return nt < T ? nt : T;
}

/* Per thread: V and M (or Z) for one block. */
static size_t thread_floats(const km_conv_dims *d) {
    return (size_t)npos(d) * ((size_t)d->C + d->K) * block_tiles(d);
}

static km_conv_dims flipped_dims(const km_conv_dims *d) {
    return km_conv2d_dims(d->N, d->K, d->OH, d->OW, d->C, 3, 3, 1, 1, 1, 1);
}

/* forward: U + T x (V, M); backward: T x dU + T x (V, Z), then the input
 * gradient: W' + U' + T x (V', M'). */
size_t km_wino_work_floats(const km_conv_dims *d) {
    const size_t T = (size_t)km_get_threads(), KC = (size_t)d->K * d->C, P = (size_t)npos(d);
    km_conv_dims t = flipped_dims(d);
    size_t f = P * KC + T * thread_floats(d);
    size_t b = T * (P * KC + thread_floats(d));
    size_t x = 9 * KC + P * KC + T * thread_floats(&t);
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

/* ------------------------------------------------------ F(4x4, 3x3)
 *   B^T = [4  0 -5  0  1  0;   G = [ 1/4     0     0  ;  A^T = [1 1  1 1  1 0;
 *          0 -4 -4  1  1  0;         -1/6  -1/6  -1/6 ;         0 1 -1 2 -2 0;
 *          0  4 -4 -1  1  0;         -1/6   1/6  -1/6 ;         0 1  1 4  4 0;
 *          0 -2 -1  2  1  0;          1/24  1/12  1/6 ;         0 1 -1 8 -8 1]
 *          0  2 -1 -2  1  0;          1/24 -1/12  1/6 ;
 *          0  4  0 -5  0  1]          0     0     1   ]
 * Each transform: a pass over the rows contiguous along a run of tiles, then
 * the column pass per tile, vectorised across tiles (the F(2x2) transforms
 * below have the same structure). The two variants are kept as separate,
 * fully unrolled functions on purpose: a version generic in the tile size
 * (inlined per size) measured 5-10% slower on the U-Net++ layers. */
#define CHUNK4 128
/* stands for the rows above and below the image */
static const float k_zeros[4 * CHUNK4 + 2];

static void transform_weights4(float *U, const float *w, int K, int C) {
    const size_t KC = (size_t)K * C;
#pragma omp for schedule(static)
    for (int k = 0; k < K; k++)
        for (int c = 0; c < C; c++) {
            const float *g = w + ((size_t)k * C + c) * 9;
            float t[6][3];
            for (int j = 0; j < 3; j++) {
                const float g0 = g[j], g1 = g[3 + j], g2 = g[6 + j];
                t[0][j] = g0 / 4.0f;
                t[1][j] = -(g0 + g1 + g2) / 6.0f;
                t[2][j] = -(g0 - g1 + g2) / 6.0f;
                t[3][j] = g0 / 24.0f + g1 / 12.0f + g2 / 6.0f;
                t[4][j] = g0 / 24.0f - g1 / 12.0f + g2 / 6.0f;
                t[5][j] = g2;
            }
            const size_t o = (size_t)k * C + c;
            for (int i = 0; i < 6; i++) {
                const float g0 = t[i][0], g1 = t[i][1], g2 = t[i][2];
                U[(i * 6 + 0) * KC + o] = g0 / 4.0f;
                U[(i * 6 + 1) * KC + o] = -(g0 + g1 + g2) / 6.0f;
                U[(i * 6 + 2) * KC + o] = -(g0 - g1 + g2) / 6.0f;
                U[(i * 6 + 3) * KC + o] = g0 / 24.0f + g1 / 12.0f + g2 / 6.0f;
                U[(i * 6 + 4) * KC + o] = g0 / 24.0f - g1 / 12.0f + g2 / 6.0f;
                U[(i * 6 + 5) * KC + o] = g2;
            }
        }
}

static int next_run4(tiling tl, size_t t, size_t end, size_t *img, int *ty, int *tx0, int *tx1) {
    const size_t per = (size_t)tl.TH * tl.TW;
    *img = t / per;
    const int rem = (int)(t % per);
    *ty = rem / tl.TW;
    *tx0 = rem % tl.TW;
    int n = tl.TW - *tx0;
    if (n > CHUNK4) n = CHUNK4;
    if ((size_t)n > end - t) n = (int)(end - t);
    *tx1 = *tx0 + n;
    return n;
}

/* The F(4x4) transforms work on chunks of up to CHUNK4 consecutive tiles of
 * a block, which may span several tile rows and images: the data of each
 * row run is first gathered into per-position arrays indexed by the tile's
 * place in the chunk, so that the arithmetic runs over the whole chunk with
 * unit stride (vectorised across tiles even when a tile row is shorter than a
 * vector, e.g. 14 tiles at 56x56). */
typedef struct {
    size_t img;
    int ty, tx0, len, off;
} run4;

/* Splits tiles [t, t + cl) into row runs; returns their count. */
static int chunk_runs(tiling tl, size_t t, int cl, run4 *runs) {
    int nr = 0, off = 0;
    while (off < cl) {
        size_t img;
        int ty, tx0, tx1;
        int len = next_run4(tl, t + (size_t)off, t + (size_t)cl, &img, &ty, &tx0, &tx1);
        runs[nr].img = img;
        runs[nr].ty = ty;
        runs[nr].tx0 = tx0;
        runs[nr].len = len;
        runs[nr].off = off;
        nr++;
        off += len;
    }
    return nr;
}

static void transform_input4(float *V, size_t ld, const float *src, int C, int H, int W,
                             tiling tl, size_t t0, size_t n) {
    const size_t plane = (size_t)H * W, pstride = (size_t)C * ld;
    run4 runs[CHUNK4];
    float sv[6][4 * CHUNK4 + 2], D[36][CHUNK4];
    for (size_t c0 = 0; c0 < n; c0 += CHUNK4) {
        const int cl = n - c0 < CHUNK4 ? (int)(n - c0) : CHUNK4;
        const int nr = chunk_runs(tl, t0 + c0, cl, runs);
        for (int c = 0; c < C; c++) {
            for (int ri = 0; ri < nr; ri++) {
                const run4 *ru = &runs[ri];
                const float *p = src + (ru->img * C + c) * plane;
                const int len = ru->len, xa = 4 * ru->tx0 - 1, nx = 4 * len + 2;
                /* columns x' in [lo, hi) are inside the image (x = xa + x'); rows
                 * outside it read zeros */
                const int lo = xa < 0 ? -xa : 0, hi = W - xa < nx ? W - xa : nx;
                const float *b[6];
                for (int i = 0; i < 6; i++) {
                    const int y = 4 * ru->ty - 1 + i;
                    b[i] = (y < 0 || y >= H) ? k_zeros : p + (size_t)y * W + (xa + lo);
                }
                const float *b0p = b[0], *b1p = b[1], *b2p = b[2], *b3p = b[3], *b4p = b[4],
                            *b5p = b[5];
                float *s0 = sv[0] + lo, *s1 = sv[1] + lo, *s2 = sv[2] + lo, *s3 = sv[3] + lo,
                      *s4 = sv[4] + lo, *s5 = sv[5] + lo;
                const int nv = hi - lo;
#pragma omp simd
                for (int x = 0; x < nv; x++) {
                    const float b0 = b0p[x], b1 = b1p[x], b2 = b2p[x], b3 = b3p[x], b4 = b4p[x],
                                b5 = b5p[x];
                    s0[x] = 4.0f * b0 - 5.0f * b2 + b4;
                    s1[x] = -4.0f * (b1 + b2) + b3 + b4;
                    s2[x] = 4.0f * (b1 - b2) - b3 + b4;
                    s3[x] = -2.0f * (b1 - b3) - b2 + b4;
                    s4[x] = 2.0f * (b1 - b3) - b2 + b4;
                    s5[x] = 4.0f * b1 - 5.0f * b3 + b5;
                }
                for (int i = 0; i < 6; i++) {
                    for (int x = 0; x < lo; x++) sv[i][x] = 0.0f;
                    for (int x = hi > lo ? hi : lo; x < nx; x++) sv[i][x] = 0.0f;
                }
                for (int i = 0; i < 6; i++) {
                    const float *r = sv[i];
                    float *d0 = D[i * 6] + ru->off, *d1 = D[i * 6 + 1] + ru->off,
                          *d2 = D[i * 6 + 2] + ru->off, *d3 = D[i * 6 + 3] + ru->off,
                          *d4 = D[i * 6 + 4] + ru->off, *d5 = D[i * 6 + 5] + ru->off;
#pragma omp simd
                    for (int q = 0; q < len; q++) {
                        d0[q] = r[4 * q];
                        d1[q] = r[4 * q + 1];
                        d2[q] = r[4 * q + 2];
                        d3[q] = r[4 * q + 3];
                        d4[q] = r[4 * q + 4];
                        d5[q] = r[4 * q + 5];
                    }
                }
            }
            float *v = V + (size_t)c * ld + c0;
            for (int i = 0; i < 6; i++) {
                const float *x0p = D[i * 6], *x1p = D[i * 6 + 1], *x2p = D[i * 6 + 2],
                            *x3p = D[i * 6 + 3], *x4p = D[i * 6 + 4], *x5p = D[i * 6 + 5];
                float *v0 = v + (size_t)(i * 6) * pstride, *v1 = v0 + pstride, *v2 = v1 + pstride;
                float *v3 = v2 + pstride, *v4 = v3 + pstride, *v5 = v4 + pstride;
#pragma omp simd
                for (int q = 0; q < cl; q++) {
                    const float x0 = x0p[q], x1 = x1p[q], x2 = x2p[q], x3 = x3p[q], x4 = x4p[q],
                                x5 = x5p[q];
                    v0[q] = 4.0f * x0 - 5.0f * x2 + x4;
                    v1[q] = -4.0f * (x1 + x2) + x3 + x4;
                    v2[q] = 4.0f * (x1 - x2) - x3 + x4;
                    v3[q] = -2.0f * (x1 - x3) - x2 + x4;
                    v4[q] = 2.0f * (x1 - x3) - x2 + x4;
                    v5[q] = 4.0f * x1 - 5.0f * x3 + x5;
                }
            }
        }
    }
}

static void transform_output4(float *out, const float *M, size_t ld, const float *b, int K,
                              int OH, int OW, tiling tl, size_t t0, size_t n, int accumulate) {
    const size_t plane = (size_t)OH * OW, pstride = (size_t)K * ld;
    run4 runs[CHUNK4];
    float yq[16][CHUNK4], yrow[4 * CHUNK4];
    for (size_t c0 = 0; c0 < n; c0 += CHUNK4) {
        const int cl = n - c0 < CHUNK4 ? (int)(n - c0) : CHUNK4;
        const int nr = chunk_runs(tl, t0 + c0, cl, runs);
        for (int k = 0; k < K; k++) {
            const float bias = b ? b[k] : 0.0f;
            const float *m = M + (size_t)k * ld + c0;
            const float *m0 = m + (size_t)0 * pstride;
            const float *m1 = m + (size_t)1 * pstride;
            const float *m2 = m + (size_t)2 * pstride;
            const float *m3 = m + (size_t)3 * pstride;
            const float *m4 = m + (size_t)4 * pstride;
            const float *m5 = m + (size_t)5 * pstride;
            const float *m6 = m + (size_t)6 * pstride;
            const float *m7 = m + (size_t)7 * pstride;
            const float *m8 = m + (size_t)8 * pstride;
            const float *m9 = m + (size_t)9 * pstride;
            const float *m10 = m + (size_t)10 * pstride;
            const float *m11 = m + (size_t)11 * pstride;
            const float *m12 = m + (size_t)12 * pstride;
            const float *m13 = m + (size_t)13 * pstride;
            const float *m14 = m + (size_t)14 * pstride;
            const float *m15 = m + (size_t)15 * pstride;
            const float *m16 = m + (size_t)16 * pstride;
            const float *m17 = m + (size_t)17 * pstride;
            const float *m18 = m + (size_t)18 * pstride;
            const float *m19 = m + (size_t)19 * pstride;
            const float *m20 = m + (size_t)20 * pstride;
            const float *m21 = m + (size_t)21 * pstride;
            const float *m22 = m + (size_t)22 * pstride;
            const float *m23 = m + (size_t)23 * pstride;
            const float *m24 = m + (size_t)24 * pstride;
            const float *m25 = m + (size_t)25 * pstride;
            const float *m26 = m + (size_t)26 * pstride;
            const float *m27 = m + (size_t)27 * pstride;
            const float *m28 = m + (size_t)28 * pstride;
            const float *m29 = m + (size_t)29 * pstride;
            const float *m30 = m + (size_t)30 * pstride;
            const float *m31 = m + (size_t)31 * pstride;
            const float *m32 = m + (size_t)32 * pstride;
            const float *m33 = m + (size_t)33 * pstride;
            const float *m34 = m + (size_t)34 * pstride;
            const float *m35 = m + (size_t)35 * pstride;
            float *y0 = yq[0];
            float *y1 = yq[1];
            float *y2 = yq[2];
            float *y3 = yq[3];
            float *y4 = yq[4];
            float *y5 = yq[5];
            float *y6 = yq[6];
            float *y7 = yq[7];
            float *y8 = yq[8];
            float *y9 = yq[9];
            float *y10 = yq[10];
            float *y11 = yq[11];
            float *y12 = yq[12];
            float *y13 = yq[13];
            float *y14 = yq[14];
            float *y15 = yq[15];
#pragma omp simd
            for (int q = 0; q < cl; q++) {
                const float t0_0 = m0[q] + m6[q] + m12[q] + m18[q] + m24[q];
                const float t0_1 = m1[q] + m7[q] + m13[q] + m19[q] + m25[q];
                const float t0_2 = m2[q] + m8[q] + m14[q] + m20[q] + m26[q];
                const float t0_3 = m3[q] + m9[q] + m15[q] + m21[q] + m27[q];
                const float t0_4 = m4[q] + m10[q] + m16[q] + m22[q] + m28[q];
                const float t0_5 = m5[q] + m11[q] + m17[q] + m23[q] + m29[q];
                const float t1_0 = m6[q] - m12[q] + 2.0f * m18[q] - 2.0f * m24[q];
                const float t1_1 = m7[q] - m13[q] + 2.0f * m19[q] - 2.0f * m25[q];
                const float t1_2 = m8[q] - m14[q] + 2.0f * m20[q] - 2.0f * m26[q];
                const float t1_3 = m9[q] - m15[q] + 2.0f * m21[q] - 2.0f * m27[q];
                const float t1_4 = m10[q] - m16[q] + 2.0f * m22[q] - 2.0f * m28[q];
                const float t1_5 = m11[q] - m17[q] + 2.0f * m23[q] - 2.0f * m29[q];
                const float t2_0 = m6[q] + m12[q] + 4.0f * m18[q] + 4.0f * m24[q];
                const float t2_1 = m7[q] + m13[q] + 4.0f * m19[q] + 4.0f * m25[q];
                const float t2_2 = m8[q] + m14[q] + 4.0f * m20[q] + 4.0f * m26[q];
                const float t2_3 = m9[q] + m15[q] + 4.0f * m21[q] + 4.0f * m27[q];
                const float t2_4 = m10[q] + m16[q] + 4.0f * m22[q] + 4.0f * m28[q];
                const float t2_5 = m11[q] + m17[q] + 4.0f * m23[q] + 4.0f * m29[q];
                const float t3_0 = m6[q] - m12[q] + 8.0f * m18[q] - 8.0f * m24[q] + m30[q];
                const float t3_1 = m7[q] - m13[q] + 8.0f * m19[q] - 8.0f * m25[q] + m31[q];
                const float t3_2 = m8[q] - m14[q] + 8.0f * m20[q] - 8.0f * m26[q] + m32[q];
                const float t3_3 = m9[q] - m15[q] + 8.0f * m21[q] - 8.0f * m27[q] + m33[q];
                const float t3_4 = m10[q] - m16[q] + 8.0f * m22[q] - 8.0f * m28[q] + m34[q];
                const float t3_5 = m11[q] - m17[q] + 8.0f * m23[q] - 8.0f * m29[q] + m35[q];
                y0[q] = t0_0 + t0_1 + t0_2 + t0_3 + t0_4 + bias;
                y1[q] = t0_1 - t0_2 + 2.0f * t0_3 - 2.0f * t0_4 + bias;
                y2[q] = t0_1 + t0_2 + 4.0f * t0_3 + 4.0f * t0_4 + bias;
                y3[q] = t0_1 - t0_2 + 8.0f * t0_3 - 8.0f * t0_4 + t0_5 + bias;
                y4[q] = t1_0 + t1_1 + t1_2 + t1_3 + t1_4 + bias;
                y5[q] = t1_1 - t1_2 + 2.0f * t1_3 - 2.0f * t1_4 + bias;
                y6[q] = t1_1 + t1_2 + 4.0f * t1_3 + 4.0f * t1_4 + bias;
                y7[q] = t1_1 - t1_2 + 8.0f * t1_3 - 8.0f * t1_4 + t1_5 + bias;
                y8[q] = t2_0 + t2_1 + t2_2 + t2_3 + t2_4 + bias;
                y9[q] = t2_1 - t2_2 + 2.0f * t2_3 - 2.0f * t2_4 + bias;
                y10[q] = t2_1 + t2_2 + 4.0f * t2_3 + 4.0f * t2_4 + bias;
                y11[q] = t2_1 - t2_2 + 8.0f * t2_3 - 8.0f * t2_4 + t2_5 + bias;
                y12[q] = t3_0 + t3_1 + t3_2 + t3_3 + t3_4 + bias;
                y13[q] = t3_1 - t3_2 + 2.0f * t3_3 - 2.0f * t3_4 + bias;
                y14[q] = t3_1 + t3_2 + 4.0f * t3_3 + 4.0f * t3_4 + bias;
                y15[q] = t3_1 - t3_2 + 8.0f * t3_3 - 8.0f * t3_4 + t3_5 + bias;
            }
            for (int ri = 0; ri < nr; ri++) {
                const run4 *ru = &runs[ri];
                float *dst = out + (ru->img * K + k) * plane;
                const int len = ru->len;
                int ncol = 4 * len;
                if (4 * (ru->tx0 + len) > OW) ncol = OW - 4 * ru->tx0;
                for (int r = 0; r < 4; r++) {
                    const int oy = 4 * ru->ty + r;
                    if (oy >= OH) break;
                    const float *a0 = yq[r * 4] + ru->off, *a1 = yq[r * 4 + 1] + ru->off,
                                *a2 = yq[r * 4 + 2] + ru->off, *a3 = yq[r * 4 + 3] + ru->off;
#pragma omp simd
                    for (int q = 0; q < len; q++) {
                        yrow[4 * q] = a0[q];
                        yrow[4 * q + 1] = a1[q];
                        yrow[4 * q + 2] = a2[q];
                        yrow[4 * q + 3] = a3[q];
                    }
                    float *o = dst + (size_t)oy * OW + 4 * ru->tx0;
                    if (accumulate) {
#pragma omp simd
                        for (int x = 0; x < ncol; x++) o[x] += yrow[x];
                    } else {
                        memcpy(o, yrow, sizeof(float) * ncol);
                    }
                }
            }
        }
    }
}

static void transform_dout4(float *Z, size_t ld, const float *dout, int K, int OH, int OW,
                            tiling tl, size_t t0, size_t n) {
    const size_t plane = (size_t)OH * OW, pstride = (size_t)K * ld;
    run4 runs[CHUNK4];
    float eq[16][CHUNK4], erow[4 * CHUNK4];
    for (size_t c0 = 0; c0 < n; c0 += CHUNK4) {
        const int cl = n - c0 < CHUNK4 ? (int)(n - c0) : CHUNK4;
        const int nr = chunk_runs(tl, t0 + c0, cl, runs);
        for (int k = 0; k < K; k++) {
            for (int ri = 0; ri < nr; ri++) {
                const run4 *ru = &runs[ri];
                const float *g = dout + (ru->img * K + k) * plane;
                const int len = ru->len;
                int ncol = 4 * len;
                if (4 * (ru->tx0 + len) > OW) ncol = OW - 4 * ru->tx0;
                for (int r = 0; r < 4; r++) {
                    const int oy = 4 * ru->ty + r;
                    float *a0 = eq[r * 4] + ru->off, *a1 = eq[r * 4 + 1] + ru->off,
                          *a2 = eq[r * 4 + 2] + ru->off, *a3 = eq[r * 4 + 3] + ru->off;
                    if (oy >= OH) {
                        memset(a0, 0, sizeof(float) * len);
                        memset(a1, 0, sizeof(float) * len);
                        memset(a2, 0, sizeof(float) * len);
                        memset(a3, 0, sizeof(float) * len);
                        continue;
                    }
                    memcpy(erow, g + (size_t)oy * OW + 4 * ru->tx0, sizeof(float) * ncol);
                    for (int x = ncol; x < 4 * len; x++) erow[x] = 0.0f;
#pragma omp simd
                    for (int q = 0; q < len; q++) {
                        a0[q] = erow[4 * q];
                        a1[q] = erow[4 * q + 1];
                        a2[q] = erow[4 * q + 2];
                        a3[q] = erow[4 * q + 3];
                    }
                }
            }
            float *z = Z + (size_t)k * ld + c0;
            const float *e0 = eq[0];
            const float *e1 = eq[1];
            const float *e2 = eq[2];
            const float *e3 = eq[3];
            const float *e4 = eq[4];
            const float *e5 = eq[5];
            const float *e6 = eq[6];
            const float *e7 = eq[7];
            const float *e8 = eq[8];
            const float *e9 = eq[9];
            const float *e10 = eq[10];
            const float *e11 = eq[11];
            const float *e12 = eq[12];
            const float *e13 = eq[13];
            const float *e14 = eq[14];
            const float *e15 = eq[15];
            float *z0 = z + (size_t)0 * pstride;
            float *z1 = z + (size_t)1 * pstride;
            float *z2 = z + (size_t)2 * pstride;
            float *z3 = z + (size_t)3 * pstride;
            float *z4 = z + (size_t)4 * pstride;
            float *z5 = z + (size_t)5 * pstride;
            float *z6 = z + (size_t)6 * pstride;
            float *z7 = z + (size_t)7 * pstride;
            float *z8 = z + (size_t)8 * pstride;
            float *z9 = z + (size_t)9 * pstride;
            float *z10 = z + (size_t)10 * pstride;
            float *z11 = z + (size_t)11 * pstride;
            float *z12 = z + (size_t)12 * pstride;
            float *z13 = z + (size_t)13 * pstride;
            float *z14 = z + (size_t)14 * pstride;
            float *z15 = z + (size_t)15 * pstride;
            float *z16 = z + (size_t)16 * pstride;
            float *z17 = z + (size_t)17 * pstride;
            float *z18 = z + (size_t)18 * pstride;
            float *z19 = z + (size_t)19 * pstride;
            float *z20 = z + (size_t)20 * pstride;
            float *z21 = z + (size_t)21 * pstride;
            float *z22 = z + (size_t)22 * pstride;
            float *z23 = z + (size_t)23 * pstride;
            float *z24 = z + (size_t)24 * pstride;
            float *z25 = z + (size_t)25 * pstride;
            float *z26 = z + (size_t)26 * pstride;
            float *z27 = z + (size_t)27 * pstride;
            float *z28 = z + (size_t)28 * pstride;
            float *z29 = z + (size_t)29 * pstride;
            float *z30 = z + (size_t)30 * pstride;
            float *z31 = z + (size_t)31 * pstride;
            float *z32 = z + (size_t)32 * pstride;
            float *z33 = z + (size_t)33 * pstride;
            float *z34 = z + (size_t)34 * pstride;
            float *z35 = z + (size_t)35 * pstride;
            /* R = A e (6x4, rows), then z = R A^T (6x6, columns) */
#pragma omp simd
            for (int q = 0; q < cl; q++) {
                const float R0_0 = e0[q];
                const float R0_1 = e1[q];
                const float R0_2 = e2[q];
                const float R0_3 = e3[q];
                const float R1_0 = e0[q] + e4[q] + e8[q] + e12[q];
                const float R1_1 = e1[q] + e5[q] + e9[q] + e13[q];
                const float R1_2 = e2[q] + e6[q] + e10[q] + e14[q];
                const float R1_3 = e3[q] + e7[q] + e11[q] + e15[q];
                const float R2_0 = e0[q] - e4[q] + e8[q] - e12[q];
                const float R2_1 = e1[q] - e5[q] + e9[q] - e13[q];
                const float R2_2 = e2[q] - e6[q] + e10[q] - e14[q];
                const float R2_3 = e3[q] - e7[q] + e11[q] - e15[q];
                const float R3_0 = e0[q] + 2.0f * e4[q] + 4.0f * e8[q] + 8.0f * e12[q];
                const float R3_1 = e1[q] + 2.0f * e5[q] + 4.0f * e9[q] + 8.0f * e13[q];
                const float R3_2 = e2[q] + 2.0f * e6[q] + 4.0f * e10[q] + 8.0f * e14[q];
                const float R3_3 = e3[q] + 2.0f * e7[q] + 4.0f * e11[q] + 8.0f * e15[q];
                const float R4_0 = e0[q] - 2.0f * e4[q] + 4.0f * e8[q] - 8.0f * e12[q];
                const float R4_1 = e1[q] - 2.0f * e5[q] + 4.0f * e9[q] - 8.0f * e13[q];
                const float R4_2 = e2[q] - 2.0f * e6[q] + 4.0f * e10[q] - 8.0f * e14[q];
                const float R4_3 = e3[q] - 2.0f * e7[q] + 4.0f * e11[q] - 8.0f * e15[q];
                const float R5_0 = e12[q];
                const float R5_1 = e13[q];
                const float R5_2 = e14[q];
                const float R5_3 = e15[q];
                z0[q] = R0_0;
                z1[q] = R0_0 + R0_1 + R0_2 + R0_3;
                z2[q] = R0_0 - R0_1 + R0_2 - R0_3;
                z3[q] = R0_0 + 2.0f * R0_1 + 4.0f * R0_2 + 8.0f * R0_3;
                z4[q] = R0_0 - 2.0f * R0_1 + 4.0f * R0_2 - 8.0f * R0_3;
                z5[q] = R0_3;
                z6[q] = R1_0;
                z7[q] = R1_0 + R1_1 + R1_2 + R1_3;
                z8[q] = R1_0 - R1_1 + R1_2 - R1_3;
                z9[q] = R1_0 + 2.0f * R1_1 + 4.0f * R1_2 + 8.0f * R1_3;
                z10[q] = R1_0 - 2.0f * R1_1 + 4.0f * R1_2 - 8.0f * R1_3;
                z11[q] = R1_3;
                z12[q] = R2_0;
                z13[q] = R2_0 + R2_1 + R2_2 + R2_3;
                z14[q] = R2_0 - R2_1 + R2_2 - R2_3;
                z15[q] = R2_0 + 2.0f * R2_1 + 4.0f * R2_2 + 8.0f * R2_3;
                z16[q] = R2_0 - 2.0f * R2_1 + 4.0f * R2_2 - 8.0f * R2_3;
                z17[q] = R2_3;
                z18[q] = R3_0;
                z19[q] = R3_0 + R3_1 + R3_2 + R3_3;
                z20[q] = R3_0 - R3_1 + R3_2 - R3_3;
                z21[q] = R3_0 + 2.0f * R3_1 + 4.0f * R3_2 + 8.0f * R3_3;
                z22[q] = R3_0 - 2.0f * R3_1 + 4.0f * R3_2 - 8.0f * R3_3;
                z23[q] = R3_3;
                z24[q] = R4_0;
                z25[q] = R4_0 + R4_1 + R4_2 + R4_3;
                z26[q] = R4_0 - R4_1 + R4_2 - R4_3;
                z27[q] = R4_0 + 2.0f * R4_1 + 4.0f * R4_2 + 8.0f * R4_3;
                z28[q] = R4_0 - 2.0f * R4_1 + 4.0f * R4_2 - 8.0f * R4_3;
                z29[q] = R4_3;
                z30[q] = R5_0;
                z31[q] = R5_0 + R5_1 + R5_2 + R5_3;
                z32[q] = R5_0 - R5_1 + R5_2 - R5_3;
                z33[q] = R5_0 + 2.0f * R5_1 + 4.0f * R5_2 + 8.0f * R5_3;
                z34[q] = R5_0 - 2.0f * R5_1 + 4.0f * R5_2 - 8.0f * R5_3;
                z35[q] = R5_3;
            }
        }
    }
}

/* F(2x2) transforms on chunks spanning tile rows, like the F(4x4) ones
 * (tile rows are only 4-7 tiles long where F(2x2) is used, 8x8 to 15x15). */
static void transform_input2(float *V, size_t ld, const float *src, int C, int H, int W,
                             tiling tl, size_t t0, size_t n) {
    const size_t plane = (size_t)H * W, pstride = (size_t)C * ld;
    run4 runs[CHUNK4];
    float sv[4][2 * CHUNK4 + 2], D[16][CHUNK4];
    for (size_t c0 = 0; c0 < n; c0 += CHUNK4) {
        const int cl = n - c0 < CHUNK4 ? (int)(n - c0) : CHUNK4;
        const int nr = chunk_runs(tl, t0 + c0, cl, runs);
        for (int c = 0; c < C; c++) {
            for (int ri = 0; ri < nr; ri++) {
                const run4 *ru = &runs[ri];
                const float *p = src + (ru->img * C + c) * plane;
                const int len = ru->len, xa = 2 * ru->tx0 - 1, nx = 2 * len + 2;
                const int lo = xa < 0 ? -xa : 0, hi = W - xa < nx ? W - xa : nx;
                const float *b[4];
                for (int i = 0; i < 4; i++) {
                    const int y = 2 * ru->ty - 1 + i;
                    b[i] = (y < 0 || y >= H) ? k_zeros : p + (size_t)y * W + (xa + lo);
                }
                const float *b0p = b[0], *b1p = b[1], *b2p = b[2], *b3p = b[3];
                float *s0 = sv[0] + lo, *s1 = sv[1] + lo, *s2 = sv[2] + lo, *s3 = sv[3] + lo;
                const int nv = hi - lo;
#pragma omp simd
                for (int x = 0; x < nv; x++) {
                    const float b0 = b0p[x], b1 = b1p[x], b2 = b2p[x], b3 = b3p[x];
                    s0[x] = b0 - b2;
                    s1[x] = b1 + b2;
                    s2[x] = b2 - b1;
                    s3[x] = b1 - b3;
                }
                for (int i = 0; i < 4; i++) {
                    for (int x = 0; x < lo; x++) sv[i][x] = 0.0f;
                    for (int x = hi > lo ? hi : lo; x < nx; x++) sv[i][x] = 0.0f;
                }
                for (int i = 0; i < 4; i++) {
                    const float *r = sv[i];
                    float *d0 = D[i * 4] + ru->off, *d1 = D[i * 4 + 1] + ru->off,
                          *d2 = D[i * 4 + 2] + ru->off, *d3 = D[i * 4 + 3] + ru->off;
#pragma omp simd
                    for (int q = 0; q < len; q++) {
                        d0[q] = r[2 * q];
                        d1[q] = r[2 * q + 1];
                        d2[q] = r[2 * q + 2];
                        d3[q] = r[2 * q + 3];
                    }
                }
            }
            float *v = V + (size_t)c * ld + c0;
            for (int i = 0; i < 4; i++) {
                const float *x0p = D[i * 4], *x1p = D[i * 4 + 1], *x2p = D[i * 4 + 2],
                            *x3p = D[i * 4 + 3];
                float *v0 = v + (size_t)(i * 4) * pstride, *v1 = v0 + pstride, *v2 = v1 + pstride,
                      *v3 = v2 + pstride;
#pragma omp simd
                for (int q = 0; q < cl; q++) {
                    const float x0 = x0p[q], x1 = x1p[q], x2 = x2p[q], x3 = x3p[q];
                    v0[q] = x0 - x2;
                    v1[q] = x1 + x2;
                    v2[q] = x2 - x1;
                    v3[q] = x1 - x3;
                }
            }
        }
    }
}

static void transform_output2(float *out, const float *M, size_t ld, const float *b, int K,
                              int OH, int OW, tiling tl, size_t t0, size_t n, int accumulate) {
    const size_t plane = (size_t)OH * OW, pstride = (size_t)K * ld;
    run4 runs[CHUNK4];
    float yq[4][CHUNK4], yrow[2 * CHUNK4];
    for (size_t c0 = 0; c0 < n; c0 += CHUNK4) {
        const int cl = n - c0 < CHUNK4 ? (int)(n - c0) : CHUNK4;
        const int nr = chunk_runs(tl, t0 + c0, cl, runs);
        for (int k = 0; k < K; k++) {
            const float bias = b ? b[k] : 0.0f;
            const float *m = M + (size_t)k * ld + c0;
            const float *m0 = m + (size_t)0 * pstride;
            const float *m1 = m + (size_t)1 * pstride;
            const float *m2 = m + (size_t)2 * pstride;
            const float *m3 = m + (size_t)3 * pstride;
            const float *m4 = m + (size_t)4 * pstride;
            const float *m5 = m + (size_t)5 * pstride;
            const float *m6 = m + (size_t)6 * pstride;
            const float *m7 = m + (size_t)7 * pstride;
            const float *m8 = m + (size_t)8 * pstride;
            const float *m9 = m + (size_t)9 * pstride;
            const float *m10 = m + (size_t)10 * pstride;
            const float *m11 = m + (size_t)11 * pstride;
            const float *m12 = m + (size_t)12 * pstride;
            const float *m13 = m + (size_t)13 * pstride;
            const float *m14 = m + (size_t)14 * pstride;
            const float *m15 = m + (size_t)15 * pstride;
            float *y0 = yq[0];
            float *y1 = yq[1];
            float *y2 = yq[2];
            float *y3 = yq[3];
#pragma omp simd
            for (int q = 0; q < cl; q++) {
                const float t0_0 = m0[q] + m4[q] + m8[q];
                const float t0_1 = m1[q] + m5[q] + m9[q];
                const float t0_2 = m2[q] + m6[q] + m10[q];
                const float t0_3 = m3[q] + m7[q] + m11[q];
                const float t1_0 = m4[q] - m8[q] - m12[q];
                const float t1_1 = m5[q] - m9[q] - m13[q];
                const float t1_2 = m6[q] - m10[q] - m14[q];
                const float t1_3 = m7[q] - m11[q] - m15[q];
                y0[q] = t0_0 + t0_1 + t0_2 + bias;
                y1[q] = t0_1 - t0_2 - t0_3 + bias;
                y2[q] = t1_0 + t1_1 + t1_2 + bias;
                y3[q] = t1_1 - t1_2 - t1_3 + bias;
            }
            for (int ri = 0; ri < nr; ri++) {
                const run4 *ru = &runs[ri];
                float *dst = out + (ru->img * K + k) * plane;
                const int len = ru->len;
                int ncol = 2 * len;
                if (2 * (ru->tx0 + len) > OW) ncol = OW - 2 * ru->tx0;
                for (int r = 0; r < 2; r++) {
                    const int oy = 2 * ru->ty + r;
                    if (oy >= OH) break;
                    const float *a0 = yq[r * 2] + ru->off, *a1 = yq[r * 2 + 1] + ru->off;
#pragma omp simd
                    for (int q = 0; q < len; q++) {
                        yrow[2 * q] = a0[q];
                        yrow[2 * q + 1] = a1[q];
                    }
                    float *o = dst + (size_t)oy * OW + 2 * ru->tx0;
                    if (accumulate) {
#pragma omp simd
                        for (int x = 0; x < ncol; x++) o[x] += yrow[x];
                    } else {
                        memcpy(o, yrow, sizeof(float) * ncol);
                    }
                }
            }
        }
    }
}

static void transform_dout2(float *Z, size_t ld, const float *dout, int K, int OH, int OW,
                            tiling tl, size_t t0, size_t n) {
    const size_t plane = (size_t)OH * OW, pstride = (size_t)K * ld;
    run4 runs[CHUNK4];
    float eq[4][CHUNK4], erow[2 * CHUNK4];
    for (size_t c0 = 0; c0 < n; c0 += CHUNK4) {
        const int cl = n - c0 < CHUNK4 ? (int)(n - c0) : CHUNK4;
        const int nr = chunk_runs(tl, t0 + c0, cl, runs);
        for (int k = 0; k < K; k++) {
            for (int ri = 0; ri < nr; ri++) {
                const run4 *ru = &runs[ri];
                const float *g = dout + (ru->img * K + k) * plane;
                const int len = ru->len;
                int ncol = 2 * len;
                if (2 * (ru->tx0 + len) > OW) ncol = OW - 2 * ru->tx0;
                for (int r = 0; r < 2; r++) {
                    const int oy = 2 * ru->ty + r;
                    float *a0 = eq[r * 2] + ru->off, *a1 = eq[r * 2 + 1] + ru->off;
                    if (oy >= OH) {
                        memset(a0, 0, sizeof(float) * len);
                        memset(a1, 0, sizeof(float) * len);
                        continue;
                    }
                    memcpy(erow, g + (size_t)oy * OW + 2 * ru->tx0, sizeof(float) * ncol);
                    for (int x = ncol; x < 2 * len; x++) erow[x] = 0.0f;
#pragma omp simd
                    for (int q = 0; q < len; q++) {
                        a0[q] = erow[2 * q];
                        a1[q] = erow[2 * q + 1];
                    }
                }
            }
            float *z = Z + (size_t)k * ld + c0;
            const float *e0 = eq[0];
            const float *e1 = eq[1];
            const float *e2 = eq[2];
            const float *e3 = eq[3];
            float *z0 = z + (size_t)0 * pstride;
            float *z1 = z + (size_t)1 * pstride;
            float *z2 = z + (size_t)2 * pstride;
            float *z3 = z + (size_t)3 * pstride;
            float *z4 = z + (size_t)4 * pstride;
            float *z5 = z + (size_t)5 * pstride;
            float *z6 = z + (size_t)6 * pstride;
            float *z7 = z + (size_t)7 * pstride;
            float *z8 = z + (size_t)8 * pstride;
            float *z9 = z + (size_t)9 * pstride;
            float *z10 = z + (size_t)10 * pstride;
            float *z11 = z + (size_t)11 * pstride;
            float *z12 = z + (size_t)12 * pstride;
            float *z13 = z + (size_t)13 * pstride;
            float *z14 = z + (size_t)14 * pstride;
            float *z15 = z + (size_t)15 * pstride;
            /* R = A e (4x2, rows), then z = R A^T (4x4, columns) */
#pragma omp simd
            for (int q = 0; q < cl; q++) {
                const float R0_0 = e0[q];
                const float R0_1 = e1[q];
                const float R1_0 = e0[q] + e2[q];
                const float R1_1 = e1[q] + e3[q];
                const float R2_0 = e0[q] - e2[q];
                const float R2_1 = e1[q] - e3[q];
                const float R3_0 = -e2[q];
                const float R3_1 = -e3[q];
                z0[q] = R0_0;
                z1[q] = R0_0 + R0_1;
                z2[q] = R0_0 - R0_1;
                z3[q] = -R0_1;
                z4[q] = R1_0;
                z5[q] = R1_0 + R1_1;
                z6[q] = R1_0 - R1_1;
                z7[q] = -R1_1;
                z8[q] = R2_0;
                z9[q] = R2_0 + R2_1;
                z10[q] = R2_0 - R2_1;
                z11[q] = -R2_1;
                z12[q] = R3_0;
                z13[q] = R3_0 + R3_1;
                z14[q] = R3_0 - R3_1;
                z15[q] = -R3_1;
            }
        }
    }
}

/* g (3x3) += G^T q G for the 6x6 q of F(4x4) or the 4x4 q of F(2x2) */
static void weight_grad_back4(float *g, const float q[6][6]) {
    float s[3][6];
    for (int j = 0; j < 6; j++) {
        const float a0 = q[0][j], a1 = q[1][j], a2 = q[2][j], a3 = q[3][j], a4 = q[4][j],
                    a5 = q[5][j];
        s[0][j] = a0 / 4.0f - (a1 + a2) / 6.0f + (a3 + a4) / 24.0f;
        s[1][j] = (a2 - a1) / 6.0f + (a3 - a4) / 12.0f;
        s[2][j] = -(a1 + a2) / 6.0f + (a3 + a4) / 6.0f + a5;
    }
    for (int i = 0; i < 3; i++) {
        const float a0 = s[i][0], a1 = s[i][1], a2 = s[i][2], a3 = s[i][3], a4 = s[i][4],
                    a5 = s[i][5];
        g[i * 3 + 0] += a0 / 4.0f - (a1 + a2) / 6.0f + (a3 + a4) / 24.0f;
        g[i * 3 + 1] += (a2 - a1) / 6.0f + (a3 - a4) / 12.0f;
        g[i * 3 + 2] += -(a1 + a2) / 6.0f + (a3 + a4) / 6.0f + a5;
    }
}

static void weight_grad_back2(float *g, const float q[6][6]) {
    float s[3][4];
    for (int j = 0; j < 4; j++) {
        s[0][j] = q[0][j] + 0.5f * (q[1][j] + q[2][j]);
        s[1][j] = 0.5f * (q[1][j] - q[2][j]);
        s[2][j] = 0.5f * (q[1][j] + q[2][j]) + q[3][j];
    }
    for (int i = 0; i < 3; i++) {
        g[i * 3 + 0] += s[i][0] + 0.5f * (s[i][1] + s[i][2]);
        g[i * 3 + 1] += 0.5f * (s[i][1] - s[i][2]);
        g[i * 3 + 2] += 0.5f * (s[i][1] + s[i][2]) + s[i][3];
    }
}

/* Forward pass; runs inside a parallel region (or serially): U is shared
 * (one barrier after it is built), each thread then takes blocks
 * tid, tid + nth, ... with its own V and M, without further barriers. Every
 * output element comes from one block, computed the same way whatever the
 * thread count. */
static void forward_body(float *out, const float *in, const float *w, const float *b,
                         const km_conv_dims *d, float *work, int accumulate) {
    const int C = d->C, K = d->K, m = tile_m(d), P = npos(d);
    const tiling tl = {(d->OH + m - 1) / m, (d->OW + m - 1) / m};
    const size_t T = tiles_total(d), nt = block_tiles(d), KC = (size_t)K * C;
    float *U = work;
    if (m == 4)
        transform_weights4(U, w, K, C);
    else
        transform_weights(U, w, K, C);
#ifdef _OPENMP
    const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
#else
    const int tid = 0, nth = 1;
#endif
    float *V = U + P * KC + (size_t)tid * thread_floats(d), *M = V + (size_t)P * C * nt;
    for (size_t t0 = (size_t)tid * nt; t0 < T; t0 += (size_t)nth * nt) {
        const size_t n = T - t0 < nt ? T - t0 : nt;
        if (m == 4)
            transform_input4(V, nt, in, C, d->H, d->W, tl, t0, n);
        else
            transform_input2(V, nt, in, C, d->H, d->W, tl, t0, n);
        for (int a = 0; a < P; a++)
            km_sgemm(0, 0, K, (int)n, C, 1.0f, U + a * KC, C, V + (size_t)a * C * nt, (int)nt, 0.0f,
                     M + (size_t)a * K * nt, (int)nt);
        if (m == 4)
            transform_output4(out, M, nt, b, K, d->OH, d->OW, tl, t0, n, accumulate);
        else
            transform_output2(out, M, nt, b, K, d->OH, d->OW, tl, t0, n, accumulate);
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
    const int C = d->C, K = d->K, T = km_get_threads(), m = tile_m(d), P = npos(d);
    const tiling tl = {(d->OH + m - 1) / m, (d->OW + m - 1) / m};
    const size_t Tt = tiles_total(d), nt = block_tiles(d), KC = (size_t)K * C;
    const size_t per = (size_t)P * KC + thread_floats(d);
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
        float *dU = work + (size_t)tid * per, *V = dU + P * KC, *Z = V + (size_t)P * C * nt;
        memset(dU, 0, sizeof(float) * P * KC);
        for (size_t t0 = (size_t)tid * nt; t0 < Tt; t0 += (size_t)nth * nt) {
            const size_t n = Tt - t0 < nt ? Tt - t0 : nt;
            if (m == 4) {
                transform_input4(V, nt, in, C, d->H, d->W, tl, t0, n);
                transform_dout4(Z, nt, dout, K, d->OH, d->OW, tl, t0, n);
            } else {
                transform_input2(V, nt, in, C, d->H, d->W, tl, t0, n);
                transform_dout2(Z, nt, dout, K, d->OH, d->OW, tl, t0, n);
            }
            for (int a = 0; a < P; a++)
                km_sgemm(0, 1, K, C, (int)n, 1.0f, Z + (size_t)a * K * nt, (int)nt,
                         V + (size_t)a * C * nt, (int)nt, 1.0f, dU + a * KC, C);
        }
#pragma omp barrier
        /* dw[k, c] += G^T (sum over threads of dU_kc) G */
        const int al = m + 2;
#pragma omp for schedule(static)
        for (int k = 0; k < K; k++)
            for (int c = 0; c < C; c++) {
                const size_t o = (size_t)k * C + c;
                float q[6][6];
                for (int a = 0; a < P; a++) {
                    float acc = work[a * KC + o];
                    for (int t = 1; t < used; t++) acc += work[(size_t)t * per + a * KC + o];
                    q[a / al][a % al] = acc;
                }
                if (m == 4)
                    weight_grad_back4(dw + o * 9, (const float(*)[6])q);
                else
                    weight_grad_back2(dw + o * 9, (const float(*)[6])q);
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
