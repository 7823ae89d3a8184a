/* attention.h - multi-head self-attention core with SAM's decomposed relative
 * position bias (segment_anything/modeling/image_encoder.py: Attention.forward,
 * get_rel_pos, add_decomposed_rel_pos), fused and tiled.
 *
 * For each of G independent groups (windows, or the whole grid) of N = h*w
 * tokens (row-major over the h x w grid) and each head n:
 *   S[t, s] = scale * q[t] . k[s]                       scale = hd^-0.5
 *           + q[t] . Rh[qy(t) - ky(s) + h - 1]          unscaled q (reference)
 *           + q[t] . Rw[qx(t) - kx(s) + w - 1]
 *   out[t]  = softmax_s(S[t, :]) @ v
 * The N x N score matrix is never materialised: queries are processed in
 * blocks of `qblk` rows whose scores live in a per-thread scratch buffer.
 * The rel-pos dot products are computed once per query as small tables
 * [qblk, 2h-1] and [qblk, 2w-1] (GEMM against the tables) and broadcast-added.
 * Work items (group, head, query block) are spread over threads with OpenMP;
 * each item's arithmetic does not depend on the thread that runs it, so the
 * result is bit-identical for any thread count.
 *
 * Layouts (row-major, C = nH * hd):
 *   qkv  [G, N, 3, nH, hd]  = the output of the qkv Linear(C, 3C)
 *   out  [G, N, nH, hd]     = heads concatenated, input of the proj Linear
 *   rel_h [2h-1, hd], rel_w [2w-1, hd]; both NULL = no relative position term.
 * The tables must already have length 2h-1 / 2w-1 (SAM at its native input
 * size; resampling other lengths is the caller's job). */
#ifndef KM_ATTENTION_H
#define KM_ATTENTION_H

#include <stddef.h>

/* Floats of scratch needed by km_relattn_forward with `nthreads` threads. */
size_t km_relattn_scratch_floats(int h, int w, int nthreads);

/* Runs on km_get_threads() threads (fewer if the scratch is smaller than
 * km_relattn_scratch_floats(h, w, km_get_threads())); the BLAS is switched to
 * one thread during the call and restored afterwards. */
void km_relattn_forward(float *out, const float *qkv, const float *rel_h, const float *rel_w,
                        int G, int h, int w, int nH, int hd, float *scratch,
                        size_t scratch_floats);

#endif
