/* sam_prompt.h - SAM's PromptEncoder (segment_anything/modeling/prompt_encoder.py,
 * reference-arch.md 1.3), batch size 1.
 *
 * Coordinates handed to this layer are already in the model's input frame
 * (the predictor in sam.h rescales original-image pixels): the 1024 canvas for
 * SAM, MedSAM and MobileSAM, 256 for LiteMedSAM. The encoder adds 0.5 (pixel
 * centre), divides by the canvas side (input_size, PromptEncoder's
 * input_image_size, which a state dict does not record), and encodes each
 * point with random Fourier features: v = 2c - 1, z = 2 pi (v @ G),
 * pe = [sin z, cos z].
 *
 * Weights are borrowed pointers into the checkpoint's km_tdict, which must
 * outlive this struct. Dimensions are read from the checkpoint shapes: D =
 * 2 * G.shape[1] (256 for every SAM variant), mask_in_chans from
 * mask_downscaling.3. */
#ifndef KM_SAM_PROMPT_H
#define KM_SAM_PROMPT_H

#include "../io/tensor.h"

#define KM_SAM_EMB_HW 64   /* image embedding grid (1024 / patch 16) */
#define KM_SAM_INPUT 1024  /* the padded square input canvas */
#define KM_SAM_MASK_HW 256 /* mask prompt / low-res logits size (4 x 64) */

typedef struct {
    int D;          /* embed dim, 256 */
    int input_size; /* canvas side the coordinates are divided by: KM_SAM_INPUT
                       after km_sam_prompt_load; LiteMedSAM sets 256 */
    int mask_chans; /* mask_in_chans, 16 (mask_downscaling: 1 -> mask_chans/4 -> mask_chans -> D) */
    const float *gauss;        /* [2, D/2] positional_encoding_gaussian_matrix */
    const float *point_emb[4]; /* [D] each: 0 negative, 1 positive, 2 box top-left, 3 bottom-right */
    const float *not_a_point;  /* [D] */
    const float *no_mask;      /* [D] */
    const float *md0_w, *md0_b; /* Conv2d(1 -> c4, k2 s2): [c4,1,2,2], [c4] */
    const float *md1_w, *md1_b; /* LayerNorm2d(c4) */
    const float *md3_w, *md3_b; /* Conv2d(c4 -> mask_chans, k2 s2): [mc,c4,2,2], [mc] */
    const float *md4_w, *md4_b; /* LayerNorm2d(mask_chans) */
    const float *md6_w, *md6_b; /* Conv2d(mask_chans -> D, 1x1): [D,mc,1,1], [D] */
} km_sam_prompt;

/* Binds the tensors "<prefix>pe_layer.positional_encoding_gaussian_matrix", ...
 * (prefix e.g. "prompt_encoder."). `file` names the checkpoint in messages.
 * Sets input_size = KM_SAM_INPUT (1024); change it afterwards for another
 * canvas. */
km_status km_sam_prompt_load(km_sam_prompt *pe, const km_tdict *w, const char *file,
                             const char *prefix);

/* Number of sparse tokens for n points and an optional box: n points, plus one
 * padding point when there are points but no box, plus 2 box corners. */
int km_sam_prompt_num_sparse(int n_points, int has_box);

/* sparse [km_sam_prompt_num_sparse(n, box != NULL), D].
 * points [n,2] (x, y) in the input_size frame, labels [n] in {-1, 0, 1} (asserted;
 * the predictor validates user input); box [4] (x0, y0, x1, y1) or NULL. */
void km_sam_prompt_sparse(const km_sam_prompt *pe, float *sparse, const float *points,
                          const int *labels, int n, const float *box);

/* Dense positional encoding of the 64x64 grid, channel-major: out [D, 64*64],
 * cell (i, j) encodes ((j + 0.5)/64, (i + 0.5)/64). */
void km_sam_prompt_dense_pe(const km_sam_prompt *pe, float *out);

/* Dense prompt embedding [D, 64*64]: mask_downscaling(mask) for a mask prompt
 * [256*256] (low-res logits in the padded 1024 canvas / 4), or no_mask_embed
 * broadcast when mask is NULL. work: km_sam_prompt_work_floats(pe) floats. */
size_t km_sam_prompt_work_floats(const km_sam_prompt *pe);
void km_sam_prompt_dense(const km_sam_prompt *pe, float *out, const float *mask, float *work);

#endif
