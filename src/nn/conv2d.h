/* conv2d.h - 2-D convolution, NCHW, PyTorch nn.Conv2d semantics (no dilation,
 * groups 1). Output size OH = (H + 2*ph - kh)/sh + 1 (floor), same for OW.
 *
 * Weights [K, C, kh, kw]; optional bias [K]. Kernels never allocate: callers
 * pass a workspace of km_conv2d_work_floats(d) floats. Two algorithms (see
 * km_conv_algo): Winograd (winograd.h) for 3x3 stride-1 pad-1 convolutions,
 * im2col + GEMM (conv2d.c; 1x1 stride-1 convolutions skip the im2col) for
 * the rest; km_conv2d_forward_ref is the naive direct loop kept for tests. */
#ifndef KM_CONV2D_H
#define KM_CONV2D_H

#include <stddef.h>

typedef struct {
    int N, C, H, W; /* input */
    int K;          /* output channels */
    int kh, kw, sh, sw, ph, pw;
    int OH, OW;     /* filled by km_conv2d_dims */
} km_conv_dims;

/* Algorithm: KM_CONV_AUTO (default) runs 3x3 stride-1 pad-1 convolutions
 * with outputs of at least 8x8 by Winograd (winograd.h): F(4x4, 3x3) from
 * 16x16 outputs up (4x fewer multiplications than direct), F(2x2, 3x3) below
 * (2.25x fewer); the rest as im2col + GEMM. KM_CONV_IM2COL runs everything
 * as im2col + GEMM; KM_CONV_WINOGRAD uses Winograd for every 3x3 stride-1
 * pad-1 shape (tile size chosen as in AUTO). The default comes from the
 * environment variable KMSEG_CONV ("auto", "im2col" or "winograd") at first
 * use. Workspace sizes cover both paths, so switching is safe. */
typedef enum { KM_CONV_AUTO = 0, KM_CONV_IM2COL = 1, KM_CONV_WINOGRAD = 2 } km_conv_algo;
void km_conv2d_set_algo(km_conv_algo a);
km_conv_algo km_conv2d_get_algo(void);

/* Floating-point operations (2 x multiply-adds) that one forward pass of
 * this convolution performs in its GEMMs with the current algorithm:
 * 2*N*K*C*kh*kw*OH*OW for im2col, fewer with Winograd (2*P*K*C per tile,
 * P = 16 or 36 positions per 4 or 16 outputs). For the benchmarks' "fraction
 * of the FMA peak"; the transforms' additions are not counted. */
double km_conv2d_gemm_flop(const km_conv_dims *d);

/* Fills OH/OW; returns the dims struct for convenience. */
km_conv_dims km_conv2d_dims(int N, int C, int H, int W, int K, int kh, int kw, int sh, int sw,
                            int ph, int pw);
/* The workspace size depends on km_get_threads() (the images of one call are
 * shared among the threads, each with its own buffers): ask again after
 * changing the thread count. */
size_t km_conv2d_work_floats(const km_conv_dims *d);

/* out [N,K,OH,OW] = conv(in [N,C,H,W], w [K,C,kh,kw]) + b [K] (b may be NULL). */
void km_conv2d_forward(float *out, const float *in, const float *w, const float *b,
                       const km_conv_dims *d, float *work);
/* din [N,C,H,W] (may be NULL: not needed), dw [K,C,kh,kw] and db [K] (may be
 * NULL) are ACCUMULATED into (+=), so callers zero them once per step. */
void km_conv2d_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, const km_conv_dims *d, float *work);
void km_conv2d_forward_ref(float *out, const float *in, const float *w, const float *b,
                           const km_conv_dims *d);

#endif
