/* basic.h - transformer building blocks (forward only; used by the SAM teacher).
 * Row-major [M, features] activations. */
#ifndef KM_BASIC_H
#define KM_BASIC_H

#include <stddef.h>

/* out[M,O] = in[M,I] @ w[O,I]^T + b[O] (b may be NULL). nn.Linear. */
void km_linear_forward(float *out, const float *in, const float *w, const float *b, int M, int I,
                       int O);
/* The same, the rows split over OpenMP threads (the BLAS runs single-threaded
 * inside them: one thread pool, no spinning second pool) in the blocks of
 * km_gemm_blocks, so the result is bit-identical at every thread count. */
void km_linear_forward_mt(float *out, const float *in, const float *w, const float *b, int M, int I,
                          int O);
/* Blocks of L rows (or columns) for splitting a GEMM over threads: returns
 * their number and sets *block (a multiple of 16, at least 32, about L/16).
 * They depend on L only. Why not one block per thread: OpenBLAS's result for
 * a row depends on where that row falls in its own blocking of the call
 * (measured with 0.3.21, Haswell kernels: a 4096-row sgemm computed as rows
 * [0, 2048) + [2048, 4096) differs from the one call in 5-8 % of its
 * elements, by rounding), so a split that follows the thread count gives
 * other bits at another thread count. 16 blocks keep up to 16 threads busy. */
int km_gemm_blocks(int L, int *block);
/* Inside an OpenMP parallel region: this thread's rows [*m0, *m1) of M, in
 * blocks of 16-row multiples (for work whose rows are computed one by one). */
void km_omp_split_rows(int M, int *m0, int *m1);
/* LayerNorm over the last dim C of [M,C], biased variance; out may equal in. */
void km_layernorm_forward(float *out, const float *in, const float *w, const float *b, int M, int C,
                          float eps);
/* LayerNorm2d on NCHW: per pixel, over channels. out may equal in. */
void km_layernorm2d_forward(float *out, const float *in, const float *w, const float *b, int N,
                            int C, int HW, float eps);
/* Exact GELU 0.5 x (1 + erf(x / sqrt 2)); out may equal in. */
void km_gelu_forward(float *out, const float *in, size_t n);

#endif
