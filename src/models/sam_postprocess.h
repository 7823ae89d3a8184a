/* sam_postprocess.h - SamPredictor / MedSAM mask post-processing
 * (segment_anything/modeling/sam.py postprocess_masks, MedSAM_Inference.py;
 * reference-arch.md 1.5.2, 1.5.3, 3.6).
 *
 * Bilinear resampling follows F.interpolate(mode="bilinear", align_corners=
 * False, antialias=False) on CPU (torch 1.13) including its index arithmetic:
 * scale = (float)in / (float)out (float32), src = max(scale * (dst + 0.5) - 0.5,
 * 0) evaluated in double, i0 = (int)src, i1 = min(i0 + 1, in - 1),
 * l1 = (float)(src - i0), l0 = 1 - l1 (float32), and the value =
 * l0_y * (l0_x a + l1_x b) + l1_y * (l0_x c + l1_x d) in float32. Deriving the
 * weights from a float32 src instead moves SAM's mask logits by ~3e-5; a
 * double scale moves them by ~5e-5. */
#ifndef KM_SAM_POSTPROCESS_H
#define KM_SAM_POSTPROCESS_H

#include <stddef.h>

/* out [crop_h, crop_w] = the top-left crop of resizing in [IH, IW] (contiguous)
 * to [OH, OW]; crop_h <= OH, crop_w <= OW. */
void km_bilinear_resize(float *out, const float *in, int IH, int IW, int OH, int OW, int crop_h,
                        int crop_w);

/* SAM: low-res logits [C, 256, 256] -> bilinear to 1024x1024, crop to
 * [input_h, input_w], bilinear to [H, W] -> out [C, H, W] (logits; the mask is
 * out > 0). work: km_sam_postprocess_work_floats(input_h, input_w). */
size_t km_sam_postprocess_work_floats(int input_h, int input_w);
void km_sam_postprocess(float *out, const float *lowres, int C, int input_h, int input_w, int H,
                        int W, float *work);

/* MedSAM: sigmoid of the low-res logits, then bilinear straight to [H, W] ->
 * out [C, H, W] probabilities (the mask is out > 0.5). work: 256*256 floats. */
void km_medsam_postprocess(float *out, const float *lowres, int C, int H, int W, float *work);

/* LiteMedSAM: crop the low-res logits to [new_h, new_w], one bilinear resize
 * to [H, W] -> out [C, H, W] logits. work: unused here. */
void km_litemedsam_postprocess(float *out, const float *lowres, int C, int new_h, int new_w, int H,
                               int W, float *work);
/* sigmoid(logit) > 0.5 in float32, as torch computes it. */
int km_litemedsam_mask(float logit);

#endif
