/* gemm.h - single-precision matrix multiply, row-major.
 *
 *   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C[M,N]
 *   op(X) = X or X^T (ta / tb nonzero); lda/ldb/ldc are row strides.
 *
 * The fast path is a CBLAS (OpenBLAS) loaded with dlopen at first use. Debian's
 * OpenBLAS 0.3.21 does not recognise recent AMD/Intel cores and falls back to
 * SSE3 kernels (~5x slower); before loading it we therefore set
 * OPENBLAS_CORETYPE to the best kernel family the CPU supports (SkylakeX for
 * AVX-512, Haswell for AVX2+FMA) unless the user has already set it. This is why
 * the library is dlopen'ed instead of linked: the variable must be in the
 * environment when OpenBLAS initialises. km_sgemm_ref is the naive reference
 * (double accumulation) used by the tests. */
#ifndef KM_GEMM_H
#define KM_GEMM_H

void km_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);
void km_sgemm_ref(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc);
void km_gemm_set_threads(int n);
/* Human-readable description of the GEMM backend, e.g. "OpenBLAS 0.3.21 (SkylakeX)". */
const char *km_gemm_backend(void);

#endif
