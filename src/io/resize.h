/* resize.h - image resampling that reproduces the reference libraries bit for
 * bit on 8-bit images.
 *
 * km_resize_pil_bilinear: Pillow's Image.resize(size, Image.BILINEAR) for
 * uint8 images (Pillow 9.x libImaging/Resample.c, ImagingResample with the
 * triangle filter), which is what torchvision.transforms.functional.resize
 * does to a PIL image and therefore what SAM's ResizeLongestSide.apply_image
 * runs. Semantics (reference-arch.md 1.5.1):
 *   - separable: horizontal pass first into a uint8 temporary, then vertical;
 *     a pass whose size does not change is skipped;
 *   - per output index: scale = in/out, filterscale = max(scale, 1),
 *     support = filterscale, center = (i + 0.5) * scale,
 *     taps [int(center - support + 0.5) clamped >= 0, int(center + support + 0.5)
 *     clamped <= in), weight tri((j - center + 0.5) / filterscale), normalised
 *     to sum 1 (double). Downscaling is therefore antialiased;
 *   - weights to fixed point round(w * 2^22) (half away from zero), int32
 *     accumulation from 2^21, arithmetic shift by 22, clamp to [0, 255].
 * in: h x w x c interleaved, out: oh x ow x c. Allocates a temporary
 * (h x ow x c bytes plus the coefficient tables). */
#ifndef KM_RESIZE_H
#define KM_RESIZE_H

#include <stdint.h>

void km_resize_pil_bilinear(uint8_t *out, int ow, int oh, const uint8_t *in, int w, int h, int c);

/* The same resampling for a one-channel float map, as Pillow does it for a
 * mode "F" image (Resample.c, the 32bpc passes): the same taps and normalised
 * double weights, NOT quantised, summed in double and stored as float after
 * each pass (horizontal first, a pass whose size does not change skipped, so
 * an unchanged size is an exact copy). No clamping: a map of values in
 * [-1, 1] stays in [-1, 1] (the weights are >= 0 and sum to 1). Used to bring
 * the teacher's confidence at the original size to the student's frame
 * (km_geom_resize_crop_f32, dataset.h). in: h x w, out: oh x ow. */
void km_resize_pil_bilinear_f32(float *out, int ow, int oh, const float *in, int w, int h);

/* Half-pixel bilinear resampling of a one-channel float map, in double:
 * F.interpolate(mode="bilinear", align_corners=False, antialias=False) up to
 * rounding. Output pixel (x, y) reads the input at
 *   fx = max((x + 0.5) * w / ow - 0.5, 0),  x0 = (int)fx,  x1 = min(x0 + 1, w - 1)
 * (likewise y; scale w / ow in double) and is
 *   (1 - wy) * ((1 - wx) in[y0, x0] + wx in[y0, x1]) + wy * ((1 - wx) in[y1, x0] + wx in[y1, x1])
 * with wx = fx - x0, wy = fy - y0, rounded to float once. Downscaling is not
 * antialiased. Not km_bilinear_resize (sam_postprocess.h), which reproduces
 * torch's float32 arithmetic bit for bit and so differs by a few ulp; this one
 * is what `kmseg predict` has used to bring the student's logits to the
 * original size since its first version. in: h x w, out: oh x ow. */
void km_resize_bilinear_f32(float *out, int ow, int oh, const float *in, int w, int h);

/* km_resize_skimage_cubic: MedSAM's
 *   skimage.transform.resize(img, (oh, ow), order=3, preserve_range=True,
 *                            anti_aliasing=True).astype(np.uint8)
 * (scikit-image 0.19+ with SciPy >= 1.6 ndimage), on an h x w x c uint8 image,
 * all in double like the reference:
 *   1. anti-aliasing: Gaussian along y then x with sigma = max(0, (in/out -
 *      1) / 2) (skipped where 0, i.e. when upscaling), radius int(4 sigma +
 *      0.5), weights exp(-x^2 / 2 sigma^2) normalised (numpy pairwise sum),
 *      boundary 'mirror' (d c b | a b c d | c b a);
 *   2. cubic B-spline prefilter (pole sqrt 3 - 2, gain 6, mirror boundary
 *      initialisation) along y, x and the channel axis;
 *   3. ndimage.zoom(grid_mode=True): source coordinate (i + 0.5) * in/out -
 *      0.5, mirrored into range; value = sum over the 4 x 4 x 4 (y, x, channel)
 *      neighbourhood of coef * wy * wx * wc in that nested order (the channel
 *      axis has zoom 1 and is interpolated at integer positions too);
 *   4. clip to [min, max] of the input image, truncate to uint8.
 * Allocates h * w * c doubles plus small per-line/per-axis tables; the c
 * argument must match the array skimage saw (MedSAM: 3, grey replicated). */
void km_resize_skimage_cubic(uint8_t *out, int ow, int oh, const uint8_t *in, int w, int h, int c);

/* km_resize_area_u8: OpenCV 4.6 cv2.resize(src, (dw, dh),
 * interpolation=cv2.INTER_AREA) on uint8, bit for bit (x86-64 build; the
 * official LiteMedSAM resize; docs/teacher-tinyvit.md 3.2). src sh x sw x C,
 * dst dh x dw x C, interleaved, C = 1..4. With inv = (double)dw/sw and
 * scale = 1/inv (same for y):
 *   (a) same size: copy;
 *   (b) both scales >= 1 and within DBL_EPSILON of integers ix, iy: the sum
 *       S of each ix x iy cell; 2x2 with C = 1, 3, 4: (S + 2) >> 2, else
 *       round-half-even(S * (1.f/(ix*iy))) (float32);
 *   (c) both scales >= 1 otherwise: per-axis area tables in double
 *       (partial-pixel taps of weight (float)(covered / cell), taps under 1e-3
 *       dropped), rows and columns accumulated in float32 (multiply, then
 *       add; no FMA), round half to even, clamp;
 *   (d) any scale < 1: OpenCV's linear resampler with "area" coordinates,
 *       s = floor(d*scale), f = frac((d+1) - (s+1)*inv), 11-bit weights,
 *       int32 horizontal pass, and the vertical rounding of its SIMD
 *       kernel (((h0>>4)*b0 >> 16) + ((h1>>4)*b1 >> 16) + 2) >> 2 on every
 *       element (not the textbook (h0*b0 + h1*b1 + 2^21) >> 22).
 * Checked against Debian 12's OpenCV 4.6 on thousands of random cases (all
 * four, 1..4 channels, sizes 1..700; tools/check_inter_area.c) and against
 * the cv2 goldens in the test suite. Allocates small tables and row
 * buffers. */
void km_resize_area_u8(const uint8_t *src, int sw, int sh, int C, uint8_t *dst, int dw, int dh);

#endif
