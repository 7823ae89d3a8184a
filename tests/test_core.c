/* test_core.c - GEMM against the naive reference, RNG determinism, flags. */
#include "test.h"
#include "../src/core/args.h"
#include "../src/core/rng.h"
#include "../src/nn/gemm.h"

KM_TEST(gemm_matches_reference_all_transposes) {
    km_rng r;
    km_rng_seed(&r, 1);
    int M = 37, N = 53, K = 71;
    float *A = km_malloc(sizeof(float) * M * K), *B = km_malloc(sizeof(float) * K * N);
    float *C = km_malloc(sizeof(float) * M * N), *R = km_malloc(sizeof(float) * M * N);
    for (int i = 0; i < M * K; i++) A[i] = (float)km_rng_normal(&r);
    for (int i = 0; i < K * N; i++) B[i] = (float)km_rng_normal(&r);
    printf("    backend: %s\n", km_gemm_backend());
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            for (int i = 0; i < M * N; i++) C[i] = R[i] = (float)i * 0.01f;
            int lda = ta ? M : K, ldb = tb ? K : N;
            km_sgemm(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, 0.25f, C, N);
            km_sgemm_ref(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, 0.25f, R, N);
            km_cmp c = km_compare("sgemm vs reference", C, R, (size_t)M * N);
            CHECK(c.max_abs < 1e-4);
        }
    km_free(A); km_free(B); km_free(C); km_free(R);
}

KM_TEST(rng_is_deterministic_and_uniform) {
    km_rng a, b;
    km_rng_seed(&a, 42);
    km_rng_seed(&b, 42);
    for (int i = 0; i < 100; i++) CHECK(km_rng_u64(&a) == km_rng_u64(&b));
    int hist[10] = {0};
    for (int i = 0; i < 100000; i++) hist[km_rng_below(&a, 10)]++;
    for (int i = 0; i < 10; i++) CHECK(hist[i] > 9500 && hist[i] < 10500);
    double s = 0, s2 = 0;
    for (int i = 0; i < 100000; i++) {
        double x = km_rng_normal(&a);
        s += x;
        s2 += x * x;
    }
    CHECK_NEAR(s / 100000, 0.0, 0.02);
    CHECK_NEAR(s2 / 100000, 1.0, 0.02);
}

KM_TEST(flags_parse_and_reject) {
    const char *w = NULL;
    int n = 3, b = 0;
    double x = 1.5;
    km_flag flags[] = {{"--weights", KM_FLAG_STR, &w, "w", 1, 0},
                       {"--n", KM_FLAG_INT, &n, "n", 0, 0},
                       {"--x", KM_FLAG_FLOAT, &x, "x", 0, 0},
                       {"--b", KM_FLAG_BOOL, &b, "b", 0, 0},
                       {0}};
    int help;
    char *a1[] = {"cmd", "--weights", "f.pth", "--n=7", "--x", "2.5", "--b"};
    CHECK_OK(km_parse_flags("cmd", "", flags, 7, a1, &help));
    CHECK(w && !strcmp(w, "f.pth") && n == 7 && x == 2.5 && b == 1);
    char *a2[] = {"cmd", "--weights", "f", "--bogus"};
    CHECK_ERR(km_parse_flags("cmd", "", flags, 4, a2, &help), KM_EARG, "--bogus");
    char *a3[] = {"cmd", "--n", "7"};
    CHECK_ERR(km_parse_flags("cmd", "", flags, 3, a3, &help), KM_EARG, "--weights");
    char *a4[] = {"cmd", "--weights", "f", "--n", "seven"};
    CHECK_ERR(km_parse_flags("cmd", "", flags, 5, a4, &help), KM_EARG, "seven");
}
