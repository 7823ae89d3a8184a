/* basic.c - transformer building blocks: Linear, LayerNorm, LayerNorm2d, GELU.
 * Matches torch.nn.Linear / nn.LayerNorm / segment_anything.modeling.common.
 * LayerNorm2d / nn.GELU(approximate='none'). Statistics use double
 * accumulators in a fixed order (per row, sequential), so results do not depend
 * on the thread count. */
#include "basic.h"

#include <omp.h>
#include "fastmath.h"
#include "gemm.h"
#include "../core/km.h"

#include <math.h>
#include <string.h>

/* PyTorch's addmm fills the output with the broadcast bias and runs the GEMM
 * with beta = 1; we do the same so the bias enters the same accumulation. */
void km_linear_forward(float *out, const float *in, const float *w, const float *b, int M, int I,
                       int O) {
    KM_ASSERT(out != in);
    KM_ASSERT(M >= 0 && I > 0 && O > 0);
    if (M == 0) return;
    if (b) {
        for (int m = 0; m < M; m++) memcpy(out + (size_t)m * O, b, sizeof(float) * (size_t)O);
    }
    km_sgemm(0, 1, M, O, I, 1.0f, in, I, w, I, b ? 1.0f : 0.0f, out, O);
}

/* y = (x - mean) * rstd * w + b in float, as PyTorch's kernel (vectorised;
 * elementwise, so the values do not depend on it). */
static void ln_out(float *o, const float *x, const float *w, const float *b, int C, float fm,
                   float rstd) {
    if (w && b) {
#pragma omp simd
        for (int c = 0; c < C; c++) o[c] = (x[c] - fm) * rstd * w[c] + b[c];
        return;
    }
    for (int c = 0; c < C; c++) {
        float y = (x[c] - fm) * rstd;
        o[c] = w ? y * w[c] + (b ? b[c] : 0.0f) : y + (b ? b[c] : 0.0f);
    }
}

/* One row: mean and biased variance in double (two passes, channels in
 * order), then ln_out. */
static void ln_row(float *o, const float *x, const float *w, const float *b, int C, float eps) {
    double s = 0;
    for (int c = 0; c < C; c++) s += x[c];
    double mean = s / C;
    double v = 0;
    for (int c = 0; c < C; c++) {
        double d = x[c] - mean;
        v += d * d;
    }
    ln_out(o, x, w, b, C, (float)mean, (float)(1.0 / sqrt(v / C + (double)eps)));
}

/* Eight rows with exactly ln_row's arithmetic per row; interleaving the rows
 * gives eight independent chains of double additions instead of one. */
#define LN_ROWS 8
static void ln_rows(float *o, const float *x, const float *w, const float *b, int C, float eps) {
    double s[LN_ROWS] = {0}, v[LN_ROWS] = {0}, mean[LN_ROWS];
    for (int c = 0; c < C; c++)
        for (int r = 0; r < LN_ROWS; r++) s[r] += x[(size_t)r * C + c];
    for (int r = 0; r < LN_ROWS; r++) mean[r] = s[r] / C;
    for (int c = 0; c < C; c++)
        for (int r = 0; r < LN_ROWS; r++) {
            double d = x[(size_t)r * C + c] - mean[r];
            v[r] += d * d;
        }
    for (int r = 0; r < LN_ROWS; r++)
        ln_out(o + (size_t)r * C, x + (size_t)r * C, w, b, C, (float)mean[r],
               (float)(1.0 / sqrt(v[r] / C + (double)eps)));
}

void km_layernorm_forward(float *out, const float *in, const float *w, const float *b, int M, int C,
                          float eps) {
    KM_ASSERT(M >= 0 && C > 0);
    const int ng = M / LN_ROWS;
#pragma omp parallel for schedule(static) if (M > 64)
    for (int g = 0; g < ng; g++)
        ln_rows(out + (size_t)g * LN_ROWS * C, in + (size_t)g * LN_ROWS * C, w, b, C, eps);
    for (int m = ng * LN_ROWS; m < M; m++)
        ln_row(out + (size_t)m * C, in + (size_t)m * C, w, b, C, eps);
}

/* NCHW: the statistic runs over channels (stride HW) for each pixel. We sweep
 * the channel planes in order with per-pixel double accumulators held in a
 * small stack block of pixels, which keeps memory access contiguous. The
 * loops are vectorised across pixels (`omp simd`: GCC 12's -O2 cost model
 * leaves loops of unknown trip count scalar otherwise); each pixel's sums
 * stay in channel order, so the results do not change. */
#define LN2D_BLK 256
static void ln2d_block(float *o, const float *x, const float *w, const float *b, int C, int HW,
                       int np, float eps) {
    double mean[LN2D_BLK], var[LN2D_BLK];
    float fm[LN2D_BLK], rstd[LN2D_BLK];
    for (int p = 0; p < np; p++) mean[p] = var[p] = 0;
    for (int c = 0; c < C; c++) {
        const float *xc = x + (size_t)c * HW;
#pragma omp simd
        for (int p = 0; p < np; p++) mean[p] += xc[p];
    }
#pragma omp simd
    for (int p = 0; p < np; p++) mean[p] /= C;
    for (int c = 0; c < C; c++) {
        const float *xc = x + (size_t)c * HW;
#pragma omp simd
        for (int p = 0; p < np; p++) {
            double d = xc[p] - mean[p];
            var[p] += d * d;
        }
    }
    for (int p = 0; p < np; p++) {
        rstd[p] = (float)(1.0 / sqrt(var[p] / C + (double)eps));
        fm[p] = (float)mean[p];
    }
    for (int c = 0; c < C; c++) {
        const float wc = w ? w[c] : 1.0f, bc = b ? b[c] : 0.0f, *xc = x + (size_t)c * HW;
        float *oc = o + (size_t)c * HW;
#pragma omp simd
        for (int p = 0; p < np; p++) oc[p] = (xc[p] - fm[p]) * rstd[p] * wc + bc;
    }
}

void km_layernorm2d_forward(float *out, const float *in, const float *w, const float *b, int N,
                            int C, int HW, float eps) {
    KM_ASSERT(N >= 0 && C > 0 && HW >= 0);
    int nblk = (HW + LN2D_BLK - 1) / LN2D_BLK;
#pragma omp parallel for schedule(static) if ((size_t)N * nblk > 1)
    for (int job = 0; job < N * nblk; job++) {
        int n = job / nblk, p0 = (job % nblk) * LN2D_BLK;
        int np = HW - p0 < LN2D_BLK ? HW - p0 : LN2D_BLK;
        ln2d_block(out + (size_t)n * C * HW + p0, in + (size_t)n * C * HW + p0, w, b, C, HW, np,
                   eps);
    }
}

/* nn.GELU(approximate='none') = 0.5 x (1 + erf(x / sqrt 2)); the erf is the
 * vectorisable approximation in fastmath.h (relative error ~4e-7, the same
 * order as PyTorch's own vectorised erf). */
void km_gelu_forward(float *out, const float *in, size_t n) {
    const size_t chunk = 16384;
    size_t nchunks = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (nchunks > 4)
    for (size_t c = 0; c < nchunks; c++) {
        size_t i0 = c * chunk, i1 = i0 + chunk < n ? i0 + chunk : n;
#pragma omp simd
        for (size_t i = i0; i < i1; i++) out[i] = km_gelu_fast(in[i]);
    }
}

void km_omp_split_rows(int M, int *m0, int *m1) {
    int t = omp_get_thread_num(), n = omp_get_num_threads();
    int per = ((M + n - 1) / n + 15) & ~15; /* 16-row multiples */
    *m0 = t * per < M ? t * per : M;
    *m1 = *m0 + per < M ? *m0 + per : M;
}

int km_gemm_blocks(int L, int *block) {
    int bs = ((L + 15) / 16 + 15) & ~15;
    if (bs < 32) bs = 32;
    *block = bs;
    return L > 0 ? (L + bs - 1) / bs : 0;
}

void km_linear_forward_mt(float *out, const float *in, const float *w, const float *b, int M, int I,
                          int O) {
    int bs, nb = km_gemm_blocks(M, &bs);
#pragma omp parallel for schedule(static)
    for (int k = 0; k < nb; k++) {
        int m0 = k * bs, m = M - m0 < bs ? M - m0 : bs;
        km_linear_forward(out + (size_t)m0 * O, in + (size_t)m0 * I, w, b, m, I, O);
    }
}
