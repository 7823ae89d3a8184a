/* basic.h - transformer building blocks (forward only; used by the SAM teacher).
 * Row-major [M, features] activations. */
#ifndef KM_BASIC_H
#define KM_BASIC_H

#include <stddef.h>

/* out[M,O] = in[M,I] @ w[O,I]^T + b[O] (b may be NULL). nn.Linear. */
void km_linear_forward(float *out, const float *in, const float *w, const float *b, int M, int I,
                       int O);
/* LayerNorm over the last dim C of [M,C], biased variance; out may equal in. */
void km_layernorm_forward(float *out, const float *in, const float *w, const float *b, int M, int C,
                          float eps);
/* LayerNorm2d on NCHW: per pixel, over channels. out may equal in. */
void km_layernorm2d_forward(float *out, const float *in, const float *w, const float *b, int N,
                            int C, int HW, float eps);
/* Exact GELU 0.5 x (1 + erf(x / sqrt 2)); out may equal in. */
void km_gelu_forward(float *out, const float *in, size_t n);

#endif
