/* elementwise.c - ReLU, residual add, sigmoid, nearest 2x upsample and
 * channel concat (NCHW). Backwards accumulate (+=), see ops.h. */
#include "ops.h"
#include "../core/km.h"

#include <math.h>
#include <string.h>

#include "nn_common.h"

void km_relu_forward(float *out, const float *in, size_t n) {
    /* `x < 0 ? 0 : x` keeps NaN, like torch.relu (clamp_min). */
#pragma omp parallel for schedule(static) if (n > KM_OMP_MIN)
    for (size_t i = 0; i < n; i++) out[i] = in[i] < 0.0f ? 0.0f : in[i];
}

void km_relu_backward(float *din, const float *dout, const float *out, size_t n) {
    /* threshold_backward: the gradient passes only where out > 0. */
#pragma omp parallel for schedule(static) if (n > KM_OMP_MIN)
    for (size_t i = 0; i < n; i++)
        if (out[i] > 0.0f) din[i] += dout[i];
}

void km_add_forward(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static) if (n > KM_OMP_MIN)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void km_add_backward(float *da, float *db, const float *dout, size_t n) {
#pragma omp parallel for schedule(static) if (n > KM_OMP_MIN)
    for (size_t i = 0; i < n; i++) {
        if (da) da[i] += dout[i];
        if (db) db[i] += dout[i];
    }
}

void km_sigmoid_forward(float *out, const float *in, size_t n) {
    /* PyTorch's CPU sigmoid: 1 / (1 + exp(-x)) in float. */
#pragma omp parallel for schedule(static) if (n > KM_OMP_MIN)
    for (size_t i = 0; i < n; i++) out[i] = 1.0f / (1.0f + expf(-in[i]));
}

void km_upsample2x_forward(float *out, const float *in, int N, int C, int H, int W) {
    const long planes = (long)N * C;
    const int OW = 2 * W;
#pragma omp parallel for schedule(static) if ((size_t)planes * H * W > KM_OMP_MIN)
    for (long pl = 0; pl < planes; pl++) {
        const float *x = in + (size_t)pl * H * W;
        float *y = out + (size_t)pl * 4 * H * W;
        for (int iy = 0; iy < H; iy++) {
            float *r0 = y + (size_t)(2 * iy) * OW;
            for (int ix = 0; ix < W; ix++) r0[2 * ix] = r0[2 * ix + 1] = x[iy * W + ix];
            memcpy(r0 + OW, r0, sizeof(float) * OW);
        }
    }
}

void km_upsample2x_backward(float *din, const float *dout, int N, int C, int H, int W) {
    /* Each input pixel receives its 2x2 block summed in PyTorch's output-scan
     * order (row 2y: x, x+1; row 2y+1: x, x+1). */
    const long planes = (long)N * C;
    const int OW = 2 * W;
#pragma omp parallel for schedule(static) if ((size_t)planes * H * W > KM_OMP_MIN)
    for (long pl = 0; pl < planes; pl++) {
        float *dx = din + (size_t)pl * H * W;
        const float *g = dout + (size_t)pl * 4 * H * W;
        for (int iy = 0; iy < H; iy++) {
            const float *g0 = g + (size_t)(2 * iy) * OW, *g1 = g0 + OW;
            for (int ix = 0; ix < W; ix++)
                dx[iy * W + ix] += g0[2 * ix] + g0[2 * ix + 1] + g1[2 * ix] + g1[2 * ix + 1];
        }
    }
}

void km_concat_forward(float *out, const float *const *ins, const int *chans, int nin, int N,
                       int HW) {
    int Ct = 0;
    for (int i = 0; i < nin; i++) Ct += chans[i];
    const long jobs = (long)N * nin;
#pragma omp parallel for schedule(static) if ((size_t)N * Ct * HW > KM_OMP_MIN)
    for (long t = 0; t < jobs; t++) {
        int n = (int)(t / nin), i = (int)(t % nin), off = 0;
        for (int k = 0; k < i; k++) off += chans[k];
        memcpy(out + ((size_t)n * Ct + off) * HW, ins[i] + (size_t)n * chans[i] * HW,
               sizeof(float) * chans[i] * HW);
    }
}

void km_concat_backward(float *const *dins, const int *chans, int nin, const float *dout, int N,
                        int HW) {
    int Ct = 0;
    for (int i = 0; i < nin; i++) Ct += chans[i];
    const long jobs = (long)N * nin;
#pragma omp parallel for schedule(static) if ((size_t)N * Ct * HW > KM_OMP_MIN)
    for (long t = 0; t < jobs; t++) {
        int n = (int)(t / nin), i = (int)(t % nin), off = 0;
        if (!dins[i]) continue;
        for (int k = 0; k < i; k++) off += chans[k];
        float *d = dins[i] + (size_t)n * chans[i] * HW;
        const float *g = dout + ((size_t)n * Ct + off) * HW;
        for (size_t p = 0; p < (size_t)chans[i] * HW; p++) d[p] += g[p];
    }
}
