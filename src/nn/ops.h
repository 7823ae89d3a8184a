/* ops.h - the student's layer library: forward/backward pairs on float*,
 * NCHW, PyTorch semantics (reference-arch.md section 3).
 *
 * Conventions (llm.c style):
 *  - Every backward ACCUMULATES (+=) into its input-gradient and parameter-
 *    gradient buffers; callers zero gradient buffers once per step. This makes
 *    tensors with several consumers (U-Net++ skips, residuals) free to handle.
 *  - Kernels never allocate; saved state (BN mean/invstd, maxpool argmax) lives
 *    in caller-provided buffers.
 *  - Reductions use double accumulators in a fixed order, so results are
 *    bit-identical for a given thread count.
 *  - Shapes: N batch, C channels, HW = H*W pixels per channel. */
#ifndef KM_OPS_H
#define KM_OPS_H

#include <stddef.h>
#include <stdint.h>

/* ---- BatchNorm2d (eps 1e-5, momentum 0.1 in the student) ---- */
/* Train mode: batch statistics (biased variance for normalising), running
 * stats updated with the unbiased variance n/(n-1). Saves mean[C], invstd[C]
 * = 1/sqrt(var+eps) for the backward. out may equal in. */
void km_bn_forward_train(float *out, float *mean, float *invstd, const float *in, const float *w,
                         const float *b, float *running_mean, float *running_var, int N, int C,
                         int HW, float eps, float momentum);
/* The same, also writing each channel's unbiased batch variance (float, as
 * the running update uses it) to unbiased_out (may be NULL); running_mean /
 * running_var may be NULL (no update). With km_bn_running_update the update
 * can be applied later, bit-identical to the forward's own (micro-batches
 * whose statistics are gathered from other processes, train.c). */
void km_bn_forward_train_stats(float *out, float *mean, float *invstd, float *unbiased_out, const float *in,
                               const float *w, const float *b, float *running_mean, float *running_var, int N,
                               int C, int HW, float eps, float momentum);
/* running = momentum * batch + (1 - momentum) * running for C channels, in the
 * forward's mixed precision (mean: float; var: the product in double). */
void km_bn_running_update(float *running_mean, float *running_var, const float *mean, const float *unbiased, int C,
                          float momentum);
void km_bn_forward_eval(float *out, const float *in, const float *w, const float *b,
                        const float *running_mean, const float *running_var, int N, int C, int HW,
                        float eps);
/* Train-mode backward. `in` is the forward input (not overwritten by the forward). */
void km_bn_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                    const float *w, const float *mean, const float *invstd, int N, int C, int HW);

/* BatchNorm backward fused with the ReLU that follows it: dout is the
 * gradient of out = relu(bn(in)) and is taken as 0 where out <= 0. Same
 * result as km_relu_backward into a buffer followed by km_bn_backward. */
void km_bn_relu_backward(float *din, float *dw, float *db, const float *dout, const float *out,
                         const float *in, const float *w, const float *mean, const float *invstd,
                         int N, int C, int HW);

/* ---- Synchronised BatchNorm (--sync-bn; PyTorch's SyncBatchNorm) ----
 * The statistics of a training-mode BatchNorm over a batch that is split into
 * K groups (micro-batches), possibly held by several processes. The images of
 * one call are this process's G groups [g0, g0 + G), count[g0 + g] images
 * each, one after the other (a group may be empty: count 0). Every per-group
 * partial sum is computed in double in a fixed order; `gather` (ud, mine,
 * all, n) must fill all[K][n] with every group's n doubles in group order
 * given this process's mine[G][n] (several processes: an allgather; NULL:
 * one process, K == G, all = mine). The partials are then combined in group
 * order, so the result does not depend on how the K groups are spread over
 * processes. part / all: the caller's scratch of G x 2 cmax and K x 2 cmax
 * doubles (cmax: the most channels of any call). Every process must make the
 * same sequence of calls (the gathers are collective). */
typedef struct {
    int K, G, g0;
    const int *count; /* [K] images per group */
    void (*gather)(void *ud, const double *mine, double *all, size_t n);
    void *ud;
    double *part, *all;
    int cmax;
} km_bn_sync;
/* Forward over the G local groups with the statistics of all K, in two
 * gathers of C doubles per group, like km_bn_forward_train's two passes:
 * per group sum x, the mean = (float)(sum over groups / n) (n = all K
 * groups' values per channel, > 1); per group sum (x - mean)^2 (float
 * deviations, double sums), var_sum = (float) their sum; then the single-
 * batch kernel's arithmetic: invstd, unbiased = var_sum / (n - 1), y = x
 * alpha + beta. Equals km_bn_forward_train on the concatenated batch but
 * for the grouping of the double sums (one group: bit-identical). No
 * running-statistics update (km_bn_running_update with mean / unbiased). */
void km_bn_sync_forward(float *out, float *mean, float *invstd, float *unbiased, const float *in, const float *w,
                        const float *b, const km_bn_sync *s, int C, int HW, float eps);
/* Backward of km_bn_sync_forward: per group sum dy and sum (x - mean) dy
 * (dy masked by relu_out > 0 when relu_out is given: the fused ReLU of
 * km_bn_relu_backward), one gather, summed in group order; din += the
 * whole-batch BatchNorm input gradient. Parameter gradients per local group:
 * group g's at dw + g * gstride and db + g * gstride (+=; dw, db may be NULL),
 * so that each group's share can be summed with the rest of its gradient. */
void km_bn_sync_backward(float *din, float *dw, float *db, size_t gstride, const float *dout, const float *relu_out,
                         const float *in, const float *w, const float *mean, const float *invstd, const km_bn_sync *s,
                         int C, int HW);

/* ---- ReLU; backward uses the forward OUTPUT (gradient passes where out > 0) ---- */
void km_relu_forward(float *out, const float *in, size_t n); /* out may equal in */
void km_relu_backward(float *din, const float *dout, const float *out, size_t n);

/* ---- MaxPool2d(kernel 3, stride 2, padding 1), -inf padding ---- */
/* OH = (H + 2 - 3)/2 + 1. argmax[N*C*OH*OW] stores the input index within the
 * (n,c) plane; ties keep the first maximum in scan order (as PyTorch). */
void km_maxpool3s2_forward(float *out, int32_t *argmax, const float *in, int N, int C, int H, int W);
void km_maxpool3s2_backward(float *din, const float *dout, const int32_t *argmax, int N, int C,
                            int H, int W);

/* ---- Nearest upsample x2: out[N,C,2H,2W], out[y][x] = in[y>>1][x>>1] ---- */
void km_upsample2x_forward(float *out, const float *in, int N, int C, int H, int W);
void km_upsample2x_backward(float *din, const float *dout, int N, int C, int H, int W);

/* ---- Channel concat of nin NCHW tensors with chans[i] channels each ---- */
void km_concat_forward(float *out, const float *const *ins, const int *chans, int nin, int N,
                       int HW);
void km_concat_backward(float *const *dins, const int *chans, int nin, const float *dout, int N,
                        int HW); /* dins[i] may be NULL (skipped) */

/* ---- Elementwise ---- */
void km_add_forward(float *out, const float *a, const float *b, size_t n); /* out may alias */
void km_add_backward(float *da, float *db, const float *dout, size_t n);  /* either may be NULL */
void km_sigmoid_forward(float *out, const float *in, size_t n);

/* ---- Losses over n elements (logits z, targets y in {0,1}) ---- */
/* BCEWithLogits, reduction mean: mean((1-y) z - logsigmoid(z)). */
double km_bce_logits_forward(const float *z, const float *y, size_t n);
/* dz += scale * (sigmoid(z) - y) / n */
void km_bce_logits_backward(float *dz, const float *z, const float *y, size_t n, float scale);
/* smp DiceLoss(mode="binary", from_logits=True, smooth 0, eps 1e-7) pooled over
 * the WHOLE batch: p = sigmoid(z), I = sum p*y, S = sum p + sum y,
 * loss = 1 - 2I / max(S, eps), times 0 if sum y == 0. */
double km_dice_logits_forward(const float *z, const float *y, size_t n);
/* dz += scale * dL/dz */
void km_dice_logits_backward(float *dz, const float *z, const float *y, size_t n, float scale);

/* ---- Adam (torch 1.13 single-tensor path; L2 weight decay added to g) ---- */
/* t is the 1-based step count after increment. */
void km_adam_step(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int t);

#endif
