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

#endif
