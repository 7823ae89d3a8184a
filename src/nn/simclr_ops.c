/* simclr_ops.c - global average pooling, Linear backward, L2 normalisation and
 * the NT-Xent loss (see simclr_ops.h for the formulas). */
#include "simclr_ops.h"
#include "gemm.h"
#include "../core/km.h"

#include <math.h>
#include <string.h>

#include "nn_common.h"

/* F.normalize's default eps, used inside the NT-Xent loss. */
#define KM_NTXENT_NORM_EPS 1e-12f

/* ------------------------------------------------------------------- GAP */

void km_gap_forward(float *out, const float *in, int N, int C, int HW) {
    KM_ASSERT(N >= 0 && C > 0 && HW > 0);
    const long planes = (long)N * C;
#pragma omp parallel for schedule(static) if ((size_t)planes * HW > KM_OMP_MIN)
    for (long pl = 0; pl < planes; pl++) {
        const float *x = in + (size_t)pl * HW;
        double s = 0;
        for (int i = 0; i < HW; i++) s += x[i];
        out[pl] = (float)(s / HW);
    }
}

void km_gap_backward(float *din, const float *dout, int N, int C, int HW) {
    KM_ASSERT(N >= 0 && C > 0 && HW > 0);
    const long planes = (long)N * C;
#pragma omp parallel for schedule(static) if ((size_t)planes * HW > KM_OMP_MIN)
    for (long pl = 0; pl < planes; pl++) {
        float g = dout[pl] / (float)HW;
        float *d = din + (size_t)pl * HW;
        for (int i = 0; i < HW; i++) d[i] += g;
    }
}

/* ---------------------------------------------------------------- Linear */

/* Both products go through the GEMM with beta = 1, which is the accumulation
 * the convention asks for; db sums the rows in double, in row order. */
void km_linear_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, int M, int I, int O) {
    KM_ASSERT(M >= 0 && I > 0 && O > 0);
    if (M == 0) return;
    if (din) km_sgemm(0, 0, M, I, O, 1.0f, dout, O, w, I, 1.0f, din, I);
    if (dw) km_sgemm(1, 0, O, I, M, 1.0f, dout, O, in, I, 1.0f, dw, I);
    if (db) {
        for (int o = 0; o < O; o++) {
            double s = 0;
            for (int m = 0; m < M; m++) s += dout[(size_t)m * O + o];
            db[o] += (float)s;
        }
    }
}

/* ----------------------------------------------------------- L2 normalise */

void km_l2norm_forward(float *out, float *norm, const float *in, int M, int D, float eps) {
    KM_ASSERT(M >= 0 && D > 0 && out != in);
    for (int m = 0; m < M; m++) {
        const float *x = in + (size_t)m * D;
        float *y = out + (size_t)m * D;
        double s = 0;
        for (int k = 0; k < D; k++) s += (double)x[k] * x[k];
        float n = (float)sqrt(s);
        norm[m] = n;
        /* As PyTorch: x / clamp_min(norm, eps), a float division. */
        float den = n > eps ? n : eps;
        for (int k = 0; k < D; k++) y[k] = x[k] / den;
    }
}

void km_l2norm_backward(float *din, const float *dout, const float *in, const float *norm, int M,
                        int D, float eps) {
    KM_ASSERT(M >= 0 && D > 0);
    for (int m = 0; m < M; m++) {
        const float *x = in + (size_t)m * D, *g = dout + (size_t)m * D;
        float *dx = din + (size_t)m * D;
        double n = norm[m];
        if (!(n >= eps)) {
            /* clamp_min's gradient is 0 below eps: only the division remains. */
            for (int k = 0; k < D; k++) dx[k] += (float)(g[k] / (double)eps);
            continue;
        }
        double gx = 0;
        for (int k = 0; k < D; k++) gx += (double)g[k] * x[k];
        double c = gx / (n * n);
        for (int k = 0; k < D; k++) dx[k] += (float)((g[k] - x[k] * c) / n);
    }
}

/* ---------------------------------------------------------------- NT-Xent */

/* work layout: z[B,D] | norm[B] | P[B,B] (softmax probabilities, diagonal 0)
 * | dz[B,D] (backward scratch). */
size_t km_ntxent_work_floats(int B, int D) {
    KM_ASSERT(B > 0 && D > 0);
    return 2 * (size_t)B * D + (size_t)B + (size_t)B * B;
}

static int ntxent_pos(int i, int B) { return i < B / 2 ? i + B / 2 : i - B / 2; }

double km_ntxent_forward(const float *p, int B, int D, float temperature, float *work) {
    KM_ASSERT(B >= 2 && B % 2 == 0 && D > 0 && temperature > 0.0f);
    float *z = work, *norm = z + (size_t)B * D, *P = norm + B;
    km_l2norm_forward(z, norm, p, B, D, KM_NTXENT_NORM_EPS);
    /* Cosine similarities z z^T (B x B) with the GEMM, as torch.matmul. */
    km_sgemm(0, 1, B, B, D, 1.0f, z, D, z, D, 0.0f, P, B);
    double total = 0;
    for (int i = 0; i < B; i++) {
        float *row = P + (size_t)i * B;
        /* logits = sim / T in float as PyTorch; the diagonal is excluded. */
        for (int j = 0; j < B; j++) row[j] = row[j] / temperature;
        float mx = -INFINITY;
        for (int j = 0; j < B; j++)
            if (j != i && row[j] > mx) mx = row[j];
        double s = 0;
        for (int j = 0; j < B; j++)
            if (j != i) s += exp((double)row[j] - mx);
        double lse = mx + log(s);
        total += lse - row[ntxent_pos(i, B)];
        for (int j = 0; j < B; j++) row[j] = j == i ? 0.0f : (float)exp((double)row[j] - lse);
    }
    return total / B;
}

void km_ntxent_backward(float *dp, const float *p, int B, int D, float temperature, float scale,
                        float *work) {
    KM_ASSERT(B >= 2 && B % 2 == 0 && D > 0 && temperature > 0.0f);
    float *z = work, *norm = z + (size_t)B * D, *P = norm + B, *dz = P + (size_t)B * B;
    /* G_ij = scale (P_ij - [j == pos(i)]) / (B T), the gradient of the
     * similarity s_ij; s is symmetric in z, so dz = (G + G^T) z. */
    const double k = (double)scale / ((double)B * temperature);
    for (int i = 0; i < B; i++) {
        float *row = P + (size_t)i * B;
        int pi = ntxent_pos(i, B);
        for (int j = 0; j < B; j++) row[j] = (float)(k * ((double)row[j] - (j == pi ? 1.0 : 0.0)));
    }
    for (int i = 0; i < B; i++)
        for (int j = i; j < B; j++) {
            float h = P[(size_t)i * B + j] + P[(size_t)j * B + i];
            P[(size_t)i * B + j] = h;
            P[(size_t)j * B + i] = h;
        }
    km_sgemm(0, 0, B, D, B, 1.0f, P, B, z, D, 0.0f, dz, D);
    km_l2norm_backward(dp, dz, p, norm, B, D, KM_NTXENT_NORM_EPS);
}
