/* simclr_ops.h - the ops of SimCLR pretraining (issue 6): global average
 * pooling, Linear backward, row-wise L2 normalisation and the NT-Xent loss.
 * Same conventions as ops.h: forward/backward pairs on float*, every backward
 * ACCUMULATES (+=) into its gradient buffers, kernels never allocate (saved
 * state lives in caller buffers), double accumulators in a fixed order.
 *
 * The projection head is GAP -> Linear -> ReLU -> Linear (512-512-128); its
 * forward uses km_linear_forward (basic.h) and km_relu_forward (ops.h). */
#ifndef KM_SIMCLR_OPS_H
#define KM_SIMCLR_OPS_H

#include <stddef.h>

/* ---- Global average pooling: in[N,C,HW] -> out[N,C] (adaptive_avg_pool2d(1) + flatten) ---- */
void km_gap_forward(float *out, const float *in, int N, int C, int HW);
/* din[n,c,:] += dout[n,c] / HW */
void km_gap_backward(float *din, const float *dout, int N, int C, int HW);

/* ---- Linear backward; the forward is km_linear_forward (basic.h):
 * out[M,O] = in[M,I] @ w[O,I]^T + b[O].
 *   din[M,I] += dout @ w,  dw[O,I] += dout^T @ in,  db[O] += sum_m dout[m,:].
 * Any of din, dw, db may be NULL (not wanted). */
void km_linear_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, int M, int I, int O);

/* ---- Row-wise L2 normalisation, F.normalize(x, p=2, dim=1, eps):
 *   out[m,:] = x[m,:] / max(||x[m,:]||, eps).
 * norm[M] receives the unclamped norms (saved for the backward). out may not
 * alias in (the backward needs in). Backward, with n = ||x||, g = dout:
 *   n >= eps: dx += (g - x (g.x) / n^2) / n
 *   n <  eps: dx += g / eps   (the clamp passes no gradient to the norm) */
void km_l2norm_forward(float *out, float *norm, const float *in, int M, int D, float eps);
void km_l2norm_backward(float *din, const float *dout, const float *in, const float *norm, int M,
                        int D, float eps);

/* ---- NT-Xent (normalised-temperature cross-entropy) loss of SimCLR ----
 * p[B,D] holds the projections of B = 2N views in this order: rows 0..N-1 are
 * view 1 of images 0..N-1, rows N..2N-1 view 2 of the same images, so the
 * positive of row i is pos(i) = (i + N) mod 2N. With
 *   z_i = p_i / max(||p_i||, 1e-12)            (F.normalize, dim 1)
 *   l_ij = (z_i . z_j) / T                     (T = temperature)
 * the self-similarity l_ii is excluded (masked to -inf) and
 *   loss = 1/B sum_i [ log sum_{j != i} exp(l_ij) - l_i,pos(i) ],
 * i.e. F.cross_entropy(logits with the diagonal removed, target = positive,
 * reduction mean), as in the common SimCLR implementation (sthalles/SimCLR
 * info_nce_loss + nn.CrossEntropyLoss). The log-sum-exp subtracts the row
 * maximum and sums in double.
 *
 * work: km_ntxent_work_floats(B, D) floats, written by the forward and read by
 * the backward (z, the norms and the softmax probabilities); the backward also
 * uses it as scratch, so call the forward again before another backward. */
size_t km_ntxent_work_floats(int B, int D);
double km_ntxent_forward(const float *p, int B, int D, float temperature, float *work);
/* dp += scale * d(loss)/dp, with
 *   d loss / d l_ij = (softmax_{j != i}(l_i.)_j - [j == pos(i)]) / B,
 *   d loss / d z = (G + G^T) z / T  (G the matrix above), then through F.normalize. */
void km_ntxent_backward(float *dp, const float *p, int B, int D, float temperature, float scale,
                        float *work);

#endif
