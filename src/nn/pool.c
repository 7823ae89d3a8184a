/* pool.c - MaxPool2d(kernel 3, stride 2, padding 1) on NCHW, the ResNet stem
 * pool. Padding is -inf, so a window always has at least one real pixel. The
 * argmax (index within the (n, c) plane) is the first maximum in row-major scan
 * order, as PyTorch's CPU kernel (strict '>' comparison; a NaN replaces the
 * running maximum, as in PyTorch's `(val > maxval) || isnan(val)`). */
#include "ops.h"
#include "../core/km.h"

#include <math.h>

#include "nn_common.h"

void km_maxpool3s2_forward(float *out, int32_t *argmax, const float *in, int N, int C, int H,
                           int W) {
    const int OH = (H + 2 - 3) / 2 + 1, OW = (W + 2 - 3) / 2 + 1;
    const long planes = (long)N * C;
#pragma omp parallel for schedule(static) if ((size_t)planes * H * W > KM_OMP_MIN)
    for (long pl = 0; pl < planes; pl++) {
        const float *x = in + (size_t)pl * H * W;
        float *y = out + (size_t)pl * OH * OW;
        int32_t *am = argmax + (size_t)pl * OH * OW;
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                float best = -INFINITY;
                int32_t bi = -1;
                for (int i = 0; i < 3; i++) {
                    int iy = oy * 2 - 1 + i;
                    if (iy < 0 || iy >= H) continue;
                    for (int j = 0; j < 3; j++) {
                        int ix = ox * 2 - 1 + j;
                        if (ix < 0 || ix >= W) continue;
                        float v = x[iy * W + ix];
                        if (bi < 0 || v > best || isnan(v)) {
                            best = v;
                            bi = iy * W + ix;
                        }
                    }
                }
                y[oy * OW + ox] = best;
                am[oy * OW + ox] = bi;
            }
    }
}

void km_maxpool3s2_backward(float *din, const float *dout, const int32_t *argmax, int N, int C,
                            int H, int W) {
    const int OH = (H + 2 - 3) / 2 + 1, OW = (W + 2 - 3) / 2 + 1;
    const long planes = (long)N * C;
    /* One thread per plane: overlapping windows add into the same input
     * pixel in a fixed (output scan) order. */
#pragma omp parallel for schedule(static) if ((size_t)planes * H * W > KM_OMP_MIN)
    for (long pl = 0; pl < planes; pl++) {
        float *dx = din + (size_t)pl * H * W;
        const float *g = dout + (size_t)pl * OH * OW;
        const int32_t *am = argmax + (size_t)pl * OH * OW;
        for (int o = 0; o < OH * OW; o++) dx[am[o]] += g[o];
    }
}
