/* winograd.h - 3x3 stride-1 pad-1 convolutions by Winograd's minimal
 * filtering, used by conv2d.c for those shapes (km_conv_algo, conv2d.h):
 * F(4x4, 3x3) for outputs of at least 16x16 (6x6 transformed tiles, 36
 * GEMMs per convolution), F(2x2, 3x3) below (4x4 tiles, 16 GEMMs); the
 * transforms and the error of each are described in winograd.c. Same
 * semantics and layouts as km_conv2d_forward / km_conv2d_backward (NCHW,
 * [K, C, 3, 3]), forward and both gradients. */
#ifndef KM_WINOGRAD_H
#define KM_WINOGRAD_H

#include "conv2d.h"

#include <stddef.h>

int km_wino_eligible(const km_conv_dims *d);
size_t km_wino_work_floats(const km_conv_dims *d);
/* 2 x multiply-adds in the GEMMs of one forward pass */
double km_wino_gemm_flop(const km_conv_dims *d);
/* out (= or +=, with accumulate) conv(in, w) + b. */
void km_wino_forward(float *out, const float *in, const float *w, const float *b,
                     const km_conv_dims *d, float *work, int accumulate);
/* dw += dL/dw; din += dL/din when din is not NULL. */
void km_wino_backward(float *din, float *dw, const float *dout, const float *in, const float *w,
                      const km_conv_dims *d, float *work);

#endif
