/* gemm.c - CBLAS sgemm through dlopen (see gemm.h for why), naive reference. */
#define _GNU_SOURCE
#include "gemm.h"
#include "../core/km.h"

#include <dlfcn.h>
#include <pthread.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

enum { CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112 };
typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *,
                         int, float, float *, int);
typedef void (*setthreads_fn)(int);
typedef char *(*getstr_fn)(void);

static sgemm_fn g_sgemm;
static setthreads_fn g_setthreads;
static getstr_fn g_getcore, g_getconfig;
static char g_backend[256] = "naive reference (no CBLAS found)";
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_threads = 1;

static void gemm_init(void) {
    if (!getenv("OPENBLAS_CORETYPE")) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
            setenv("OPENBLAS_CORETYPE", "SkylakeX", 0);
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            setenv("OPENBLAS_CORETYPE", "Haswell", 0);
    }
    const char *names[] = {getenv("KMSEG_BLAS"), "libopenblas.so.0", "libopenblas.so",
                           "libcblas.so.3", "libblas.so.3"};
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !g_sgemm; i++) {
        if (!names[i]) continue;
        void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) continue;
        g_sgemm = (sgemm_fn)dlsym(h, "cblas_sgemm");
        if (!g_sgemm) {
            dlclose(h);
            continue;
        }
        g_setthreads = (setthreads_fn)dlsym(h, "openblas_set_num_threads");
        g_getcore = (getstr_fn)dlsym(h, "openblas_get_corename");
        g_getconfig = (getstr_fn)dlsym(h, "openblas_get_config");
        snprintf(g_backend, sizeof g_backend, "%s [%s] core %s", names[i],
                 g_getconfig ? g_getconfig() : "?", g_getcore ? g_getcore() : "?");
    }
    /* The BLAS always runs single-threaded: kmseg splits each GEMM across its
     * own OpenMP threads (km_sgemm). OpenBLAS's pthread pool and OpenMP's
     * workers both busy-wait between jobs, and on a 2-core machine the two
     * pools fighting for cores made convolutions 2-10x slower. */
    if (g_setthreads) g_setthreads(1);
}

void km_gemm_set_threads(int n) {
    g_threads = n < 1 ? 1 : n;
    pthread_once(&g_once, gemm_init);
}

const char *km_gemm_backend(void) {
    pthread_once(&g_once, gemm_init);
    return g_backend;
}

void km_sgemm_ref(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0;
            for (int k = 0; k < K; k++) {
                float a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                float b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                acc += (double)a * b;
            }
            float *c = &C[(size_t)i * ldc + j];
            *c = (float)(alpha * acc + (beta == 0.0f ? 0.0 : (double)beta * *c));
        }
}

void km_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    pthread_once(&g_once, gemm_init);
    if (K <= 0) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
        return;
    }
    if (!g_sgemm) {
        km_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* Split the output into one slab per thread along its larger side (in
     * multiples of 16), each computed by a single-threaded BLAS call. Every
     * element is still one full-K dot product inside one call, and the slabs
     * depend only on the thread count, so results are deterministic. */
    int T = g_threads;
#ifdef _OPENMP
    if (omp_in_parallel()) T = 1; /* called from a parallel loop: already split */
#endif
    double flop = 2.0 * M * N * K;
    if (T > 1 && flop < 4e6) T = 1;
    int alongN = N >= M, L = alongN ? N : M;
    int chunk = ((L + T - 1) / T + 15) & ~15;
    if (chunk >= L) T = 1;
    if (T == 1) {
        g_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
                K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    int nchunks = (L + chunk - 1) / chunk;
#pragma omp parallel for schedule(static, 1) num_threads(T)
    for (int c = 0; c < nchunks; c++) {
        int s0 = c * chunk, len = L - s0 < chunk ? L - s0 : chunk;
        if (alongN)
            g_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M,
                    len, K, alpha, A, lda, tb ? B + (size_t)s0 * ldb : B + s0, ldb, beta, C + s0, ldc);
        else
            g_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, len,
                    N, K, alpha, ta ? A + s0 : A + (size_t)s0 * lda, lda, B, ldb, beta,
                    C + (size_t)s0 * ldc, ldc);
    }
}
