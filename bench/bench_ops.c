/* bench_ops.c - conv2d forward/backward GFLOP/s on the main U-Net++/ResNet34
 * shapes at 224x224, batch 8. Not part of the tests; build by hand:
 *
 *   make && gcc -std=c11 -O2 -march=native -fopenmp [-DKM_CONV_TARGET_COLS=N] \
 *       -o build/bench_ops bench/bench_ops.c src/nn/conv2d.c \
 *       build/release/libkmseg.a -lm -ldl -lpthread -lpng -ljpeg
 *   build/bench_ops [threads]            (default 2)
 *
 * FLOPs: forward 2*N*K*C*kh*kw*OH*OW; backward (dW and dX) twice that. */
#include "../src/core/km.h"
#include "../src/core/rng.h"
#include "../src/nn/conv2d.h"
#include "../src/nn/gemm.h"

#include <stdio.h>
#include <stdlib.h>

#ifndef KM_CONV_TARGET_COLS
#define KM_CONV_TARGET_COLS 1024 /* conv2d.c's default */
#endif

typedef struct {
    const char *name;
    int C, H, K, k, s, p;
} shape;

static const shape k_shapes[] = {
    {"encoder conv1 7x7 s2 3->64 @224", 3, 224, 64, 7, 2, 3},
    {"encoder layer1 3x3 64->64 @56", 64, 56, 64, 3, 1, 1},
    {"encoder layer2 3x3 128->128 @28", 128, 28, 128, 3, 1, 1},
    {"encoder layer3 3x3 256->256 @14", 256, 14, 256, 3, 1, 1},
    {"encoder layer4 3x3 512->512 @7", 512, 7, 512, 3, 1, 1},
    {"encoder layer4.0 downsample 1x1 s2 256->512", 256, 14, 512, 1, 2, 0},
    {"decoder x_0_0 conv1 768->256 @14", 768, 14, 256, 3, 1, 1},
    {"decoder x_0_3 conv1 320->32 @112", 320, 112, 32, 3, 1, 1},
    {"decoder x_0_4 conv1 32->16 @224", 32, 224, 16, 3, 1, 1},
};

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    const int N = 8;
    km_set_threads(threads);
    km_rng r;
    km_rng_seed(&r, 1);
    printf("backend %s, %d threads, batch %d, target cols %d\n", km_gemm_backend(), threads, N,
           KM_CONV_TARGET_COLS);
    for (size_t i = 0; i < sizeof k_shapes / sizeof k_shapes[0]; i++) {
        const shape *s = &k_shapes[i];
        km_conv_dims d = km_conv2d_dims(N, s->C, s->H, s->H, s->K, s->k, s->k, s->s, s->s, s->p, s->p);
        size_t nin = (size_t)N * s->C * s->H * s->H, nw = (size_t)s->K * s->C * s->k * s->k;
        size_t nout = (size_t)N * s->K * d.OH * d.OW;
        float *in = km_malloc(4 * nin), *w = km_malloc(4 * nw), *out = km_malloc(4 * nout);
        float *din = km_calloc(4 * nin), *dw = km_calloc(4 * nw);
        float *work = km_malloc(4 * (km_conv2d_work_floats(&d) + 1));
        for (size_t j = 0; j < nin; j++) in[j] = (float)km_rng_normal(&r);
        for (size_t j = 0; j < nw; j++) w[j] = (float)km_rng_normal(&r) * 0.05f;
        double flops = 2.0 * N * s->K * s->C * s->k * s->k * d.OH * d.OW;
        km_conv2d_forward(out, in, w, NULL, &d, work); /* warm-up */
        double best_f = 1e30, best_b = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            double t0 = km_now();
            km_conv2d_forward(out, in, w, NULL, &d, work);
            double t1 = km_now();
            km_conv2d_backward(din, dw, NULL, out, in, w, &d, work);
            double t2 = km_now();
            if (t1 - t0 < best_f) best_f = t1 - t0;
            if (t2 - t1 < best_b) best_b = t2 - t1;
        }
        printf("%-46s %6.2f GFLOP  fwd %7.1f ms %6.1f GFLOP/s   bwd %7.1f ms %6.1f GFLOP/s\n",
               s->name, flops * 1e-9, best_f * 1e3, flops / best_f * 1e-9, best_b * 1e3,
               2 * flops / best_b * 1e-9);
        km_free(in); km_free(w); km_free(out); km_free(din); km_free(dw); km_free(work);
    }
    return 0;
}
