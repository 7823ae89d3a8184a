/* fma_peak.c - measures this machine's float32 FMA peak (GFLOP/s) with T
 * threads: each thread runs independent AVX-512 (or AVX2) FMA chains held in
 * registers, enough of them to cover the FMA latency. Used by bench/run_all.sh
 * to state what fraction of the peak kmseg's convolutions reach. */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    int T = argc > 1 ? atoi(argv[1]) : 2;
    long iters = 200000000L / 8;
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        float sink = 0;
#pragma omp parallel num_threads(T) reduction(+ : sink)
        {
#ifdef __AVX512F__
            /* 12 independent chains in named registers (an array would let
             * the compiler spill them to memory) */
            const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
            __m512 a0 = _mm512_set1_ps(0), a1 = _mm512_set1_ps(1), a2 = _mm512_set1_ps(2),
                   a3 = _mm512_set1_ps(3), a4 = _mm512_set1_ps(4), a5 = _mm512_set1_ps(5),
                   a6 = _mm512_set1_ps(6), a7 = _mm512_set1_ps(7), a8 = _mm512_set1_ps(8),
                   a9 = _mm512_set1_ps(9), a10 = _mm512_set1_ps(10), a11 = _mm512_set1_ps(11);
            for (long it = 0; it < iters; it++) {
#define F(x) x = _mm512_fmadd_ps(x, b, c)
                F(a0); F(a1); F(a2); F(a3); F(a4); F(a5); F(a6); F(a7); F(a8); F(a9); F(a10); F(a11);
#undef F
            }
            __m512 t = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                                     _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
            t = _mm512_add_ps(t, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
            sink += _mm512_reduce_add_ps(t);
#else
            __m256 a[12], b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
            for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
            for (long it = 0; it < iters; it++)
                for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], b, c);
            float tmp[8];
            for (int i = 0; i < 12; i++) {
                _mm256_storeu_ps(tmp, a[i]);
                for (int k = 0; k < 8; k++) sink += tmp[k];
            }
#endif
        }
        double dt = now() - t0;
#ifdef __AVX512F__
        double flop = 2.0 * 16 * 12 * (double)iters * T;
#else
        double flop = 2.0 * 8 * 12 * (double)iters * T;
#endif
        if (flop / dt / 1e9 > best) best = flop / dt / 1e9;
        if (sink == 12345.0f) printf("!");
    }
    printf("{\"fma_peak_gflops\": %.1f, \"threads\": %d}\n", best, T);
    return 0;
}
