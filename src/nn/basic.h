/* basic.h - transformer building blocks (forward only; used by the SAM teacher).
 * Row-major [M, features] activations. */
#ifndef KM_BASIC_H
#define KM_BASIC_H

#include <stddef.h>

/* out[M,O] = in[M,I] @ w[O,I]^T + b[O] (b may be NULL). nn.Linear. */
void km_linear_forward(float *out, const float *in, const float *w, const float *b, int M, int I,
                       int O);
/* The same, the rows split over OpenMP threads (the BLAS runs single-threaded
 * inside them: one thread pool, no spinning second pool). Per-row results do
 * not depend on the split, and the split depends only on the thread count. */
void km_linear_forward_mt(float *out, const float *in, const float *w, const float *b, int M, int I,
                          int O);
/* Inside an OpenMP parallel region: this thread's rows [*m0, *m1) of M, in
 * blocks of 16-row multiples. */
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
