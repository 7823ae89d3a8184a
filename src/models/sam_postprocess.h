/* sam_postprocess.h - SamPredictor / MedSAM / LiteMedSAM mask post-processing
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

/* LiteMedSAM (postprocess_masks of CVPR24_LiteMedSAM_infer.py): low-res
 * logits [C, 256, 256], crop to [new_h, new_w], one bilinear resize to [H, W]
 * -> out [C, H, W] logits. work: new_h * new_w floats. */
void km_litemedsam_postprocess(float *out, const float *lowres, int C, int new_h, int new_w, int H,
                               int W, float *work);

/* LiteMedSAM's mask rule torch.sigmoid(logit) > 0.5 in float32, evaluated as
 * torch's scalar kernel does: 1.f / (1.f + expf(-logit)) > 0.5f. With glibc's
 * expf this is 1 exactly for logit > 1.5 * 2^-24 = 8.9407e-8 (checked over
 * every float in [1e-12, 1e-5]), i.e. it equals logit > 0 except for
 * 0 < logit <= 8.94e-8, where the rounded quotient is exactly 0.5; NaN gives
 * 0. Kept as the sigmoid rather than logit > 0 so that those boundary pixels
 * follow the reference (torch's vectorised exp could in principle differ by
 * an ulp there, which would move the threshold by one float step). */
int km_litemedsam_mask(float logit);

#endif
