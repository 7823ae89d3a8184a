/* sam_decoder.h - SAM's MaskDecoder with its TwoWayTransformer
 * (segment_anything/modeling/{mask_decoder,transformer}.py, reference-arch.md
 * 1.4), batch size 1 (one prompt set per call, as SamPredictor.predict).
 *
 * Layouts: image tensors are channel-major [D, 64*64] (NCHW without N);
 * transformer tokens are row-major [tokens, D]. The transformer keys are the
 * 4096 image tokens (index y*64 + x).
 *
 * Dimensions are read from the checkpoint: D from iou_token [1, D], the number
 * of mask tokens from mask_tokens [M, D], the MLP width from layers.0.mlp.lin1,
 * the cross-attention width from cross_attn_token_to_image.q_proj (D/2 in SAM),
 * depth by counting transformer.layers.*, the upscaling widths from
 * output_upscaling.{0,3}. The head count (8) is not recorded in a state dict
 * and is fixed. Weights are borrowed from the km_tdict, which must outlive the
 * decoder. */
#ifndef KM_SAM_DECODER_H
#define KM_SAM_DECODER_H

#include "../io/tensor.h"

#define KM_SAM_DEC_HEADS 8
#define KM_SAM_DEC_MAX_DEPTH 8

typedef struct {
    const float *qw, *qb, *kw, *kb, *vw, *vb, *ow, *ob; /* q/k/v [d, D], out [D, d] */
    int d;                                               /* internal dim */
} km_sam_attn;

typedef struct {
    const float *w, *b;
} km_sam_norm;

typedef struct {
    km_sam_attn self_attn, t2i, i2t; /* self, cross token->image, cross image->token */
    km_sam_norm norm1, norm2, norm3, norm4;
    const float *lin1_w, *lin1_b, *lin2_w, *lin2_b; /* [mlp, D], [D, mlp] */
} km_sam_block;

typedef struct {
    const float *w[3], *b[3]; /* layers.{0,1,2} */
    int out;                  /* output width of layers.2 */
} km_sam_mlp3;

typedef struct {
    int D, n_mask_tokens, mlp_dim, depth, up1, up2; /* up1 = D/4, up2 = D/8 */
    km_sam_block layers[KM_SAM_DEC_MAX_DEPTH];
    km_sam_attn final_attn;
    km_sam_norm norm_final;
    const float *iou_token, *mask_tokens; /* [1, D], [M, D] */
    const float *up0_w, *up0_b;           /* ConvTranspose2d(D -> up1, k2 s2): [D, up1, 2, 2] */
    const float *up1_w, *up1_b;           /* LayerNorm2d(up1) */
    const float *up3_w, *up3_b;           /* ConvTranspose2d(up1 -> up2, k2 s2): [up1, up2, 2, 2] */
    km_sam_mlp3 hyper[8];                 /* output_hypernetworks_mlps.m, D -> D -> D -> up2 */
    km_sam_mlp3 iou_head;                 /* D -> D -> D -> M */
} km_sam_decoder;

/* Binds "<prefix>transformer.layers.0.self_attn.q_proj.weight", ... (prefix
 * e.g. "mask_decoder."). */
km_status km_sam_decoder_load(km_sam_decoder *dec, const km_tdict *w, const char *file,
                              const char *prefix);

/* Workspace for km_sam_decoder_forward with n_sparse prompt tokens. */
size_t km_sam_decoder_work_floats(const km_sam_decoder *dec, int n_sparse);

/* MaskDecoder.predict_masks for one prompt set.
 *   image    [D, 4096]   image embedding
 *   image_pe [D, 4096]   prompt encoder dense PE
 *   sparse   [n_sparse, D]
 *   dense    [D, 4096]   dense prompt embedding
 *   masks    [M, 256*256] low-res logits of every mask token (caller selects)
 *   iou      [M]          IoU head output (no sigmoid) */
void km_sam_decoder_forward(const km_sam_decoder *dec, float *masks, float *iou, const float *image,
                            const float *image_pe, const float *sparse, int n_sparse,
                            const float *dense, float *work);

#endif
