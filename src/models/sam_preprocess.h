/* sam_preprocess.h - image pre-processing in front of SAM's image encoder
 * (reference-arch.md 1.5.1 and 1.5.3).
 *
 * SAM profile = SamPredictor.set_image (segment_anything/predictor.py,
 * utils/transforms.py ResizeLongestSide, modeling/sam.py Sam.preprocess):
 *   1. new size: scale = S / max(h, w), new_h = int(h * scale + 0.5),
 *      new_w = int(w * scale + 0.5) in double (S = 1024);
 *   2. Pillow bilinear resize of the uint8 RGB image (io/resize.h);
 *   3. x = ((float)v - pixel_mean[c]) / pixel_std[c] in float32 (a division,
 *      like torch), mean (123.675, 116.28, 103.53), std (58.395, 57.12, 57.375);
 *   4. zero-pad bottom/right to S x S (zeros after normalisation).
 * Output float [3, S, S] (CHW), the encoder's input.
 *
 * MedSAM profile (MedSAM_Inference.py): grey replicated to RGB, resize
 * straight to S x S with scikit-image's order-3 anti-aliased resize cast to
 * uint8 (km_resize_skimage_cubic, io/resize.h), then min-max normalisation
 * over the whole image: (v - min) / max(max - min, 1e-8) in double, stored
 * as float; no mean/std, no padding.
 *
 * LiteMedSAM profile (official CVPR24_LiteMedSAM_infer.py, 2D path;
 * docs/teacher-tinyvit.md 3.1): the new size as in the SAM profile (S = 256),
 * OpenCV INTER_AREA resize (km_resize_area_u8), min-max normalisation over the
 * whole resized image, all channels together, as for MedSAM, then zero
 * padding bottom/right. Box corners go to the 256 frame by truncation
 * (resize_box_to_256), points by kmseg's unrounded rule. */
#ifndef KM_SAM_PREPROCESS_H
#define KM_SAM_PREPROCESS_H

#include <stdint.h>

extern const float km_sam_pixel_mean[3];
extern const float km_sam_pixel_std[3];

/* ResizeLongestSide.get_preprocess_shape(h, w, long_side). */
void km_sam_preprocess_shape(int h, int w, int long_side, int *new_h, int *new_w);

/* rgb: h x w x c uint8 interleaved, c = 3 (RGB) or 1 (grey, replicated to
 * RGB). out: float [3, S, S]. Writes the resized size to *new_h / *new_w
 * (either may be NULL). Allocates a temporary for the resized image. */
void km_sam_preprocess(float *out, int S, const uint8_t *rgb, int w, int h, int c, int *new_h,
                       int *new_w);

/* MedSAM: rgb h x w x c uint8 (c = 3, or 1 replicated to RGB first, as
 * MedSAM_Inference.py does); out float [3, S, S]. Allocates temporaries. */
void km_medsam_preprocess(float *out, int S, const uint8_t *rgb, int w, int h, int c);

/* The normalisation step alone: rgb is S x S x c uint8 (c = 3, or 1
 * replicated); out float [3, S, S]. */
void km_medsam_normalize(float *out, int S, const uint8_t *rgb, int c);

/* LiteMedSAM: rgb h x w x c uint8 (c = 3 RGB, or 1 grey replicated to RGB);
 * out float [3, S, S]: resize to (new_h, new_w) with km_resize_area_u8, then
 * (float)((double)(v - min) / (double)max(max - min, 1e-8)) with min and max
 * over the resized image (all channels; a constant image gives zeros), zero
 * outside [new_h, new_w]. Writes the resized size to *new_h / *new_w (either
 * may be NULL). Allocates a temporary for the resized image. */
void km_litemedsam_preprocess(float *out, int S, const uint8_t *rgb, int w, int h, int c, int *new_h,
                              int *new_w);

/* resize_box_to_256 for one box coordinate v of a w x h image:
 * (float)(int)((double)v * (S / (double)max(h, w))), the ratio computed first
 * and the product truncated toward zero. */
float km_litemedsam_box_coord(float v, int w, int h, int S);

/* A point coordinate into the S frame (kmseg's convention; the official
 * script has no points): (float)((double)v * (S / (double)max(h, w))), no
 * rounding. */
float km_litemedsam_point_coord(float v, int w, int h, int S);

#endif
