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
            __m512 a[12], b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
            for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps((float)i);
            for (long it = 0; it < iters; it++)
                for (int i = 0; i < 12; i++) a[i] = _mm512_fmadd_ps(a[i], b, c);
            for (int i = 0; i < 12; i++) sink += _mm512_reduce_add_ps(a[i]);
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
